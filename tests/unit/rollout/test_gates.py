"""Gate verdicts: phases, worst-of, missing data, and the statistics (table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import binom

from otactl.rollout import stats
from otactl.rollout.gates import (
    Observation,
    Phase,
    evaluate_gate,
    evaluate_ring,
    worst,
)
from otactl.rollout.plan import GateSpec, Metric, Missing, parse_plan
from otactl.telemetry.source import CohortCounts, StratumKey

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)
STRATA = [StratumKey("t9", v, r) for v in ("hp-300", "hp-400", "hp-500") for r in ("eu", "us")]
CRASH = GateSpec(Metric.CRASH_RATE, Missing.WAIT, max_ratio=1.3)


def cohort(devices: int, hours_each: float, crash_rate: float, *, crashing_share: float = 0.3,
           installs: int = 0, failures: int = 0) -> CohortCounts:
    hours = devices * hours_each
    crashes = round(hours * crash_rate)
    return CohortCounts(devices, installs, failures, crashes,
                        min(devices, round(crashing_share * devices)), hours)


def fleet(devices: int, rate: float, **over: float) -> dict[StratumKey, CohortCounts]:
    return {k: cohort(devices, 24, over.get(k.variant + "/" + k.region, rate)) for k in STRATA}


def test_worst_of_uses_the_explicit_order_and_nothing_is_wait() -> None:
    assert worst([Phase.PASS, Phase.FAIL, Phase.WAIT]) is Phase.FAIL
    assert worst([Phase.PASS, Phase.WAIT]) is Phase.WAIT
    assert worst([Phase.PASS]) is Phase.PASS
    assert worst([]) is Phase.WAIT


CASES = [
    # name, ring rate, control rate, per-stratum override on the ring, expected phase
    ("same-rates-pass", 0.01, 0.01, {}, Phase.PASS),
    ("drift-within-margin-pass", 0.0115, 0.01, {}, Phase.PASS),
    ("clear-regression-fail", 0.03, 0.01, {}, Phase.FAIL),
    ("one-stratum-regression-fail", 0.01, 0.01, {"hp-400/eu": 0.025}, Phase.FAIL),
]


@pytest.mark.parametrize(("name", "ring_rate", "ctrl_rate", "over", "phase"), CASES,
                         ids=[c[0] for c in CASES])
def test_crash_gate_table(name: str, ring_rate: float, ctrl_rate: float,
                          over: dict[str, float], phase: Phase) -> None:
    v = evaluate_gate(CRASH, fleet(300, ring_rate, **over), fleet(10_000, ctrl_rate),
                      alpha=0.002, dims=("model", "variant", "region"))
    assert v.phase is phase, v.reason
    overall = next(e for e in v.evidence if e.scope == "overall")
    assert overall.interval is not None and overall.interval[0] <= overall.interval[1]
    if phase is Phase.FAIL:
        assert "regressed" in v.reason
        if over:  # the variant or stratum is named, and the stratum's own test failed
            assert "t9/hp-400/" in v.reason
            assert any(e.scope == "t9/hp-400/eu" and e.phase is Phase.FAIL for e in v.evidence)
            assert next(e for e in v.evidence if e.scope == "overall").phase is Phase.PASS


def test_small_samples_never_fail_on_one_crash() -> None:
    ring = {STRATA[0]: CohortCounts(5, 0, 0, 1, 1, 10.0)}
    ctrl = {STRATA[0]: CohortCounts(10_000, 0, 0, 500, 400, 240_000.0)}
    v = evaluate_gate(CRASH, ring, ctrl, alpha=0.01, dims=("model", "variant", "region"))
    assert v.phase is Phase.PASS


@pytest.mark.parametrize(("missing", "phase"), [(Missing.WAIT, Phase.WAIT),
                                                (Missing.FAIL, Phase.FAIL)])
def test_missing_control_follows_the_gate_declaration(missing: Missing, phase: Phase) -> None:
    gate = GateSpec(Metric.CRASH_RATE, missing, max_ratio=1.3)
    v = evaluate_gate(gate, fleet(300, 0.01), None, alpha=0.01, dims=("model",))
    assert v.phase is phase and "no data" in v.reason


def test_install_failures_against_the_baseline_install_record_and_a_limit() -> None:
    gate = GateSpec(Metric.INSTALL_FAILURE_RATE, Missing.WAIT, max_ratio=1.3, limit=0.1)
    history = {k: CohortCounts(10_000, 10_000, 200) for k in STRATA}
    good = {k: CohortCounts(300, 300, 6) for k in STRATA}
    bad = {k: CohortCounts(300, 300, 30) for k in STRATA}
    dims = ("model", "variant", "region")
    assert evaluate_gate(gate, good, history, alpha=0.01, dims=dims).phase is Phase.PASS
    v = evaluate_gate(gate, bad, history, alpha=0.01, dims=dims)
    assert v.phase is Phase.FAIL
    assert {e.test for e in v.evidence} == {"control", "limit"}


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
      - {metric: crashing_device_rate, max_ratio: 1.3, missing: fail}
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


def test_unavailable_telemetry_is_never_pass() -> None:
    v = evaluate_ring(PLAN, 0, Observation(None, None, T0, T1))
    assert v.phase is Phase.FAIL  # crashing_device_rate declares missing: fail
    assert "telemetry unavailable" in v.reasons


def test_a_clear_regression_fails_before_the_soak_ends() -> None:
    ring = {k: CohortCounts(40, 0, 0, 200, 30, 400.0) for k in STRATA}
    v = evaluate_ring(PLAN, 0, Observation(ring, fleet(10_000, 0.01), T0, T1))
    assert v.phase is Phase.FAIL


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 0.5), st.integers(0, 300), st.floats(1.05, 3.0))
def test_e_value_has_expectation_at_most_one_under_the_null(p0: float, n: int, r: float) -> None:
    """E_p[e] <= 1 for every p <= p0 (the truncated prior makes the composite null valid)."""
    p1 = min(p0 * r, 0.99)
    if p1 <= p0:
        return
    a = np.arange(n + 1, dtype=np.float64)
    log_e = stats.log_e_binomial(a, np.full_like(a, n), np.full_like(a, p0), np.full_like(a, p1))
    for p in (p0, p0 / 2):
        assert float(logsumexp(binom.logpmf(a, n, p) + log_e)) <= 1e-6


def test_dispersion_is_one_for_poisson_like_data_and_above_for_clustered() -> None:
    phi = stats.dispersion(np.array([100.0, 100.0]), np.array([95.0, 40.0]),
                           np.array([1000.0, 1000.0]))
    assert phi[0] == pytest.approx(1.0, abs=0.05)
    assert phi[1] > 1.5


def test_a_degenerate_null_is_no_evidence_and_warns_nothing() -> None:
    one = np.array([1.0])
    log_e = stats.log_e_binomial(np.array([3.0]), np.array([10.0]), one, one)
    assert log_e[0] == 0.0
