"""Can a ring ever get the power a PASS needs? A pure estimate for ``rollout plan``.

A gate passes only when its evidence rules out ``harm_ratio`` (docs/decisions/0107). Given the
ring's devices per stratum and the baseline's recent behaviour per stratum (events per device-hour,
device-hours per device per wall hour, dispersion), this says how many events the power test needs
(at a true ratio of 1, normal approximation: ``2 phi (ln(1/(1 - confidence)) + 1) / ln(harm)^2``),
how long the ring takes to collect them, and whether that fits a horizon. It also warns about rings
that can never reach their ``min_reporting_devices``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otactl.rollout import stats
from otactl.rollout.metrics import Control, metric_def
from otactl.rollout.plan import Plan

HORIZON_H = 14 * 24  # a ring that needs longer than two weeks "can never" pass in practice


@dataclass(frozen=True)
class Baseline:
    """One stratum's recent behaviour on the baseline (from the telemetry lookback)."""

    events_per_hour: Mapping[str, float]  # metric -> events per unit of exposure
    hours_per_device_hour: float  # device-hours per device per wall hour (duty)
    installs_share: float = 1.0  # share of devices that install when offered
    phi: float = 1.0


@dataclass(frozen=True)
class GatePower:
    ring: str
    metric: str
    needed_events: float  # events (control tests) or exposure (limit-only gates)
    hours: float | None  # wall hours to collect them; None: the ring cannot collect any
    feasible: bool
    advice: str

    def to_json(self) -> dict[str, Any]:
        return {"ring": self.ring, "metric": self.metric,
                "needed_events": round(self.needed_events, 1),
                "hours": None if self.hours is None else round(self.hours, 1),
                "feasible": self.feasible, "advice": self.advice}


def needed_events(harm: float, confidence: float, phi: float = 1.0) -> float:
    return float(stats.events_for_power(1 / (1 - confidence), harm, phi=phi))


def ring_power(plan: Plan, cumulative: Sequence[Mapping[str, int]],
               baseline: Mapping[str, Baseline]) -> list[GatePower]:
    """Per ring and gate: events needed for power and the wall hours the ring needs for them.

    ``cumulative[i]``: devices on the release once ring ``i`` is reached, per stratum name;
    ``baseline``: per stratum name (strata without a baseline contribute nothing).
    """
    out: list[GatePower] = []
    for i, ring in enumerate(plan.rings):
        for gate in ring.gates:
            m = metric_def(gate.metric)
            phi = max((b.phi for b in baseline.values()), default=1.0) if m.dispersed else 1.0
            harm = gate.harm
            need = needed_events(harm, plan.harm_confidence, phi)
            if gate.max_ratio is None and gate.limit is not None:
                out.append(_limit_power(plan, ring.name, m.metric.value, gate.limit, harm,
                                        m.control is Control.INSTALL_RECORD, cumulative[i],
                                        baseline, phi))
                continue
            if m.control is Control.INSTALL_RECORD:
                # installs happen once per device: the ring holds what it can ever give
                rate = sum(n * baseline[s].installs_share * baseline[s].events_per_hour.get(
                    m.metric.value, 0.0) for s, n in cumulative[i].items() if s in baseline)
                feasible = rate >= need
                out.append(GatePower(ring.name, m.metric.value, need, 0.0 if feasible else None,
                                     feasible, "" if feasible else
                                     f"the ring's installs give ~{rate:.1f} failures at most; "
                                     "a wider ring, a limit-only gate or a higher harm_ratio"))
                continue
            per_hour = sum(n * baseline[s].hours_per_device_hour
                           * baseline[s].events_per_hour.get(m.metric.value, 0.0)
                           for s, n in cumulative[i].items() if s in baseline)
            hours = need / per_hour if per_hour > 0 else None
            feasible = hours is not None and hours <= HORIZON_H
            advice = "" if feasible else (
                "no events expected: the ring is empty or the baseline never has them"
                if hours is None else
                f"needs ~{hours / 24:.0f} days: fewer or wider rings, a longer soak, or a higher "
                "harm_ratio")
            out.append(GatePower(ring.name, m.metric.value, need, hours, feasible, advice))
    return out


def _limit_power(plan: Plan, ring: str, metric: str, limit: float, harm: float, once: bool,
                 devices: Mapping[str, int], baseline: Mapping[str, Baseline], phi: float
                 ) -> GatePower:
    """A limit-only gate: the exposure at which the baseline's rate rules out ``harm x limit``
    (Kullback-Leibler rate of the likelihood ratio), and whether the ring collects it."""
    known = [(n, baseline[s]) for s, n in devices.items() if s in baseline]
    total = sum(n for n, _ in known)
    rate = (sum(n * b.events_per_hour.get(metric, 0.0) for n, b in known) / total
            if total else 0.0)
    level = min(harm * limit, (1 + limit) / 2) if once else harm * limit
    if once:  # a share: binomial KL(rate || level) per install
        p = min(max(rate, 1e-9), 1 - 1e-9)
        kl = p * math.log(p / level) + (1 - p) * math.log((1 - p) / (1 - level))
    else:  # a rate: Poisson KL per unit of exposure
        kl = level - rate + (rate * math.log(rate / level) if rate > 0 else 0.0)
    need = phi * (math.log(1 / (1 - plan.harm_confidence)) + 1) / max(kl, 1e-12)
    if once:
        feasible = total >= need
        return GatePower(ring, metric, need, 0.0 if feasible else None, feasible,
                         "" if feasible else f"needs ~{need:.0f} installs, the ring has {total}")
    per_hour = sum(n * b.hours_per_device_hour for n, b in known)
    hours = need / per_hour if per_hour > 0 else None
    feasible = hours is not None and hours <= HORIZON_H
    return GatePower(ring, metric, need, hours, feasible, "" if feasible else
                     "a wider ring or a longer soak")


def min_device_warnings(plan: Plan, cumulative: Sequence[Mapping[str, int]]) -> list[str]:
    out = []
    for ring, per in zip(plan.rings, cumulative, strict=True):
        have = sum(per.values())
        if have < ring.min_reporting_devices:
            out.append(f"ring {ring.name!r} holds {have} devices but needs "
                       f"{ring.min_reporting_devices} reporting: it can never pass")
    return out
