"""`otactl telemetry` as a user runs it: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from otactl.telemetry.checks import Verified
from otactl.telemetry.counters import LATE_AGES
from otactl.telemetry.report import Event, parse_payload
from otactl.telemetry.store import ReportStore


def otactl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("OTACTL_TELEMETRY_SOURCE", None)
    return subprocess.run(
        [sys.executable, "-m", "otactl.cli.main", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture
def db(fleet, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    store = ReportStore(tmp_path / "telemetry.db")
    envelopes = []
    for device in ("trk-0001", "trk-0002", "trk-0004"):
        r = fleet.reporter(device)
        envelopes += [r.event("2.1.0", "canary", Event.COMMITTED, fleet.now),
                      r.health("2.1.0", "canary", fleet.now, 5400, crashes=int(device == "trk-0002"))]  # fmt: skip
    store.ingest([Verified(parse_payload(e.payload), e) for e in envelopes], fleet.now)
    store.close()
    return tmp_path / "telemetry.db"


def test_query_json_is_versioned(db: Path) -> None:
    done = otactl("telemetry", "query", "t9-engine", "2.1.0", "--ring", "canary", "--source", f"sqlite:{db}",
                  "--output", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["schema"] == "otactl/telemetry-counts/2"
    assert doc["rings"] == ["canary"]
    assert [(s["variant"], s["region"], s["devices"]) for s in doc["strata"]] == [
        ("hp-300", "eu", 2),
        ("hp-400", "us", 1),
    ]
    assert doc["total"] == {
        "reports": 6, "installs": 3, "install_failures": 0, "crashes": 1, "device_hours": 4.5, "crash_hours": 1.0,
        "periods": 0, "period_crashes": 0, "period_crash_sq": 0, "devices": 3,
        "late": [{"age_h": age, "device_hours": 0.0, "crashes": 0, "crash_hours": 0.0, "aged_devices": 0}
                 for age in LATE_AGES],
    }  # fmt: skip


def test_query_table(db: Path) -> None:
    done = otactl("telemetry", "query", "t9-engine", "2.1.0", "--source", f"sqlite:{db}")
    assert done.returncode == 0, done.stderr
    assert "t9-engine/hp-300/eu" in done.stdout and "total" in done.stdout
    assert "4.5" in done.stdout and "1.5" in done.stdout  # device-hours, crash-hours
    # piped, a table's title is a diagnostic on stderr (decision 1101)
    assert "after an age on the image" in done.stderr and "72 h" in done.stdout


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ERRORS = {
    "missing database": (["--source", "sqlite:/nonexistent/t.db"], 1, "is unavailable: telemetry database"),
    "unknown source kind": (["--source", "influx:x"], 2, "unknown kind 'influx'"),
    "prometheus not a URL": (["--source", "prometheus:localhost:9090"], 2, "must start with http"),
    "prometheus unreachable": (["--source", f"prometheus:http://127.0.0.1:{closed_port()}"], 1, "is unreachable"),
    "password redacted": (["--source", f"prometheus:http://u:hunter2@127.0.0.1:{closed_port()}"], 1, "***@"),
    "bad since": (["--since", "yesterday"], 2, "--since 'yesterday': expected an RFC 3339 time"),
    "naive until": (["--until", "2026-11-27T19:00:00"], 2, "with a zone"),
}  # fmt: skip


@pytest.mark.parametrize("args, code, message", ERRORS.values(), ids=ERRORS.keys())
def test_query_errors_are_one_line(args: list[str], code: int, message: str) -> None:
    done = otactl("telemetry", "query", "t9-engine", "2.1.0", *args)
    assert done.returncode == code
    assert message in done.stderr
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
    assert done.stderr.startswith("otactl: error:") and done.stderr.count("\n") == 1


def test_serve_refuses_a_bad_devices_file(tmp_path: Path) -> None:
    (tmp_path / "devices.yaml").write_text("- {device_id: trk-1, model: m}\n")
    done = otactl("telemetry", "serve", "--db", str(tmp_path / "t.db"), "--devices", str(tmp_path / "devices.yaml"))
    assert done.returncode == 2
    assert f"{tmp_path / 'devices.yaml'}:1: [0].variant: missing field" in done.stderr
    assert not (tmp_path / "t.db").exists()


def test_serve_on_a_busy_port_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "devices.json").write_text("[]")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = otactl("telemetry", "serve", "--db", str(tmp_path / "t.db"), "--devices", str(tmp_path / "devices.json"),
                      "--port", str(port))  # fmt: skip
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


BAD_SHARDING = {
    "serve: index past the end": (["serve", "--devices", "devices.json", "--shard", "3/3"],
                                  "--shard '3/3': shard 3 does not exist among 3 (0 to 2)"),
    "serve: no shards": (["serve", "--devices", "devices.json", "--shard", "1/0"],
                         "--shard '1/0': the shard count must be 1 to 1024, not 0"),
    "serve: not I/N": (["serve", "--devices", "devices.json", "--shard", "first"], "expected I/N"),
    "route: not a URL": (["route", "--shard", "10.0.0.1:8787"], "expected a shard's base URL like http://"),
    "route: a shard twice": (["route", "--shard", "http://127.0.0.1:1", "--shard", "http://127.0.0.1:1/"],
                             "given twice"),
}  # fmt: skip


@pytest.mark.parametrize("args, message", BAD_SHARDING.values(), ids=BAD_SHARDING.keys())
def test_bad_shard_options_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "devices.json").write_text("[]")
    args = [str(tmp_path / a) if a == "devices.json" else a for a in args]
    done = otactl("telemetry", *args, "--port", "0", *(["--db", str(tmp_path / "t.db")] if args[0] == "serve" else []))
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert done.stderr.startswith("otactl: error:") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr and not (tmp_path / "t.db").exists()


def test_serve_refuses_a_database_of_another_shard(tmp_path: Path) -> None:
    (tmp_path / "devices.json").write_text("[]")
    store = ReportStore(tmp_path / "shard0.db")
    store.claim_shard("0/2")
    store.close()
    done = otactl("telemetry", "serve", "--db", str(tmp_path / "shard0.db"),
                  "--devices", str(tmp_path / "devices.json"), "--shard", "1/2", "--port", "0")  # fmt: skip
    assert done.returncode == 1
    assert "belongs to shard 0/2, not --shard 1/2" in done.stderr and "Traceback" not in done.stderr
