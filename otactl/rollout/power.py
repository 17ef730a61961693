"""Can a ring ever get the power a PASS needs? A pure estimate for ``rollout plan``.

A gate passes only when its evidence rules out ``harm_ratio`` (docs/decisions/0107). Given the
ring's devices per stratum and the baseline's recent behaviour per stratum (events per device-hour,
device-hours per device per wall hour, dispersion), this says how many events the power test needs
(at a true ratio of 1, normal approximation: ``2 phi (ln(1/(1 - confidence)) + 1) / ln(harm)^2``),
how long the ring takes to collect them, and whether that fits a horizon. For overdispersed counts
the dispersion grows with the hours each device has run (0109), so a ring's evidence tends to
``devices / frailty variance``: a ring of too few devices is told so, whatever its soak. It also warns about rings
that can never reach their ``min_reporting_devices``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
            if m.dispersed:
                out.append(_dispersed_power(ring.name, m.metric.value, harm, plan.harm_confidence,
                                            cumulative[i], baseline))
                continue
            per_hour = sum(n * baseline[s].hours_per_device_hour
                           * baseline[s].events_per_hour.get(m.metric.value, 0.0)
                           for s, n in cumulative[i].items() if s in baseline)
            hours = need / per_hour if per_hour > 0 else None
            feasible = hours is not None and hours <= HORIZON_H
            out.append(GatePower(ring.name, m.metric.value, need, hours, feasible,
                                 "" if feasible else _advice(hours)))
    return out


def _advice(hours: float | None) -> str:
    if hours is None:
        return "no events expected: the ring is empty or the baseline never has them"
    return (f"needs ~{hours / 24:.0f} days: fewer or wider rings, a longer soak, or a higher "
            "harm_ratio")


def frailty(baseline: Mapping[str, Baseline], devices: Mapping[str, int]) -> float:
    """The fleet's relative frailty variance ``v`` (``phi_24 = 1 + v m``, m crashes per closed
    24-hour period), pooled over the ring's strata (docs/decisions/0109)."""
    known = [(n, baseline[s]) for s, n in devices.items() if s in baseline]
    excess = sum(n * (b.phi - 1) for n, b in known)
    scale = sum(n * 24 * b.events_per_hour.get(CRASHES, 0.0) for n, b in known)
    return max(excess / scale, 0.0) if scale > 0 else 0.0


CRASHES = "crash_rate"  # the counts whose closed periods give the dispersion


def _dispersed_power(ring: str, metric: str, harm: float, confidence: float,
                     devices: Mapping[str, int], baseline: Mapping[str, Baseline]) -> GatePower:
    """A control gate on an overdispersed count. Its evidence is the ring's events divided by
    ``1 + v m h`` (``h`` hours per device so far), which grows with the soak: ``n m h / (1 + v m
    h)`` tends to ``n / v`` per stratum, so a ring of too few devices can never rule out the harm,
    however long it soaks. The wall hours until it can, or why never."""
    need = needed_events(harm, confidence)  # quasi-events (events / dispersion)
    v = frailty(baseline, devices)
    known = [(n, baseline[s]) for s, n in devices.items() if s in baseline]

    def quasi(t: float) -> float:
        total = 0.0
        for n, b in known:
            h = b.hours_per_device_hour * t
            rate, crash = b.events_per_hour.get(metric, 0.0), b.events_per_hour.get(CRASHES, 0.0)
            total += n * rate * h / (1 + v * crash * h)
        return total

    if quasi(1.0) <= 0:
        return GatePower(ring, metric, need, None, False, _advice(None))
    if quasi(HORIZON_H) < need:
        ceiling = quasi(1e9)
        if ceiling < need:
            more = sum(n for n, _ in known) * need / max(ceiling, 1e-9)
            return GatePower(ring, metric, need, None, False,
                             f"its {sum(n for n, _ in known)} devices can never rule out "
                             f"{harm:g}x: the spread between devices (frailty variance {v:.2g}) "
                             f"caps the evidence at ~{ceiling:.0f} of {need:.0f} events whatever "
                             f"the soak; a ring of ~{more:,.0f} devices, or a higher harm_ratio")
        lo, hi = float(HORIZON_H), 2.0 * HORIZON_H
        while quasi(hi) < need:
            hi *= 2
    else:
        lo, hi = 0.0, float(HORIZON_H)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if quasi(mid) < need else (lo, mid)
    feasible = hi <= HORIZON_H
    return GatePower(ring, metric, need, hi, feasible, "" if feasible else _advice(hi))


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
        advice = "" if feasible else f"needs ~{need:.0f} installs, the ring has {total}"
        if feasible and not _passes_with_one_failure(total, limit, level / limit,
                                                     plan.harm_confidence):
            advice = (f"one failed install of its {total} could never rule out {level:.2g} and "
                      "would hold the ring for good: more devices or a looser limit")
        return GatePower(ring, metric, need, 0.0 if feasible else None, feasible, advice)
    per_hour = sum(n * b.hours_per_device_hour for n, b in known)
    hours = need / per_hour if per_hour > 0 else None
    feasible = hours is not None and hours <= HORIZON_H
    return GatePower(ring, metric, need, hours, feasible, "" if feasible else
                     "a wider ring or a longer soak")


def _passes_with_one_failure(installs: int, limit: float, harm: float, confidence: float
                             ) -> bool:
    """Would the power e-value of a limit-only share gate reach its threshold with one failure
    among ``installs`` one-shot installs (the gates' own test, stats.log_e_single)?"""
    theta, logw = stats.pass_grid(harm)
    log_e = stats.log_e_single(np.array([1.0]), np.array([float(installs)]), "share", limit,
                               theta, logw, math.log(harm))[0]
    return bool(log_e >= math.log(1 / (1 - confidence)))


def min_device_warnings(plan: Plan, cumulative: Sequence[Mapping[str, int]]) -> list[str]:
    out = []
    for ring, per in zip(plan.rings, cumulative, strict=True):
        have = sum(per.values())
        if have < ring.min_reporting_devices:
            out.append(f"ring {ring.name!r} holds {have} devices but needs "
                       f"{ring.min_reporting_devices} reporting: it can never pass")
    return out
