"""The full-fidelity simulator with install preconditions (decision 1202): real agents read their
simulated ``conditions.json``, download at once, wait while the engine runs or the battery is low,
and install in a later round; waiting devices stay on (and soak) the old release."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sim_fixtures import SCENARIOS

from otactl.errors import UsageError
from otactl.sim.full import FullSimulation
from otactl.sim.model import run_model
from otactl.sim.scenario import load_scenario

pytestmark = pytest.mark.integration


def test_devices_with_their_engine_running_wait_then_install(published: Path, tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "t9-install-windows.yaml")
    sim = FullSimulation(scenario, tmp_path / "sim", workspace=published)
    try:
        result = sim.run()
    finally:
        sim.close()
    first = result.rounds[1].outcomes  # 2.1.0 offered: every polling device downloads it, some wait
    assert first.get("waiting", 0) >= 1 and first.get("committed", 0) >= 1
    assert result.outcomes.get("waiting", 0) > 0
    assert result.outcomes["committed"] == 2 * 24  # 2.0.0 (factory-empty: at once), then 2.1.0, every device
    assert result.running == {"2.1.0": {"hp-300": 8, "hp-400": 8, "hp-500": 8}}
    conn = sqlite3.connect(tmp_path / "sim" / "telemetry.db")
    try:
        waits = conn.execute("SELECT release, json_extract(payload, '$.waiting.release'), count(*) FROM reports"
                             " WHERE kind = 'health' AND json_extract(payload, '$.waiting') IS NOT NULL"
                             " GROUP BY 1, 2").fetchall()
        downloads = conn.execute("SELECT count(*) FROM reports WHERE event = 'downloaded' AND release = '2.1.0'"
                                 ).fetchone()[0]
    finally:
        conn.close()
    assert waits == [("2.0.0", "2.1.0", result.outcomes["waiting"])]  # soaking 2.0.0, not exposed to 2.1.0
    assert downloads == 24  # a waiting device does not download again


def test_model_mode_refuses_install_rules() -> None:
    with pytest.raises(UsageError, match="does not simulate install windows"):
        run_model(load_scenario(SCENARIOS / "t9-install-windows.yaml"))
