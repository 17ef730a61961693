"""Two operators step one rollout at once against the S3 store (a real S3-compatible server over
HTTP): one succeeds, the other gets a clear conflict, and nothing is published twice."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from otactl.app import fleet, release, rollout
from otactl.app.context import Context, utcnow
from otactl.app.init import init_workspace
from otactl.app.policy import current_policy
from otactl.audit import log as audit
from otactl.errors import ConflictError
from otactl.fleet.records import load_inventory
from otactl.release.manifest import load_manifest
from otactl.telemetry.source import CohortCounts, CohortQuery, MemorySource, StratumKey

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
MODEL = "t9-engine"


def healthy() -> MemorySource:
    src = MemorySource()
    for variant in ("hp-300", "hp-400", "hp-500"):
        key = StratumKey(MODEL, variant, "eu")
        src.set(MODEL, "2.1.0", "canary", key, CohortCounts(
            reports=4000, installs=40, crashes=40, device_hours=4000.0, crash_hours=38.0,
            devices=40))  # enough crashes to rule out a 2x regression: power before PASS
        src.set(MODEL, "2.0.0", "all", key, CohortCounts(
            reports=16000, installs=160, install_failures=1, crashes=160, device_hours=16000.0,
            crash_hours=150.0, devices=160))
    return src


def test_two_concurrent_steps_on_s3(tmp_path: Path, s3_endpoint: str, s3_bucket: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", "s3-test-passphrase")
    ws = tmp_path / "ws"
    init_workspace(ws, store_url=f"s3://{s3_bucket}/fleet", endpoint_url=s3_endpoint,
                   release_managers=["release-manager"], approvals=1, bin_bit_length=2, now=utcnow(),
                   shared_passphrase=True)
    ctx = Context.open(ws)
    assert ctx.store.url.startswith("s3://")
    for name in ("t9-engine-2.0.0.yaml", "t9-engine-2.1.0.yaml"):
        m = load_manifest(ROOT / "manifests" / name)
        release.build(ctx, m)
        release.approve(ctx, m.version, "release-manager")
        release.publish(ctx, m.version)
    fleet.import_devices(ctx, load_inventory(ROOT / "examples/fleet/inventory.csv"), "inventory")
    plan = ws / "canary" / "two-rings.yaml"
    plan.write_text((ROOT / "tests/integration/rollout/plans/two-rings.yaml").read_text())
    rollout.start(Context.open(ws), MODEL, "2.1.0", plan)

    barrier = threading.Barrier(2)

    class Synchronised(MemorySource):
        def cohort_counts(self, query: CohortQuery) -> dict:
            if query.release == "2.1.0":
                barrier.wait(timeout=60)  # both operators have read the same state
            return healthy().cohort_counts(query)

    results: list[object] = []

    def operator() -> None:
        c = Context.open(ws)
        c.now = c.now + timedelta(hours=24)
        try:
            results.append(rollout.step(c, MODEL, Synchronised()))
        except ConflictError as exc:
            results.append(exc)

    threads = [threading.Thread(target=operator) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [r for r in results if isinstance(r, rollout.StepResult)]
    losers = [r for r in results if isinstance(r, ConflictError)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert winners[0].action == "advance"
    assert "changed it first" in str(losers[0]) and "nothing was recorded" in str(losers[0])
    after = Context.open(ws)
    doc = current_policy(after, after.repository(), MODEL)
    assert doc is not None and doc["policy_version"] == 2  # published once, by the winner
    assert [e.action for e in audit.entries(after.store, MODEL)] == ["start", "advance"]
