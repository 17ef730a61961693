"""Gate verdicts: phases, worst-of, missing data, stratification, power, late soak, statistics."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from otactl.rollout import stats
from otactl.rollout.gates import (
    Observation,
    Phase,
    evaluate_gate,
    evaluate_ring,
    fleet_frailty,
    worst,
)
from otactl.rollout.metrics import METRICS, metric_def
from otactl.rollout.plan import GateSpec, Metric, Missing, parse_plan
from otactl.telemetry.source import CohortCounts, StratumKey

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)
DIMS = ("model", "variant", "region")
STRATA = [StratumKey("t9", v, r) for v in ("hp-300", "hp-400", "hp-500") for r in ("eu", "us")]
CRASH = GateSpec(Metric.CRASH_RATE, Missing.WAIT, max_ratio=1.3)


def cohort(devices: int, hours_each: float, crash_rate: float, *, installs: int = 0,
           failures: int = 0, periods: int = 0) -> CohortCounts:
    """Counts of a cohort whose devices each ran ``hours_each`` hours at ``crash_rate``; closed
    periods carry Poisson-like moments (mean m, E[c^2] = m + m^2)."""
    hours = devices * hours_each
    crashes = round(hours * crash_rate)
    m = 24 * crash_rate
    return CohortCounts(reports=devices, installs=installs, install_failures=failures,
                        crashes=crashes, device_hours=hours, crash_hours=min(crashes, hours),
                        periods=periods, period_crashes=round(periods * m),
                        period_crash_sq=round(periods * (m + m * m)), devices=devices)


def fleet(devices: int, rate: float, **over: float) -> dict[StratumKey, CohortCounts]:
    return {k: cohort(devices, 24, over.get(k.variant + "/" + k.region, rate), periods=devices)
            for k in STRATA}


def test_worst_of_uses_the_explicit_order_and_nothing_is_wait() -> None:
    assert worst([Phase.PASS, Phase.FAIL, Phase.WAIT]) is Phase.FAIL
    assert worst([Phase.PASS, Phase.WAIT]) is Phase.WAIT
    assert worst([Phase.PASS]) is Phase.PASS
    assert worst([]) is Phase.WAIT


def test_every_metric_has_one_definition_and_unknown_ones_raise() -> None:
    assert set(METRICS) == set(Metric)
    for m in Metric:
        d = metric_def(m)
        events, exposure = d.counts(cohort(10, 24, 0.01, installs=10, failures=1))
        assert events >= 0 and exposure > 0
    with pytest.raises(KeyError, match="no definition"):
        metric_def("crashing_device_rate")  # type: ignore[arg-type]


CASES = [
    # name, ring rate, control rate, per-stratum override on the ring, expected phase
    ("same-rates-pass", 0.01, 0.01, {}, Phase.PASS),
    ("drift-within-margin-pass", 0.0115, 0.01, {}, Phase.PASS),
    ("clear-regression-fail", 0.03, 0.01, {}, Phase.FAIL),
    ("one-stratum-regression-fail", 0.01, 0.01, {"hp-400/eu": 0.03}, Phase.FAIL),
]


@pytest.mark.parametrize(("name", "ring_rate", "ctrl_rate", "over", "phase"), CASES,
                         ids=[c[0] for c in CASES])
def test_crash_gate_table(name: str, ring_rate: float, ctrl_rate: float,
                          over: dict[str, float], phase: Phase) -> None:
    v = evaluate_gate(CRASH, fleet(300, ring_rate, **over), fleet(10_000, ctrl_rate),
                      alpha=0.002, dims=DIMS)
    assert v.phase is phase, v.reason
    overall = next(e for e in v.evidence if e.scope == "overall" and e.test == "control")
    assert overall.interval is not None and overall.interval[0] <= overall.interval[1]
    if phase is Phase.FAIL:
        assert "regressed" in v.reason
        if over:  # the variant or stratum is named, and the stratum's own test failed
            assert "t9/hp-400/" in v.reason
            assert any(e.scope == "t9/hp-400/eu" and e.phase is Phase.FAIL for e in v.evidence)
            assert overall.phase is Phase.PASS


def test_a_skewed_ring_mix_does_not_fail_a_good_release() -> None:
    """The ring holds mostly a stratum whose base rate is 3x the others'; the release changes
    nothing. Pooled counts would show a ratio near 2.5; every stratified scope shows ~1."""
    base = {k: 0.03 if k.variant == "hp-500" else 0.01 for k in STRATA}
    ring = {k: cohort(2000 if k.variant == "hp-500" else 100, 24, base[k]) for k in STRATA}
    ctrl = {k: cohort(100 if k.variant == "hp-500" else 20_000, 24, base[k], periods=5000)
            for k in STRATA}
    v = evaluate_gate(CRASH, ring, ctrl, alpha=0.002, dims=DIMS)
    assert v.phase is Phase.PASS, v.reason
    pooled = sum(ring.values(), CohortCounts())
    pooled_ctrl = sum(ctrl.values(), CohortCounts())
    naive = (pooled.crashes / pooled.device_hours) / (pooled_ctrl.crashes / pooled_ctrl.device_hours)
    assert naive > 2  # the trap the stratified scopes avoid
    for e in v.evidence:
        if e.test == "control" and e.ratio is not None:
            assert 0.8 < e.ratio < 1.25, e


def test_a_tiny_canary_never_passes_without_power() -> None:
    """3 devices, 72 device-hours, 3 crashes: nothing rules out a 2x regression."""
    ring = {STRATA[0]: cohort(3, 24, 3 / 72)}
    ctrl = {STRATA[0]: cohort(300, 24, 0.04, periods=300)}
    v = evaluate_gate(CRASH, ring, ctrl, alpha=0.002, dims=DIMS)
    assert v.phase is Phase.WAIT
    assert "not enough evidence yet to rule out a 2x regression" in v.reason
    assert "needs ~" in v.reason and "device-hours" in v.reason
    power = next(e for e in v.evidence if e.test == "power-control")
    assert power.phase is Phase.WAIT and power.needs is not None and power.needs > 100


def test_small_samples_never_fail_on_one_crash() -> None:
    ring = {STRATA[0]: cohort(5, 2, 0.1)}
    ctrl = {STRATA[0]: cohort(10_000, 24, 0.002, periods=10_000)}
    v = evaluate_gate(CRASH, ring, ctrl, alpha=0.01, dims=DIMS)
    assert v.phase is not Phase.FAIL


def test_overdispersion_from_closed_periods_widens_the_evidence() -> None:
    ring = fleet(300, 0.016)
    poisson = fleet(10_000, 0.01)
    clustered = {k: CohortCounts(**{**c.__dict__, "period_crash_sq": c.period_crash_sq * 20})
                 for k, c in poisson.items()}
    plain = evaluate_gate(CRASH, ring, poisson, alpha=0.002, dims=DIMS)
    wide = evaluate_gate(CRASH, ring, poisson, alpha=0.002, dims=DIMS, dispersion=clustered)
    e_plain = next(e for e in plain.evidence if e.scope == "overall" and e.test == "control")
    e_wide = next(e for e in wide.evidence if e.scope == "overall" and e.test == "control")
    assert e_wide.dispersion > 2 * e_plain.dispersion
    assert e_wide.e_value < e_plain.e_value


def _frail_ring(devices: int, hours_each: float, rate: float, frailty: float) -> CohortCounts:
    """A ring stratum of ``devices`` devices, one of which crashes ``frailty`` times as often
    as the others; its closed periods carry their expected moments (E[c^2] = m + m^2 each)."""
    per_device = int(hours_each // 24)
    m, mf = 24 * rate, 24 * rate * frailty
    crashes = round(hours_each * rate * (devices - 1 + frailty))
    return CohortCounts(reports=devices, crashes=crashes, device_hours=devices * hours_each,
                        crash_hours=crashes, periods=per_device * devices,
                        period_crashes=round(per_device * ((devices - 1) * m + mf)),
                        period_crash_sq=round(per_device * ((devices - 1) * (m + m * m)
                                                            + mf + mf * mf)),
                        devices=devices)


def test_a_frail_device_in_a_small_ring_stratum_does_not_fail_a_good_release() -> None:
    """30 canary devices in a stratum, one of them crashing 61x as often (a ratio of 3 to the
    control from that device alone); its baseline history has left the lookback, which looks
    Poisson. The ring's own closed periods show the clustering and the gate does not fail."""
    ring = {k: cohort(30, 200, 0.01, periods=240) for k in STRATA}
    ring[STRATA[0]] = _frail_ring(30, 200, 0.01, 61)
    v = evaluate_gate(CRASH, ring, fleet(300, 0.01), alpha=0.002, dims=DIMS, window_h=300)
    assert v.phase is not Phase.FAIL, v.reason
    e = next(e for e in v.evidence if e.scope == str(STRATA[0]) and e.test == "control")
    assert e.ratio is not None and e.ratio > 2.5  # the frail device's doing, not the release's
    assert e.dispersion > 5


def _clustered(devices: int, rate: float, v: float, periods_each: int = 3
               ) -> dict[StratumKey, CohortCounts]:
    """A baseline whose closed periods carry the moments of relative frailty variance ``v``
    (E[c^2] = m + (1 + v) m^2 per period)."""
    out = {}
    for k in STRATA:
        c = cohort(devices, 24 * periods_each, rate, periods=devices * periods_each)
        m = 24 * rate
        out[k] = CohortCounts(**{**c.__dict__,
                                 "period_crash_sq": round(c.periods * (m + (1 + v) * m * m))})
    return out


def test_the_rings_own_periods_can_raise_the_fleets_frailty_but_never_lower_it() -> None:
    """A ring stratum of 3 devices, one crashing 40x as often: its own mean absorbs the frail
    device, so its periods read as little spread (v ~1.4 against the baseline's 6). Pooled with
    the baseline they pulled v to ~3 and the stratum failed a good release (the 300-device
    benchmark's false rollbacks, decision 0110); the baseline's own estimate is a floor."""
    base = _clustered(50, 0.01, 6.0)
    ring = {k: cohort(3, 400, 0.01, periods=3 * 16) for k in STRATA}
    ring[STRATA[0]] = _frail_ring(3, 400, 0.01, 40)
    alone = fleet_frailty(base.values())
    assert alone == pytest.approx(6.0, rel=0.1)  # (counts rounded)
    assert fleet_frailty([*base.values(), *ring.values()]) < alone / 1.5
    control = {k: cohort(45, 400, 0.01) for k in STRATA}
    v = evaluate_gate(CRASH, ring, control, alpha=0.002, dims=DIMS, dispersion=base,
                      window_h=420)
    assert v.phase is not Phase.FAIL, v.reason
    e = next(e for e in v.evidence if e.scope == str(STRATA[0]) and e.test == "control")
    assert e.ratio is not None and e.ratio > 10  # the frail device's doing
    # ... with v from the baseline: 1 + 6 m h over the ~400 hours each device ran
    assert e.dispersion == pytest.approx(1 + 6.0 * 0.01 * 400, rel=0.1)


def test_a_frail_rings_own_periods_raise_the_fleets_frailty() -> None:
    """Where the ring's frail devices show more spread than the baseline's, they set ``v``."""
    base = fleet(300, 0.01)  # Poisson-like periods: v ~0
    ring = {k: cohort(30, 200, 0.01, periods=240) for k in STRATA}
    ring[STRATA[0]] = _frail_ring(30, 200, 0.01, 61)
    quiet = evaluate_gate(CRASH, {k: cohort(30, 200, 0.01, periods=240) for k in STRATA}, base,
                          alpha=0.002, dims=DIMS, dispersion=base, window_h=300)
    frail = evaluate_gate(CRASH, ring, base, alpha=0.002, dims=DIMS, dispersion=base,
                          window_h=300)
    phi = {g: max(e.dispersion for e in v.evidence if e.test == "control")
           for g, v in (("quiet", quiet), ("frail", frail))}
    assert phi["quiet"] < 1.5 < 5 < phi["frail"]


def test_a_stratum_without_baseline_crashes_still_gets_the_fleets_dispersion() -> None:
    """A small stratum that had no crashes in the lookback does not read as Poisson: its rate
    for the dispersion leans on the pooled rate."""
    base = {k: CohortCounts(**{**c.__dict__, "period_crash_sq": c.period_crash_sq * 5})
            for k, c in fleet(300, 0.01).items()}
    base[STRATA[0]] = cohort(60, 24, 0.0, periods=60)
    ring = {k: cohort(30, 100, 0.01) for k in STRATA}
    v = evaluate_gate(CRASH, ring, fleet(300, 0.01), alpha=0.002, dims=DIMS, dispersion=base,
                      window_h=120)
    phi = {e.scope: e.dispersion for e in v.evidence if e.test == "control"}
    assert phi[str(STRATA[0])] > 1.5
    assert phi[str(STRATA[0])] > 0.2 * phi[str(STRATA[1])]  # shrunk towards, not equal


LEAN_CASES = [
    # name, hp-400/eu ring rate (control 0.01), phase, words of the reason
    ("clear-passes", 0.016, Phase.PASS, "harm ruled out"),
    ("leaning-holds", 0.018, Phase.WAIT, "leans towards a regression in t9/hp-400/eu"),
    ("clear-regression-fails", 0.02, Phase.FAIL, "regressed in t9/hp-400/eu"),
]


@pytest.mark.parametrize(("name", "rate", "phase", "words"), LEAN_CASES,
                         ids=[c[0] for c in LEAN_CASES])
def test_a_scope_leaning_towards_a_regression_holds_the_ring(name: str, rate: float,
                                                             phase: Phase, words: str) -> None:
    """The whole ring has ruled out 2x, but one stratum's FAIL e-value sits between the power
    threshold (20) and its own threshold: the gate holds instead of passing."""
    v = evaluate_gate(CRASH, fleet(300, 0.01, **{"hp-400/eu": rate}), fleet(10_000, 0.01),
                      alpha=0.002, dims=DIMS)
    assert v.phase is phase, v.reason
    assert words in v.reason
    power = next(e for e in v.evidence if e.test == "power-control")
    assert power.phase is Phase.PASS  # the hold is not for lack of power


@pytest.mark.parametrize(("missing", "phase"), [(Missing.WAIT, Phase.WAIT),
                                                (Missing.FAIL, Phase.FAIL)])
def test_missing_control_follows_the_gate_declaration(missing: Missing, phase: Phase) -> None:
    gate = GateSpec(Metric.CRASH_RATE, missing, max_ratio=1.3)
    v = evaluate_gate(gate, fleet(300, 0.01), None, alpha=0.01, dims=("model",))
    assert v.phase is phase and "no data" in v.reason


def test_no_data_for_the_metric_is_the_declared_rule() -> None:
    gate = GateSpec(Metric.INSTALL_FAILURE_RATE, Missing.WAIT, max_ratio=1.3)
    v = evaluate_gate(gate, fleet(300, 0.01), fleet(1000, 0.01), alpha=0.01, dims=DIMS)
    assert v.phase is Phase.WAIT and "no data for this metric" in v.reason


def test_install_failures_against_the_baseline_install_record_and_a_limit() -> None:
    gate = GateSpec(Metric.INSTALL_FAILURE_RATE, Missing.WAIT, max_ratio=1.3, limit=0.1)
    history = {k: CohortCounts(reports=10_000, installs=10_000, install_failures=200)
               for k in STRATA}
    good = {k: CohortCounts(reports=3000, installs=3000, install_failures=60) for k in STRATA}
    bad = {k: CohortCounts(reports=300, installs=300, install_failures=30) for k in STRATA}
    assert evaluate_gate(gate, good, history, alpha=0.01, dims=DIMS).phase is Phase.PASS
    v = evaluate_gate(gate, bad, history, alpha=0.01, dims=DIMS)
    assert v.phase is Phase.FAIL
    assert {e.test for e in v.evidence} == {"control", "limit", "power-control", "power-limit"}


def test_a_one_shot_metric_never_holds_on_a_lean() -> None:
    """Installs happen once per device: a ring whose installs are spent gets no new evidence, so
    a lean (e-value between 20 and its threshold) would hold it for ever. Install gates pass on
    power and leave the lean to the next, larger ring; crash gates hold on the same lean."""
    gate = GateSpec(Metric.INSTALL_FAILURE_RATE, Missing.WAIT, max_ratio=1.3, harm_ratio=3)
    history = {k: CohortCounts(reports=10_000, installs=10_000, install_failures=200)
               for k in STRATA}
    ring = {k: CohortCounts(reports=500, installs=500, install_failures=10) for k in STRATA}
    ring[STRATA[2]] = CohortCounts(reports=500, installs=500, install_failures=26)
    v = evaluate_gate(gate, ring, history, alpha=0.002, dims=DIMS)
    lean = [e for e in v.evidence if e.test == "control" and 20 <= e.e_value < e.threshold]
    assert lean, [(e.scope, e.e_value) for e in v.evidence]
    assert v.phase is Phase.PASS, v.reason


PLAN = parse_plan("""
schema: otactl/canary-plan/1
name: t
rings:
  - name: canary
    selector: {percent: 5}
    soak_device_hours: 5000
    min_reporting_devices: 100
    gates:
      - {metric: crash_rate, max_ratio: 1.3, missing: wait}
      - {metric: crash_hour_rate, max_ratio: 1.3, missing: fail}
  - {name: all, selector: {percent: 100}, soak_device_hours: 0, min_reporting_devices: 1,
     gates: []}
""")


def test_ring_waits_for_soak_and_devices_then_passes() -> None:
    early = Observation(fleet(10, 0.01), fleet(10_000, 0.01), T0, T1)
    v = evaluate_ring(PLAN, 0, early)
    assert v.phase is Phase.WAIT
    assert any("devices reporting" in r for r in v.reasons)
    done = Observation(fleet(300, 0.01), fleet(10_000, 0.01), T0, T1)
    assert evaluate_ring(PLAN, 0, done).phase is Phase.PASS


def test_no_data_in_the_window_is_the_plans_declared_rule() -> None:
    v = evaluate_ring(PLAN, 0, Observation({}, fleet(10_000, 0.01), T0, T1))
    assert v.phase is Phase.FAIL  # crash_hour_rate declares missing: fail
    assert any("no data for this metric" in r for r in v.reasons)


def test_a_clear_regression_fails_before_the_soak_ends() -> None:
    ring = {k: cohort(40, 10, 0.5) for k in STRATA}
    v = evaluate_ring(PLAN, 0, Observation(ring, fleet(10_000, 0.01), T0, T1))
    assert v.phase is Phase.FAIL


LATE_PLAN = parse_plan("""
schema: otactl/canary-plan/1
name: late
rings:
  - name: canary
    selector: {percent: 5}
    soak_device_hours: 100
    min_reporting_devices: 10
    late_soak: {after_hours: 24, device_hours: 2000, devices: 50}
    gates:
      - {metric: crash_rate, max_ratio: 1.3, missing: wait}
  - {name: all, selector: {percent: 100}, soak_device_hours: 0, min_reporting_devices: 1,
     gates: []}
""")


def _aged(c: CohortCounts, late_hours: float, late_rate: float, aged: int) -> CohortCounts:
    late_crashes = round(late_hours * late_rate)
    return CohortCounts(**{**c.__dict__, "crashes": c.crashes + late_crashes,
                           "device_hours": c.device_hours + late_hours,
                           "late_device_hours": (late_hours, late_hours, 0.0, 0.0),
                           "late_crashes": (late_crashes, late_crashes, 0, 0),
                           "late_crash_hours": (float(late_crashes),) * 2 + (0.0, 0.0),
                           "aged_devices": (aged, aged, 0, 0)})


def test_a_late_soak_waits_for_hours_past_the_age_then_tests_them_alone() -> None:
    ctrl = {k: _aged(cohort(10_000, 24, 0.01, periods=10_000), 240_000, 0.01, 10_000)
            for k in STRATA}
    young = {k: cohort(500, 20, 0.01) for k in STRATA}
    v = evaluate_ring(LATE_PLAN, 0, Observation(young, ctrl, T0, T1))
    assert v.phase is Phase.WAIT
    assert any("late soak 0 of 2000 device-hours run after 24 h" in r for r in v.reasons)
    # slow onset: 3x once devices passed 24 h, diluted to ~1.2x over all of the ring's hours
    slow = {k: _aged(cohort(500, 20, 0.01), 400, 0.03, 100) for k in STRATA}
    v = evaluate_ring(LATE_PLAN, 0, Observation(slow, ctrl, T0, T1))
    assert v.phase is Phase.FAIL, v.reasons
    assert "late>=24h" in v.reasons[-1]
    fine = {k: _aged(cohort(500, 20, 0.01), 400, 0.01, 100) for k in STRATA}
    assert evaluate_ring(LATE_PLAN, 0, Observation(fine, ctrl, T0, T1)).phase is Phase.PASS


def _null_expectation(ns: list[int], xs: list[float], r: float, r0: float, det: float) -> float:
    """E[e] under ratio r for strata with ns events each split with exposure ratios xs."""
    theta, logw = stats.fail_grid(r0, det)
    grids = [np.arange(n + 1, dtype=np.float64) for n in ns]
    total = 0.0
    for combo in itertools.product(*grids):
        a = np.array(combo)
        n = np.array(ns, dtype=np.float64)
        x = np.array(xs)
        p = r * x / (r * x + 1)
        prob = math.exp(float(binom.logpmf(a, n, p).sum()))
        log_e = stats.log_e_stratified(a, n, x, np.ones((1, len(ns))), theta, logw,
                                       math.log(r0))[0]
        total += prob * math.exp(float(log_e))
    return total


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 25), min_size=1, max_size=2), st.floats(0.05, 5.0),
       st.floats(1.0, 1.5), st.floats(0.3, 1.0))
def test_stratified_e_value_has_expectation_at_most_one_under_the_composite_null(
        ns: list[int], x: float, r0: float, shrink: float) -> None:
    """E_r[e] <= 1 for every r <= r0 (monotone likelihood ratio in the sum of ring events)."""
    xs = [x * (1 + i) for i in range(len(ns))]
    assert _null_expectation(ns, xs, r0 * shrink, r0, 2.0 * r0) <= 1 + 1e-9


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60), st.floats(0.05, 5.0), st.floats(1.5, 3.0), st.floats(1.0, 2.0))
def test_power_e_value_has_expectation_at_most_one_when_the_harm_is_real(
        n: int, x: float, harm: float, grow: float) -> None:
    theta, logw = stats.pass_grid(harm)
    a = np.arange(n + 1, dtype=np.float64)
    r = harm * grow
    p = r * x / (r * x + 1)
    log_e = stats.log_e_stratified(a, np.full_like(a, n), np.full_like(a, x),
                                   np.eye(n + 1), theta, logw, math.log(harm))
    assert float(np.exp(binom.logpmf(a, n, p) + log_e).sum()) <= 1 + 1e-9


def test_period_dispersion_is_one_for_poisson_and_above_for_clustered() -> None:
    phi = stats.period_dispersion(np.array([1000.0, 1000.0, 10.0]), np.array([240.0] * 3),
                                  np.array([240.0 + 57.6, 240.0 * 10, 2400.0]))
    assert phi[0] == pytest.approx(1.0, abs=0.01)
    assert phi[1] > 5
    assert phi[2] == 1.0  # too few periods to say


def test_common_overdispersion_pools_strata_with_their_own_means() -> None:
    """Poisson strata with very different means: v ~ 0, where the variance-to-mean of the pooled
    periods reads the spread of the means as overdispersion. Gamma-Poisson strata with v = 2
    (E[c^2] = m + (1 + v) m^2): v ~ 2 whatever each stratum's mean."""
    n = np.array([2000.0, 2000.0, 2000.0])
    m = np.array([0.05, 0.5, 3.0])
    assert stats.common_overdispersion(n, n * m, n * (m + m * m)) == pytest.approx(0.0, abs=0.01)
    pooled = stats.period_dispersion(np.array([n.sum()]), np.array([(n * m).sum()]),
                                     np.array([(n * (m + m * m)).sum()]))
    assert pooled[0] > 2
    v = stats.common_overdispersion(n, n * m, n * (m + 3 * m * m))
    assert v == pytest.approx(2.0, rel=0.01)
    assert stats.common_overdispersion(np.array([1.0]), np.array([5.0]), np.array([25.0])) == 0


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), share=st.floats(0, 1), hours=st.floats(0.1, 1e6),
       level=st.sampled_from([0.8, 0.95, 0.99]))
def test_the_intervals_are_scipy_stats_intervals(n: int, share: float, hours: float, level: float) -> None:
    """stats.py calls scipy.special's inverses (scipy.stats costs every `rollout step` ~0.5 s of import):
    the same numbers as the distributions' ppf, the edges (no event, every trial an event) included."""
    from scipy import stats as scipy_stats

    a = np.array([0.0, float(round(share * n)), float(n)])
    trials = np.full(3, float(n))
    q = (1 - level) / 2
    lo, hi = stats.proportion_interval(a, trials, level)
    want_lo = np.where(a > 0, scipy_stats.beta.ppf(q, a, trials - a + 1), 0.0)
    want_hi = np.where(a < trials, scipy_stats.beta.ppf(1 - q, a + 1, trials - a), 1.0)
    np.testing.assert_allclose(lo, want_lo, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hi, want_hi, rtol=1e-9, atol=1e-12)
    t = np.full(3, hours)
    lo, hi = stats.poisson_interval(a, t, level)
    np.testing.assert_allclose(lo, np.where(a > 0, scipy_stats.gamma.ppf(q, a), 0.0) / t, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hi, scipy_stats.gamma.ppf(1 - q, a + 1) / t, rtol=1e-9, atol=1e-12)
    from scipy import special  # stratified_ratio's cutoff

    assert special.chdtri(1, 1 - level) == pytest.approx(scipy_stats.chi2.ppf(level, 1), rel=1e-12)
