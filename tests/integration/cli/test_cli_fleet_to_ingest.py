"""`otactl telemetry serve --devices` enrols the fleet from what `otactl fleet list -o json` writes (issue 11)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fixtures.repo import cli_env, ok, otactl_argv, run_otactl

from otactl.fleet.entitlements import Signers
from otactl.telemetry import series
from otactl.telemetry.devices import FLEET_LIST_SCHEMA, load_registry

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def fleet_listing(workspace: Path) -> Path:
    ok(run_otactl("fleet", "import", str(ROOT / "examples/fleet/inventory.csv"), cwd=workspace))
    listing = workspace / "fleet.json"
    listing.write_text(ok(run_otactl("fleet", "list", "-o", "json", cwd=workspace)).stdout)
    return listing


def test_the_ingest_enrols_a_fleet_listing(workspace: Path) -> None:
    listing = fleet_listing(workspace)
    doc = json.loads(listing.read_text())
    assert doc["schema"] == FLEET_LIST_SCHEMA  # the shape the registry accepts is the one the CLI writes
    signers_file = workspace / "signing" / "entitlement-signers.json"  # the records carry entitlements (0406)
    registry = load_registry(listing, Signers.from_bytes(signers_file.read_bytes(), str(signers_file)))
    assert {d.device_id: (d.model, d.variant, d.region, d.public_key) for d in registry} == {
        d["device_id"]: (d["model"], d["variant"], d["region"], d["public_key"]) for d in doc["devices"]}

    proc = subprocess.Popen([*otactl_argv(), "telemetry", "serve", "--devices", str(listing), "--db",
                             str(workspace / "t.db"), "--port", "0", "--entitlement-signers", str(signers_file)],
                            cwd=workspace, env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("otactl telemetry ingest on http://"), first + proc.stderr.read()
        url = first.split(" on ", 1)[1].split(" ", 1)[0]
        metrics = ""
        for _ in range(200):  # until uvicorn answers (the line comes as soon as the socket is bound)
            try:
                metrics = httpx.get(f"{url}/metrics", timeout=5).text
                break
            except httpx.TransportError:
                time.sleep(0.05)
        enrolled = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith(series.ENROLLED + "{"))
        assert enrolled == len(doc["devices"]) == 12, metrics[:2000]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


def test_another_document_is_one_error_naming_the_file_and_field(workspace: Path) -> None:
    listing = fleet_listing(workspace)
    doc = json.loads(listing.read_text())
    doc["schema"] = "otactl/releases/1"
    listing.write_text(json.dumps(doc))
    result = run_otactl("telemetry", "serve", "--devices", str(listing), "--db", str(workspace / "t.db"),
                        "--port", "0", cwd=workspace)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"otactl: error: {listing}: schema: 'otactl/releases/1' is not '{FLEET_LIST_SCHEMA}'; the file must be a "
        "list of device records, or a fleet listing from `otactl fleet list -o json` "
        f"(schema {FLEET_LIST_SCHEMA}, devices: [...])"]
    assert not (workspace / "t.db").exists()
