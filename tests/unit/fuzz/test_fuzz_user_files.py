"""Property-based fuzzing of the user-written files: manifests, plans, inventories and scenarios.

Inputs come from three generators: arbitrary YAML-ish text; the repository's own files (manifests/,
canary/, examples/scenarios/, the fleet tests' inventory) with a few text edits (a value replaced by
a hostile scalar, a line dropped, duplicated or re-indented, a token inserted, the file cut short);
and the same files parsed, changed structurally (a value replaced by arbitrary data, a key dropped
or added) and dumped again. Each input must load or raise a usage error (exit 2) whose message is
one line, never another exception and never a hang (each load runs under a guard).

The run is bounded (``FUZZ_EXAMPLES`` per target, deterministic by default so ``make test`` sees the
same inputs every time). ``OTACTL_FUZZ_EXAMPLES=2000 OTACTL_FUZZ_RANDOM=1`` explores further.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzz_parts import LOADERS, SEEDS, assert_clear_error, deadline, workspace_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otactl.errors import ExitCode, InputFileError
from otactl.yamlio import parse_yaml

FUZZ_EXAMPLES = int(os.environ.get("OTACTL_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("OTACTL_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
GUARD_S = 20.0

# Scalars and tokens that have broken YAML loaders (or would break ours): types, tags, anchors,
# special floats, impossible dates, control characters, huge numbers, path tricks.
HOSTILE_SCALARS = [
    "", "~", "null", "-1", "0", "-0", "1e999", "-.inf", ".nan", "2024-02-30", "2026-11-27T19:00:00Z",
    "2026-11-27", "[]", "{}", "[[]]", "{a: {b: c}}", "yes", "no", "on", "0x1F", "0o17", "0b101", '"\\u0000"',
    '"\\x07"', "'", '"', "&a x", "*a", "<<", "!!binary aGk=", "!!python/name:os.system", "!!set {a}",
    "!custom x", "- x", ": x", "? x", "|", ">", "%YAML 1.1", "@", "`", "1.0.0", "2.1", "2", "t9-engine",
    "hp-300", "../../../etc/passwd", "/dev/zero", "a" * 300, "é", "\u202e", "💥", "9" * 40, "9" * 5000,
    "true", "=", "!", "!!str 5", "!!int x", "!!float x", "!!null x", "!!bool maybe", "!!timestamp 2024-13-01",
    "1_000", "+1", "0.", ".5", "1e-400", "--- ", "...",
]
YAMLISH = st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>#'\",\n ?<=~%@`\\\tabcxyz0129._/")), max_size=200)
KEYS = st.sampled_from(["schema", "name", "model", "version", "rings", "selector", "percent", "tags", "gates",
                        "metric", "fleet", "devices", "variants", "firmware", "file", "release", "device_id",
                        "<<", "unknown", ""])


def json_values() -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                       st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                       st.sampled_from(HOSTILE_SCALARS))
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.one_of(KEYS, st.text(max_size=10)),
                                                                        inner, max_size=4)), max_leaves=12)


# ------------------------------------------------------------------------------ text mutations
def _replace_value(text: str, data: st.DataObject) -> str:
    lines = text.splitlines(keepends=True)
    candidates = [i for i, line in enumerate(lines) if ": " in line or line.rstrip().endswith(":")]
    if not candidates:
        return text
    i = data.draw(st.sampled_from(candidates))
    key, sep, _ = lines[i].partition(":")
    lines[i] = f"{key}{sep} {data.draw(st.sampled_from(HOSTILE_SCALARS))}\n"
    return "".join(lines)


def _line_edit(text: str, data: st.DataObject) -> str:
    lines = text.splitlines(keepends=True) or [""]
    i = data.draw(st.integers(0, len(lines) - 1))
    op = data.draw(st.sampled_from(["drop", "duplicate", "indent", "dedent", "swap"]))
    if op == "drop":
        del lines[i]
    elif op == "duplicate":
        lines.insert(i, lines[i])
    elif op == "indent":
        lines[i] = "  " + lines[i]
    elif op == "dedent":
        lines[i] = lines[i].lstrip(" ")
    else:
        j = data.draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


def _insert_token(text: str, data: st.DataObject) -> str:
    at = data.draw(st.integers(0, len(text)))
    token = data.draw(st.one_of(st.sampled_from(HOSTILE_SCALARS), YAMLISH))
    return text[:at] + token + text[at:]


def _truncate(text: str, data: st.DataObject) -> str:
    return text[: data.draw(st.integers(0, len(text)))]


TEXT_EDITS = [_replace_value, _line_edit, _insert_token, _truncate]


# ------------------------------------------------------------------------ structural mutations
def _paths(value: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [where]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*where, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*where, i))
    return out


def _structural(text: str, path: str, data: st.DataObject) -> str:
    doc = parse_yaml(text, path).data
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(_paths(doc)))
        op = data.draw(st.sampled_from(["replace", "drop", "add"]))
        if not where:
            doc = data.draw(json_values()) if op == "replace" else doc
            continue
        parent = doc
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1]
        if op == "replace":
            parent[last] = data.draw(json_values())
        elif op == "drop":
            del parent[last]
        elif isinstance(parent, dict):
            parent[data.draw(st.one_of(KEYS, st.text(max_size=8)))] = data.draw(json_values())
        else:
            parent.insert(last, data.draw(json_values()))
        if not isinstance(doc, dict | list):
            break
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _fuzzed_text(target: str, data: st.DataObject) -> str:
    kind = data.draw(st.sampled_from(["text-edit", "structural", "arbitrary"]), label="kind")
    if kind == "arbitrary":
        return data.draw(st.one_of(YAMLISH, st.text(max_size=120)), label="text")
    seed = data.draw(st.sampled_from(SEEDS[target]), label="seed")
    text = seed.read_text()
    if kind == "structural":
        return _structural(text, str(seed), data)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        text = data.draw(st.sampled_from(TEXT_EDITS))(text, data)
    return text


def _check(target: str, text: str, root: Path) -> None:
    path = workspace_for(target, root) / f"fuzzed-{target}.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        with deadline(GUARD_S):
            LOADERS[target](path)
    except Exception as err:  # the assertion below says which exceptions are allowed
        assert_clear_error(err, exit_code=ExitCode.USAGE)


def test_every_target_has_seed_files() -> None:
    for target, seeds in SEEDS.items():
        assert seeds, f"no seed files for {target}"
        for seed in seeds:
            LOADERS[target](seed)  # the seeds themselves load


@pytest.mark.parametrize("target", sorted(LOADERS))
@FUZZ
@given(data=st.data())
def test_fuzzed_file_loads_or_gets_one_clear_usage_error(target: str, data: st.DataObject) -> None:
    text = _fuzzed_text(target, data)
    with tempfile.TemporaryDirectory(prefix=f"otactl-fuzz-{target}-") as tmp:
        _check(target, text, Path(tmp))


# Crashes the fuzzer found once (a free-form mapping given as a number), now refused cleanly.
KNOWN_CRASHES = [
    pytest.param("t9-update.yaml", ("behaviour", "metrics"), 1, id="scenario-behaviour-metrics-not-a-mapping"),
    pytest.param("t9-canary-regression.yaml", ("releases", 1, "effect", "metrics"), 1,
                 id="scenario-effect-metrics-not-a-mapping"),
]


@pytest.mark.parametrize(("seed_name", "where", "value"), KNOWN_CRASHES)
def test_known_crash(seed_name: str, where: tuple[Any, ...], value: Any, tmp_path: Path) -> None:
    target = "scenario"
    seed = next(p for p in SEEDS[target] if p.name == seed_name)
    doc = parse_yaml(seed.read_text(), str(seed)).data
    node = doc
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = value
    path = workspace_for(target, tmp_path) / "known-crash.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(InputFileError):  # what it should be once fixed
        LOADERS[target](path)
