"""`rollout plan --telemetry`: the baseline's recent telemetry says whether each ring can get the
power a PASS needs, and a plan whose rings are too small for the fleet is told what to change."""

from __future__ import annotations

from pathlib import Path

from app_parts import MODEL, counts, ctx_at, plan_file, telemetry
from fixtures.repo import run_otactl

from otactl.app import rollout
from otactl.app.plan_power import plan_power
from otactl.rollout.gates import fleet_frailty
from otactl.telemetry.source import CohortCounts, CohortQuery, MemorySource, StratumKey


def test_power_per_ring_from_the_baselines_telemetry(ws: Path) -> None:
    ctx = ctx_at(ws)
    plan = plan_file(ws)
    report = rollout.plan(ctx, MODEL, "2.1.0", plan)
    busy = plan_power(ctx, MODEL, "2.1.0", plan, report, telemetry(0.002, old_crash_rate=0.05))
    assert busy.baseline == "2.0.0"
    crash = next(g for g in busy.gates if g.ring == "canary" and g.metric == "crash_rate")
    assert crash.feasible and crash.hours is not None and crash.hours < 14 * 24
    quiet = plan_power(ctx, MODEL, "2.1.0", plan, report, telemetry(0.002, old_crash_rate=0.0005))
    crash = next(g for g in quiet.gates if g.ring == "canary" and g.metric == "crash_rate")
    assert not crash.feasible and "fewer or wider rings" in crash.advice


def test_power_uses_the_fleets_frailty_not_a_variance_to_mean_per_stratum(ws: Path) -> None:
    """Every stratum's lookback has too few closed periods (20) for a variance-to-mean of its
    own, which read as Poisson and promised the canary its power within days. The gates judge
    with one fleet-wide frailty variance pooled over strata (decision 0109); so does the plan,
    and it says the canary's devices can never rule out 2x."""
    ctx = ctx_at(ws)
    plan = plan_file(ws)
    report = rollout.plan(ctx, MODEL, "2.1.0", plan)
    src = MemorySource()
    for variant in ("hp-300", "hp-400", "hp-500"):
        c = counts(20, 20 * 24.0, 0.05)  # 20 devices, one closed period each, 24 crashes
        m = c.period_crashes / c.periods
        src.set(MODEL, "2.0.0", "all", StratumKey(MODEL, variant, "eu"),
                CohortCounts(**{**c.__dict__, "period_crash_sq": round(c.periods * (m + 9 * m * m))}))
    v = fleet_frailty(src.cohort_counts(CohortQuery(MODEL, "2.0.0")).values())
    assert v > 5
    crash = next(g for g in plan_power(ctx, MODEL, "2.1.0", plan, report, src).gates
                 if g.ring == "canary" and g.metric == "crash_rate")
    assert not crash.feasible and "can never rule out 2x" in crash.advice, crash.advice
    assert f"frailty variance {v:.2g}" in crash.advice


def test_the_cli_refuses_an_unreadable_source_with_one_line(ws: Path) -> None:
    plan = plan_file(ws)
    done = run_otactl("rollout", "plan", MODEL, "2.1.0", "--plan", str(plan), "--telemetry",
                      f"sqlite:{ws / 'missing.db'}", cwd=ws)
    assert done.returncode == 1, done.stderr
    assert "missing.db does not exist" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2  # the error, and at most a hint
