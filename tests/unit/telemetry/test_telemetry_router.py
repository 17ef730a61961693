"""The shard router in process: two real ingest shards (each its own SQLite store) behind it, reached
through httpx's ASGI transport; a shard is "down" when the transport refuses its connections."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from otactl.errors import UsageError
from otactl.telemetry.ingest import IngestLimits, create_app
from otactl.telemetry.report import Event
from otactl.telemetry.router import create_app as create_router
from otactl.telemetry.router import parse_shard_urls
from otactl.telemetry.shards import Shard, shard_of
from otactl.telemetry.store import ReportStore

URLS = ("http://shard0.test", "http://shard1.test")
DEVICES = ["trk-0001", "trk-0002", "trk-0003", "trk-0004", "trk-0005"]


class ShardTransport(httpx.AsyncBaseTransport):
    """Sends each request to the app of its host; hosts in ``down`` refuse connections."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.apps = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}
        self.down: set[str] = set()
        self.seen: dict[str, int] = {host: 0 for host in apps}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        self.seen[host] += 1
        return await self.apps[host].handle_async_request(request)


def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


class Parts:
    def __init__(self, fleet: Any, tmp_path: Path, urls: tuple[str, ...] = URLS) -> None:
        self.fleet = fleet
        self.stores = [ReportStore(tmp_path / f"shard{i}.db") for i in range(2)]
        self.shards = [
            create_app(self.stores[i], fleet.registry.subset(Shard(i, 2).holds), clock=lambda: fleet.now,
                       shard=Shard(i, 2))
            for i in range(2)
        ]  # fmt: skip
        self.transport = ShardTransport({httpx.URL(URLS[i]).host: self.shards[i] for i in range(2)})
        self.router = create_router(urls, client=httpx.AsyncClient(transport=self.transport),
                                    limits=IngestLimits(max_body_bytes=64 << 10, max_reports=50))  # fmt: skip
        self.seq = dict.fromkeys(DEVICES, 1)

    def reports(self, devices: list[str]) -> list[dict[str, str]]:
        out = []
        for d in devices:
            out.append(self.fleet.reporter(d, next_seq=self.seq[d]).event("2.1.0", "canary", Event.OFFERED,
                                                                           self.fleet.now).to_json())  # fmt: skip
            self.seq[d] += 1
        return out

    def close(self) -> None:
        for s in self.stores:
            s.close()


@pytest.fixture
def parts(fleet, tmp_path: Path):  # type: ignore[no-untyped-def]
    p = Parts(fleet, tmp_path)
    yield p
    p.close()


def _has(store: ReportStore, device_id: str) -> bool:
    with store._reading() as conn:  # a test peeks at the table
        return bool(conn.execute("SELECT 1 FROM reports WHERE device_id = ?", (device_id,)).fetchone())


def metric(app: Any, name: str) -> dict[str, float]:
    out = {}
    for line in call(app, "GET", "/metrics").text.splitlines():
        if line.startswith(name + "{"):
            out[line.split('="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_reports_land_on_their_shards_and_results_come_back_in_order(parts: Parts) -> None:
    batch = [*parts.reports(DEVICES), {"payload": "not json", "signature": "00"}, *parts.reports(["trk-0002"])]
    doc = call(parts.router, "POST", "/v1/reports", json={"reports": batch}).json()
    assert (doc["accepted"], doc["refused"]) == (6, 1)
    assert [r["index"] for r in doc["results"]] == list(range(7))
    assert [r["status"] for r in doc["results"]] == ["accepted"] * 5 + ["refused", "accepted"]
    assert doc["results"][5]["reason"] == "malformed"
    for i, store in enumerate(parts.stores):
        assert [d for d in DEVICES if _has(store, d)] == [d for d in DEVICES if shard_of(d, 2) == i]
    assert metric(parts.shards[0], "otactl_reports_rejected_total")["malformed"] == 1  # counted on shard 0
    assert metric(parts.router, "otactl_router_reports_forwarded_total") == {"0/2": 4.0, "1/2": 3.0}


def test_a_shard_refuses_another_shards_device_and_counts_it(parts: Parts) -> None:
    (report,) = parts.reports(["trk-0002"])  # shard 1's device
    doc = call(parts.shards[0], "POST", "/v1/reports", json={"reports": [report]}).json()
    assert doc["results"][0]["reason"] == "wrong_shard"
    assert "belongs to shard 1/2, this ingest is shard 0/2" in doc["results"][0]["detail"]
    assert metric(parts.shards[0], "otactl_reports_rejected_total")["wrong_shard"] == 1
    assert not _has(parts.stores[0], "trk-0002")
    assert call(parts.router, "POST", "/v1/reports", json={"reports": [report]}).json()["accepted"] == 1
    again = call(parts.shards[1], "POST", "/v1/reports", json={"reports": [report]}).json()
    assert again["results"][0]["reason"] == "replayed"
    # the shard check comes before enrolment and signature: a misrouted report costs no verification
    forged = {**report, "signature": "00" * 64}
    stranger = {"payload": report["payload"].replace("trk-0002", "zz-0003"), "signature": "00" * 64}
    assert shard_of("zz-0003", 2) == 1
    doc = call(parts.shards[0], "POST", "/v1/reports", json={"reports": [forged, stranger]}).json()
    assert [r["reason"] for r in doc["results"]] == ["wrong_shard", "wrong_shard"]


def test_a_shard_down_answers_503_with_every_reports_result_and_the_retry_counts_once(parts: Parts) -> None:
    batch = parts.reports(DEVICES)
    parts.transport.down.add("shard1.test")
    response = call(parts.router, "POST", "/v1/reports", json={"reports": batch})
    assert response.status_code == 503
    doc = response.json()
    assert (doc["error"], doc["accepted"], doc["unavailable"]) == ("unavailable", 3, 2)
    statuses = [r["status"] for r in doc["results"]]
    assert statuses == ["accepted" if shard_of(d, 2) == 0 else "unavailable" for d in DEVICES]
    assert "shard 1/2 (http://shard1.test) is unreachable: ConnectError" in doc["detail"]
    assert metric(parts.router, "otactl_router_shard_failures_total") == {"0/2": 0.0, "1/2": 1.0}
    parts.transport.down.clear()
    whole = call(parts.router, "POST", "/v1/reports", json={"reports": batch}).json()  # an agent that sends all again
    assert [r["status"] for r in whole["results"]] == [
        "refused" if s == "accepted" else "accepted" for s in statuses
    ]  # fmt: skip
    assert {r["reason"] for r in whole["results"] if r["status"] == "refused"} == {"replayed"}
    for i, store in enumerate(parts.stores):
        assert store.report_count() == sum(shard_of(d, 2) == i for d in DEVICES)


REQUESTS = {
    "not JSON": (b"\x00garbage", 400, "malformed"),
    "not a batch": (json.dumps({"reports": {}}).encode(), 400, "malformed"),
    "too many reports": (json.dumps({"reports": [{}] * 51}).encode(), 413, "oversized"),
    "body over the limit": (json.dumps({"reports": [{"payload": "x" * (65 << 10)}]}).encode(), 413, "oversized"),
}


@pytest.mark.parametrize("body, status, reason", REQUESTS.values(), ids=REQUESTS.keys())
def test_whole_requests_are_refused_before_anything_is_forwarded(
    parts: Parts, body: bytes, status: int, reason: str
) -> None:
    response = call(parts.router, "POST", "/v1/reports", content=body)
    assert (response.status_code, response.json()["error"]) == (status, reason)
    assert metric(parts.router, "otactl_router_requests_rejected_total")[reason] == 1
    assert parts.transport.seen == {"shard0.test": 0, "shard1.test": 0}
    assert call(parts.router, "POST", "/v1/reports", json={"reports": []}).json()["results"] == []


def test_healthz_reports_each_shard_and_catches_swapped_urls(parts: Parts, fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    doc = call(parts.router, "GET", "/healthz").json()
    assert doc["status"] == "ok"
    assert [(s["shard"], s["status"], s["devices"]) for s in doc["shards"]] == [("0/2", "ok", 3), ("1/2", "ok", 2)]
    parts.transport.down.add("shard1.test")
    down = call(parts.router, "GET", "/healthz")
    assert down.status_code == 503 and down.json()["shards"][1]["status"] == "unavailable"
    (tmp_path / "swapped").mkdir()
    swapped = Parts(fleet, tmp_path / "swapped", urls=URLS[::-1])
    try:
        doc = call(swapped.router, "GET", "/healthz").json()
        assert [s["status"] for s in doc["shards"]] == ["misconfigured", "misconfigured"]
        assert doc["shards"][0]["detail"] == "it says it is shard 1/2"
    finally:
        swapped.close()


BAD_URLS = {
    "no scheme": (["10.0.0.1:8787"], "expected a shard's base URL like http://10.0.0.1:8787"),
    "ftp": (["ftp://10.0.0.1"], "expected a shard's base URL"),
    "no host": (["http://"], "--shard 'http://'"),
    "query": (["http://a:1/?x=1"], "no query or fragment"),
    "twice": (["http://a:1", "http://a:1/"], "given twice (shard 0 and 1)"),
    "none": ([], "at least one"),
}


@pytest.mark.parametrize("specs, message", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_bad_shard_urls_are_usage_errors(specs: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=None) as err:
        parse_shard_urls(specs)
    assert message in str(err.value)


def test_shard_urls_keep_their_order_and_lose_a_trailing_slash() -> None:
    assert parse_shard_urls(["http://b:2/", "https://a:1/ingest"]) == ("http://b:2", "https://a:1/ingest")
