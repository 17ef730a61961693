"""Smoke test of the gate-quality benchmark: a few seeded trials on the fleet model.

No timing assertions: the gates must catch a blatant 5x crash regression and must not roll back
a release identical to the old one, even when the canary's mix is skewed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from otactl.rollout.plan import load_plan
from otactl.sim.fleetmodel import Effect, Fleet, FleetSpec, Outage

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gate_quality", ROOT / "benchmarks" /
                                                  "gate_quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gate_quality"] = module
    spec.loader.exec_module(module)
    return module


PLAN = load_plan(ROOT / "canary" / "default.yaml")


@pytest.mark.parametrize("seed", [11, 12])
def test_identical_release_is_not_rolled_back(bench: ModuleType, seed: int) -> None:
    fleet = Fleet(FleetSpec(devices=60_000, drift=0.0), seed)
    result = bench.run_otactl(fleet, bench.Scenario("same"), seed + 1, PLAN)
    assert result["outcome"] == "full", result


def test_skewed_canary_with_a_riskier_stratum_is_not_rolled_back(bench: ModuleType) -> None:
    sc = bench.SCENARIOS["good-skewed-canary"]
    fleet = Fleet(FleetSpec(**{**sc.fleet, "devices": 60_000}), 31)
    result = bench.run_otactl(fleet, sc, 32, PLAN)
    assert result["outcome"] == "full", result


@pytest.mark.parametrize("seed", [21, 22])
def test_blatant_crash_regression_is_rolled_back_in_the_canary(bench: ModuleType,
                                                                seed: int) -> None:
    fleet = Fleet(FleetSpec(devices=60_000), seed)
    result = bench.run_otactl(fleet, bench.Scenario("crash-5x", (Effect("crash", 5.0),)), seed + 1, PLAN)
    assert result["outcome"] == "rollback", result
    assert result["ring"] <= 1  # lab or canary
    assert result["exposed"] < 0.05 * 60_000


def test_a_source_outage_holds_the_rollout_instead_of_deciding(bench: ModuleType) -> None:
    """While the source is unreachable nothing is decided; the rollout goes on afterwards."""
    fleet = Fleet(FleetSpec(devices=30_000, drift=0.0), 41)
    sc = bench.Scenario("source-outage", outages=(Outage(2, 30),))
    result = bench.run_otactl(fleet, sc, 42, PLAN)
    assert result["outcome"] == "full" and result["hours"] > 30, result


def test_benchmark_scenarios_come_from_scenario_files(bench: ModuleType) -> None:
    """Every benchmark scenario is a file of the scenario format; bad ones name their target."""
    names = {p.stem for p in (ROOT / "benchmarks" / "scenarios").glob("*.yaml")}
    assert set(bench.SCENARIOS) == names
    slow = bench.SCENARIOS["slow-onset-3x"]
    assert {e.after_hours for e in slow.effects if e.metric == "crash"} == {24.0}
    skew = bench.SCENARIOS["good-skewed-canary"]
    assert skew.fleet["skew"] == ("hp-500/eu", 4.0) and skew.target_ring is None
    assert all(bench.SCENARIOS[n].target_ring is not None for n in bench.BAD)


def test_baseline_series_and_grid(bench: ModuleType) -> None:
    fleet = Fleet(FleetSpec(devices=20_000), 5)
    series = bench.run_baseline(fleet, bench.Scenario("install-5x", (Effect("install", 5.0),)), 6, PLAN, 6.0)
    assert series.shape == (24, 6)
    (out,) = bench.baseline_outcomes([series], 0.05, float("inf"), 20, 6.0, len(PLAN.rings))
    assert out["outcome"] == "rollback"
