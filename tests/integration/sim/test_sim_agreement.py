"""Full fidelity and the statistical model count alike: one counting path (decision 0105).

The same scenario runs with real agents (ngclient over HTTP, signed reports into the embedded
ingest, read back through SqliteSource) and in the fleet model (counted through the same
``otactl.telemetry.counters``, read back the way the Prometheus source reads). Per release and
stratum the rates each measure must agree within sampling error: crashes and crash-hours per
device-hour, closed 24-hour periods per device-hour, and the share of hours run late (past 24 h).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from sim_fixtures import PASSPHRASE

from otactl.sim.fleetmodel import Fleet, FleetRun
from otactl.sim.full import FullSimulation
from otactl.sim.model import model_inputs
from otactl.sim.scenario import load_scenario
from otactl.telemetry.source import CohortCounts, CohortQuery, StratumKey
from otactl.telemetry.store import SqliteSource

pytestmark = pytest.mark.integration
SCENARIO = Path(__file__).parent / "scenarios" / "agreement.yaml"
MODEL_DEVICES = 30_000


def full_counts(tmp_path: Path) -> dict[str, dict[StratumKey, CohortCounts]]:
    sim = FullSimulation(load_scenario(SCENARIO), tmp_path / "sim")
    try:
        sim.run()
    finally:
        sim.close()
    source = SqliteSource(tmp_path / "sim" / "telemetry.db")
    return {v: source.cohort_counts(CohortQuery("t9-engine", v)) for v in ("2.0.0", "2.1.0")}


def model_counts() -> dict[str, dict[StratumKey, CohortCounts]]:
    scenario = load_scenario(SCENARIO)
    scenario = dataclasses.replace(scenario, mode="model")
    inputs = model_inputs(scenario, "2.1.0", devices=MODEL_DEVICES, lab_devices=0,
                          baseline_hours=0, poll_hours=1e-6)  # installs at once, as full mode does
    fleet = Fleet(inputs.spec, scenario.seed)
    run = FleetRun(fleet, inputs.effects, 1, np.zeros(MODEL_DEVICES, dtype=np.int64), ("all",))
    hours = scenario.behaviour.poll_interval_s // 3600
    for _ in range(6 * hours):
        run.step()
    run.offer(0)
    for _ in range(12 * hours):
        run.step()
    return {v: run.cohort_counts(i, None, None) for i, v in ((0, "2.0.0"), (1, "2.1.0"))}


def close(full: float, model: float, events: float, what: str, sigmas: float = 4.0) -> None:
    """Within ``sigmas`` standard errors of the full run's Poisson count (the model's is far
    smaller), plus 5% for what the two report intervals do differently (6 h against 1 h)."""
    tolerance = (sigmas / math.sqrt(max(events, 1.0)) + 0.05) * max(model, 1e-9)
    assert abs(full - model) <= tolerance, f"{what}: full {full:.4g} vs model {model:.4g}"


def test_full_fidelity_and_model_runs_of_one_scenario_agree(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    full, model = full_counts(tmp_path), model_counts()
    for release in ("2.0.0", "2.1.0"):
        assert set(full[release]) == set(model[release]), release
        f = sum(full[release].values(), CohortCounts())
        m = sum(model[release].values(), CohortCounts())
        assert f.crashes > 200, release  # enough events for the pooled rates to mean something
        close(f.crashes / f.device_hours, m.crashes / m.device_hours, f.crashes,
              f"{release}: crashes per device-hour, all strata")
        close(f.crash_hours / f.device_hours, m.crash_hours / m.device_hours, f.crash_hours,
              f"{release}: crash-hours per device-hour, all strata")
        for key in full[release]:
            f, m = full[release][key], model[release][key]
            where = f"{release} {key}"
            close(f.crashes / f.device_hours, m.crashes / m.device_hours, f.crashes,
                  f"{where}: crashes per device-hour", sigmas=5.0)
            close(f.crash_hours / f.device_hours, m.crash_hours / m.device_hours, f.crash_hours,
                  f"{where}: crash-hours per device-hour", sigmas=5.0)
            assert f.periods / f.device_hours == pytest.approx(1 / 24, rel=0.35), where
            assert m.periods / m.device_hours == pytest.approx(1 / 24, rel=0.35), where
    # the late effect: 3x crashes past 24 h on hp-500/eu, visible in the late hours of both modes
    key = StratumKey("t9-engine", "hp-500", "eu")
    for counts in (full["2.1.0"][key], model["2.1.0"][key]):
        late = counts.at_age(24)
        early_rate = (counts.crashes - late.crashes) / (counts.device_hours - late.device_hours)
        assert late.crashes / late.device_hours > 1.8 * early_rate
        assert late.device_hours / counts.device_hours == pytest.approx(
            full["2.1.0"][key].at_age(24).device_hours / full["2.1.0"][key].device_hours, abs=0.1)
