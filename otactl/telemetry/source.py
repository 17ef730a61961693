"""The telemetry source interface health gates read, and its in-memory implementation.

Counts are aggregated per stratum (model, variant, region), never per device, so the same
numbers can come from the embedded SQLite store or from Prometheus (Thanos, Mimir).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, order=True)
class StratumKey:
    model: str
    variant: str
    region: str

    def __str__(self) -> str:
        return f"{self.model}/{self.variant}/{self.region}"


@dataclass(frozen=True)
class CohortCounts:
    """What one cohort (devices of one stratum on one release, in some rings) reported in a window."""

    devices: int = 0  # distinct devices that reported anything in the window
    installs: int = 0  # finished install attempts: committed + reverted + failed
    install_failures: int = 0  # reverted + failed
    crashes: int = 0  # crash count summed over devices
    crashing_devices: int = 0  # devices with at least one crash (robust to overdispersion)
    device_hours: float = 0.0  # exposure: uptime hours on this release in the window

    def __post_init__(self) -> None:
        if min(self.devices, self.installs, self.install_failures, self.crashes) < 0:
            raise ValueError("counts must be non-negative")
        if self.install_failures > self.installs:
            raise ValueError("install_failures exceeds installs")
        if self.device_hours < 0:
            raise ValueError("device_hours must be non-negative")

    def __add__(self, other: CohortCounts) -> CohortCounts:
        return CohortCounts(
            self.devices + other.devices,
            self.installs + other.installs,
            self.install_failures + other.install_failures,
            self.crashes + other.crashes,
            self.crashing_devices + other.crashing_devices,
            self.device_hours + other.device_hours,
        )


@dataclass(frozen=True)
class CohortQuery:
    model: str
    release: str
    rings: frozenset[str] | None = None  # None: any ring (or none)
    since: datetime | None = None
    until: datetime | None = None
    strata: frozenset[StratumKey] | None = field(default=None)  # None: all strata


class TelemetryUnavailable(Exception):
    """Raised by a source that cannot be reached; gates turn it into WAIT, never PASS."""


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
