"""The telemetry source interface health gates read, and its in-memory implementation.

Counts are aggregated per stratum (model, variant, region), never per device, so the same
numbers can come from the embedded SQLite store or from Prometheus (Thanos, Mimir).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, order=True)
class StratumKey:
    model: str
    variant: str
    region: str

    def __str__(self) -> str:
        return f"{self.model}/{self.variant}/{self.region}"


def _add(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[Any, ...]:
    if not a:
        return b
    if not b:
        return a
    return tuple(x + y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class CohortCounts:
    """What one cohort (devices of one stratum on one release, in some rings) reported.

    Built by :func:`otactl.telemetry.counters.counts_from_totals` from the cohort counters; see
    that module for what each counts. Window fields add over windows; ``devices`` and
    ``aged_devices`` are cumulative up to the window's end and serve readiness only. The
    ``late_*`` and ``aged_devices`` tuples are aligned with ``counters.LATE_AGES`` (empty: zeros).
    """

    reports: int = 0  # accepted reports (health and events) in the window
    installs: int = 0  # finished install attempts: committed + reverted + failed
    install_failures: int = 0  # reverted + failed
    crashes: int = 0  # crash count summed over reports
    device_hours: float = 0.0  # exposure: uptime hours on this release in the window
    crash_hours: float = 0.0  # uptime hours of reports with at least one crash
    periods: int = 0  # closed 24-hour periods of uptime (dispersion moments)
    period_crashes: int = 0
    period_crash_sq: int = 0
    late_device_hours: tuple[float, ...] = ()  # hours run after LATE_AGES[i] hours on the image
    late_crashes: tuple[int, ...] = ()
    late_crash_hours: tuple[float, ...] = ()
    devices: int = 0  # cumulative: distinct devices that reported in the cohort up to `until`
    aged_devices: tuple[int, ...] = ()  # cumulative: devices past LATE_AGES[i] hours on the image

    def __post_init__(self) -> None:
        if min(self.reports, self.installs, self.install_failures, self.crashes, self.periods,
               self.period_crashes, self.period_crash_sq, self.devices) < 0:
            raise ValueError("counts must be non-negative")
        if self.install_failures > self.installs:
            raise ValueError("install_failures exceeds installs")
        if self.device_hours < 0 or self.crash_hours < 0:
            raise ValueError("device_hours and crash_hours must be non-negative")
        if self.crash_hours > self.device_hours + 1e-6:
            raise ValueError("crash_hours exceeds device_hours")

    def __add__(self, other: CohortCounts) -> CohortCounts:
        return CohortCounts(
            self.reports + other.reports,
            self.installs + other.installs,
            self.install_failures + other.install_failures,
            self.crashes + other.crashes,
            self.device_hours + other.device_hours,
            self.crash_hours + other.crash_hours,
            self.periods + other.periods,
            self.period_crashes + other.period_crashes,
            self.period_crash_sq + other.period_crash_sq,
            _add(self.late_device_hours, other.late_device_hours),
            _add(self.late_crashes, other.late_crashes),
            _add(self.late_crash_hours, other.late_crash_hours),
            self.devices + other.devices,
            _add(self.aged_devices, other.aged_devices),
        )

    def at_age(self, age_h: int) -> CohortCounts:
        """Only the hours run after ``age_h`` hours on the image (a LATE_AGES value)."""
        from otactl.telemetry.counters import LATE_AGES

        i = LATE_AGES.index(age_h)

        def pick(values: tuple[Any, ...]) -> Any:
            return values[i] if values else 0

        return CohortCounts(reports=self.reports, crashes=pick(self.late_crashes),
                            device_hours=pick(self.late_device_hours),
                            crash_hours=pick(self.late_crash_hours), periods=self.periods,
                            period_crashes=self.period_crashes,
                            period_crash_sq=self.period_crash_sq,
                            devices=pick(self.aged_devices))


@dataclass(frozen=True)
class CohortQuery:
    model: str
    release: str
    rings: frozenset[str] | None = None  # None: any ring (or none)
    since: datetime | None = None
    until: datetime | None = None
    strata: frozenset[StratumKey] | None = field(default=None)  # None: all strata


class TelemetryUnavailable(Exception):
    """Raised by a source that cannot be reached or does not exist. Never a gate verdict: the
    controller reports it as an error (exit 1, its cause verbatim) and records nothing."""


class TelemetrySource(abc.ABC):
    @abc.abstractmethod
    def cohort_counts(self, query: CohortQuery) -> dict[StratumKey, CohortCounts]:
        """Counts per stratum for the cohort; strata with no reports are absent."""


class MemorySource(TelemetrySource):
    """Fixed counts keyed by (release, ring); for unit tests of gates and the controller."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], dict[StratumKey, CohortCounts]] = {}

    def set(self, model: str, release: str, ring: str, stratum: StratumKey, counts: CohortCounts) -> None:
        self.rows.setdefault((model, release, ring), {})[stratum] = counts

    def cohort_counts(self, query: CohortQuery) -> dict[StratumKey, CohortCounts]:
        out: dict[StratumKey, CohortCounts] = {}
        for (model, release, ring), by_stratum in self.rows.items():
            if model != query.model or release != query.release:
                continue
            if query.rings is not None and ring not in query.rings:
                continue
            for key, counts in by_stratum.items():
                if query.strata is not None and key not in query.strata:
                    continue
                out[key] = out.get(key, CohortCounts()) + counts
        return out
