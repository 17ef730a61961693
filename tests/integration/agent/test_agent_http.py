"""The agent over HTTP: python-tuf ngclient through otactl's httpx fetcher against the repository
served on 127.0.0.1, and reports to the embedded ingest. What a device downloads is exactly what it
needs: its own record, its model's policy, the release descriptor, the image for its hardware
revision and its own variant's configuration."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nacl.signing
import pytest
from agent_it_fixtures import Served

from otactl.agent.agent import Agent
from otactl.agent.state import DeviceState, Identity
from otactl.app.fleet import import_devices
from otactl.fleet.records import DeviceRecord
from otactl.repo.client import HttpxFetcher
from otactl.sim.ingest import running_ingest

pytestmark = pytest.mark.integration


def make_device(served: Served, base: Path, device_id: str, rev: str, variant: str) -> tuple[Path, DeviceRecord]:
    key = nacl.signing.SigningKey(hashlib.sha256(device_id.encode()).digest())
    record = DeviceRecord(device_id, "t9-engine", rev, variant, "eu", (), bytes(key.verify_key).hex())
    import_devices(served.ws._fresh(), [record], "test")
    path = base / device_id
    DeviceState.provision(path, Identity(device_id, "t9-engine", rev), served.root().read_bytes(), key)
    return path, record


def test_an_hp_400_device_downloads_its_own_configuration_and_nothing_else(served: Served, tmp_path: Path) -> None:
    path, record = make_device(served, tmp_path, "t9-4000", "revB", "hp-400")
    make_device(served, tmp_path, "t9-3000", "revA", "hp-300")  # another device in the fleet
    served.all_on("2.0.0")
    requested: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: requested.append(r.url.path)]})
    with running_ingest(tmp_path / "t.db", [record]) as ingest:
        agent = Agent(path, served.url, ingest.url, fetcher=HttpxFetcher(http))
        result = agent.run_once(datetime.now(UTC))
        assert (result.check.outcome, result.check.active) == ("committed", "2.0.0")
        assert result.flush is not None and result.flush.accepted == 6 and ingest.store.report_count() == 6

        targets = [re.sub(r"/[0-9a-f]{64}\.", "/<sha256>.", p) for p in requested if p.startswith("/targets/")]
        assert sorted(targets) == [
            "/targets/config/t9-engine/2.0.0/<sha256>.hp-400.json",
            "/targets/devices/<sha256>.t9-4000.json",
            "/targets/entitlements/<sha256>.signers.json",  # the entitlement signers (decision 0406)
            "/targets/firmware/t9-engine/2.0.0/<sha256>.t9-revB-2.0.0.bin",
            "/targets/releases/t9-engine/<sha256>.2.0.0.json",
            "/targets/rollouts/<sha256>.t9-engine.json",
        ]
        metadata = {p.rsplit("/", 1)[1] for p in requested if p.startswith("/metadata/")}
        bins = {m for m in metadata if re.fullmatch(r"\d+\.devices-[0-9a-f]+\.json", m)}
        assert len(bins) == 1  # one succinct hash bin: not the fleet's records
        files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
        assert not [f for f in files if "hp-300" in f or "hp-500" in f or "revA" in f or "t9-3000" in f]

        # polling again with nothing new: metadata only, nothing downloaded again
        requested.clear()
        assert agent.run_once(datetime.now(UTC)).check.outcome == "stayed"
        assert not [p for p in requested if p.startswith("/targets/")]
        assert {p.rsplit("/", 1)[1] for p in requested} <= {"2.root.json", "timestamp.json"}

        # the update fetches the new release's image and configuration for this device only
        served.all_on("2.1.0")
        requested.clear()
        assert agent.run_once(datetime.now(UTC)).check.active == "2.1.0"
        configs = [p for p in requested if p.startswith("/targets/config/")]
        assert len(configs) == 1 and configs[0].endswith(".hp-400.json") and "/2.1.0/" in configs[0]
    http.close()
    agent.close()


def test_reports_wait_in_the_outbox_while_the_ingest_is_down(served: Served, tmp_path: Path) -> None:
    path, record = make_device(served, tmp_path, "t9-4001", "revB", "hp-400")
    served.all_on("2.0.0")
    with running_ingest(tmp_path / "probe.db", [record]) as probe:
        closed = probe.url  # an address nobody listens on once this block ends
    agent = Agent(path, served.url, closed)
    first = agent.run_once(datetime.now(UTC))
    assert first.check.outcome == "committed"
    assert first.flush is not None and first.flush.pending == 6 and first.flush.error
    agent.close()
    with running_ingest(tmp_path / "t.db", [record]) as ingest:
        again = Agent(path, served.url, ingest.url)  # a restarted agent: the outbox was on disk
        second = again.run_once(datetime.now(UTC))
        # the 6 kept reports and one new health report
        assert second.flush is not None and (second.flush.accepted, second.flush.pending) == (7, 0)
        conn = sqlite3.connect(ingest.db)
        seqs = [s for (s,) in conn.execute("SELECT seq FROM reports ORDER BY seq").fetchall()]
        conn.close()
        assert seqs == list(range(1, 8))
        again.close()
