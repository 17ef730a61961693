"""Full-fidelity simulation: real agents (python-tuf over HTTP on 127.0.0.1) against a published
repository, reporting to the embedded ingest started in-process."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from sim_fixtures import SCENARIOS

from otactl.errors import UsageError
from otactl.release.manifest import load_manifest
from otactl.repo.serve import serve_in_thread
from otactl.sim.fleetgen import generate_fleet
from otactl.sim.full import FullSimulation
from otactl.sim.ingest import running_ingest
from otactl.sim.scenario import load_scenario
from otactl.workspace import Workspace

pytestmark = pytest.mark.integration


def stored(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_200_devices_of_three_variants_update_and_the_ingest_counts_what_they_sent(
        published: Path, tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "t9-update.yaml")
    assert scenario.fleet.devices == 200 and len(scenario.fleet.variants) == 3
    params = load_manifest(scenario.releases[1].manifest).variants
    sim = FullSimulation(scenario, tmp_path / "sim", workspace=published)
    try:
        result = sim.run()
        variants = Counter(d.record.variant for d in sim.devices)
        assert variants == {"hp-300": 100, "hp-400": 50, "hp-500": 50}
        for d in sim.devices:
            agent = sim.agents[d.device_id]
            active = agent.installed()
            assert active is not None
            assert (active.version, active.variant, active.hardware_revision) == (
                "2.1.0", d.record.variant, d.record.hardware_revision), d.device_id
            slot = agent.device.slot_dir(agent.device.active().slot or "?")
            config = json.loads((slot / "config.json").read_bytes())
            assert (config["version"], config["variant"], config["parameters"]) == (
                "2.1.0", d.record.variant, params[d.record.variant])
            other = agent.device.manifest("a" if agent.device.active().slot == "b" else "b")
            assert other is not None and (other.version, other.variant) == ("2.0.0", d.record.variant)

        db = tmp_path / "sim" / "telemetry.db"
        per_device = dict(stored(db, "SELECT device_id, count(*) FROM reports GROUP BY device_id"))
        max_seq = dict(stored(db, "SELECT device_id, max(seq) FROM reports GROUP BY device_id"))
        for device_id, agent in sim.agents.items():
            sent = agent.outbox.log.next_seq - 1
            assert (agent.outbox.log.accepted, agent.outbox.pending, agent.outbox.log.refused) == (sent, 0, 0)
            assert per_device[device_id] == sent and max_seq[device_id] == sent
        by_event = dict(stored(db, "SELECT coalesce(event, kind), count(*) FROM reports GROUP BY 1"))
        assert by_event == {"offered": 400, "downloaded": 400, "installed": 400, "booted": 400, "committed": 400,
                            "health": 200 * scenario.rounds}
        by_variant = dict(stored(db, "SELECT variant, count(*) FROM reports WHERE event = 'committed' "
                                     "AND release = '2.1.0' GROUP BY variant"))
        assert by_variant == dict(variants)
        assert result.ingest is not None and result.ingest["reports"] == sum(per_device.values())
        assert result.ingest["counters"]["event:committed"] == 400
        assert result.running == {"2.1.0": dict(variants)}
        assert result.outcomes == {"committed": 400, "stayed": 200}
    finally:
        sim.close()


def test_devices_revert_an_image_that_fails_its_boot_check_by_themselves(published: Path, tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "t9-bad-image.yaml")
    sim = FullSimulation(scenario, tmp_path / "sim", workspace=published)
    try:
        result = sim.run()
        bad = {d.device_id for d in sim.devices if d.record.variant == "hp-500"}
        assert 0 < len(bad) < len(sim.devices)
        for device_id, agent in sim.agents.items():
            active = agent.installed()
            assert active is not None
            if device_id in bad:
                assert active.version == "2.0.0"
                assert "2.1.0" in agent.device.load_state().failed_here
            else:
                assert active.version == "2.1.0"
        rows = stored(tmp_path / "sim" / "telemetry.db",
                      "SELECT device_id, release, reason FROM reports WHERE event = 'reverted'")
        assert {r[0] for r in rows} == bad and len(rows) == len(bad)
        assert all(r[1] == "2.1.0" and "does not boot on hp-500" in r[2] for r in rows)
        committed = stored(tmp_path / "sim" / "telemetry.db",
                           "SELECT count(*) FROM reports WHERE event = 'committed' AND release = '2.1.0'")[0][0]
        assert committed == len(sim.devices) - len(bad)
        assert result.outcomes["reverted"] == len(bad)
    finally:
        sim.close()


def test_devices_can_use_a_repository_url_and_an_ingest_the_simulator_did_not_start(
        published: Path, tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "t9-bad-image.yaml")
    scenario = dataclasses.replace(scenario, fleet=dataclasses.replace(scenario.fleet, devices=6))
    records = [d.record for d in generate_fleet(scenario)]  # what an operator enrols beforehand
    server, repo_url = serve_in_thread(Workspace.open(published).store())
    try:
        with running_ingest(tmp_path / "external.db", records) as ingest:
            sim = FullSimulation(scenario, tmp_path / "sim", workspace=published, repo_url=repo_url,
                                 ingest_url=ingest.url)
            try:
                result = sim.run()
            finally:
                sim.close()
            assert (result.repo_url, result.ingest_url, result.ingest) == (repo_url, ingest.url, None)
            assert ingest.store.report_count() == result.reports["accepted"] == result.reports["signed"] > 0
            assert not (tmp_path / "sim" / "telemetry.db").exists()
    finally:
        server.shutdown()
        server.server_close()


def test_a_work_directory_is_not_reused(published: Path, tmp_path: Path) -> None:
    (tmp_path / "sim" / "devices").mkdir(parents=True)
    sim = FullSimulation(load_scenario(SCENARIOS / "t9-update.yaml"), tmp_path / "sim", workspace=published)
    with pytest.raises(UsageError, match="already holds a simulation"):
        sim.run()
