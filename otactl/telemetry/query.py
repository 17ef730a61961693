"""Open a telemetry source from a ``--source`` spec and read one cohort's counts (for the CLI).

:func:`counts_to_json` is the ``--output json`` shape of :class:`CohortCounts`
(``otactl/telemetry-counts/2``): the window counts, the cumulative ``devices``, and one entry per
age of ``counters.LATE_AGES`` with the hours and crashes after that age and the devices past it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from otactl.errors import OtactlError, UsageError
from otactl.telemetry.counters import LATE_AGES
from otactl.telemetry.source import (
    CohortCounts,
    CohortQuery,
    StratumKey,
    TelemetrySource,
    TelemetryUnavailable,
)

JSON_SCHEMA = "otactl/telemetry-counts/2"  # 2: window-additive counters (0205); 1 had crashing_devices
SPEC_HELP = "sqlite:PATH (the embedded ingest's database) or prometheus:URL (Prometheus HTTP API)"


def connect(spec: str) -> TelemetrySource:
    scheme, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise UsageError(f"telemetry source {spec!r}: expected {SPEC_HELP}")
    if scheme == "sqlite":
        from otactl.telemetry.store import SqliteSource

        return SqliteSource(Path(rest))
    if scheme == "prometheus":
        if not rest.startswith(("http://", "https://")):
            raise UsageError(f"telemetry source {redact(spec)!r}: the URL must start with http(s)://")
        from otactl.telemetry.prometheus import PrometheusSource

        return PrometheusSource(rest)
    raise UsageError(f"telemetry source {redact(spec)!r}: unknown kind {scheme!r}; expected {SPEC_HELP}")


def redact(spec: str) -> str:
    """The spec without any password in a URL."""
    scheme, sep, rest = spec.partition(":")
    if scheme != "prometheus" or "@" not in rest:
        return spec
    parts = urlsplit(rest)
    host = parts.netloc.rpartition("@")[2]
    return f"{scheme}{sep}{urlunsplit(parts._replace(netloc='***@' + host))}"


def parse_instant(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise UsageError(f"{option} {text!r}: expected an RFC 3339 time with a zone, e.g. 2026-11-27T19:00:00Z")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class CohortReport:
    query: CohortQuery
    source: str  # the spec, redacted
    strata: dict[StratumKey, CohortCounts]

    @property
    def total(self) -> CohortCounts:
        out = CohortCounts()
        for counts in self.strata.values():
            out = out + counts
        return out


def query_cohort(spec: str, query: CohortQuery) -> CohortReport:
    """Counts per stratum from the source ``spec``; an unreachable source is one clear error."""
    source = connect(spec)
    try:
        strata = source.cohort_counts(query)
    except TelemetryUnavailable as exc:
        raise OtactlError(f"telemetry source {redact(spec)!r} is unavailable: {exc}") from exc
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    return CohortReport(query, redact(spec), dict(sorted(strata.items())))


def counts_to_json(c: CohortCounts) -> dict[str, Any]:
    """One :class:`CohortCounts` as ``--output json`` writes it (explicit, stable)."""

    def at(values: tuple[Any, ...], i: int) -> Any:
        return values[i] if values else 0

    return {
        "reports": c.reports, "installs": c.installs, "install_failures": c.install_failures,
        "crashes": c.crashes, "device_hours": c.device_hours, "crash_hours": c.crash_hours,
        "periods": c.periods, "period_crashes": c.period_crashes, "period_crash_sq": c.period_crash_sq,
        "devices": c.devices,
        "late": [
            {"age_h": age, "device_hours": at(c.late_device_hours, i), "crashes": at(c.late_crashes, i),
             "crash_hours": at(c.late_crash_hours, i), "aged_devices": at(c.aged_devices, i)}
            for i, age in enumerate(LATE_AGES)
        ],
    }  # fmt: skip


def report_to_json(report: CohortReport) -> dict[str, Any]:
    """The whole ``otactl telemetry query --output json`` document, schema included."""
    q = report.query
    return {
        "schema": JSON_SCHEMA,
        "model": q.model, "release": q.release, "rings": sorted(q.rings) if q.rings else None,
        "since": q.since.isoformat() if q.since else None,
        "until": q.until.isoformat() if q.until else None,
        "source": report.source,
        "strata": [{"model": k.model, "variant": k.variant, "region": k.region, **counts_to_json(c)}
                   for k, c in report.strata.items()],
        "total": counts_to_json(report.total),
    }  # fmt: skip
