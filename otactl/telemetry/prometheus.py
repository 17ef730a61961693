"""PrometheusSource: cohort counts from Prometheus's HTTP API (or Thanos, Mimir), over httpx.

How a window maps to PromQL (docs/decisions/0201-telemetry-windows.md): the ingest's counters never
reset (they are read from its store), so a window counter's count in (since, until] is exactly
``counter @ until - counter @ since``; cumulative counters (``counters.is_cumulative``: devices,
aged devices) are read at ``until`` alone. That is two instant queries (``/api/v1/query`` with
``time=until`` and ``time=since``) of every counter family of ``counters.COUNTERS`` (and the events
family), each its last sample summed by ring and stratum:

    sum by (ring, variant, region)
      (last_over_time(otactl_cohort_crashes_total{model="m", release="r"}[1h]))

then :func:`counters.counts_from_totals`, as the embedded store does. ``increase()`` is not used:
it extrapolates to the window edges and misses the step between the last sample before the window
and the first inside it, so its results are neither integers nor equal to the embedded store's.
``last_over_time`` (rather than a bare selector) reads through staleness markers when the ingest
was down at that instant. All counters of one instant travel in one query (an ``or`` of
``label_replace``d vectors, labelled ``series``). Rings are grouped and filtered here, so no ring
name enters a regex.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from datetime import datetime
from typing import Any

import httpx

from otactl.telemetry import counters, series
from otactl.telemetry.source import (
    CohortCounts,
    CohortQuery,
    StratumKey,
    TelemetrySource,
    TelemetryUnavailable,
)

_DURATION = re.compile(r"[0-9]+(ms|s|m|h|d|w|y)")
_EVENTS = "events"  # the `series` label of the events family; the others carry their counter's name
_SERIES = {_EVENTS: series.EVENTS, **{name: family for name, (family, _) in series.COHORT_FAMILIES.items()}}
# (series, ring, variant, region, event) -> counter value
_Vector = dict[tuple[str, str, str, str, str], float]


def _string(value: str) -> str:
    return json.dumps(value)  # JSON string escapes are valid PromQL (Go) string-literal escapes


def build_query(model: str, release: str, lookback: str) -> str:
    """One PromQL expression returning every counter the cohort needs, labelled ``series``."""
    matchers = f"model={_string(model)}, release={_string(release)}"
    parts = []
    for name, family in _SERIES.items():
        by = "ring, variant, region, event" if name == _EVENTS else "ring, variant, region"
        inner = f"sum by ({by}) (last_over_time({series.total(family)}{{{matchers}}}[{lookback}]))"
        parts.append(f'label_replace({inner}, "series", "{name}", "", "")')
    return " or ".join(parts)


class PrometheusSource(TelemetrySource):
    """Reads the ingest's exported counters from a Prometheus-compatible HTTP API."""

    def __init__(
        self,
        url: str,
        *,
        lookback: str = "1h",
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        if not _DURATION.fullmatch(lookback):
            raise ValueError(f"lookback {lookback!r} is not a Prometheus duration like 1h")
        self.url = url.rstrip("/")
        self.display_url = str(httpx.URL(self.url).copy_with(username=None, password=None))  # for messages
        self.lookback = lookback
        self._client = client or httpx.Client(timeout=timeout)

    def __repr__(self) -> str:
        return f"PrometheusSource({self.display_url!r})"

    def close(self) -> None:
        self._client.close()

    def cohort_counts(self, query: CohortQuery) -> dict[StratumKey, CohortCounts]:
        if query.rings is not None and not query.rings:
            return {}
        expr = build_query(query.model, query.release, self.lookback)
        end = self._vector(expr, query.until)
        start = self._vector(expr, query.since) if query.since is not None else {}
        window: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        cumulative: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for key, value in end.items():
            name, ring, variant, region, event = key
            if query.rings is not None and ring not in query.rings:
                continue
            if name == _EVENTS:
                name = counters.EVENT_PREFIX + event
            elif counters.is_cumulative(name):
                cumulative[(variant, region)][name] += value
                continue
            delta = value - start.get(key, 0.0)
            if delta < 0:
                raise TelemetryUnavailable(
                    f"Prometheus at {self.display_url}: {series.total(_SERIES[key[0]])} for ring {ring!r} "
                    f"{variant}/{region} went down over the window (missing samples?)"
                )
            window[(variant, region)][name] += delta
        out: dict[StratumKey, CohortCounts] = {}
        for variant, region in sorted(window.keys() | cumulative.keys()):
            stratum = StratumKey(query.model, variant, region)
            if query.strata is not None and stratum not in query.strata:
                continue
            try:
                counts = counters.counts_from_totals(window.get((variant, region), {}),
                                                     cumulative.get((variant, region), {}))  # fmt: skip
            except ValueError as exc:  # inconsistent counters, e.g. crash-hours above device-hours
                raise TelemetryUnavailable(f"Prometheus at {self.display_url}: {exc} for {stratum}") from exc
            if counts.reports:  # present when it has a report in the window, as in the store
                out[stratum] = counts
        return out

    def _vector(self, expr: str, at: datetime | None) -> _Vector:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        endpoint = f"{self.url}/api/v1/query"
        try:
            response = self._client.post(endpoint, data=params)
        except httpx.HTTPError as exc:
            raise TelemetryUnavailable(f"Prometheus at {self.display_url} is unreachable: {exc}") from exc
        doc = _json(response)
        if response.status_code != 200 or doc.get("status") != "success":
            problem = doc.get("error") or f"HTTP {response.status_code}"
            raise TelemetryUnavailable(f"Prometheus at {self.display_url} refused the query: {problem}")
        data = doc.get("data") or {}
        if data.get("resultType") != "vector":
            raise TelemetryUnavailable(f"Prometheus at {self.display_url}: expected a vector result")
        out: _Vector = {}
        for sample in data.get("result", []):
            labels = sample.get("metric", {})
            key = (
                labels.get("series", ""), labels.get("ring", ""), labels.get("variant", ""),
                labels.get("region", ""), labels.get("event", ""),
            )  # fmt: skip
            try:
                value = float(sample["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value) or key[0] not in _SERIES or (key[0] == _EVENTS) != bool(key[4]):
                raise TelemetryUnavailable(f"Prometheus at {self.display_url}: bad sample {sample!r}")
            out[key] = value
        return out


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError:
        raise TelemetryUnavailable(
            f"{response.request.url} answered HTTP {response.status_code} without JSON"
        ) from None
    if not isinstance(doc, dict):
        raise TelemetryUnavailable(f"{response.request.url} answered JSON that is not an object")
    return doc
