"""Install windows and preconditions over HTTP (decision 1202): the real agent (python-tuf ngclient
through otactl's fetcher) against the served repository and the embedded ingest on 127.0.0.1.

The device downloads 2.1.0 at once, waits for its maintenance window (read in its region's zone),
then for its engine to stop, says so in signed health reports the ingest stores, and installs when
both allow. The clock is the agent's ``now`` argument: times an hour or so in the past, so the ingest
(which refuses reports from the future) takes them.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import nacl.signing
import pytest

from otactl.agent.agent import Agent
from otactl.agent.conditions import CONDITIONS_FILE
from otactl.agent.state import DeviceState, Identity
from otactl.app.fleet import import_devices
from otactl.fleet.records import DeviceRecord
from otactl.repo.client import HttpxFetcher
from otactl.sim.ingest import running_ingest
from otactl.telemetry.device_history import release_histories
from otactl.telemetry.last_seen import last_reports
from otactl.telemetry.report import Event, Kind, Waiting, parse_payload
from otactl.telemetry.store import reading

pytestmark = pytest.mark.integration
MODEL = "t9-engine"


def test_the_device_downloads_waits_for_its_window_and_engine_then_installs(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key = nacl.signing.SigningKey(hashlib.sha256(b"window-device").digest())
    record = DeviceRecord("t9-w001", MODEL, "revA", "hp-400", "eu", (), bytes(key.verify_key).hex())
    import_devices(served.ws._fresh(), [record], "test")
    path = tmp_path / "dev"
    DeviceState.provision(path, Identity(record.device_id, MODEL, "revA"), served.root().read_bytes(), key)

    berlin = ZoneInfo("Europe/Berlin")
    opens = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
    local = opens.astimezone(berlin)
    window = {"cron": f"{local.minute} {local.hour} * * *", "duration_minutes": 30, "timezone": "device"}
    rules = {"install_windows": [window], "preconditions": ["engine_off", {"battery_min": 40}]}

    def policy(release: str) -> None:
        served.publish({"model": MODEL, "rollout_id": "windows", "salt": "w", "baseline": "2.0.0",
                        "region_timezones": {"eu": "Europe/Berlin"},
                        "rings": [{"name": "all", "selector": {"percent": 100}, "release": release, **rules}]})

    def conditions(engine_running: bool) -> None:
        (path / CONDITIONS_FILE).write_text(json.dumps({"engine_running": engine_running, "battery_percent": 77,
                                                        "in_operation": False}))

    requested: list[str] = []
    conditions(engine_running=True)
    with running_ingest(tmp_path / "t.db", [record]) as ingest, \
            httpx.Client(event_hooks={"request": [lambda r: requested.append(r.url.path)]}) as http:
        agent = Agent(path, served.url, ingest.url, fetcher=HttpxFetcher(http))
        try:
            # factory-empty: the first install is the provisioning, nothing runs that it could interrupt
            policy("2.0.0")
            assert agent.run_once(opens - timedelta(minutes=30)).check.outcome == "committed"

            policy("2.1.0")
            run = agent.run_once(opens - timedelta(minutes=10))  # before the window: downloads, waits
            assert run.check.outcome == "waiting"
            assert run.check.detail == (f"2.1.0 downloaded, waiting: outside maintenance window until "
                                        f"{local:%H:%M} Europe/Berlin; precondition engine_off: engine running")
            assert run.check.active == "2.0.0" and run.flush is not None and run.flush.refused == 0

            requested.clear()
            run = agent.run_once(opens + timedelta(minutes=5))  # inside the window, engine still running
            assert (run.check.outcome, run.check.detail) == (
                "waiting", "2.1.0 downloaded, waiting: precondition engine_off: engine running")
            assert not [p for p in requested if p.startswith("/targets/firmware/")]  # not downloaded again
            # the fleet report and the rollout report's funnel read it as waiting for its window
            assert last_reports(ingest.db)["t9-w001"].waiting == "2.1.0"
            wall = datetime.now(UTC)
            history = release_histories(ingest.db, MODEL, "2.1.0", wall - timedelta(hours=1), wall + timedelta(hours=1))
            assert history["t9-w001"].waiting and "installed" not in history["t9-w001"].events

            conditions(engine_running=False)
            run = agent.run_once(opens + timedelta(minutes=6))
            assert (run.check.outcome, run.check.active) == ("committed", "2.1.0")
            assert run.flush is not None and run.flush.refused == 0 and run.flush.pending == 0
        finally:
            agent.close()
    with reading(tmp_path / "t.db") as conn:
        stored = [parse_payload(p) for (p,) in conn.execute(
            "SELECT payload FROM reports WHERE device_id = 't9-w001' ORDER BY seq")]
    waits = [(r.release, r.waiting) for r in stored if r.kind is Kind.HEALTH and r.waiting is not None]
    assert waits == [  # on the release it runs: its uptime soaks 2.0.0, not 2.1.0 (not exposed while waiting)
        ("2.0.0", Waiting("2.1.0", f"outside maintenance window until {local:%H:%M} Europe/Berlin; "
                                   "precondition engine_off: engine running")),
        ("2.0.0", Waiting("2.1.0", "precondition engine_off: engine running"))]
    events = [(r.event, r.release) for r in stored if r.kind is Kind.EVENT and r.release == "2.1.0"]
    assert events == [(Event.OFFERED, "2.1.0"), (Event.DOWNLOADED, "2.1.0"), (Event.INSTALLED, "2.1.0"),
                      (Event.BOOTED, "2.1.0"), (Event.COMMITTED, "2.1.0")]
    last_health = [r for r in stored if r.kind is Kind.HEALTH][-1]
    assert (last_health.release, last_health.waiting) == ("2.1.0", None)
    seen = last_reports(tmp_path / "t.db")["t9-w001"]
    assert (seen.running, seen.waiting) == ("2.1.0", None)
    wall = datetime.now(UTC)
    assert not release_histories(tmp_path / "t.db", MODEL, "2.1.0", wall - timedelta(hours=1),
                                 wall + timedelta(hours=1))["t9-w001"].waiting
