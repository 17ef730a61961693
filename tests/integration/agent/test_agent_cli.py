"""`otactl agent provision|run|status` as a device runs them: the real CLI against the repository
and the ingest started on 127.0.0.1 by the test."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from agent_it_fixtures import PASSPHRASE, Served
from fixtures.repo import assert_one_error_line, cli_env, ok, run_otactl

from otactl.fleet.records import load_inventory
from otactl.sim.ingest import running_ingest

pytestmark = pytest.mark.integration


def test_provision_import_run_and_status(served: Served, tmp_path: Path) -> None:
    env = cli_env(PASSPHRASE)
    device = tmp_path / "device"
    out = ok(run_otactl("agent", "provision", "--device-dir", str(device), "--device-id", "t9-7000",
                        "--model", "t9-engine", "--hardware-revision", "revA", "--root", str(served.root()),
                        "--output", "json", cwd=tmp_path, env=env))
    public_key = json.loads(out.stdout)["public_key"]
    assert stat.S_IMODE((device / "device.key").stat().st_mode) == 0o600
    assert public_key not in (device / "device.key").read_text()  # the file holds the private seed

    inventory = tmp_path / "inventory.csv"
    inventory.write_text("device_id,model,hardware_revision,variant,region,tags,public_key\n"
                         f"t9-7000,t9-engine,revA,hp-500,na,lab,{public_key}\n")
    ok(run_otactl("fleet", "import", str(inventory), "-w", str(served.ws.path), cwd=tmp_path, env=env))
    served.publish({"model": "t9-engine", "rollout_id": "cli", "salt": "cli", "baseline": "2.0.0",
                    "rings": [{"name": "lab", "selector": {"tags": ["lab"]}, "release": "2.1.0"}]})

    with running_ingest(tmp_path / "t.db", load_inventory(inventory)) as ingest:
        run = ok(run_otactl("agent", "run", "--device-dir", str(device), "--repo-url", served.url,
                            "--ingest-url", ingest.url, "--once", "--output", "json", cwd=tmp_path, env=env))
        doc = json.loads(run.stdout)
        assert (doc["outcome"], doc["active"], doc["ring"], doc["reports_pending"]) == ("committed", "2.1.0", "lab", 0)
        assert "committed 2.1.0" in run.stderr
        assert ingest.store.report_count() == 6

    status = json.loads(ok(run_otactl("agent", "status", "--device-dir", str(device), "-o", "json",
                                      cwd=tmp_path, env=env)).stdout)
    assert status["slots"]["a"]["version"] == "2.1.0" and status["slots"]["a"]["variant"] == "hp-500"
    assert (status["active_slot"], status["security_floor"], status["reports"]["accepted"]) == ("a", 2, 6)


def test_run_against_an_unreachable_repository_exits_1(served: Served, tmp_path: Path) -> None:
    device = tmp_path / "device"
    ok(run_otactl("agent", "provision", "--device-dir", str(device), "--device-id", "t9-7001", "--model",
                  "t9-engine", "--hardware-revision", "revA", "--root", str(served.root()), cwd=tmp_path))
    result = run_otactl("agent", "run", "--device-dir", str(device), "--repo-url", "http://127.0.0.1:9",
                        "--once", cwd=tmp_path)
    assert result.returncode == 1 and "unreachable" in result.stderr and "Traceback" not in result.stderr


def test_run_on_a_directory_that_is_no_device(tmp_path: Path) -> None:
    result = run_otactl("agent", "run", "--device-dir", str(tmp_path), "--repo-url", "http://127.0.0.1:9",
                        "--once", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_error_line(result, "not a device directory")


def test_provision_refuses_to_overwrite_a_device(served: Served, tmp_path: Path) -> None:
    args = ("agent", "provision", "--device-dir", str(tmp_path / "d"), "--device-id", "t9-7002", "--model",
            "t9-engine", "--hardware-revision", "revA", "--root", str(served.root()))
    ok(run_otactl(*args, cwd=tmp_path))
    key = (tmp_path / "d" / "device.key").read_bytes()
    result = run_otactl(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_error_line(result, "already holds a provisioned device")
    assert (tmp_path / "d" / "device.key").read_bytes() == key
