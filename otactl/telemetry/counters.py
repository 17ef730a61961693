"""Cohort counters: how one report adds to the counters every telemetry source reads. Defined once.

Every number a health gate reads comes from these counters, kept per cohort (model, release, ring,
variant, region). The embedded store (SQLite), its Prometheus exposition, the Prometheus source and
the statistical fleet model all count through :func:`health_increments` and :data:`COUNTERS`, so a
benchmark on the model measures the program that runs in production
(docs/decisions/0105-window-additive-counts.md).

Two kinds of counter:

- **window** counters add over windows: the count in ``(since, until]`` is the sum of the reports
  accepted in it, i.e. ``counter(until) - counter(since)``. Every statistical comparison uses only
  these: events, exposure (device-hours), crash-hours (Memfault's crash-free hours, complemented;
  per report ``min(uptime, one hour per crash)``, so hourly and six-hourly reports count alike),
  closed 24-hour periods with their crash moments (for overdispersion), and the same restricted to
  hours a device ran after it had ``L`` hours on the image (:data:`LATE_AGES`, slow-onset failures).
- **cumulative** counters are read at ``until`` alone: distinct devices that reported in the cohort,
  and devices that have passed ``L`` hours on the image. They serve readiness (minimum reporting
  devices, per-device soak) and are never compared with a control.

Per-device state is the device's uptime on the release (its age on the image) and its open 24-hour
period; it is keyed by (device, release), not by ring, so a ring relabelling does not reset an age.

The functions are plain arithmetic on their arguments, so the store calls them with Python ints per
report and the fleet model with numpy arrays per step: the same definition, not a second one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

HOUR_S = 3600
PERIOD_S = 24 * HOUR_S  # a closed period: 24 hours of uptime on the release (dispersion moments)
LATE_AGES: tuple[int, ...] = (12, 24, 48, 72)  # hours on the image after which hours count as late
DISPERSION_LOOKBACK_H = 72  # the dispersion estimate reads the baseline from this long before the rollout


class Kind(StrEnum):
    WINDOW = "window"  # adds over windows: counter(until) - counter(since)
    CUMULATIVE = "cumulative"  # read at `until` only; never compared with a control


@dataclass(frozen=True)
class Counter:
    name: str  # the store's counter name; Prometheus family otactl_cohort_<name>_total
    kind: Kind
    help: str


def late(name: str, age_h: int) -> str:
    return f"{name}_{age_h}h"


def _late_counters() -> tuple[Counter, ...]:
    out: list[Counter] = []
    for age in LATE_AGES:
        out += [
            Counter(late("late_uptime_s", age), Kind.WINDOW,
                    f"Uptime reported by devices that already had {age} h on the image, in seconds."),
            Counter(late("late_crashes", age), Kind.WINDOW,
                    f"Crashes reported by devices that already had {age} h on the image."),
            Counter(late("late_crash_uptime_s", age), Kind.WINDOW,
                    f"Crash-hours of devices that already had {age} h on the image, in seconds."),
            Counter(late("aged_devices", age), Kind.CUMULATIVE,
                    f"Devices that have passed {age} h of uptime on the image."),
        ]
    return tuple(out)


# Event counters (``event:<event>``, one per report event) are window counters too; their names
# are the events of otactl.telemetry.report.Event, exported with an ``event`` label.
COUNTERS: tuple[Counter, ...] = (
    Counter("health_reports", Kind.WINDOW, "Accepted health reports."),
    Counter("crashes", Kind.WINDOW, "Crashes reported in health reports."),
    Counter("errors", Kind.WINDOW, "Errors reported in health reports."),
    Counter("uptime_s", Kind.WINDOW, "Uptime reported in health reports (exposure), in seconds."),
    Counter("crash_uptime_s", Kind.WINDOW,
            "Crash-hours in seconds: per health report, min(uptime, one hour per crash)."),
    Counter("periods", Kind.WINDOW, "Closed 24-hour periods of uptime on the release."),
    Counter("period_crashes", Kind.WINDOW, "Crashes in closed 24-hour periods."),
    Counter("period_crash_sq", Kind.WINDOW, "Sum of squared crash counts of closed 24-hour periods."),
    *_late_counters(),
    Counter("devices", Kind.CUMULATIVE, "Devices that have reported in the cohort (first report)."),
)
BY_NAME: dict[str, Counter] = {c.name: c for c in COUNTERS}
HEALTH_COUNTERS = tuple(c.name for c in COUNTERS if c.name != "devices")  # from health_increments
EVENT_PREFIX = "event:"


def counter(name: str) -> Counter:
    """The counter called ``name``; an unknown name is an error, never a default."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown cohort counter {name!r}") from None


def is_cumulative(name: str) -> bool:
    return not name.startswith(EVENT_PREFIX) and counter(name).kind is Kind.CUMULATIVE


_LATE_NAMES = {age: (late("late_uptime_s", age), late("late_crashes", age),
                     late("late_crash_uptime_s", age), late("aged_devices", age))
               for age in LATE_AGES}


@dataclass(frozen=True)
class Increments:
    """What one health report (or one array of them) adds, and the device state after it."""

    values: dict[str, Any]  # counter name -> increment (an int, or an integer array)
    age_s: Any  # uptime on the release after the report
    period_s: Any  # uptime in the open period after the report
    period_crashes: Any  # crashes in the open period after the report


def health_increments(age_s: Any, period_s: Any, period_crashes: Any, uptime_s: Any,
                      crashes: Any, errors: Any = 0) -> Increments:
    """The counter increments of health reports, given each device's state before them.

    ``age_s``: the device's uptime on the release before this report; ``period_s`` and
    ``period_crashes``: its open 24-hour period. Arithmetic only: ints or numpy arrays alike.
    A report's hours are late for age ``L`` when the device had ``L`` hours before the report.
    """
    # crash-hours: each crash spoils at most one hour of the report, so the count means "hours
    # with a crash" whatever the report interval (an hourly report: 1 h if it crashed at all)
    spoiled = crashes * HOUR_S
    crash_uptime = spoiled + (uptime_s - spoiled) * (uptime_s < spoiled)
    values: dict[str, Any] = {
        "health_reports": uptime_s * 0 + 1,
        "crashes": crashes,
        "errors": errors,
        "uptime_s": uptime_s,
        "crash_uptime_s": crash_uptime,
    }
    new_age = age_s + uptime_s
    for age, (up, cr, cu, aged) in _LATE_NAMES.items():
        limit = age * HOUR_S
        is_late = (age_s >= limit) * 1
        values[up] = is_late * uptime_s
        values[cr] = is_late * crashes
        values[cu] = is_late * crash_uptime
        values[aged] = (age_s < limit) * (new_age >= limit) * 1
    p_s, p_c = period_s + uptime_s, period_crashes + crashes
    closed = (p_s >= PERIOD_S) * 1
    values["periods"] = closed
    values["period_crashes"] = closed * p_c
    values["period_crash_sq"] = closed * p_c * p_c
    return Increments(values, new_age, (1 - closed) * p_s, (1 - closed) * p_c)


def counts_from_totals(window: Mapping[str, float], cumulative: Mapping[str, float]) -> Any:
    """A :class:`~otactl.telemetry.source.CohortCounts` from counter totals.

    ``window``: window counters (and ``event:<event>``) summed over the window; ``cumulative``:
    cumulative counters at ``until``. Missing names count 0; unknown names are an error.
    """
    from otactl.telemetry.report import FAILED_EVENTS, FINISHED_EVENTS
    from otactl.telemetry.source import CohortCounts

    for name in [*window, *cumulative]:
        if not name.startswith(EVENT_PREFIX):
            counter(name)
    w, c = window.get, cumulative.get
    events = {n.removeprefix(EVENT_PREFIX): v for n, v in window.items()
              if n.startswith(EVENT_PREFIX)}
    reports = round(w("health_reports", 0) + sum(events.values()))
    return CohortCounts(
        reports=reports,
        installs=round(sum(events.get(e.value, 0) for e in FINISHED_EVENTS)),
        install_failures=round(sum(events.get(e.value, 0) for e in FAILED_EVENTS)),
        crashes=round(w("crashes", 0)),
        device_hours=w("uptime_s", 0) / HOUR_S,
        crash_hours=w("crash_uptime_s", 0) / HOUR_S,
        periods=round(w("periods", 0)),
        period_crashes=round(w("period_crashes", 0)),
        period_crash_sq=round(w("period_crash_sq", 0)),
        late_device_hours=tuple(w(late("late_uptime_s", a), 0) / HOUR_S for a in LATE_AGES),
        late_crashes=tuple(round(w(late("late_crashes", a), 0)) for a in LATE_AGES),
        late_crash_hours=tuple(w(late("late_crash_uptime_s", a), 0) / HOUR_S for a in LATE_AGES),
        devices=round(c("devices", 0)),
        aged_devices=tuple(round(c(late("aged_devices", a), 0)) for a in LATE_AGES),
    )
