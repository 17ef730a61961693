"""Health gates: a ring's cohort against its concurrent control and absolute limits.

Verdict phases are fixed (PASS < WAIT < FAIL) and combine worst-of; "no data" is never PASS.
Every verdict carries its evidence. The statistics live in :mod:`otactl.rollout.stats`.

Alpha spending: the plan's false-rollback budget is split evenly over its distinct tests (metric x
control/limit x margin); a test that recurs in later rings continues as one e-process (its
e-values multiply across rings, so evidence carries); within a test, evenly over the levels (whole ring, each
variant, each region, each stratum) and within a level evenly over its groups, so a regression
confined to one variant or one stratum is tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum

import numpy as np

from otactl.rollout import stats
from otactl.rollout.plan import GateSpec, Metric, Missing, Plan, RingName
from otactl.rollout.rings import project
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
    scope: str  # "overall" or a stratum "model/variant/region"
    test: str  # "control" (ratio vs control) or "limit" (absolute)
    margin: float  # the null: ratio to control <= margin, or rate <= limit
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


@dataclass(frozen=True)
class GateVerdict:
    metric: Metric
    phase: Phase
    reason: str
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class Observation:
    """What the controller read for one ring. ``ring is None``: telemetry unavailable."""

    ring: Mapping[StratumKey, CohortCounts] | None
    control: Mapping[StratumKey, CohortCounts] | None
    since: datetime
    until: datetime
    # The baseline release's own install record (devices on the old release are not installing
    # now, so install failures compare against how the baseline fared when it shipped).
    install_control: Mapping[StratumKey, CohortCounts] | None = None


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


def _events(metric: Metric, c: CohortCounts) -> tuple[int, float]:
    if metric is Metric.INSTALL_FAILURE_RATE:
        return c.install_failures, float(c.installs)
    if metric is Metric.CRASH_RATE:
        return c.crashes, c.device_hours
    return c.crashing_devices, float(c.devices)


def _collapse(counts: Mapping[StratumKey, CohortCounts], dims: tuple[str, ...]
              ) -> dict[str, CohortCounts]:
    """Counts summed per projected stratum (dimensions outside ``dims`` become ``*``)."""
    out: dict[str, CohortCounts] = {}
    for key, c in counts.items():
        k = str(project(key, dims))
        out[k] = out[k] + c if k in out else c
    return out


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


def evaluate_gate(gate: GateSpec, ring: Mapping[StratumKey, CohortCounts],
                  control: Mapping[StratumKey, CohortCounts] | None, *, alpha: float,
                  dims: tuple[str, ...], carry: Mapping[str, float] | None = None
                  ) -> GateVerdict:
    """One gate's verdict: FAIL on a significant regression in any scope, PASS needs data.

    Scopes: the whole ring, then (when ``stratified``) each variant, each region, each stratum.
    The test's alpha is split evenly over the levels, then evenly over a level's groups.
    """
    keys = sorted(k for k, c in ring.items() if _events(gate.metric, c)[1] > 0)
    if not keys:
        return _missing(gate, "the ring has no data for this metric")
    # shares come from every stratum seen (ring and control), so they stay put from ring to ring
    every = sorted({*keys, *(control or {})})
    levels = _levels(dims, every) if gate.stratified else [()]
    scopes: list[str] = []
    r_list: list[CohortCounts] = []
    c_list: list[CohortCounts] = []
    shares: list[float] = []
    for level in levels:
        r_by = _collapse(ring, level)
        c_by = _collapse(control, level) if control is not None else {}
        groups = len({str(project(k, level)) for k in every})
        for name in sorted(k for k in r_by if _events(gate.metric, r_by[k])[1] > 0):
            scopes.append(OVERALL if not level else name)
            r_list.append(r_by[name])
            c_list.append(c_by.get(name, CohortCounts()))
            shares.append(1 / len(levels) / groups)
    tests = [t for t, on in (("control", gate.max_ratio is not None),
                             ("limit", gate.limit is not None)) if on]
    thresholds = np.array([1 / (alpha * sh) for sh in shares])
    evidence: list[Evidence] = []
    for test, key in zip(tests, gate.test_keys(), strict=True):
        found = (_control(gate, scopes, r_list, c_list, thresholds) if test == "control"
                 else _limit(gate, scopes, r_list, thresholds))
        evidence.extend(_carry(e, (carry or {}).get(f"{key}|{e.scope}", 1.0)) for e in found)
    return _combine(gate, evidence)


def _carry(e: Evidence, carried: float) -> Evidence:
    if carried == 1.0:
        return e
    value = min(e.e_value * carried, 1e300)
    phase = e.phase if e.phase is Phase.WAIT else (
        Phase.FAIL if value >= e.threshold else Phase.PASS)
    return replace(e, e_value=value, carried=carried, phase=phase)


def carry_out(verdict: RingVerdict, previous: Mapping[str, float] | None = None
              ) -> dict[str, float]:
    """The e-values a ring hands to the next one, keyed ``metric|test|margin|scope``."""
    out: dict[str, float] = dict(previous or {})
    for g in verdict.gates:
        for e in g.evidence:
            out[f"{g.metric.value}|{e.test}|{e.margin:g}|{e.scope}"] = e.e_value
    return out


def _combine(gate: GateSpec, evidence: list[Evidence]) -> GateVerdict:
    failed = [e for e in evidence if e.phase is Phase.FAIL]
    if failed:
        top = max(failed, key=lambda e: e.e_value / e.threshold)
        return GateVerdict(gate.metric, Phase.FAIL, f"{gate.metric.value} regressed in "
                           f"{top.scope} ({top.test}: ratio {_fmt(top.ratio)}, "
                           f"e-value {top.e_value:.3g} >= {top.threshold:.3g})", tuple(evidence))
    missing = [e for e in evidence if e.phase is not Phase.PASS]
    if missing:
        where = ", ".join(sorted({e.scope for e in missing}))
        phase = Phase.FAIL if gate.missing is Missing.FAIL else Phase.WAIT
        return GateVerdict(gate.metric, phase, f"{gate.metric.value}: no data to compare for "
                           f"{where} (missing: {gate.missing.value})", tuple(evidence))
    return GateVerdict(gate.metric, Phase.PASS, f"{gate.metric.value}: no significant "
                       "regression", tuple(evidence))


def _missing(gate: GateSpec, why: str) -> GateVerdict:
    phase = Phase.FAIL if gate.missing is Missing.FAIL else Phase.WAIT
    return GateVerdict(gate.metric, phase, f"{gate.metric.value}: {why} "
                       f"(missing: {gate.missing.value})", ())


def _arrays(metric: Metric, counts: list[CohortCounts]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [_events(metric, c) for c in counts]
    return (np.array([p[0] for p in pairs], dtype=np.float64),
            np.array([p[1] for p in pairs], dtype=np.float64))


def _phi(metric: Metric, counts: list[CohortCounts]) -> np.ndarray:
    if metric is not Metric.CRASH_RATE:
        return np.ones(len(counts))
    return stats.dispersion(np.array([c.crashes for c in counts], dtype=np.float64),
                            np.array([c.crashing_devices for c in counts], dtype=np.float64),
                            np.array([c.devices for c in counts], dtype=np.float64))


def _control(gate: GateSpec, scopes: list[str], r_list: list[CohortCounts],
             c_list: list[CohortCounts], thresholds: np.ndarray) -> list[Evidence]:
    assert gate.max_ratio is not None
    if gate.metric is Metric.CRASHING_DEVICE_RATE:
        return _control_crashing(gate, scopes, r_list, c_list, thresholds)
    a, ta = _arrays(gate.metric, r_list)
    b, tb = _arrays(gate.metric, c_list)
    # one dispersion for both sides keeps the exposure ratio; the larger one is the cautious one
    phi = np.maximum(_phi(gate.metric, r_list), _phi(gate.metric, c_list))
    has = (ta > 0) & (tb > 0)
    x = np.where(has, ta / np.where(tb > 0, tb, 1.0), 1.0)
    ae, be = np.floor(a / phi + 0.5), np.floor(b / phi + 0.5)
    n = ae + be
    p0 = gate.max_ratio * x / (gate.max_ratio * x + 1)
    p1 = gate.detect_ratio * x / (gate.detect_ratio * x + 1)
    log_e = stats.log_e_binomial(ae, n, p0, p1)
    lo, hi = stats.ratio_interval(a, a + b, x)
    out = []
    for i, scope in enumerate(scopes):
        rate = a[i] / ta[i] if ta[i] > 0 else None
        ref = b[i] / tb[i] if tb[i] > 0 else None
        e = math.exp(min(float(log_e[i]), 700.0)) if has[i] else 1.0
        phase = (Phase.WAIT if not has[i] else Phase.FAIL if e >= thresholds[i] else Phase.PASS)
        ratio = rate / ref if rate is not None and ref else None
        out.append(Evidence(scope, "control", gate.max_ratio, int(a[i]), float(ta[i]), rate, ref,
                            int(b[i]),
                            float(tb[i]), ratio, (float(lo[i]), float(hi[i])) if has[i] else None,
                            e, float(thresholds[i]), 1.0, float(phi[i]), phase,
                            "" if has[i] else "no control data"))
    return out


def _control_crashing(gate: GateSpec, scopes: list[str], r_list: list[CohortCounts],
                      c_list: list[CohortCounts], thresholds: np.ndarray) -> list[Evidence]:
    """Devices that crashed at least once, against what the control predicts for the ring.

    Ring devices have run the release for fewer hours than control devices have been watched, so
    shares are not compared directly: the control gives the crash rate per device-hour and the
    gamma-Poisson shape ``k`` (from its crashing share); the ring's expected crashing share at
    ratio ``r`` is ``1 - (1 + r*rate*h/k) ** -k`` at the ring's mean hours ``h`` (an upper bound
    on the average over devices, so the test errs towards PASS). Then a binomial e-value.
    """
    assert gate.max_ratio is not None
    f = np.array
    n_r = f([c.devices for c in r_list], dtype=np.float64)
    a = f([c.crashing_devices for c in r_list], dtype=np.float64)
    h_r = f([c.device_hours for c in r_list], dtype=np.float64) / np.maximum(n_r, 1)
    n_c = f([c.devices for c in c_list], dtype=np.float64)
    crashes_c = f([c.crashes for c in c_list], dtype=np.float64)
    hours_c = f([c.device_hours for c in c_list], dtype=np.float64)
    phi = stats.dispersion(crashes_c, f([c.crashing_devices for c in c_list], dtype=np.float64),
                           n_c)
    has = (n_r > 0) & (hours_c > 0) & (n_c > 0)
    rate = np.where(has, crashes_c / np.where(hours_c > 0, hours_c, 1.0), 0.0)
    m_c = crashes_c / np.maximum(n_c, 1)
    k = np.where(phi > 1, m_c / np.maximum(phi - 1, 1e-12), np.inf)

    def share(ratio: float) -> np.ndarray:
        mu = ratio * rate * h_r
        with np.errstate(over="ignore", invalid="ignore"):
            nb = 1 - np.power(1 + mu / np.where(np.isfinite(k), k, 1.0), -k)
        return np.where(np.isfinite(k), nb, -np.expm1(-mu))

    p_ref, p0, p1 = share(1.0), share(gate.max_ratio), share(gate.detect_ratio)
    ok = has & (p0 > 0) & (p0 < 1)
    log_e = stats.log_e_binomial(a, np.where(ok, n_r, 0), np.where(ok, p0, 0.5),
                                 np.where(ok, np.maximum(p1, p0 * 1.01), 0.6))
    lo, hi = stats.proportion_interval(a, np.maximum(n_r, 1))
    out = []
    for i, scope in enumerate(scopes):
        e = math.exp(min(float(log_e[i]), 700.0)) if ok[i] else 1.0
        phase = Phase.WAIT if not has[i] else Phase.FAIL if e >= thresholds[i] else Phase.PASS
        rr = a[i] / n_r[i] if n_r[i] else None
        ref = float(p_ref[i]) if has[i] else None
        ratio = rr / ref if rr is not None and ref else None
        interval = (float(lo[i] / ref), float(hi[i] / ref)) if ref else None
        out.append(Evidence(scope, "control", gate.max_ratio, int(a[i]), float(n_r[i]), rr, ref,
                            c_list[i].crashing_devices, float(n_c[i]), ratio, interval, e,
                            float(thresholds[i]), 1.0, float(phi[i]), phase,
                            "" if has[i] else "no control data"))
    return out


def _limit(gate: GateSpec, scopes: list[str], r_list: list[CohortCounts],
           thresholds: np.ndarray) -> list[Evidence]:
    assert gate.limit is not None
    limit = gate.limit
    a, t = _arrays(gate.metric, r_list)
    phi = _phi(gate.metric, r_list)
    if gate.metric is Metric.CRASH_RATE:
        lim = np.full_like(t, limit)
        log_e = stats.log_e_poisson(np.floor(a / phi + 0.5), t / phi, lim, gate.detect_ratio * lim)
        lo, hi = stats.poisson_interval(a, np.maximum(t, 1e-12))
    else:
        p0 = np.full_like(t, limit)
        p1 = np.minimum(gate.detect_ratio * p0, (1 + p0) / 2)
        log_e = stats.log_e_binomial(a, t, p0, p1)
        lo, hi = stats.proportion_interval(a, np.maximum(t, 1))
    out = []
    for i, scope in enumerate(scopes):
        has = bool(t[i] > 0)
        e = math.exp(min(float(log_e[i]), 700.0)) if has else 1.0
        phase = Phase.WAIT if not has else Phase.FAIL if e >= thresholds[i] else Phase.PASS
        rate = a[i] / t[i] if has else None
        out.append(Evidence(scope, "limit", limit, int(a[i]), float(t[i]), rate, limit, None,
                            None, None if rate is None else rate / limit,
                            (float(lo[i]) / limit, float(hi[i]) / limit) if has else None,
                            e, float(thresholds[i]), 1.0, float(phi[i]), phase,
                            "" if has else "no data"))
    return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def evaluate_ring(plan: Plan, ring_index: int, obs: Observation,
                  carry: Mapping[str, float] | None = None) -> RingVerdict:
    """The ring's verdict: its readiness (soak, reporting devices) and every gate, worst-of.

    A gate may FAIL before the soak ends (a clear regression); PASS needs the soak.
    """
    spec = plan.rings[ring_index]
    if obs.ring is None:
        gates = tuple(_missing(g, "telemetry unavailable") for g in spec.gates)
        return RingVerdict(spec.name, worst([Phase.WAIT, *(g.phase for g in gates)]),
                           ("telemetry unavailable", *(g.reason for g in gates)), gates, 0, 0.0,
                           obs.since, obs.until)
    alpha = plan.test_alpha
    verdicts = []
    for g in spec.gates:
        control = obs.install_control if (g.metric is Metric.INSTALL_FAILURE_RATE
                                          and obs.install_control is not None) else obs.control
        verdicts.append(evaluate_gate(g, obs.ring, control, alpha=alpha, dims=plan.strata,
                                      carry=carry))
    total = sum(obs.ring.values(), CohortCounts())
    ready = []
    if total.devices < spec.min_reporting_devices:
        ready.append(f"{total.devices} of {spec.min_reporting_devices} devices reporting")
    if total.device_hours < spec.soak_device_hours:
        ready.append(f"soak {total.device_hours:.0f} of {spec.soak_device_hours:.0f} "
                     "device-hours")
    phase = worst([Phase.WAIT if ready else Phase.PASS, *(v.phase for v in verdicts)])
    reasons = tuple(ready) + tuple(v.reason for v in verdicts if v.phase is not Phase.PASS)
    if phase is Phase.PASS:
        reasons = ("soak done, every gate passed",)
    return RingVerdict(spec.name, phase, reasons, tuple(verdicts), total.devices,
                       total.device_hours, obs.since, obs.until)
