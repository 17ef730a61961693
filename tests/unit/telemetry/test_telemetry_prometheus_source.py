"""PrometheusSource against a scripted Prometheus HTTP API (httpx.MockTransport)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from otactl.telemetry import counters
from otactl.telemetry.counters import counts_from_totals
from otactl.telemetry.prometheus import PrometheusSource, build_query
from otactl.telemetry.source import CohortQuery, StratumKey, TelemetryUnavailable

SINCE = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
UNTIL = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)


def sample(series: str, value: float, ring: str = "canary", variant: str = "hp-300", region: str = "eu",
           event: str | None = None) -> dict[str, Any]:  # fmt: skip
    metric = {"series": series, "ring": ring, "variant": variant, "region": region}
    if event:
        metric["event"] = event
    return {"metric": metric, "value": [0, repr(float(value))]}


def vector(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": samples}}


AT_UNTIL = [
    sample("events", 5, event="committed"), sample("events", 2, event="reverted"),
    sample("events", 1, event="failed"), sample("events", 9, event="installed"),
    sample("health_reports", 10), sample("crashes", 7), sample("uptime_s", 36000),
    sample("crash_uptime_s", 7200), sample("periods", 3), sample("period_crashes", 4),
    sample("period_crash_sq", 10), sample("late_uptime_s_24h", 18000), sample("late_crashes_24h", 2),
    sample("late_crash_uptime_s_24h", 3600), sample("aged_devices_24h", 3), sample("aged_devices_12h", 4),
    sample("devices", 4),
    sample("events", 3, ring="early", event="committed"), sample("devices", 3, ring="early"),
    sample("health_reports", 0, variant="hp-400"), sample("devices", 2, variant="hp-400"),  # nothing new: absent
]  # fmt: skip
AT_SINCE = [sample("events", 1, event="committed"), sample("devices", 1), sample("uptime_s", 3600),
            sample("health_reports", 2), sample("periods", 1), sample("period_crashes", 1),
            sample("period_crash_sq", 1), sample("late_uptime_s_24h", 3600), sample("aged_devices_24h", 1),
            sample("aged_devices_12h", 9)]  # fmt: skip


def source(handler: Callable[[httpx.Request], httpx.Response]) -> PrometheusSource:
    return PrometheusSource("http://prom:9090/", client=httpx.Client(transport=httpx.MockTransport(handler)))


def scripted(seen: list[dict[str, list[str]]]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        form = parse_qs(request.content.decode())
        seen.append(form)
        at_since = form.get("time") == [f"{SINCE.timestamp():.3f}"]
        return httpx.Response(200, json=vector(AT_SINCE if at_since else AT_UNTIL))

    return handler


def test_window_counters_are_value_at_until_minus_value_at_since_cumulative_ones_at_until() -> None:
    seen: list[dict[str, list[str]]] = []
    counts = source(scripted(seen)).cohort_counts(
        CohortQuery("t9-engine", "2.1.0", rings=frozenset({"canary"}), since=SINCE, until=UNTIL)
    )
    window = {"event:committed": 4, "event:reverted": 2, "event:failed": 1, "event:installed": 9,
              "health_reports": 8, "crashes": 7, "uptime_s": 32400, "crash_uptime_s": 7200, "periods": 2,
              "period_crashes": 3, "period_crash_sq": 9, "late_uptime_s_24h": 14400, "late_crashes_24h": 2,
              "late_crash_uptime_s_24h": 3600}  # fmt: skip
    cumulative = {"devices": 4, "aged_devices_24h": 3, "aged_devices_12h": 4}  # since does not apply
    assert counts == {StratumKey("t9-engine", "hp-300", "eu"): counts_from_totals(window, cumulative)}
    got = counts[StratumKey("t9-engine", "hp-300", "eu")]
    assert (got.reports, got.installs, got.install_failures, got.device_hours) == (24, 7, 3, 9.0)
    assert [f["time"] for f in seen] == [[f"{UNTIL.timestamp():.3f}"], [f"{SINCE.timestamp():.3f}"]]
    assert seen[0]["query"] == [build_query("t9-engine", "2.1.0", "1h")]


def test_no_since_reads_totals_at_prometheus_now_and_rings_none_means_all() -> None:
    seen: list[dict[str, list[str]]] = []
    counts = source(scripted(seen)).cohort_counts(CohortQuery("t9-engine", "2.1.0"))
    assert len(seen) == 1 and "time" not in seen[0]
    got = counts[StratumKey("t9-engine", "hp-300", "eu")]
    assert (got.reports, got.devices, got.installs, got.install_failures, got.crashes, got.device_hours) == (
        30, 7, 11, 3, 7, 10.0)  # canary and early  # fmt: skip
    assert set(counts) == {StratumKey("t9-engine", "hp-300", "eu")}


def test_query_selects_by_model_and_release_and_quotes_them() -> None:
    q = build_query('m"x', "2.1.0", "1h")
    assert 'otactl_cohort_crashes_total{model="m\\"x", release="2.1.0"}[1h]' in q
    assert 'otactl_report_events_total{model="m\\"x", release="2.1.0"}[1h]' in q
    assert q.count("label_replace(") == len(counters.COUNTERS) + 1  # every counter family and the events
    for c in counters.COUNTERS:
        assert f'otactl_cohort_{c.name}_total{{model="m\\"x", release="2.1.0"}}[1h]' in q
        assert f'"series", "{c.name}"' in q
    assert "increase(" not in q


FAILURES = {
    "connection refused": lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused", request=r)),
    "timeout": lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=r)),
    "server error": lambda r: httpx.Response(503, text="down"),
    "query error": lambda r: httpx.Response(400, json={"status": "error", "error": "parse error"}),
    "not a vector": lambda r: httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix"}}),
    "bad sample": lambda r: httpx.Response(200, json=vector([{"metric": {"series": "devices"}, "value": [0, "x"]}])),
    "counter went down": lambda r: httpx.Response(
        200, json=vector([sample("crashes", 1 if "time=1700000000.000" in r.content.decode() else 5)])
    ),
    "unknown series": lambda r: httpx.Response(200, json=vector([sample("crashing_devices", 1)])),
    "event without its label": lambda r: httpx.Response(200, json=vector([sample("events", 1)])),
    "crash-hours above device-hours": lambda r: httpx.Response(200, json=vector(
        [sample("health_reports", 1), sample("crash_uptime_s", 7200), sample("uptime_s", 3600)]
        if "time=1700000000.000" in r.content.decode() else []
    )),
}  # fmt: skip


@pytest.mark.parametrize("handler", FAILURES.values(), ids=FAILURES.keys())
def test_failures_are_unavailable_never_empty(handler) -> None:  # type: ignore[no-untyped-def]
    until = datetime.fromtimestamp(1700000000, UTC)
    with pytest.raises(TelemetryUnavailable):
        source(handler).cohort_counts(CohortQuery("t9-engine", "2.1.0", since=SINCE, until=until))


def test_lookback_must_be_a_duration() -> None:
    with pytest.raises(ValueError, match="duration"):
        PrometheusSource("http://prom", lookback="1h]) or vector(1")
