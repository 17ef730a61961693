"""Health gates: a ring's cohort against its concurrent control and absolute limits.

Verdict phases are fixed (PASS < WAIT < FAIL) and combine worst-of; "no data" is never PASS.
Every verdict carries its evidence. The statistics live in :mod:`otactl.rollout.stats`, what each
metric counts in :mod:`otactl.rollout.metrics`.

- **Stratified at every scope.** A scope (the whole ring, a variant, a region, a stratum, the
  late hours) combines its strata's evidence under one common ratio; counts of different strata
  are never pooled against a control, so a ring whose mix differs from the fleet's neither fails a
  good release nor hides a bad one (docs/decisions/0107-stratified-power-gates.md).
- **FAIL** when a scope's e-value against "ratio <= max_ratio" reaches ``1/alpha`` of its share.
  Alpha spending: the plan's false-rollback budget is split evenly over its distinct tests; a test
  that recurs in later rings continues as one e-process (e-values multiply across rings); within a
  test evenly over the levels and within a level evenly over its groups.
- **PASS needs power**: the whole ring's e-value against "ratio >= harm" (the plan's declared
  harmful effect) must reach ``1/(1 - harm_confidence)``; until then the gate holds and says what
  it still needs. A scope whose FAIL e-value has reached that same level leans towards a
  regression: the gate holds until it fails or falls back (docs/decisions/0109).
- **Overdispersion**: events are divided by a dispersion factor ``1 + v m h`` (quasi-likelihood):
  the fleet's relative frailty variance ``v`` from the baseline's closed 24-hour periods since
  the lookback before the rollout began (raised, never lowered, by the ring's own), the stratum's
  crashes per hour ``m``, the hours ``h`` each device contributes in the window
  (docs/decisions/0109, 0110).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import numpy as np

from otactl.rollout import stats
from otactl.rollout.metrics import Control, Family, MetricDef, metric_def
from otactl.rollout.plan import GateSpec, Metric, Missing, Plan, RingName
from otactl.rollout.rings import project
from otactl.telemetry.counters import PERIOD_S
from otactl.telemetry.source import CohortCounts, StratumKey


class Phase(Enum):
    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    WAIT = "wait"
    FAIL = "fail"


SEVERITY = {Phase.PASS: 0, Phase.WAIT: 1, Phase.FAIL: 2}  # the explicit worst-of order
OVERALL = "overall"


def worst(phases: Iterable[Phase]) -> Phase:
    """Worst-of; nothing to combine is WAIT, never PASS."""
    return max(phases, key=SEVERITY.__getitem__, default=Phase.WAIT)


@dataclass(frozen=True)
class Evidence:
    scope: str  # "overall", a stratum "model/variant/region" (``*`` collapses), or "late>=24h"
    test: str  # "control" (ratio vs control), "limit" (absolute), "power-control"/"power-limit"
    margin: float  # the null: ratio to control <= margin, rate <= limit; power: ratio >= harm
    events: int
    exposure: float
    rate: float | None
    reference_rate: float | None  # the control's rate, or the limit
    control_events: int | None
    control_exposure: float | None
    ratio: float | None  # rate / reference_rate: the effect
    interval: tuple[float, float] | None  # 95% interval of the ratio (single look, for reading)
    e_value: float
    threshold: float  # FAIL once e_value reaches it (1 / alpha of this test)
    carried: float  # the e-value carried in from earlier rings (1: none), included in e_value
    dispersion: float
    phase: Phase
    note: str = ""
    needs: float | None = None  # power: roughly how much more exposure a PASS needs (its unit)


@dataclass(frozen=True)
class GateVerdict:
    metric: Metric
    phase: Phase
    reason: str
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class Observation:
    """What the controller read for one ring (a source that cannot be read is an error, raised
    before any observation exists: never a verdict)."""

    ring: Mapping[StratumKey, CohortCounts]
    control: Mapping[StratumKey, CohortCounts]
    since: datetime
    until: datetime
    # The baseline release's own install record (devices on the old release are not installing
    # now, so install failures compare against how the baseline fared when it shipped).
    install_control: Mapping[StratumKey, CohortCounts] | None = None
    # The baseline's counts (all rings) from counters.DISPERSION_LOOKBACK_H hours before the
    # rollout began until now: its closed 24-hour periods give the fleet's frailty (0110).
    dispersion: Mapping[StratumKey, CohortCounts] | None = None


@dataclass(frozen=True)
class RingVerdict:
    ring: RingName
    phase: Phase
    reasons: tuple[str, ...]
    gates: tuple[GateVerdict, ...]
    devices: int
    device_hours: float
    since: datetime
    until: datetime


HOURS = PERIOD_S / 3600


def _levels(dims: tuple[str, ...], keys: list[StratumKey]) -> list[tuple[str, ...]]:
    """The groupings tested: the whole ring, each single dimension, the full strata; a level
    that does not split the ring or repeats an earlier split is dropped."""
    out: list[tuple[str, ...]] = [()]
    seen: set[frozenset[frozenset[StratumKey]]] = set()
    base = ("model",) if "model" in dims else ()
    for level in [*((*base, d) if d != "model" else (d,) for d in dims), dims]:
        groups: dict[StratumKey, set[StratumKey]] = {}
        for k in keys:
            groups.setdefault(project(k, level), set()).add(k)
        split = frozenset(frozenset(g) for g in groups.values())
        if len(split) > 1 and split not in seen:
            out.append(level)
            seen.add(split)
    return out


@dataclass(frozen=True)
class _Scope:
    name: str
    members: tuple[int, ...]  # indices into the ring's strata
    share: float  # of the test's alpha


def _scopes(keys: list[StratumKey], every: list[StratumKey], dims: tuple[str, ...],
            stratified: bool, late_scope: str | None) -> list[_Scope]:
    levels = _levels(dims, every) if stratified else [()]
    n_levels = len(levels) + (1 if late_scope else 0)
    out: list[_Scope] = []
    for level in levels:
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(str(project(k, level)), []).append(i)
        n_groups = len({str(project(k, level)) for k in every})
        for name in sorted(groups):
            out.append(_Scope(OVERALL if not level else name, tuple(groups[name]),
                              1 / n_levels / n_groups))
    if late_scope:
        out.append(_Scope(late_scope, tuple(range(len(keys))), 1 / n_levels))
    return out


def _member(scopes: list[_Scope], n: int) -> np.ndarray:
    m = np.zeros((len(scopes), n))
    for j, sc in enumerate(scopes):
        m[j, list(sc.members)] = 1.0
    return m


def fleet_frailty(groups: Iterable[CohortCounts]) -> float:
    """The relative frailty variance ``v`` (``Var = m + v m^2`` per closed 24-hour period) pooled
    over cohorts, each with its own mean (:func:`stats.common_overdispersion`)."""
    gs = list(groups)
    f = np.array
    return stats.common_overdispersion(f([c.periods for c in gs], dtype=np.float64),
                                       f([c.period_crashes for c in gs], dtype=np.float64),
                                       f([c.period_crash_sq for c in gs], dtype=np.float64))


PRIOR_HOURS = 30 * 24.0  # a stratum's rate for dispersion leans on the pooled rate this much


def _period_phi(keys: list[StratumKey], source: Mapping[StratumKey, CohortCounts] | None,
                ring: Mapping[StratumKey, CohortCounts] | None = None) -> np.ndarray:
    """Per stratum: variance-to-mean of crashes per closed 24-hour period, ``1 + v m``.

    ``v``, the relative frailty variance, is one figure for the fleet (a device's frailty is not
    a stratum's): the larger of its estimate from the baseline's closed periods (``source``: the
    observation's dispersion window, which holds the ring's devices' last periods before they
    installed) and its estimate pooled with the ring's own closed periods (a ring's frail
    devices show there too). The ring's periods alone never set it: a ring stratum of a few
    devices absorbs a frail device into its own mean, which reads as little spread (decision
    0110). ``m``, the stratum's crashes per period, is its baseline rate shrunk towards the
    pooled rate (``PRIOR_HOURS``), so a small stratum that happened to have no crashes does not
    read as Poisson (docs/decisions/0109).
    """
    src = source or {}
    v = max(fleet_frailty(src.values()), fleet_frailty([*src.values(), *(ring or {}).values()]))
    f = np.array
    pooled = sum(src.values(), CohortCounts())
    rate_pool = pooled.crashes / pooled.device_hours if pooled.device_hours > 0 else 0.0
    per = [src.get(k, CohortCounts()) for k in keys]
    rate = f([(c.crashes + PRIOR_HOURS * rate_pool) / (c.device_hours + PRIOR_HOURS)
              for c in per], dtype=np.float64)
    out: np.ndarray = 1.0 + v * rate * HOURS
    return out


def _window_phi(phi_period: np.ndarray, hours_each: np.ndarray) -> np.ndarray:
    """The dispersion of counts over a window in which each device ran ``hours_each`` hours."""
    out: np.ndarray = 1.0 + (phi_period - 1.0) * np.maximum(hours_each, 0.0) / HOURS
    return out


@dataclass(frozen=True)
class _Inputs:
    """One gate's per-stratum arrays: ring events/exposure, control, dispersion."""

    a: np.ndarray
    t: np.ndarray
    b: np.ndarray
    u: np.ndarray
    phi: np.ndarray  # effective dispersion for the ring-vs-control comparison
    phi_ring: np.ndarray  # the ring's own (limits)


def _inputs(m: MetricDef, ring: list[CohortCounts], control: list[CohortCounts],
            phi_period: np.ndarray, window_h: float) -> _Inputs:
    f = np.array
    rc = [m.counts(c) for c in ring]
    cc = [m.counts(c) for c in control]
    a, t = f([x[0] for x in rc], dtype=np.float64), f([x[1] for x in rc], dtype=np.float64)
    b, u = f([x[0] for x in cc], dtype=np.float64), f([x[1] for x in cc], dtype=np.float64)
    if not m.dispersed:
        one = np.ones(len(ring))
        return _Inputs(a, t, b, u, one, one)
    devices = f([max(c.devices, 1) for c in ring], dtype=np.float64)
    hours_ring = np.minimum(f([c.device_hours for c in ring]) / devices, window_h)
    phi_r = _window_phi(phi_period, hours_ring)
    phi_c = _window_phi(phi_period, np.full(len(ring), window_h))  # wall hours: an upper bound
    with np.errstate(invalid="ignore", divide="ignore"):
        # Var(log a/b) ~ phi_r/a + phi_c/b, which one factor phi matches with phi*(1/a + 1/b)
        phi = np.where(a + b > 0, (phi_r * b + phi_c * a) / np.maximum(a + b, 1e-12), phi_r)
    return _Inputs(a, t, b, u, np.maximum(phi, 1.0), phi_r)


def evaluate_gate(gate: GateSpec, ring: Mapping[StratumKey, CohortCounts],
                  control: Mapping[StratumKey, CohortCounts] | None, *, alpha: float,
                  dims: tuple[str, ...], carry: Mapping[str, float] | None = None,
                  dispersion: Mapping[StratumKey, CohortCounts] | None = None,
                  window_h: float = 24.0, late_age: int | None = None,
                  harm_confidence: float = 0.95) -> GateVerdict:
    """One gate's verdict: FAIL on a significant regression in any scope; PASS needs data, no
    missing control, and power (the harmful effect ruled out for the whole ring)."""
    m = metric_def(gate.metric)
    keys = sorted(k for k, c in ring.items() if m.counts(c)[1] > 0)
    if not keys:
        return _missing(gate, "the ring has no data for this metric")
    control = control or {}
    every = sorted({*keys, *control})  # shares from every stratum seen: stable from ring to ring
    late_scope = f"late>={late_age}h" if late_age is not None and m.late else None
    scopes = _scopes(keys, every, dims, gate.stratified, late_scope)
    normal = [sc for sc in scopes if sc.name != late_scope]
    phi_period = _period_phi(keys, dispersion if dispersion is not None else control, ring)
    r_list = [ring[k] for k in keys]
    c_list = [control.get(k, CohortCounts()) for k in keys]
    data = _inputs(m, r_list, c_list, phi_period, window_h)
    late_data = None
    if late_scope is not None and late_age is not None:
        late_data = _inputs(m, [c.at_age(late_age) for c in r_list],
                            [c.at_age(late_age) for c in c_list], phi_period, window_h)
    c = dict(carry or {})
    evidence: list[Evidence] = []
    power_threshold = 1 / (1 - harm_confidence)
    if gate.max_ratio is not None:
        key = f"{gate.metric.value}|control|{gate.max_ratio:g}"
        evidence += _control(gate, m, normal, keys, data, alpha, c, key)
        if late_data is not None and late_scope is not None:
            late_sc = [sc for sc in scopes if sc.name == late_scope]
            evidence += _control(gate, m, late_sc, keys, late_data, alpha, c, key)
        evidence.append(_power_control(gate, m, keys, data, power_threshold, c))
    if gate.limit is not None:
        key = f"{gate.metric.value}|limit|{gate.limit:g}"
        evidence += _limit(gate, m, normal, data, alpha, c, key)
        evidence.append(_power_limit(gate, m, data, power_threshold, c))
    return _combine(gate, evidence, power_threshold)


def _comparison(d: _Inputs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Strata with both sides, the exposure ratio, and the quasi-counts (events / dispersion) of
    the conditional binomial: ring events out of ring + control events."""
    has = (d.t > 0) & (d.u > 0)
    x = np.where(has, d.t / np.where(d.u > 0, d.u, 1.0), 0.0)
    return has, x, d.a / d.phi, (d.a + d.b) / d.phi


def _e(log_e: float) -> float:
    return math.exp(min(log_e, 700.0))


def _control(gate: GateSpec, m: MetricDef, scopes: list[_Scope], keys: list[StratumKey],
             d: _Inputs, alpha: float, carry: Mapping[str, float], key: str) -> list[Evidence]:
    assert gate.max_ratio is not None
    has, x, qa, qn = _comparison(d)
    member = _member(scopes, len(keys)) * has[None, :]
    theta, logw = stats.fail_grid(gate.max_ratio, gate.detect_ratio)
    log_e = stats.log_e_stratified(qa, qn, x, member, theta, logw, math.log(gate.max_ratio))
    est, lo, hi = stats.stratified_ratio(qa, qn, x, member)
    out = []
    for j, sc in enumerate(scopes):
        idx = list(sc.members)
        with_control = [i for i in idx if has[i]]
        without = [str(keys[i]) for i in idx if not has[i]]
        t_sum = float(d.t[idx].sum())
        rate = float(d.a[idx].sum()) / t_sum if t_sum > 0 else None
        tw = float(d.t[with_control].sum())
        ref = (float((d.t[with_control] * d.b[with_control] / d.u[with_control]).sum()) / tw
               if with_control and tw > 0 else None)  # the control's rates at the ring's mix
        threshold = 1 / (alpha * sc.share)
        carried = carry.get(f"{key}|{sc.name}", 1.0)
        e = min(_e(float(log_e[j])) * carried, 1e300) if with_control else carried
        if not with_control or (len(idx) == 1 and without):
            phase, note = Phase.WAIT, "no control data"
        else:
            phase = Phase.FAIL if e >= threshold else Phase.PASS
            note = f"no control for {', '.join(without)}" if without else ""
        b_sum, u_sum = float(d.b[idx].sum()), float(d.u[idx].sum())
        out.append(Evidence(sc.name, "control", gate.max_ratio, round(float(d.a[idx].sum())),
                            t_sum, rate, ref, round(b_sum), u_sum,
                            float(est[j]) if with_control else None,
                            (float(lo[j]), float(hi[j])) if with_control else None, e, threshold,
                            carried, float(np.max(d.phi[idx])), phase, note))
    return out


def _needs(events: float, exposure: float, phi: float, ratio: float | None, harm: float,
           threshold: float, rate_ref: float | None) -> float | None:
    """Roughly the exposure still needed before the harm can be ruled out (normal approx.)."""
    r = max(ratio or 1.0, 1.0)
    if r >= harm:
        return None
    need_events = float(stats.events_for_power(threshold, harm, r, phi))
    rate = events / exposure if events > 0 and exposure > 0 else rate_ref
    if not rate:
        return None
    return max(need_events / rate - exposure, 0.0)


def _power_control(gate: GateSpec, m: MetricDef, keys: list[StratumKey], d: _Inputs,
                   threshold: float, carry: Mapping[str, float]) -> Evidence:
    harm = gate.harm
    has, x, qa, qn = _comparison(d)
    member = has[None, :].astype(np.float64)
    theta, logw = stats.pass_grid(harm)
    log_e = float(stats.log_e_stratified(qa, qn, x, member, theta, logw, math.log(harm))[0])
    est, lo, hi = stats.stratified_ratio(qa, qn, x, member)
    carried = carry.get(f"{gate.metric.value}|power-control|{harm:g}|{OVERALL}", 1.0)
    e = min(_e(log_e) * carried, 1e300) if has.any() else carried
    t_sum, a_sum = float(d.t[has].sum()), float(d.a[has].sum())
    ref = float((d.t[has] * d.b[has] / d.u[has]).sum()) / t_sum if t_sum > 0 else None
    phi = float((d.phi[has] * d.t[has]).sum() / t_sum) if t_sum > 0 else 1.0
    ratio = float(est[0]) if has.any() else None
    phase = Phase.PASS if has.any() and e >= threshold else Phase.WAIT
    needs = None if phase is Phase.PASS else _needs(a_sum, t_sum, phi, ratio, harm, threshold / e
                                                    if e > 1 else threshold, ref)
    return Evidence(OVERALL, "power-control", harm, round(a_sum), t_sum,
                    a_sum / t_sum if t_sum > 0 else None, ref, round(float(d.b[has].sum())),
                    float(d.u[has].sum()), ratio,
                    (float(lo[0]), float(hi[0])) if has.any() else None, e, threshold, carried,
                    phi, phase, "" if has.any() else "no control data", needs)


def _limit(gate: GateSpec, m: MetricDef, scopes: list[_Scope], d: _Inputs, alpha: float,
           carry: Mapping[str, float], key: str) -> list[Evidence]:
    assert gate.limit is not None
    limit = gate.limit
    member = _member(scopes, len(d.a))
    a, t = member @ d.a, member @ d.t
    phi = np.where(t > 0, (member @ (d.phi_ring * d.t)) / np.maximum(t, 1e-12), 1.0)
    theta, logw = stats.fail_grid(1.0, gate.detect_ratio)
    log_e = stats.log_e_single(a / phi, t / phi, m.family.value, limit, theta, logw, 0.0)
    if m.family is Family.RATE:
        lo, hi = stats.poisson_interval(a, np.maximum(t, 1e-12))
    else:
        lo, hi = stats.proportion_interval(np.minimum(a, t), np.maximum(t, 1))
    out = []
    for j, sc in enumerate(scopes):
        has = bool(t[j] > 0)
        carried = carry.get(f"{key}|{sc.name}", 1.0)
        e = min(_e(float(log_e[j])) * carried, 1e300) if has else carried
        threshold = 1 / (alpha * sc.share)
        phase = Phase.WAIT if not has else Phase.FAIL if e >= threshold else Phase.PASS
        rate = float(a[j] / t[j]) if has else None
        out.append(Evidence(sc.name, "limit", limit, round(float(a[j])), float(t[j]), rate, limit,
                            None, None, None if rate is None else rate / limit,
                            (float(lo[j]) / limit, float(hi[j]) / limit) if has else None,
                            e, threshold, carried, float(phi[j]), phase, "" if has else "no data"))
    return out


def _power_limit(gate: GateSpec, m: MetricDef, d: _Inputs, threshold: float,
                 carry: Mapping[str, float]) -> Evidence:
    assert gate.limit is not None
    limit = gate.limit
    harm = gate.harm
    if m.family is Family.SHARE and limit * harm >= 1:
        harm = (1 + limit) / 2 / limit  # a share cannot exceed 1
    a, t = float(d.a.sum()), float(d.t.sum())
    phi = float((d.phi_ring * d.t).sum() / t) if t > 0 else 1.0
    theta, logw = stats.pass_grid(harm)
    log_e = float(stats.log_e_single(np.array([a / phi]), np.array([t / phi]), m.family.value,
                                     limit, theta, logw, math.log(harm))[0])
    carried = carry.get(f"{gate.metric.value}|power-limit|{limit:g}|{OVERALL}", 1.0)
    e = min(_e(log_e) * carried, 1e300) if t > 0 else carried
    phase = Phase.PASS if t > 0 and e >= threshold else Phase.WAIT
    rate = a / t if t > 0 else None
    needs = None
    if phase is not Phase.PASS and t > 0:
        need_events = float(stats.events_for_power(threshold, harm, phi=phi))
        expected = max(a, need_events) / max(rate or 0.0, limit)
        needs = max(expected - t, 0.0)
    return Evidence(OVERALL, "power-limit", harm, round(a), t, rate, limit, None, None,
                    None if rate is None else rate / limit, None, e, threshold, carried, phi,
                    phase, "" if t > 0 else "no data", needs)


def carry_out(verdict: RingVerdict, previous: Mapping[str, float] | None = None
              ) -> dict[str, float]:
    """The e-values a ring hands to the next one, keyed ``metric|test|margin|scope``."""
    out: dict[str, float] = dict(previous or {})
    for g in verdict.gates:
        for e in g.evidence:
            out[f"{g.metric.value}|{e.test}|{e.margin:g}|{e.scope}"] = e.e_value
    return out


def _combine(gate: GateSpec, evidence: list[Evidence], lean: float) -> GateVerdict:
    """FAIL, then missing data, then a scope that leans towards a regression (its FAIL e-value at
    or above ``lean``, the power test's threshold: evidence for harm as strong as a PASS needs
    against it), then power, then PASS. Holding on a lean costs a good release a few hours (its
    e-value falls); it keeps a regression that is still gathering evidence in the ring. One-shot
    metrics (installs) never hold on a lean: their ring's evidence stops growing, so the hold
    would last for ever; the next, larger ring settles it."""
    tests = [e for e in evidence if not e.test.startswith("power")]
    failed = [e for e in tests if e.phase is Phase.FAIL]
    if failed:
        top = max(failed, key=lambda e: e.e_value / e.threshold)
        return GateVerdict(gate.metric, Phase.FAIL, f"{gate.metric.value} regressed in "
                           f"{top.scope} ({top.test}: ratio {_fmt(top.ratio)}, "
                           f"e-value {top.e_value:.3g} >= {top.threshold:.3g})", tuple(evidence))
    missing = [e for e in tests if e.phase is not Phase.PASS]
    if missing:
        where = ", ".join(sorted({e.scope for e in missing}))
        phase = Phase.FAIL if gate.missing is Missing.FAIL else Phase.WAIT
        return GateVerdict(gate.metric, phase, f"{gate.metric.value}: no data to compare for "
                           f"{where} (missing: {gate.missing.value})", tuple(evidence))
    leaning = [] if metric_def(gate.metric).once else [e for e in tests if e.e_value >= lean]
    if leaning:
        e = max(leaning, key=lambda e: math.log(e.e_value) / math.log(e.threshold))
        return GateVerdict(gate.metric, Phase.WAIT, f"{gate.metric.value}: leans towards a "
                           f"regression in {e.scope} ({e.test}: ratio {_fmt(e.ratio)}, e-value "
                           f"{e.e_value:.3g}, fails at {e.threshold:.3g}); holding until it "
                           f"falls below {lean:.3g} or fails", tuple(evidence))
    weak = [e for e in evidence if e.test.startswith("power") and e.phase is not Phase.PASS]
    if weak:
        e = weak[0]
        unit = metric_def(gate.metric).unit
        what = ("vs control" if e.test == "power-control" else f"vs the limit {e.reference_rate:g}")
        need = (f"; needs ~{_round(e.needs)} more {unit}" if e.needs is not None else
                "; not while the observed ratio stays this high")
        return GateVerdict(gate.metric, Phase.WAIT, f"{gate.metric.value}: not enough evidence "
                           f"yet to rule out a {e.margin:.3g}x regression {what} (ratio "
                           f"{_fmt(e.ratio)}, e-value {e.e_value:.3g} of {e.threshold:.3g}){need}",
                           tuple(evidence))
    return GateVerdict(gate.metric, Phase.PASS, f"{gate.metric.value}: no significant "
                       "regression, harm ruled out", tuple(evidence))


def _round(x: float | None) -> str:
    if x is None:
        return "?"
    if x >= 100:
        return f"{round(x, -2 if x < 10_000 else -3):,.0f}"
    return f"{x:.0f}"


def _missing(gate: GateSpec, why: str) -> GateVerdict:
    phase = Phase.FAIL if gate.missing is Missing.FAIL else Phase.WAIT
    return GateVerdict(gate.metric, phase, f"{gate.metric.value}: {why} "
                       f"(missing: {gate.missing.value})", ())


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def evaluate_ring(plan: Plan, ring_index: int, obs: Observation,
                  carry: Mapping[str, float] | None = None) -> RingVerdict:
    """The ring's verdict: its readiness (soak, reporting devices, late soak) and every gate,
    worst-of. A gate may FAIL before the soak ends (a clear regression); PASS needs the soak."""
    spec = plan.rings[ring_index]
    alpha = plan.test_alpha
    window_h = max((obs.until - obs.since).total_seconds() / 3600, 1e-9)
    late_age = spec.late_soak.after_hours if spec.late_soak is not None else None
    verdicts = []
    for g in spec.gates:
        m = metric_def(g.metric)
        control = obs.install_control if (m.control is Control.INSTALL_RECORD
                                          and obs.install_control is not None) else obs.control
        verdicts.append(evaluate_gate(g, obs.ring, control, alpha=alpha, dims=plan.strata,
                                      carry=carry, dispersion=obs.dispersion, window_h=window_h,
                                      late_age=late_age, harm_confidence=plan.harm_confidence))
    total = sum(obs.ring.values(), CohortCounts())
    ready = []
    if total.devices < spec.min_reporting_devices:
        ready.append(f"{total.devices} of {spec.min_reporting_devices} devices reporting")
    if total.device_hours < spec.soak_device_hours:
        ready.append(f"soak {total.device_hours:.0f} of {spec.soak_device_hours:.0f} "
                     "device-hours")
    if spec.late_soak is not None:
        late = total.at_age(spec.late_soak.after_hours)
        if late.device_hours < spec.late_soak.device_hours:
            ready.append(f"late soak {late.device_hours:.0f} of "
                         f"{spec.late_soak.device_hours:.0f} device-hours run after "
                         f"{spec.late_soak.after_hours} h on the image")
        if late.devices < spec.late_soak.devices:
            ready.append(f"{late.devices} of {spec.late_soak.devices} devices past "
                         f"{spec.late_soak.after_hours} h on the image")
    phase = worst([Phase.WAIT if ready else Phase.PASS, *(v.phase for v in verdicts)])
    reasons = tuple(ready) + tuple(v.reason for v in verdicts if v.phase is not Phase.PASS)
    if phase is Phase.PASS:
        reasons = ("soak done, every gate passed with the harm ruled out",)
    return RingVerdict(spec.name, phase, reasons, tuple(verdicts), total.devices,
                       total.device_hours, obs.since, obs.until)
