"""rollout plan's power estimate: rings that can never rule out the harm are named, with advice."""

from __future__ import annotations

from pathlib import Path

import pytest

from otactl.rollout.plan import load_plan
from otactl.rollout.power import Baseline, min_device_warnings, needed_events, ring_power

ROOT = Path(__file__).resolve().parents[3]
PLAN = load_plan(ROOT / "canary" / "default.yaml")
BASE = Baseline({"crash_rate": 0.01, "crash_hour_rate": 0.009, "install_failure_rate": 0.02},
                hours_per_device_hour=0.6, phi=1.2)


def cumulative(fleet: int) -> list[dict[str, int]]:
    shares = [60 / 100_000, 0.03, 0.20, 0.50, 1.0]
    return [{"t9/hp-300/eu": max(round(fleet * s), 1)} for s in shares]


def test_needed_events_grow_as_the_harm_to_rule_out_shrinks() -> None:
    assert needed_events(2.0, 0.95) == pytest.approx(2 * (3.0 + 1) / 0.4805, rel=0.01)
    assert needed_events(1.5, 0.95) > 2 * needed_events(2.0, 0.95)


def test_a_large_fleet_powers_every_ring_and_a_small_one_does_not() -> None:
    big = {(p.ring, p.metric): p for p in ring_power(PLAN, cumulative(100_000),
                                                      {"t9/hp-300/eu": BASE})}
    assert all(p.feasible for p in big.values()), [p for p in big.values() if not p.feasible]
    small = {(p.ring, p.metric): p for p in ring_power(PLAN, cumulative(300),
                                                        {"t9/hp-300/eu": BASE})}
    canary = small[("canary", "crash_rate")]
    assert not canary.feasible and canary.hours is not None and canary.hours > 14 * 24
    assert "fewer or wider rings" in canary.advice
    installs = small[("canary", "install_failure_rate")]
    assert not installs.feasible and "limit-only gate" in installs.advice


def test_rings_that_can_never_reach_their_minimum_are_warned() -> None:
    warnings = min_device_warnings(PLAN, cumulative(300))
    assert any("'canary' holds 9 devices but needs 500" in w for w in warnings)
    assert min_device_warnings(PLAN, cumulative(1_000_000)) == []
