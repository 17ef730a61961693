"""Crash matrix: every rollout command killed before each of its writes, on the directory store and on
S3 (a real S3-compatible server over HTTP), then recovered as documented (any command that changes the
rollout, or `otactl rollout recover`, finishes what the log records first).

After each crash and recovery: state, published policy and audit log agree (``journal.check``), the
chain verifies, and the command either happened exactly once (one new entry, the state and policy it
records) or not at all (no entry, state and policy as before) — in which case running it again works
and records exactly one entry. docs/decisions/0504-audit-first-transitions.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from app_parts import MODEL, OPERATOR, clone_workspace, ctx_at, prepared_template, telemetry, verify_audit
from fixtures.repo import CrashingStore, SimulatedCrash

from otactl.app import journal, rollout
from otactl.app import reinstate as reinstate_service
from otactl.app import rollout_state as rs
from otactl.app.context import Context
from otactl.app.policy import current_policy
from otactl.audit import log as audit

REASON = "crash-matrix"


@dataclass(frozen=True)
class Command:
    name: str
    setup: str  # the pre-state: fresh, running, approvals, paused, rolled_back
    run: Callable[[Context], Any]
    action: str  # the audit action it records
    hours: float = 1.0


def _start(ctx: Context) -> Any:
    return rollout.start(ctx, MODEL, "2.1.0", ctx.workspace.root / "canary" / "test.yaml", baseline="2.0.0")


COMMANDS = [
    Command("start", "fresh", _start, "start"),
    Command("step-advance", "running", lambda c: rollout.step(c, MODEL, telemetry(0.002)), "advance", 24),
    Command("step-rollback", "running", lambda c: rollout.step(c, MODEL, telemetry(0.02)), "rollback", 24),
    Command("pause", "running", lambda c: rollout.pause(c, MODEL, REASON, key=OPERATOR), "pause"),
    Command("resume", "paused", lambda c: rollout.resume(c, MODEL, REASON, key=OPERATOR), "resume"),
    Command("approve", "approvals", lambda c: rollout.approve(c, MODEL, "release-manager"), "approve"),
    Command("rollback", "running", lambda c: rollout.rollback(c, MODEL, REASON, key=OPERATOR), "rollback"),
    Command("abort", "running", lambda c: rollout.abort(c, MODEL, REASON, key=OPERATOR), "abort"),
    Command("reinstate", "rolled_back",
            lambda c: reinstate_service.reinstate(c, MODEL, "2.1.0", REASON, "release-manager"), "reinstate"),
]


@dataclass(frozen=True)
class Seen:
    record: dict[str, Any] | None
    entries: list[audit.AuditEntry]
    published: int


def _seen(ws: Path) -> Seen:
    ctx = Context.open(ws)
    record = rs.load(ctx.store, MODEL)
    doc = current_policy(ctx, ctx.repository(), MODEL)
    raw = None if record is None else record.to_json()
    return Seen(raw, audit.entries(ctx.store, MODEL), 0 if doc is None else int(doc["policy_version"]))


def _crashing(ws: Path, hours: float, writes_allowed: int | None) -> tuple[Context, CrashingStore]:
    ctx = ctx_at(ws, hours)
    store = CrashingStore(ctx.store, writes_allowed)
    return Context(ctx.workspace, ctx.trust, store, ctx.signers, ctx.now), store


def _happened_once(ws: Path, before: Seen, command: Command) -> None:
    after = _seen(ws)
    new = after.entries[len(before.entries):]
    assert [e.action for e in new] == [command.action]
    assert after.entries[: len(before.entries)] == before.entries  # append-only
    assert after.record is not None
    assert new[0].details["revision"] == after.record["revision"]
    assert after.published >= after.record["policy_version"]


@pytest.fixture(params=["dir", "s3"])
def store_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if request.param == "s3":
        return "s3", request.getfixturevalue("s3_endpoint")
    return "dir", None


@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_crash_before_every_write_then_recover(command: Command, store_kind: tuple[str, str | None],
                                               tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    kind, endpoint = store_kind
    template = prepared_template(str(tmp_path_factory.getbasetemp() / "crash-templates"), kind, endpoint, command.setup)

    probe_ws = clone_workspace(template, tmp_path / "probe", endpoint)
    probe_ctx, probe_store = _crashing(probe_ws, command.hours, None)
    command.run(probe_ctx)
    writes = list(probe_store.writes)
    assert writes, "the command writes nothing?"
    assert any(k.startswith(f"audit/{MODEL}/") for k in writes)
    _happened_once(probe_ws, _seen(clone_workspace(template, tmp_path / "probe-before", endpoint)), command)

    outcomes = []
    for k in range(len(writes)):
        ws = clone_workspace(template, tmp_path / f"crash-{k}", endpoint)
        before = _seen(ws)
        ctx, _ = _crashing(ws, command.hours, k)
        with pytest.raises(SimulatedCrash):
            command.run(ctx)
        journal.recover(ctx_at(ws, command.hours), MODEL)  # what the next command does first
        verify_audit(ws)  # chain, signatures, and state + policy agree with the log
        after = _seen(ws)
        if len(after.entries) == len(before.entries):
            assert after.record == before.record and after.published == before.published, writes[k]
            command.run(ctx_at(ws, command.hours))  # it did not happen: running it again works, once
            outcomes.append("retried")
        else:
            outcomes.append("recovered")
        _happened_once(ws, before, command)
        verify_audit(ws)
    # before the audit entry nothing happened; from the entry on, recovery finishes it
    first_entry = next(i for i, key in enumerate(writes) if key.startswith(f"audit/{MODEL}/"))
    assert outcomes == ["retried"] * (first_entry + 1) + ["recovered"] * (len(writes) - first_entry - 1), (
        writes, outcomes)
