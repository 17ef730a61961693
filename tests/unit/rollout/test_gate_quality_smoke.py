"""Smoke test of the gate-quality benchmark: a few seeded trials on the fleet model.

No timing assertions: the gates must catch a blatant 5x crash regression and must not roll back
a release identical to the old one.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from otactl.rollout.plan import load_plan
from otactl.sim.fleetmodel import Effect, Fleet, FleetSpec

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


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_identical_release_is_not_rolled_back(bench: ModuleType, seed: int) -> None:
    fleet = Fleet(FleetSpec(devices=60_000, drift=0.0), seed)
    result = bench.run_otactl(fleet, (), seed + 1, PLAN)
    assert result["outcome"] == "full", result


@pytest.mark.parametrize("seed", [21, 22])
def test_blatant_crash_regression_is_rolled_back_in_the_canary(bench: ModuleType,
                                                                seed: int) -> None:
    fleet = Fleet(FleetSpec(devices=60_000), seed)
    result = bench.run_otactl(fleet, (Effect("crash", 5.0),), seed + 1, PLAN)
    assert result["outcome"] == "rollback", result
    assert result["ring"] <= 1  # lab or canary
    assert result["exposed"] < 0.05 * 60_000


def test_baseline_series_and_grid(bench: ModuleType) -> None:
    fleet = Fleet(FleetSpec(devices=20_000), 5)
    series = bench.run_baseline(fleet, (Effect("install", 5.0),), 6, PLAN, 6.0)
    assert series.shape == (24, 6)
    (out,) = bench.baseline_outcomes([series], 0.05, float("inf"), 20, 6.0, len(PLAN.rings))
    assert out["outcome"] == "rollback"
