"""The gated metrics, defined once: what each counts, its statistical family, its control.

Adding a metric is one row here, a member of ``plan.Metric`` and, if it needs a new count, a
counter in ``otactl.telemetry.counters`` (which every source and the fleet model count through).
A lookup of a metric without a row is an error, never a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from otactl.rollout.plan import Metric
from otactl.telemetry.source import CohortCounts


class Family(StrEnum):
    SHARE = "share"  # events out of trials (binomial); limits are shares in (0, 1)
    RATE = "rate"  # events per unit of exposure (Poisson); limits are rates > 0


class Control(StrEnum):
    CONCURRENT = "concurrent"  # devices of the same strata still on the baseline, same window
    INSTALL_RECORD = "install_record"  # the baseline release's own install record


@dataclass(frozen=True)
class MetricDef:
    metric: Metric
    events: str  # CohortCounts field counted as events
    exposure: str  # CohortCounts field counted as exposure
    family: Family
    control: Control
    dispersed: bool  # corrected for overdispersion (closed 24-hour period moments)
    late: bool  # also tested on late hours alone when a ring declares a late soak
    unit: str  # the exposure's unit, for messages
    once: bool = False  # one event per device (installs): a ring's evidence stops growing once
    # its devices have installed, so a gate never holds on a lean that no new data can settle

    def counts(self, c: CohortCounts) -> tuple[float, float]:
        return float(getattr(c, self.events)), float(getattr(c, self.exposure))


METRICS: dict[Metric, MetricDef] = {
    Metric.INSTALL_FAILURE_RATE: MetricDef(
        Metric.INSTALL_FAILURE_RATE, "install_failures", "installs", Family.SHARE,
        Control.INSTALL_RECORD, dispersed=False, late=False, unit="installs", once=True),
    Metric.CRASH_RATE: MetricDef(
        Metric.CRASH_RATE, "crashes", "device_hours", Family.RATE, Control.CONCURRENT,
        dispersed=True, late=True, unit="device-hours"),
    Metric.CRASH_HOUR_RATE: MetricDef(
        Metric.CRASH_HOUR_RATE, "crash_hours", "device_hours", Family.SHARE, Control.CONCURRENT,
        dispersed=True, late=True, unit="device-hours"),
}


def metric_def(metric: Metric) -> MetricDef:
    try:
        return METRICS[metric]
    except KeyError:
        raise KeyError(f"metric {metric!r} has no definition in otactl.rollout.metrics") from None
