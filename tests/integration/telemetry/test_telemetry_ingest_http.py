"""The ingest over real HTTP (uvicorn on loopback): limits, refusals, and several workers on one database."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest
from telemetry_parts import Fleet, IngestProcess, utc_now

from otactl.telemetry.report import Event
from otactl.telemetry.reporter import batch_body

pytestmark = pytest.mark.integration


def rejected(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("otactl_reports_rejected_total{"):
            out[line.split('reason="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_request_limits_over_http(ingest: IngestProcess) -> None:
    url = f"{ingest.url}/v1/reports"
    big = json.dumps({"reports": [{"payload": "x" * 1000, "signature": ""}] * 1100}).encode()
    assert len(big) > 1 << 20
    assert httpx.post(url, content=big, timeout=10).status_code == 413
    assert httpx.post(url, content=b"\x00garbage", timeout=10).status_code == 400
    assert httpx.get(url, timeout=10).status_code == 405
    counts = rejected(ingest.url)
    assert (counts["oversized"], counts["malformed"], sum(counts.values())) == (1, 1, 2)
    assert httpx.get(f"{ingest.url}/healthz", timeout=10).json() == {"status": "ok", "devices": 12}


def test_workers_share_one_database_and_one_replay_check(fleet: Fleet, tmp_path: Path) -> None:
    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps(fleet.records()))
    ingest = IngestProcess(tmp_path, devices, tmp_path / "telemetry.db").start(workers=2)
    try:
        url = f"{ingest.url}/v1/reports"
        r = fleet.reporters["trk-0005"]
        same = batch_body([r.event("2.1.0", "canary", Event.COMMITTED, utc_now())])
        results: list[str] = []

        def post() -> None:
            with httpx.Client(timeout=30) as client:  # a connection of its own: spread over the workers
                results.append(client.post(url, json=same).json()["results"][0]["status"])

        threads = [threading.Thread(target=post) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["accepted"] + ["refused"] * 15
        others = [fleet.reporters[d].health("2.1.0", "early", utc_now(), 60) for d in ("trk-0001", "trk-0002")]
        assert httpx.post(url, json=batch_body(others), timeout=30).json()["accepted"] == 2
        assert rejected(ingest.url)["replayed"] == 15  # whichever worker answers
        with contextlib.closing(sqlite3.connect(ingest.db)) as conn:
            assert conn.execute("SELECT count(*) FROM reports").fetchone()[0] == 3
    finally:
        ingest.stop()
