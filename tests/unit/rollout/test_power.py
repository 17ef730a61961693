"""rollout plan's power estimate: rings that can never rule out the harm are named, with advice."""

from __future__ import annotations

from pathlib import Path

import pytest

from otactl.rollout.plan import load_plan, parse_plan
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
    assert not canary.feasible and "can never rule out 2x" in canary.advice
    installs = small[("canary", "install_failure_rate")]
    assert not installs.feasible and "limit-only gate" in installs.advice


@pytest.mark.parametrize(("phi", "words"), [
    (1.0, "fewer or wider rings"),  # Poisson devices: more soak would do, but not in 14 days
    (1.2, "can never rule out 2x"),  # frailty caps what 9 devices can show, whatever the soak
])
def test_a_small_canary_is_told_whether_time_or_devices_are_missing(phi: float,
                                                                    words: str) -> None:
    base = {"t9/hp-300/eu": Baseline(BASE.events_per_hour, 0.4, phi=phi)}
    canary = {(p.ring, p.metric): p for p in ring_power(PLAN, cumulative(300), base)}[
        ("canary", "crash_rate")]
    assert not canary.feasible and words in canary.advice, canary
    if phi == 1.0:
        assert canary.hours is not None and canary.hours > 14 * 24


def test_frailty_caps_the_evidence_of_a_ring_whatever_its_soak() -> None:
    """n m h / (1 + v m h) tends to n / v: 30 devices with v = 2 show ~15 events' worth at most,
    short of the ~17 that ruling out 2x needs; 100 devices get there in days."""
    v = 2.0
    base = {"t9/hp-300/eu": Baseline(BASE.events_per_hour, 0.6, phi=1 + v * 24 * 0.01)}
    plan = load_plan(ROOT / "benchmarks" / "plans" / "tiny-fleet.yaml")
    few = [{"t9/hp-300/eu": n} for n in (6, 30, 150, 300)]
    many = [{"t9/hp-300/eu": n} for n in (6, 100, 150, 300)]
    canary_few = {(p.ring, p.metric): p for p in ring_power(plan, few, base)}[
        ("canary", "crash_rate")]
    canary_many = {(p.ring, p.metric): p for p in ring_power(plan, many, base)}[
        ("canary", "crash_rate")]
    assert not canary_few.feasible and canary_few.hours is None
    assert "frailty variance 2" in canary_few.advice
    assert canary_many.feasible and canary_many.hours is not None
    assert canary_many.hours < 7 * 24


def test_rings_that_can_never_reach_their_minimum_are_warned() -> None:
    warnings = min_device_warnings(PLAN, cumulative(300))
    assert any("'canary' holds 9 devices but needs 500" in w for w in warnings)
    assert min_device_warnings(PLAN, cumulative(1_000_000)) == []


@pytest.mark.parametrize(("limit", "held"), [(0.34, True), (0.5, False)])
def test_a_lab_whose_one_failure_would_hold_it_for_good_is_told(limit: float, held: bool) -> None:
    """6 lab devices install once each: with a limit of 0.34 one failure leaves an e-value of
    ~18 of 20 against 0.68, for ever; with 0.5 one failure still rules out 0.75."""
    plan = parse_plan(f"""
schema: otactl/canary-plan/1
name: lab
rings:
  - name: lab
    selector: {{tags: [lab]}}
    soak_device_hours: 24
    min_reporting_devices: 3
    gates:
      - {{metric: install_failure_rate, limit: {limit}, missing: wait}}
  - {{name: all, selector: {{percent: 100}}, soak_device_hours: 0, min_reporting_devices: 1,
     gates: []}}
""")
    (lab, *_) = ring_power(plan, [{"t9/hp-300/eu": 6}, {"t9/hp-300/eu": 300}],
                           {"t9/hp-300/eu": BASE})
    assert lab.feasible
    assert ("one failed install of its 6" in lab.advice) is held, lab
