"""Corrupt state in the store: one clear error naming the object and the field, never a traceback.

Release state (``releases-state/<model>/<version>.json``) and rollout records (``rollouts-state/<model>.json``
and the archives beside them) are written by otactl, but a store can hold anything: garbage bytes, a
truncated write, a hand edit with a wrong type or a missing field. Table-driven cases at the parse
level, the same through the real CLI (``release list``, ``release review``, ``rollout status``: exit 1,
one ``otactl: error:`` line), and hypothesis mutations of valid documents.

Also here: a refused input writes nothing. A hostile manifest given to ``release build`` and a hostile
inventory given to ``fleet import`` exit 2 and leave every file of the workspace as it was.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fixtures.repo import assert_one_error_line, run_otactl, tree
from fuzz_parts import HOSTILE, REPO_ROOT, assert_clear_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otactl.app import release
from otactl.app import rollout_state as rs
from otactl.app.context import Context
from otactl.errors import StoreError
from otactl.rollout import decide as core
from otactl.store.memory import MemoryStore

MODEL = "t9-engine"
T0 = datetime(2026, 11, 27, 19, 0, 0, tzinfo=UTC)
RELEASE_KEY = f"releases-state/{MODEL}/2.0.0.json"
ROLLOUT_KEY = rs.state_key(MODEL)

VALID_RELEASE: dict[str, Any] = {
    "schema": "otactl/release-state/1", "model": MODEL, "version": "2.0.0", "status": "staged",
    "created": T0.isoformat(), "built_by": "ci", "base_releases_version": 1, "security_version": 1,
    "variants": {"hp-300": {"max_hp": 300}}, "new_targets": ["releases/t9-engine/2.0.0.json"],
}


def _record() -> rs.RolloutRecord:
    plan_path = REPO_ROOT / "canary" / "default.yaml"
    state = core.RolloutState(
        release="2.1.0", ring_index=1, status=core.Status.RUNNING, ring_started=(T0, T0 + timedelta(hours=5)),
        approvals=frozenset({core.Approval("early", rs.KeyId("release-manager"))}),
        history=(core.HistoryEntry(T0 + timedelta(hours=5), 1, core.Action.ADVANCE, "lab passed"),),
        evidence=(("crash_rate|ratio|1.5|all", 0.7),),
    )
    return rs.RolloutRecord(MODEL, "r-0001", "salt", str(plan_path), plan_path.read_text(),
                            core.ReleaseRef("2.1.0", 2), core.ReleaseRef("2.0.0", 1), state, 2)


VALID_ROLLOUT = _record().to_json()


def _with(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with ``path`` (``state.ring_index``) set to ``value`` (``...`` deletes it)."""
    out = json.loads(json.dumps(doc))
    *parents, last = path.split(".")
    node = out
    for step in parents:
        node = node[int(step)] if isinstance(node, list) else node[step]
    if value is ...:
        del node[int(last) if isinstance(node, list) else last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return out


def _raw(doc: Any) -> bytes:
    return doc if isinstance(doc, bytes) else json.dumps(doc).encode()


RELEASE_CASES = [
    ("garbage-bytes", b'{"status": "\xff\xfe"}', "not JSON text (undecodable byte at offset 12)"),
    ("truncated", json.dumps(VALID_RELEASE).encode()[:57], "not JSON (Expecting ',' delimiter: line 1 column 58 "
                                                           "(char 57))"),
    ("not-an-object", [VALID_RELEASE], "not a JSON object"),
    ("wrong-schema", _with(VALID_RELEASE, "schema", "otactl/release-state/9"),
     "field 'schema': must be 'otactl/release-state/1', got 'otactl/release-state/9'"),
    ("wrong-type", _with(VALID_RELEASE, "security_version", "two"),
     "field 'security_version': must be an integer of at least 0, got 'two'"),
    ("missing-field", _with(VALID_RELEASE, "created", ...), "field 'created': missing"),
    ("bad-status", _with(VALID_RELEASE, "status", "shipped"),
     "field 'status': must be one of staged, published, withdrawn, got 'shipped'"),
    ("naive-time", _with(VALID_RELEASE, "created", "2026-11-27T19:00:00"),
     "field 'created': must be an ISO 8601 time with a UTC offset, got '2026-11-27T19:00:00'"),
    ("variant-not-object", _with(VALID_RELEASE, "variants.hp-300", 300),
     "field 'variants.hp-300': must be an object, got 300"),
    ("other-version", _with(VALID_RELEASE, "version", "2.0.1"),
     "field 'version': '2.0.1' does not match the object's name ('2.0.0')"),
    ("withdrawn-without-reason", _with(VALID_RELEASE, "status", "withdrawn"), "field 'withdrawn': missing"),
]

ROLLOUT_CASES = [
    ("garbage-bytes", b"\x89PNG\r\n\x1a\n", "not JSON text (undecodable byte at offset 0)"),
    ("truncated", json.dumps(VALID_ROLLOUT).encode()[:30], "not JSON (Unterminated string starting at: line 1 "
                                                          "column 12 (char 11))"),
    ("empty", b"", "not JSON (Expecting value: line 1 column 1 (char 0))"),
    ("not-an-object", "rollout", "not a JSON object"),
    ("wrong-schema", _with(VALID_ROLLOUT, "schema", None),
     "field 'schema': must be 'otactl/rollout-state/1', got None"),
    ("missing-state", _with(VALID_ROLLOUT, "state", ...), "field 'state': missing"),
    ("ring-index-text", _with(VALID_ROLLOUT, "state.ring_index", "1"),
     "field 'state.ring_index': must be an integer of at least 0, got '1'"),
    ("ring-index-ahead", _with(VALID_ROLLOUT, "state.ring_index", 3),
     "field 'state': ring_started needs one start time per reached ring"),
    ("bad-status", _with(VALID_ROLLOUT, "state.status", "exploded"),
     "field 'state.status': must be one of running, paused, rolled_back, complete, aborted, got 'exploded'"),
    ("history-not-list", _with(VALID_ROLLOUT, "state.history", {"0": 1}),
     "field 'state.history': must be a list, got {'0': 1}"),
    ("history-bad-action", _with(VALID_ROLLOUT, "state.history.0.action", "explode"),
     "field 'state.history.0.action': must be one of advance, hold, await_approval, rollback, pause, complete, "
     "start, resume, abort, approve, reinstate, got 'explode'"),
    ("history-bad-time", _with(VALID_ROLLOUT, "state.history.0.time", "yesterday"),
     "field 'state.history.0.time': must be an ISO 8601 time with a UTC offset, got 'yesterday'"),
    ("approval-not-pair", _with(VALID_ROLLOUT, "state.approvals.0", ["early"]),
     "field 'state.approvals.0': must be a [ring, key] pair, got ['early']"),
    ("evidence-not-number", _with(VALID_ROLLOUT, "state.evidence.0.1", "big"),
     "field 'state.evidence.0.1': must be a number, got 'big'"),
    ("release-missing-security-version", _with(VALID_ROLLOUT, "release.security_version", ...),
     "field 'release.security_version': missing"),
    ("policy-version-negative", _with(VALID_ROLLOUT, "policy_version", -1),
     "field 'policy_version': must be an integer of at least 0, got -1"),
    ("other-model", _with(VALID_ROLLOUT, "model", "x9-robot"),
     "field 'model': 'x9-robot', expected 't9-engine'"),
]


# ------------------------------------------------------------------------------- parse level
@pytest.mark.parametrize(("name", "doc", "problem"), RELEASE_CASES, ids=[c[0] for c in RELEASE_CASES])
def test_corrupt_release_state_names_object_and_field(name: str, doc: Any, problem: str) -> None:
    with pytest.raises(StoreError) as err:
        release.parse_state(_raw(doc), f"memory://{RELEASE_KEY}", MODEL, "2.0.0")
    assert str(err.value) == f"memory://{RELEASE_KEY}: corrupt release state: {problem}"
    assert_clear_error(err.value)


@pytest.mark.parametrize(("name", "doc", "problem"), ROLLOUT_CASES, ids=[c[0] for c in ROLLOUT_CASES])
def test_corrupt_rollout_state_names_object_and_field(name: str, doc: Any, problem: str) -> None:
    store = MemoryStore()
    store.put(ROLLOUT_KEY, _raw(doc))
    with pytest.raises(StoreError) as err:
        rs.load(store, MODEL)
    assert str(err.value) == f"{store.url}{ROLLOUT_KEY}: corrupt rollout state: {problem}"
    assert_clear_error(err.value)


def test_valid_documents_round_trip() -> None:
    assert release.parse_state(_raw(VALID_RELEASE), "x", MODEL, "2.0.0") == VALID_RELEASE
    store = MemoryStore()
    store.put(ROLLOUT_KEY, _raw(VALID_ROLLOUT))
    record = rs.load(store, MODEL)
    assert record is not None and record.to_json() == VALID_ROLLOUT


def test_a_corrupt_archive_is_named_too() -> None:
    store = MemoryStore()
    store.put(rs.archive_key(MODEL, "r-0001"), _raw(VALID_ROLLOUT))
    store.put(rs.archive_key(MODEL, "r-0002"), b'{"schema": "otactl/rollout-state/1"')
    with pytest.raises(StoreError) as err:
        rs.archived(store, MODEL)
    assert str(err.value).startswith(f"{store.url}{rs.archive_key(MODEL, 'r-0002')}: corrupt rollout state: not JSON")


FUZZ = settings(max_examples=int(os.environ.get("OTACTL_FUZZ_EXAMPLES", "100")), deadline=None,
                derandomize=not os.environ.get("OTACTL_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
              st.sampled_from(["2026-11-27T19:00:00+00:00", "running", "advance", "staged"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


def _paths(value: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [where] if where else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*where, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*where, i))
    return out


@FUZZ
@given(data=st.data())
def test_fuzzed_state_documents_parse_or_get_one_store_error(data: st.DataObject) -> None:
    which = data.draw(st.sampled_from(["release", "rollout"]))
    doc = json.loads(json.dumps(VALID_RELEASE if which == "release" else VALID_ROLLOUT))
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(_paths(doc)))
        parent = doc
        for step in where[:-1]:
            parent = parent[step]
        if data.draw(st.booleans()):
            parent[where[-1]] = data.draw(JSON_VALUES)
        else:
            del parent[where[-1]]
        if not _paths(doc):
            break
    raw = json.dumps(doc).encode()
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    try:
        if which == "release":
            release.parse_state(raw, "memory://x", MODEL, "2.0.0")
        else:
            store = MemoryStore()
            store.put(ROLLOUT_KEY, raw)
            record = rs.load(store, MODEL)
            assert record is not None
            record.to_json()  # what was read can be written back
    except StoreError as err:
        assert_clear_error(err)


# ---------------------------------------------------------------------------------- the CLI
def _put(ws: Path, key: str, data: bytes) -> str:
    store = Context.open(ws).store
    store.put(key, data)
    return f"{store.url}{key}"


CLI_RELEASE_CASES = [c for c in RELEASE_CASES if c[0] in ("garbage-bytes", "truncated", "wrong-type", "missing-field")]
CLI_ROLLOUT_CASES = [c for c in ROLLOUT_CASES if c[0] in ("garbage-bytes", "ring-index-text", "history-bad-time")]


@pytest.mark.parametrize(("name", "doc", "problem"), CLI_RELEASE_CASES, ids=[c[0] for c in CLI_RELEASE_CASES])
def test_release_list_and_review_on_corrupt_state(workspace: Path, name: str, doc: Any, problem: str) -> None:
    where = _put(workspace, RELEASE_KEY, _raw(doc))
    commands = [("release", "list")]
    if name == "wrong-type":  # the other readers of the same state: once is enough (each run costs a second)
        commands += [("release", "review", f"{MODEL}/2.0.0"), ("release", "list", "-o", "json")]
    for args in commands:
        result = run_otactl(*args, "-w", str(workspace), cwd=workspace)
        assert result.returncode == 1, (args, result.stderr)
        line = assert_one_error_line(result)
        assert line == f"otactl: error: {where}: corrupt release state: {problem}"


def test_release_list_names_a_stray_object(workspace: Path) -> None:
    where = _put(workspace, "releases-state/notes.json", b"{}")
    result = run_otactl("release", "list", "-w", str(workspace), cwd=workspace)
    assert result.returncode == 1
    assert assert_one_error_line(result) == (
        f"otactl: error: {where}: not a release state object (expected releases-state/<model>/<version>.json); "
        "move it out of releases-state/")


@pytest.mark.parametrize(("name", "doc", "problem"), CLI_ROLLOUT_CASES, ids=[c[0] for c in CLI_ROLLOUT_CASES])
def test_rollout_status_on_corrupt_state(workspace: Path, name: str, doc: Any, problem: str) -> None:
    where = _put(workspace, ROLLOUT_KEY, _raw(doc))
    commands = [("rollout", "status", MODEL)]
    if name == "ring-index-text":
        commands.append(("rollout", "status", MODEL, "-o", "json"))
    for args in commands:
        result = run_otactl(*args, "-w", str(workspace), cwd=workspace)
        assert result.returncode == 1, (args, result.stderr)
        assert assert_one_error_line(result) == f"otactl: error: {where}: corrupt rollout state: {problem}"


@pytest.mark.parametrize(("command", "hostile"), [
    (("release", "build"), "manifest-billion-laughs.yaml"),
    (("release", "build"), "manifest-merge-key.yaml"),
    (("fleet", "import"), "inventory-billion-laughs.yaml"),
    (("fleet", "import"), "inventory-only-dashes.yaml"),
], ids=["build-billion-laughs", "build-merge-key", "import-billion-laughs", "import-only-dashes"])
def test_a_refused_input_writes_nothing(workspace: Path, command: tuple[str, ...], hostile: str) -> None:
    before = tree(workspace)
    path = HOSTILE / hostile
    result = run_otactl(*command, str(path), "-w", str(workspace), cwd=workspace, timeout=60)
    assert result.returncode == 2, result.stderr
    expected = (HOSTILE / f"{hostile}.expect").read_text().strip().replace("{file}", str(path))
    assert assert_one_error_line(result) == f"otactl: error: {expected}"
    assert tree(workspace) == before
