"""The rollout controller against a real workspace and store, with in-memory telemetry."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from app_parts import MODEL, OPERATOR, ROOT, ctx_at, plan_file, policy, snapshot, telemetry, verify_audit

from otactl.app import release, rollout
from otactl.app import rollout_state as rs
from otactl.app.context import Context
from otactl.audit import log as audit
from otactl.errors import (
    ConflictError,
    ExitCode,
    NotFoundError,
    TelemetrySourceError,
    UsageError,
    VerificationError,
)
from otactl.release.manifest import load_manifest
from otactl.telemetry.counters import DISPERSION_LOOKBACK_H
from otactl.telemetry.source import CohortQuery, MemorySource, TelemetrySource, TelemetryUnavailable


def test_start_publishes_first_ring_and_refuses_a_second_rollout(ws: Path) -> None:
    result = rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    assert (result.status, result.ring) == ("running", "canary")
    doc = policy(ws)
    assert [r["release"] for r in doc["rings"]] == ["2.1.0", "2.0.0"]
    assert doc["baseline"] == "2.0.0" and doc["rollout_id"] == result.rollout_id
    with pytest.raises(UsageError, match="already has an active rollout"):
        rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))


def test_start_refuses_a_release_that_is_not_approved(ws: Path) -> None:
    ctx = Context.open(ws)
    m = load_manifest(ROOT / "manifests" / "t9-engine-2.1.1-config.yaml")
    release.build(ctx, m)  # staged, CI signature only
    with pytest.raises(UsageError, match="not published and approved"):
        rollout.start(ctx_at(ws), MODEL, "2.1.1", plan_file(ws))
    assert not Context.open(ws).store.exists("rollouts-state/t9-engine.json")


def test_good_release_walks_to_completion(ws: Path) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    first = rollout.step(ctx_at(ws, 24), MODEL, telemetry(0.002))
    assert first.action == "advance" and first.ring == "all"
    assert [r["release"] for r in policy(ws)["rings"]] == ["2.1.0", "2.1.0"]
    done = rollout.step(ctx_at(ws, 48), MODEL, telemetry(0.002))
    assert done.status == "complete" and rollout.exit_code_for(done) == ExitCode.OK
    report = verify_audit(ws)
    assert report.entries == 3  # start, advance, complete


def test_bad_release_is_rolled_back_and_marked_bad(ws: Path) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    result = rollout.step(ctx_at(ws, 24), MODEL, telemetry(0.02))
    assert result.status == "rolled_back" and rollout.exit_code_for(result) == ExitCode.GATE_FAILED
    doc = policy(ws)
    assert [r["release"] for r in doc["rings"]] == ["2.0.0", "2.0.0"]
    assert doc["bad_releases"] == ["2.1.0"] and doc["policy_version"] == 2
    assert any("crash_rate" in r for r in result.reasons)
    # stepping again is idempotent: nothing new published or logged
    again = rollout.step(ctx_at(ws, 25), MODEL, telemetry(0.02))
    assert again.status == "rolled_back" and policy(ws)["policy_version"] == 2
    assert verify_audit(ws).entries == 2


class Unreachable(TelemetrySource):
    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on  # None: every query; else only queries of this release

    def cohort_counts(self, query: CohortQuery) -> dict:
        if self.fail_on is None or query.release == self.fail_on:
            raise TelemetryUnavailable("Prometheus at http://127.0.0.1:9 is unreachable: connection refused")
        return telemetry(0.002).cohort_counts(query)


@pytest.mark.parametrize("source", [Unreachable(), Unreachable(fail_on="2.0.0")], ids=["every-query", "control-only"])
def test_unreadable_telemetry_is_an_error_and_records_nothing(ws: Path, source: TelemetrySource) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    before = snapshot(ws)
    for hours in (24, 240):
        with pytest.raises(TelemetrySourceError) as caught:
            rollout.step(ctx_at(ws, hours), MODEL, source)
        assert caught.value.exit_code == ExitCode.ERROR
        assert str(caught.value) == ("telemetry source unavailable: Prometheus at http://127.0.0.1:9 is unreachable: "
                                     "connection refused; nothing was recorded, the rollout is unchanged")
    assert snapshot(ws) == before
    assert policy(ws)["policy_version"] == 1 and policy(ws)["bad_releases"] == []
    assert verify_audit(ws).entries == 1  # start only


def test_a_paused_rollout_reads_no_telemetry(ws: Path) -> None:
    """A paused or finished rollout reads no telemetry, so an unreadable source does not matter."""
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    rollout.pause(ctx_at(ws, 1), MODEL, "investigating", key=OPERATOR)
    assert rollout.step(ctx_at(ws, 2), MODEL, Unreachable()).status == "paused"


def test_observation_carries_the_baselines_dispersion_window(ws: Path) -> None:
    """The baseline's dispersion window opens DISPERSION_LOOKBACK_H before the rollout started,
    not before now: 100 h in, it still holds the ring's devices' last periods before they
    installed (decision 0110)."""
    started = ctx_at(ws).now
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    seen: list[CohortQuery] = []

    class Recording(MemorySource):
        def cohort_counts(self, query: CohortQuery) -> dict:
            seen.append(query)
            return telemetry(0.002).cohort_counts(query)

    ctx = ctx_at(ws, 100)
    record = rs.require(ctx.store, MODEL)
    obs = rollout.observe(record, Recording(), ctx.now)
    assert not [q for q in seen if q.since == ctx.now - timedelta(hours=DISPERSION_LOOKBACK_H)]
    lookback = [q for q in seen if q.since == started - timedelta(hours=DISPERSION_LOOKBACK_H)]
    assert [(q.release, q.rings, q.until) for q in lookback] == [("2.0.0", None, ctx.now)]
    assert obs.dispersion is not None and sum(c.periods for c in obs.dispersion.values()) > 0


def test_no_data_holds(ws: Path) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    result = rollout.step(ctx_at(ws, 24), MODEL, MemorySource())
    assert result.action == "hold" and result.status == "running"


def test_ring_waits_for_approval_then_continues(ws: Path) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws, approvals=True))
    waiting = rollout.step(ctx_at(ws, 24), MODEL, telemetry(0.002))
    assert waiting.action == "await_approval" and rollout.exit_code_for(waiting) == ExitCode.WAITING
    with pytest.raises(UsageError, match="may not approve"):
        rollout.approve(ctx_at(ws, 25), MODEL, "ci")
    rollout.approve(ctx_at(ws, 25), MODEL, "release-manager")
    with pytest.raises(UsageError, match="already approved"):
        rollout.approve(ctx_at(ws, 25), MODEL, "release-manager")
    advanced = rollout.step(ctx_at(ws, 26), MODEL, telemetry(0.002))
    assert advanced.action == "advance" and advanced.ring == "all"
    entries = audit.entries(Context.open(ws).store, MODEL)
    approval = next(e for e in entries if e.action == "approve")
    assert approval.actor == "release-manager" and approval.details["signature"]


def test_pause_holds_and_resume_continues(ws: Path) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    rollout.pause(ctx_at(ws, 1), MODEL, "field report under investigation", key=OPERATOR)
    paused = rollout.step(ctx_at(ws, 24), MODEL, telemetry(0.002))
    assert paused.status == "paused" and policy(ws)["policy_version"] == 1
    with pytest.raises(UsageError, match="cannot"):
        rollout.pause(ctx_at(ws, 2), MODEL, "again", key=OPERATOR)
    rollout.resume(ctx_at(ws, 25), MODEL, "cleared", key=OPERATOR)
    assert rollout.step(ctx_at(ws, 26), MODEL, telemetry(0.002)).action == "advance"


def test_manual_rollback_points_every_ring_at_the_baseline(ws: Path) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    rollout.rollback(ctx_at(ws, 1), MODEL, "operator decision", key=OPERATOR)
    doc = policy(ws)
    assert {r["release"] for r in doc["rings"]} == {"2.0.0"} and "2.1.0" in doc["bad_releases"]
    with pytest.raises(UsageError):
        rollout.resume(ctx_at(ws, 2), MODEL, "no", key=OPERATOR)


def test_concurrent_steps_one_wins_one_conflicts(ws: Path) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    barrier = threading.Barrier(2)

    class Synchronised(MemorySource):
        def cohort_counts(self, query: CohortQuery) -> dict:
            if query.release == "2.1.0":
                barrier.wait(timeout=30)  # both steps have read the same state
            return telemetry(0.002).cohort_counts(query)

    results: list[object] = []

    def run() -> None:
        try:
            results.append(rollout.step(ctx_at(ws, 24), MODEL, Synchronised()))
        except ConflictError as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(type(r).__name__ for r in results) == ["ConflictError", "StepResult"]
    assert policy(ws)["policy_version"] == 2  # published exactly once
    assert verify_audit(ws).entries == 2


def test_tampered_audit_entry_is_detected(ws: Path) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    rollout.step(ctx_at(ws, 24), MODEL, telemetry(0.02))
    ctx = Context.open(ws)
    key = next(ctx.store.list(f"audit/{MODEL}/"))
    doc = json.loads(ctx.store.get(key))
    doc["details"]["release"] = "9.9.9"
    ctx.store.put(key, json.dumps(doc).encode())
    with pytest.raises(VerificationError, match="entry 1: bad signature"):
        verify_audit(ws)


def test_plan_is_deterministic(ws: Path) -> None:
    a = rollout.plan(Context.open(ws), MODEL, "2.1.0", plan_file(ws)).to_json()
    b = rollout.plan(Context.open(ws), MODEL, "2.1.0", plan_file(ws)).to_json()
    assert a == b and sum(r["devices"] for r in a["rings"]) == 12


# ------------------------------------------------------------------ people sign their own actions
@pytest.mark.parametrize("action", ["pause", "rollback", "abort"])
def test_a_persons_action_without_a_key_is_refused_and_writes_nothing(ws: Path, action: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTACTL_ACTOR", raising=False)
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    before = snapshot(ws)
    with pytest.raises(UsageError, match="say who is acting") as caught:
        getattr(rollout, action)(ctx_at(ws, 1), MODEL, "no name given")
    assert caught.value.exit_code == ExitCode.USAGE and snapshot(ws) == before
    with pytest.raises(UsageError, match="key 'mallory' is not in the trust configuration"):
        getattr(rollout, action)(ctx_at(ws, 1), MODEL, "unknown key", key="mallory")
    assert snapshot(ws) == before


def test_the_actor_signs_the_entry_and_an_abort_is_an_abort(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    monkeypatch.setenv("OTACTL_ACTOR", OPERATOR)
    rollout.pause(ctx_at(ws, 1), MODEL, "looking at field reports")
    monkeypatch.delenv("OTACTL_ACTOR")
    cfg = ws / "otactl.yaml"
    cfg.write_text(cfg.read_text() + f"actor: {OPERATOR}\n")  # the workspace's configured actor
    result = rollout.abort(ctx_at(ws, 2), MODEL, "wrong plan")
    assert result.status == "aborted" and result.action == "abort"
    trust = ctx_at(ws).trust
    start, pause, abort = audit.entries(ctx_at(ws).store, MODEL)
    assert (start.actor, start.keyid) == ("online", trust.keys["online"].keyid)  # the controller's own step
    for entry, action in ((pause, "pause"), (abort, "abort")):
        assert (entry.action, entry.actor, entry.keyid) == (action, OPERATOR, trust.keys[OPERATOR].keyid)
    assert policy(ws)["bad_releases"] == []  # an abort does not mark the release bad
    assert {r["release"] for r in policy(ws)["rings"]} == {"2.0.0"}
    verify_audit(ws)
    again = rollout.start(ctx_at(ws, 3), MODEL, "2.1.0", plan_file(ws))  # so it can be started again
    assert again.status == "running"


def test_start_refuses_a_release_the_signed_withdrawals_list_names(ws: Path) -> None:
    """Even when the unsigned release state says "published" (tampered, or a crash before it was marked)."""
    from otactl.app import withdraw

    withdraw.withdraw(ctx_at(ws), "2.1.0", "bricks revA units on cold boot", "release-manager")
    store = ctx_at(ws).store
    key = release.state_key(MODEL, "2.1.0")
    doc = json.loads(store.get(key))
    doc["status"] = "published"
    doc.pop("withdrawn", None)
    store.put(key, json.dumps(doc).encode())
    plan = plan_file(ws)
    before = snapshot(ws)
    with pytest.raises(UsageError, match=re.escape("release t9-engine/2.1.0 is withdrawn by the release managers")):
        rollout.start(ctx_at(ws), MODEL, "2.1.0", plan)
    assert snapshot(ws) == before


# ------------------------------------------------------- status, dry run, rollouts by id, plan warnings
def test_status_says_what_the_rollout_waits_for_and_accepts_a_rollout_id(ws: Path) -> None:
    started = rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws, approvals=True))
    fresh = rollout.status(ctx_at(ws), MODEL)
    assert any("no step has evaluated this ring yet" in r for r in fresh.reasons)
    rollout.step(ctx_at(ws, 1), MODEL, MemorySource())  # no data: a hold, its reasons kept
    held = rollout.status(ctx_at(ws, 1), MODEL)
    assert held.action == "hold" and any(r.startswith("wait: ") for r in held.reasons)
    rollout.step(ctx_at(ws, 24), MODEL, telemetry(0.002))
    waiting = rollout.status(ctx_at(ws, 24), started.rollout_id)  # by id
    assert waiting.action == "await_approval" and waiting.rollout_id == started.rollout_id
    assert waiting.reasons[-1] == "waiting for 1 more approval(s) from release-manager (have: none)"
    rollout.abort(ctx_at(ws, 25), MODEL, "wrong plan", key=OPERATOR)
    second = rollout.start(ctx_at(ws, 26), MODEL, "2.1.0", plan_file(ws))
    past = rollout.status(ctx_at(ws, 26), started.rollout_id)  # an archived rollout, by id
    assert (past.status, past.action, past.rollout_id) == ("aborted", "abort", started.rollout_id)
    assert rollout.status(ctx_at(ws, 26), MODEL).rollout_id == second.rollout_id
    with pytest.raises(NotFoundError, match="no rollout with that id"):
        rollout.status(ctx_at(ws), "t9-engine-9.9.9-000000")
    only = rollout.report(ctx_at(ws, 26), started.rollout_id, "md")
    assert started.rollout_id in only and second.rollout_id not in only
    both = rollout.report(ctx_at(ws, 26), MODEL, "md")
    assert started.rollout_id in both and second.rollout_id in both


def test_dry_run_shows_the_decision_and_writes_nothing(ws: Path) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    before = snapshot(ws)
    would = rollout.dry_run(ctx_at(ws, 24), MODEL, telemetry(0.02))
    assert (would.action, would.status, would.dry_run) == ("rollback", "running", True)
    assert would.verdict is not None and would.verdict["phase"] == "fail"
    assert snapshot(ws) == before
    assert rollout.step(ctx_at(ws, 24), MODEL, telemetry(0.02)).action == "rollback"  # what it said


def test_plan_and_start_warn_about_rings_that_can_never_pass(ws: Path) -> None:
    path = ws / "canary" / "never.yaml"
    path.write_text(plan_file(ws).read_text().replace("min_reporting_devices: 10", "min_reporting_devices: 500"))
    report = rollout.plan(ctx_at(ws), MODEL, "2.1.0", path)
    assert any("ring 'canary' holds" in w and "needs 500 reporting: it can never pass" in w for w in report.warnings)
    started = rollout.start(ctx_at(ws), MODEL, "2.1.0", path)
    assert any(r.startswith("warning: ring 'canary' holds") for r in started.reasons)
