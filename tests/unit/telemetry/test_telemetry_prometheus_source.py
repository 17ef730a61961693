"""PrometheusSource against a scripted Prometheus HTTP API (httpx.MockTransport)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from otactl.telemetry.prometheus import PrometheusSource, build_query
from otactl.telemetry.source import CohortCounts, CohortQuery, StratumKey, TelemetryUnavailable

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
    sample("devices", 4), sample("crashing_devices", 2),
    sample("events", 3, ring="early", event="committed"), sample("devices", 3, ring="early"),
    sample("health_reports", 0, variant="hp-400"),  # a stratum with nothing new: absent
]  # fmt: skip
AT_SINCE = [sample("events", 1, event="committed"), sample("devices", 1), sample("uptime_s", 3600),
            sample("health_reports", 2)]  # fmt: skip


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


def test_window_is_counter_at_until_minus_counter_at_since_and_devices_are_cumulative() -> None:
    seen: list[dict[str, list[str]]] = []
    counts = source(scripted(seen)).cohort_counts(
        CohortQuery("t9-engine", "2.1.0", rings=frozenset({"canary"}), since=SINCE, until=UNTIL)
    )
    assert counts == {
        StratumKey("t9-engine", "hp-300", "eu"): CohortCounts(
            devices=4, installs=7, install_failures=3, crashes=7, crashing_devices=2, device_hours=9.0
        )
    }
    assert [f["time"] for f in seen] == [[f"{UNTIL.timestamp():.3f}"], [f"{SINCE.timestamp():.3f}"]]
    assert seen[0]["query"] == [build_query("t9-engine", "2.1.0", "1h")]


def test_no_since_reads_totals_at_prometheus_now_and_rings_none_means_all() -> None:
    seen: list[dict[str, list[str]]] = []
    counts = source(scripted(seen)).cohort_counts(CohortQuery("t9-engine", "2.1.0"))
    assert len(seen) == 1 and "time" not in seen[0]
    assert counts[StratumKey("t9-engine", "hp-300", "eu")] == CohortCounts(7, 11, 3, 7, 2, 10.0)
    assert set(counts) == {StratumKey("t9-engine", "hp-300", "eu")}


def test_query_selects_by_model_and_release_and_quotes_them() -> None:
    q = build_query('m"x', "2.1.0", "1h")
    assert 'otactl_crashes_total{model="m\\"x", release="2.1.0"}[1h]' in q
    assert q.count("label_replace(") == 6
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
}  # fmt: skip


@pytest.mark.parametrize("handler", FAILURES.values(), ids=FAILURES.keys())
def test_failures_are_unavailable_never_empty(handler) -> None:  # type: ignore[no-untyped-def]
    until = datetime.fromtimestamp(1700000000, UTC)
    with pytest.raises(TelemetryUnavailable):
        source(handler).cohort_counts(CohortQuery("t9-engine", "2.1.0", since=SINCE, until=until))


def test_lookback_must_be_a_duration() -> None:
    with pytest.raises(ValueError, match="duration"):
        PrometheusSource("http://prom", lookback="1h]) or vector(1")
