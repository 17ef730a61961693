"""``rollout plan --telemetry``: per ring, can the fleet ever give the power a PASS needs?

Reads the baseline's last ``DISPERSION_LOOKBACK_H`` hours (and its install record) from the
telemetry source, and asks the pure estimate in ``otactl.rollout.power``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from otactl.app.context import Context
from otactl.errors import TelemetrySourceError
from otactl.rollout import power
from otactl.rollout.gates import HOURS, fleet_frailty
from otactl.rollout.plan import load_plan
from otactl.rollout.rings import PlanReport, project
from otactl.telemetry.counters import DISPERSION_LOOKBACK_H
from otactl.telemetry.source import CohortCounts, CohortQuery, TelemetrySource, TelemetryUnavailable


@dataclass(frozen=True)
class PowerReport:
    baseline: str
    gates: tuple[power.GatePower, ...]
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "gates": [g.to_json() for g in self.gates],
                "warnings": list(self.warnings)}


def cumulative_strata(report: PlanReport) -> list[dict[str, int]]:
    out: list[dict[str, int]] = []
    running: dict[str, int] = {}
    for ring in report.rings:
        for name, n in ring.per_stratum:
            running[name] = running.get(name, 0) + n
        out.append(dict(running))
    return out


def plan_power(ctx: Context, model: str, version: str, plan_file: Path, report: PlanReport,
               source: TelemetrySource, baseline: str | None = None) -> PowerReport:
    from otactl.app.rollout import newest_older

    plan = load_plan(plan_file)
    if baseline is None:
        baseline = newest_older(ctx, model, version)
    now = ctx.now
    try:
        recent = source.cohort_counts(CohortQuery(
            model, baseline, None, now - timedelta(hours=DISPERSION_LOOKBACK_H), now))
        record = source.cohort_counts(CohortQuery(model, baseline, None, None, now))
    except TelemetryUnavailable as exc:
        raise TelemetrySourceError(f"telemetry source unavailable: {exc}") from exc
    by: dict[str, CohortCounts] = {}
    installs: dict[str, CohortCounts] = {}
    for key, c in recent.items():
        name = str(project(key, plan.strata))
        by[name] = by.get(name, CohortCounts()) + c
    for key, c in record.items():
        name = str(project(key, plan.strata))
        installs[name] = installs.get(name, CohortCounts()) + c
    # one fleet-wide frailty variance v over the lookback's strata, as the gates estimate it
    # (gates.fleet_frailty, docs/decisions/0109 and 0110), not a variance-to-mean per stratum:
    # each stratum's phi is 1 + v m (m its crashes per closed 24-hour period), which
    # power.frailty turns back into v exactly
    v = fleet_frailty(recent.values())
    base: dict[str, power.Baseline] = {}
    for name, c in by.items():
        if c.device_hours <= 0:
            continue
        phi = 1.0 + v * HOURS * c.crashes / c.device_hours
        inst = installs.get(name, CohortCounts())
        rates = {"crash_rate": c.crashes / c.device_hours,
                 "crash_hour_rate": c.crash_hours / c.device_hours,
                 "install_failure_rate": inst.install_failures / inst.installs
                 if inst.installs else 0.0}
        duty = min(c.device_hours / max(c.devices, 1) / DISPERSION_LOOKBACK_H, 1.0)
        base[name] = power.Baseline(rates, duty, 1.0, phi)
    cumulative = cumulative_strata(report)
    return PowerReport(baseline, tuple(power.ring_power(plan, cumulative, base)),
                       tuple(power.min_device_warnings(plan, cumulative)))
