"""`otactl report fleet` through the real console script: a workspace made by the CLI (init, two releases
built, approved and published, the example fleet imported), a telemetry database holding device reports
signed in-process with each device's key and admitted by the ingest's own checks, then the report as
JSON and as an HTML file; and the same report when the telemetry database is missing (exit 0, the gap said).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nacl.signing
import pytest
from fixtures import charts
from fixtures.kdf import reseal_keys
from fixtures.repo import PASSPHRASE, init_workspace, ok, run_otactl

from otactl.fleet.records import load_inventory
from otactl.telemetry.checks import ReportVerifier, Verified
from otactl.telemetry.devices import DeviceRegistry, EnrolledDevice
from otactl.telemetry.report import Event
from otactl.telemetry.reporter import DeviceReporter
from otactl.telemetry.store import ReportStore

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
MODEL = "t9-engine"


def key_of(device_id: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"fleet-report:" + device_id.encode()).digest())


def example_fleet(dest: Path) -> Path:
    """examples/fleet/inventory.csv with each public key replaced by one whose private key the test holds."""
    with (ROOT / "examples/fleet/inventory.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["public_key"] = bytes(key_of(row["device_id"]).verify_key).hex()
    with dest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return dest


@pytest.fixture(scope="module")
def fleet_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = reseal_keys(init_workspace(tmp_path_factory.mktemp("fleet-report") / "ws"), PASSPHRASE)  # 0014
    for version in ("2.0.0", "2.1.0"):
        ok(run_otactl("release", "build", str(ROOT / "manifests" / f"{MODEL}-{version}.yaml"), cwd=ws))
        ok(run_otactl("release", "approve", version, "--key", "release-manager", cwd=ws))
        ok(run_otactl("release", "publish", version, cwd=ws))
    inventory = example_fleet(ws.parent / "inventory.csv")
    ok(run_otactl("fleet", "import", str(inventory), cwd=ws))
    _telemetry(ws / "telemetry.db", inventory)
    # after the devices enrolled: t9-0007's signed record changes, its reports still say hp-400
    ok(run_otactl("fleet", "set", "t9-0007", "--variant", "hp-500", cwd=ws))
    return ws


def _telemetry(db: Path, inventory: Path) -> None:
    """Signed reports, admitted by the ingest's checks (ReportVerifier) into its store (ReportStore)."""
    registry = DeviceRegistry(EnrolledDevice.from_record(r) for r in load_inventory(inventory))
    verifier = ReportVerifier(registry)
    reporters = {d.device_id: DeviceReporter(d, key_of(d.device_id)) for d in registry}
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    stale = now - timedelta(days=10)
    ring = None
    plan = [  # (device, what it sends, when)
        ("t9-0000", [lambda r, t: r.health("2.1.0", ring, t, 3600)], now),  # on target
        ("t9-0001", [lambda r, t: r.health("2.0.0", ring, t, 3600)], now),  # behind
        ("t9-0002", [lambda r, t: r.health("2.0.0", ring, t, 3600),
                     lambda r, t: r.event("2.1.0", ring, Event.INSTALLED, t)], now),  # updating
        ("t9-0003", [lambda r, t: r.health("2.0.0", ring, t, 3600),
                     lambda r, t: r.event("2.1.0", ring, Event.FAILED, t, "no image for revA")], now),  # failed
        ("t9-0004", [lambda r, t: r.event("2.1.0", ring, Event.REVERTED, t, "boot check failed"),
                     lambda r, t: r.health("2.0.0", ring, t, 600)], now),  # reverted
        ("t9-0005", [lambda r, t: r.health("2.1.0", ring, t, 3600)], stale),  # not seen for 7 days
        ("t9-0006", [lambda r, t: r.health("9.9.9", ring, t, 3600)], now),  # off target, not published
        ("t9-0007", [lambda r, t: r.health("2.1.0", ring, t, 3600)], now),  # on target, variant disagrees
    ]
    store = ReportStore(db)
    try:
        for device_id, sends, at in plan:
            admitted = [verifier.check(send(reporters[device_id], at).to_json(), at) for send in sends]
            assert all(isinstance(v, Verified) for v in admitted), admitted
            assert store.ingest([v for v in admitted if isinstance(v, Verified)], at) == [None] * len(sends)
    finally:
        store.close()


@pytest.fixture
def ws(fleet_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    dest = tmp_path / "ws"
    shutil.copytree(fleet_template, dest, symlinks=True)
    return dest.resolve()


EXPECTED = {"on_target": 2, "behind": 1, "updating": 1, "waiting": 0, "failed": 1, "reverted": 1, "off_target": 1,
            "no_target": 0, "not_seen": 1, "never_seen": 4, "unknown": 0}


def test_json_and_html_reports_from_signed_fleet_and_telemetry(ws: Path, tmp_path: Path) -> None:
    doc = json.loads(ok(run_otactl("report", "fleet", "-o", "json", cwd=ws)).stdout)
    assert doc["schema"] == "otactl/fleet-report/1"
    assert [s["ok"] for s in doc["sources"]] == [True, True]
    (model,) = doc["models"]
    assert (model["model"], model["devices"]) == (MODEL, 12)
    assert model["target"] == {"source": "newest-published", "release": "2.1.0", "detail": ""}
    assert model["compliance"] == EXPECTED
    releases = {x["release"]: x["devices"] for x in model["releases"]}
    assert releases == {"9.9.9": 1, "2.1.0": 3, "2.0.0": 4, "unknown": 4}  # a stale device counts its last release
    assert {(d["device_id"], d["field"], d["signed"], d["reported"]) for d in doc["disagreements"]} == {
        ("t9-0007", "variant", "hp-500", "hp-400"), ("t9-0006", "release", None, "9.9.9")}
    by_device = {d["device_id"]: d for d in doc["devices"]}
    assert by_device["t9-0005"]["status"] == "not_seen" and by_device["t9-0011"]["status"] == "never_seen"
    assert sum(g["devices"] for g in doc["groups"]) == 12

    out = tmp_path / "fleet.html"
    result = ok(run_otactl("report", "fleet", "-o", "html", "--out", str(out), cwd=ws))
    assert result.stdout == "" and str(out) in result.stderr
    page = out.read_text()
    assert "<script" not in page and "<link" not in page
    assert charts.external_references(page) == []
    (svg,) = charts.svgs(page)
    counts = [int(n) for n in charts.values(svg, "count")]
    assert dict(zip(charts.values(svg, "label"), counts, strict=True)) == releases


def test_the_model_filter_and_markdown(ws: Path) -> None:
    md = ok(run_otactl("report", "fleet", "--model", MODEL, "-o", "markdown", cwd=ws)).stdout
    assert md.startswith("# Fleet report") and f"| {MODEL} | never seen | 4 | 33.3% |" in md
    refused = run_otactl("report", "fleet", "--model", "no-such-model", cwd=ws)
    assert refused.returncode == 2 and "no device of the signed fleet" in refused.stderr


def test_a_missing_telemetry_database_is_stated_and_the_signed_fleet_still_listed(ws: Path) -> None:
    result = ok(run_otactl("report", "fleet", "--telemetry", "sqlite:missing.db", "-o", "json", cwd=ws))
    doc = json.loads(result.stdout)
    telemetry = doc["sources"][1]
    assert (telemetry["ok"], telemetry["detail"]) == (False, f"telemetry database {ws}/missing.db does not exist")
    assert doc["models"][0]["compliance"]["unknown"] == 12 and len(doc["devices"]) == 12
    assert "warning: telemetry not read" in result.stderr and "does not exist" in result.stderr


def test_during_a_rollout_each_device_is_held_to_what_the_policy_gives_its_ring(ws: Path) -> None:
    plan = ROOT / "tests/integration/rollout/plans/two-rings.yaml"
    ok(run_otactl("rollout", "start", MODEL, "2.1.0", "--plan", str(plan), cwd=ws))
    doc = json.loads(ok(run_otactl("report", "fleet", "-o", "json", cwd=ws)).stdout)
    target = doc["models"][0]["target"]
    assert target["source"] == "rollout-policy" and target["release"] is None
    assert "canary 2.1.0, all 2.0.0" in target["detail"] and "baseline 2.0.0" in target["detail"]
    rings = json.loads(ok(run_otactl("rollout", "plan", MODEL, "2.1.0", "--plan", str(plan), "-o", "json",
                                     cwd=ws)).stdout)["rings"]
    canary = [d["device_id"] for d in doc["devices"] if d["target"] == "2.1.0"]
    assert len(canary) == rings[0]["devices"]  # the ring `rollout plan` shows is the ring the report uses
    assert {d["target"] for d in doc["devices"]} <= {"2.0.0", "2.1.0"}
    for d in doc["devices"]:
        if d["status"] not in ("never_seen", "not_seen"):
            assert (d["release"] == d["target"]) == (d["status"] == "on_target"), d
