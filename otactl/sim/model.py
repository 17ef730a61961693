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
    return {"devices": c.devices, "installs": c.installs, "install_failures": c.install_failures,
            "crashes": c.crashes, "crashing_devices": c.crashing_devices, "device_hours": round(c.device_hours, 1)}


def _total(by_stratum: dict[StratumKey, CohortCounts]) -> CohortCounts:
    total = CohortCounts()
    for c in by_stratum.values():
        total = total + c
    return total


def _rollout_steps(scenario: Scenario) -> tuple[str, str, list[PolicyStep]]:
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
    spec = scenario.release(version)
    if spec is None:
        return ()

    def factors(e: Any) -> tuple[float, float]:
        return e.crash_rate, BAD_IMAGE_FACTOR if e.bad_image else e.install_failure

    crash, install = factors(spec.effect)
    out = [ModelEffect("crash", crash), ModelEffect("install", install)]
    for variant, eff in spec.variant_effects:
        v_crash, v_install = factors(eff)
        out.append(ModelEffect("crash", v_crash / crash if crash else 0.0, variant=variant))
        out.append(ModelEffect("install", v_install / install if install else 0.0, variant=variant))
    return tuple(out)


def run_model(scenario: Scenario) -> ModelResult:
    new, old, steps = _rollout_steps(scenario)
    f, b = scenario.fleet, scenario.behaviour
    spec = FleetSpec(devices=f.devices, model=f.model, variants=f.variants, regions=f.regions,
                     lab_devices=f.lab_devices, crash_rate=b.crash_rate,
                     install_failure=max(b.install_failure, 1e-6), poll_hours=b.poll_interval_s / 3600,
                     offline=1.0 - b.online)
    fleet = Fleet(spec, scenario.seed)
    run = FleetRun(fleet, _effects(scenario, new), scenario.seed + 1, dt=1.0)
    per_round = max(1, round(b.poll_interval_s / 3600))
    by_round = {s.round: s for s in steps}
    rounds = []
    for rnd in range(scenario.rounds):
        step = by_round.get(rnd)
        if step is not None:
            mask = np.zeros(f.devices, dtype=bool)
            for ring_spec in scenario.rollout.rings:
                if step.rings is not None and ring_spec.name not in step.rings:
                    continue
                mask |= fleet.lab if ring_spec.tags else fleet.bucket * 100 < float(ring_spec.percent or 0)
            run.offer(mask)
        for _ in range(per_round):
            run.step()
        cohort, control = run.counts()
        rounds.append(ModelRound(rnd, int(run.offered.sum()), _counts(_total(cohort)), _counts(_total(control))))
    cohort, control = run.counts()
    strata = {str(k): {"ring": _counts(cohort.get(k, CohortCounts())),
                       "control": _counts(control.get(k, CohortCounts()))}
              for k in sorted(set(cohort) | set(control))}
    return ModelResult(scenario.name, f.devices, new, old, rounds, strata)
