"""The rollout controller against a real workspace and store, with in-memory telemetry."""

from __future__ import annotations

import json
import os
import shutil
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from otactl.app import fleet, release, rollout
from otactl.app.context import Context, utcnow
from otactl.app.init import init_workspace
from otactl.app.policy import current_policy
from otactl.audit import log as audit
from otactl.errors import ConflictError, ExitCode, UsageError, VerificationError
from otactl.fleet.records import load_inventory
from otactl.keys.keyfile import public_key
from otactl.release.manifest import load_manifest
from otactl.telemetry.source import (
    CohortCounts,
    CohortQuery,
    MemorySource,
    StratumKey,
    TelemetrySource,
    TelemetryUnavailable,
)

ROOT = Path(__file__).resolve().parents[3]
MODEL = "t9-engine"
PLAN = """\
schema: otactl/canary-plan/1
name: test
strata: [model, variant]
rings:
  - name: canary
    selector: {percent: 30}
    soak_device_hours: 100
    min_reporting_devices: 10
    gates:
      - {metric: crash_rate, max_ratio: 1.3, missing: wait}
      - {metric: install_failure_rate, max_ratio: 1.3, limit: 0.2, missing: wait}
%(approvals)s
  - name: all
    selector: {percent: 100}
    soak_device_hours: 0
    min_reporting_devices: 1
    gates: []
"""
APPROVALS = """\
    approvals:
      required: 1
      keys: [release-manager]"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ["OTACTL_KEY_PASSPHRASE"] = "test-passphrase"
    ws = tmp_path_factory.mktemp("tpl") / "ws"
    init_workspace(ws, store_url=None, endpoint_url=None, release_managers=["release-manager"], approvals=1,
                   bin_bit_length=2, now=utcnow())
    ctx = Context.open(ws)
    for name in ("t9-engine-2.0.0.yaml", "t9-engine-2.1.0.yaml"):
        m = load_manifest(ROOT / "manifests" / name)
        release.build(ctx, m)
        release.approve(ctx, m.version, "release-manager")
        release.publish(ctx, m.version)
    fleet.import_devices(ctx, load_inventory(ROOT / "examples/fleet/inventory.csv"), "inventory")
    return ws


@pytest.fixture
def ws(template: Path, tmp_path: Path) -> Path:
    os.environ["OTACTL_KEY_PASSPHRASE"] = "test-passphrase"
    dest = tmp_path / "ws"
    shutil.copytree(template, dest)
    return dest


def plan_file(ws: Path, *, approvals: bool = False) -> Path:
    path = ws / "canary" / "test.yaml"
    path.write_text(PLAN % {"approvals": APPROVALS if approvals else ""})
    return path


def ctx_at(ws: Path, hours: float = 0) -> Context:
    ctx = Context.open(ws)
    ctx.now = ctx.now + timedelta(hours=hours)
    return ctx


def telemetry(new_crash_rate: float, old_crash_rate: float = 0.002, devices: int = 40) -> MemorySource:
    """Ring cohort on 2.1.0 and control on 2.0.0, with the given crash rates per device-hour."""
    src = MemorySource()
    for variant in ("hp-300", "hp-400", "hp-500"):
        key = StratumKey(MODEL, variant, "eu")
        hours = devices * 100.0
        src.set(MODEL, "2.1.0", "canary", key, CohortCounts(devices, devices, 0, round(new_crash_rate * hours),
                                                             min(devices, round(new_crash_rate * hours)), hours))
        src.set(MODEL, "2.0.0", "all", key, CohortCounts(devices * 4, devices * 4, 1,
                                                         round(old_crash_rate * hours * 4),
                                                         min(devices * 4, round(old_crash_rate * hours * 4)),
                                                         hours * 4))
    return src


def policy(ws: Path) -> dict:
    ctx = Context.open(ws)
    doc = current_policy(ctx, ctx.repository(), MODEL)
    assert doc is not None
    return doc


def verify_audit(ws: Path) -> audit.VerifyReport:
    ctx = Context.open(ws)

    def key_for(keyid: str):
        entry = ctx.trust.key_by_id(keyid)
        return None if entry is None else public_key(entry.public)

    return audit.verify(ctx.store, MODEL, key_for)


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
    def cohort_counts(self, query: CohortQuery) -> dict:
        raise TelemetryUnavailable("connection refused")


def test_unreachable_telemetry_waits_and_never_passes(ws: Path) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    for hours in (24, 240):
        result = rollout.step(ctx_at(ws, hours), MODEL, Unreachable())
        assert result.action == "hold" and rollout.exit_code_for(result) == ExitCode.WAITING
    assert policy(ws)["policy_version"] == 1


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
    rollout.pause(ctx_at(ws, 1), MODEL, "field report under investigation")
    paused = rollout.step(ctx_at(ws, 24), MODEL, telemetry(0.002))
    assert paused.status == "paused" and policy(ws)["policy_version"] == 1
    with pytest.raises(UsageError, match="cannot"):
        rollout.pause(ctx_at(ws, 2), MODEL, "again")
    rollout.resume(ctx_at(ws, 25), MODEL, "cleared")
    assert rollout.step(ctx_at(ws, 26), MODEL, telemetry(0.002)).action == "advance"


def test_manual_rollback_points_every_ring_at_the_baseline(ws: Path) -> None:
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan_file(ws))
    rollout.rollback(ctx_at(ws, 1), MODEL, "operator decision")
    doc = policy(ws)
    assert {r["release"] for r in doc["rings"]} == {"2.0.0"} and "2.1.0" in doc["bad_releases"]
    with pytest.raises(UsageError):
        rollout.resume(ctx_at(ws, 2), MODEL, "no")


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
