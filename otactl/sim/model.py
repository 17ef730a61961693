"""Model mode: a scenario run through the statistical fleet model (otactl.sim.fleetmodel).

The model follows one rollout of one new release against the old one, so a scenario maps onto it
like this: the new release is the first schedule step whose release differs from its baseline;
each later step offers the rings it puts on that release (tag rings: the model's lab devices,
percentage rings: the model's buckets); one round is ``poll_interval_s`` of simulated time in
one-hour steps. Effects: ``crash_rate`` and ``install_failure`` factors (``bad_image``: the model's
highest install-failure rate, 0.9), per variant where the scenario says so; ``error_rate`` and
metric effects exist only in full mode. ``online`` becomes the share of devices online for the
whole rollout. What the model does not support (moving rings back to the baseline) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from otactl.errors import UsageError
from otactl.sim.fleetmodel import Effect as ModelEffect
from otactl.sim.fleetmodel import Fleet, FleetRun, FleetSpec
from otactl.sim.fleetmodel import Outage as ModelOutage
from otactl.sim.scenario import PolicyStep, Scenario
from otactl.telemetry.source import CohortCounts, StratumKey

BAD_IMAGE_FACTOR = 1e6  # the model caps the install-failure probability at 0.9


@dataclass
class ModelRound:
    round: int
    offered: int  # devices offered the release so far
    ring: dict[str, Any]  # the ring cohort's counts since the start (all strata)
    control: dict[str, Any]


@dataclass
class ModelResult:
    scenario: str
    devices: int
    new_release: str
    old_release: str
    rounds: list[ModelRound]
    strata: dict[str, dict[str, Any]]  # stratum -> {"ring": counts, "control": counts} at the end

    def to_json(self) -> dict[str, Any]:
        return {"mode": "model", "scenario": self.scenario, "devices": self.devices,
                "new_release": self.new_release, "old_release": self.old_release,
                "rounds": [vars(r) for r in self.rounds], "strata": self.strata}


def _counts(c: CohortCounts) -> dict[str, Any]:
    return {"devices": c.devices, "reports": c.reports, "installs": c.installs,
            "install_failures": c.install_failures, "crashes": c.crashes,
            "device_hours": round(c.device_hours, 1), "crash_hours": round(c.crash_hours, 1)}


def _total(by_stratum: dict[StratumKey, CohortCounts]) -> CohortCounts:
    total = CohortCounts()
    for c in by_stratum.values():
        total = total + c
    return total


def _rollout_steps(scenario: Scenario) -> tuple[str, str, list[PolicyStep]]:
    if scenario.rollout.install:
        raise UsageError(f"{scenario.path}: rollout: model mode does not simulate install windows or "
                         "preconditions; run it in full mode (decision 1202)")
    steps = list(scenario.rollout.schedule)
    first = next((i for i, s in enumerate(steps) if s.release != s.baseline), None)
    if first is None:
        raise UsageError(f"{scenario.path}: rollout.schedule: model mode needs a step that moves rings to a new "
                         "release")
    new, old = steps[first].release, steps[first].baseline
    names = [r.name for r in scenario.rollout.rings]
    on: set[str] = set()
    for s in steps[first:]:
        now_on = set(names if s.rings is None else s.rings)
        if s.release != new or s.baseline != old or not now_on >= on:
            raise UsageError(f"{scenario.path}: rollout.schedule: round {s.round}: model mode follows one release "
                             f"({new} over {old}); it cannot move rings back or to a third release")
        on = now_on
    return new, old, steps[first:]


def _effects(scenario: Scenario, version: str) -> tuple[ModelEffect, ...]:
    """The release's effects as the model's, one per stratum (the scenario's most specific wins:
    stratum, region, variant, then the release's own), so the two modes agree stratum by stratum."""
    spec = scenario.release(version)
    if spec is None:
        return ()
    out = []
    for variant, _ in scenario.fleet.variants:
        for region, _ in scenario.fleet.regions:
            e = spec.effect_for(variant, region)
            install = BAD_IMAGE_FACTOR if e.bad_image else e.install_failure
            out.append(ModelEffect("crash", e.crash_rate, variant, region, e.after_hours))
            out.append(ModelEffect("install", install, variant, region))
    return tuple(out)


@dataclass(frozen=True)
class ModelInputs:
    spec: FleetSpec
    effects: tuple[ModelEffect, ...]
    outages: tuple[ModelOutage, ...]


def model_inputs(scenario: Scenario, new_version: str, **overrides: Any) -> ModelInputs:
    """How a scenario maps onto the fleet model (shared by ``sim run --mode model`` and the
    gate-quality benchmark): fleet, behaviour, per-stratum rates, heterogeneity, skew, outages."""
    f, b = scenario.fleet, scenario.behaviour
    poll_h = b.poll_interval_s / 3600
    skew = scenario.rollout.skew
    spec = FleetSpec(**{
        "devices": f.devices, "model": f.model, "variants": f.variants, "regions": f.regions,
        "lab_devices": f.lab_devices, "crash_rate": b.crash_rate,
        "install_failure": max(b.install_failure, 1e-6), "poll_hours": poll_h,
        "offline": 1.0 - b.online,
        "strata_crash": tuple((name, r.crash_rate) for name, r in b.strata if r.crash_rate != 1.0),
        "gamma_shape": b.device_shape if b.device_shape > 0 else 1e6,
        "daily_sigma": b.daily_sigma,
        "skew": None if skew is None else (skew.stratum, skew.factor),
        # what the scenario does not say does not vary: the full simulator has no such spreads
        "stratum_sigma": 0.0, "env_sigma": 0.0, "drift": 0.0, "duty": (1e4, 1e-4),
        **overrides})
    outages = tuple(ModelOutage(o.start * poll_h, o.end * poll_h, o.ring, o.region)
                    for o in scenario.outages)
    return ModelInputs(spec, _effects(scenario, new_version), outages)


def run_model(scenario: Scenario) -> ModelResult:
    new, old, steps = _rollout_steps(scenario)
    f, b = scenario.fleet, scenario.behaviour
    inputs = model_inputs(scenario, new)
    fleet = Fleet(inputs.spec, scenario.seed)
    rings = scenario.rollout.rings
    ring_of = np.full(f.devices, len(rings) - 1)
    assigned = np.zeros(f.devices, dtype=bool)
    for i, ring_spec in enumerate(rings):  # tag rings first, then cumulative percentages
        hit = fleet.lab if ring_spec.tags else fleet.bucket * 100 < float(ring_spec.percent or 0)
        hit = hit & ~assigned & (fleet.lab if ring_spec.tags else ~fleet.lab)
        ring_of[hit] = i
        assigned |= hit
    run = FleetRun(fleet, inputs.effects, scenario.seed + 1, ring_of, tuple(r.name for r in rings),
                   inputs.outages)
    per_round = max(1, round(b.poll_interval_s / 3600))
    by_round = {s.round: s for s in steps}
    rounds = []
    start = run.now()
    for rnd in range(scenario.rounds):
        step = by_round.get(rnd)
        if step is not None:
            for i, ring_spec in enumerate(rings):
                if step.rings is None or ring_spec.name in step.rings:
                    run.offer(i)
        for _ in range(per_round):
            run.step()
        cohort = run.cohort_counts(1, None, start)
        control = run.cohort_counts(0, None, start)
        rounds.append(ModelRound(rnd, int(run.offered.sum()), _counts(_total(cohort)), _counts(_total(control))))
    cohort, control = run.cohort_counts(1, None, start), run.cohort_counts(0, None, start)
    strata = {str(k): {"ring": _counts(cohort.get(k, CohortCounts())),
                       "control": _counts(control.get(k, CohortCounts()))}
              for k in sorted(set(cohort) | set(control))}
    return ModelResult(scenario.name, f.devices, new, old, rounds, strata)
