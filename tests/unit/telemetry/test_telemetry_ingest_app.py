"""The ingest ASGI app, driven in process through httpx's ASGI transport.

Each named bad case is refused with its reason, counted in /metrics, and never reaches the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from otactl.telemetry import counters
from otactl.telemetry.ingest import IngestLimits, create_app
from otactl.telemetry.report import Envelope, Event, Report, sign_report
from otactl.telemetry.store import ReportStore


def request(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def post(app: Any, envelopes: list[Any]) -> httpx.Response:
    body = [e.to_json() if isinstance(e, Envelope) else e for e in envelopes]
    return request(app, "POST", "/v1/reports", json={"reports": body})


def rejected(app: Any) -> dict[str, float]:
    out = {}
    for line in request(app, "GET", "/metrics").text.splitlines():
        if line.startswith("otactl_reports_rejected_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


@pytest.fixture
def app(fleet, store: ReportStore):  # type: ignore[no-untyped-def]
    return create_app(store, fleet.registry, clock=lambda: fleet.now)


def good(fleet, device: str = "trk-0001", seq: int = 1, **changes: Any) -> Envelope:  # type: ignore[no-untyped-def]
    reporter = fleet.reporter(device, next_seq=seq)
    envelope = reporter.event("2.1.0", "canary", Event.COMMITTED, fleet.now)
    if not changes:
        return envelope
    report = Report(**{**_fields(envelope), **changes})
    return sign_report(report, fleet.key(changes.get("device_id", device)))


def _fields(envelope: Envelope) -> dict[str, Any]:
    from otactl.telemetry.report import parse_payload

    report = parse_payload(envelope.payload)
    return {f: getattr(report, f) for f in Report.__dataclass_fields__}


@dataclass
class Case:
    build: Callable[[Any], Any]  # fleet -> the envelope (or raw object) posted last
    reason: str | None  # None: accepted
    before: Callable[[Any], list[Envelope]] = field(default=lambda fleet: [])  # accepted first


CASES = {
    "accepted": Case(lambda f: good(f), None),
    "accepted within clock skew": Case(lambda f: good(f, time=f.now + timedelta(minutes=4)), None),
    "accepted without a ring": Case(lambda f: good(f, ring=None), None),
    "malformed: envelope not an object": Case(lambda f: "hello", "malformed"),
    "malformed: payload not JSON": Case(lambda f: {"payload": "{", "signature": "00" * 64}, "malformed"),
    "malformed: payload not a string": Case(lambda f: {"payload": {}, "signature": "00" * 64}, "malformed"),
    "malformed: unknown envelope field": Case(lambda f: {**good(f).to_json(), "key": "x"}, "malformed"),
    "malformed: signature not a string": Case(lambda f: {"payload": good(f).payload, "signature": 7}, "malformed"),
    "oversized: payload over 4096 bytes": Case(
        lambda f: {"payload": "x" * 5000, "signature": good(f).signature}, "oversized"
    ),
    "unsigned: no signature": Case(lambda f: {"payload": good(f).payload}, "unsigned"),
    "unsigned: empty signature": Case(lambda f: {"payload": good(f).payload, "signature": ""}, "unsigned"),
    "unknown key: device not enrolled": Case(lambda f: good(f, device_id="trk-9999"), "unknown_key"),
    "bad signature: tampered payload": Case(
        lambda f: Envelope(good(f).payload.replace('"seq":1', '"seq":2'), good(f).signature), "bad_signature"
    ),
    "bad signature: another device's key": Case(
        lambda f: Envelope(good(f).payload, good(f, device="trk-0002").signature), "bad_signature"
    ),
    "mismatch: claims another variant": Case(lambda f: good(f, variant="hp-500"), "mismatch"),
    "future: beyond the clock skew": Case(lambda f: good(f, time=f.now + timedelta(minutes=6)), "future"),
    "replayed: same report again": Case(lambda f: good(f), "replayed", lambda f: [good(f)]),
    "replayed: lower seq": Case(lambda f: good(f, seq=4), "replayed", lambda f: [good(f, seq=5)]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_admission(case: Case, app, fleet, store: ReportStore) -> None:  # type: ignore[no-untyped-def]
    before = case.before(fleet)
    if before:
        assert post(app, before).json()["accepted"] == len(before)
    stored = store.report_count()
    response = post(app, [case.build(fleet)])
    assert response.status_code == 200
    doc = response.json()
    assert doc["schema"] == "otactl/report-results/1"
    (result,) = doc["results"]
    if case.reason is None:
        assert result == {"index": 0, "status": "accepted"}
        assert store.report_count() == stored + 1
        assert sum(rejected(app).values()) == 0
    else:
        assert (result["status"], result["reason"]) == ("refused", case.reason), result
        assert store.report_count() == stored
        counts = rejected(app)
        assert counts[case.reason] == 1
        assert sum(counts.values()) == 1


def test_a_batch_gets_results_in_order_and_replays_within_it(app, fleet, store: ReportStore) -> None:  # type: ignore[no-untyped-def]
    r = fleet.reporter("trk-0003")
    e1 = r.event("2.1.0", "canary", Event.DOWNLOADED, fleet.now)
    e2 = r.event("2.1.0", "canary", Event.INSTALLED, fleet.now)
    doc = post(app, [e1, {"payload": "{"}, e2, e1, e2]).json()
    assert [(x["status"], x.get("reason")) for x in doc["results"]] == [
        ("accepted", None), ("refused", "unsigned"), ("accepted", None), ("refused", "replayed"),
        ("refused", "replayed"),
    ]  # fmt: skip
    assert (doc["accepted"], doc["refused"]) == (2, 3)
    assert store.report_count() == 2


REQUEST_CASES = {
    "body not JSON": (b"{reports", 400, "malformed"),
    "body not a batch": (json.dumps({"report": []}).encode(), 400, "malformed"),
    "body with extra keys": (json.dumps({"reports": [], "x": 1}).encode(), 400, "malformed"),
    "body over the limit": (json.dumps({"reports": ["x" * 3000]}).encode(), 413, "oversized"),
    "too many reports": (json.dumps({"reports": [{}] * 11}).encode(), 413, "oversized"),
}


@pytest.mark.parametrize("body, status, reason", REQUEST_CASES.values(), ids=REQUEST_CASES.keys())
def test_whole_requests_refused_and_counted_once(body: bytes, status: int, reason: str, fleet, store) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store, fleet.registry, limits=IngestLimits(max_body_bytes=2048, max_reports=10))
    response = request(app, "POST", "/v1/reports", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert response.json()["error"] == reason
    assert rejected(app)[reason] == 1
    assert store.report_count() == 0


def test_body_limit_holds_without_content_length(fleet, store) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store, fleet.registry, limits=IngestLimits(max_body_bytes=2048))

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b" " * 1000

    response = request(app, "POST", "/v1/reports", content=chunks())
    assert response.status_code == 413
    assert rejected(app)["oversized"] == 1


def test_metrics_are_per_cohort_never_per_device(app, fleet) -> None:  # type: ignore[no-untyped-def]
    envelopes = [
        fleet.reporter(d.device_id).health("2.1.0", "canary", fleet.now, 600, crashes=1) for d in fleet.registry
    ]
    assert post(app, [e for e in envelopes]).json()["accepted"] == 5
    text = request(app, "GET", "/metrics").text
    assert "trk-" not in text
    cohort = '{model="t9-engine",region="eu",release="2.1.0",ring="canary",variant="hp-300"}'
    assert f"otactl_cohort_crashes_total{cohort} 2.0" in text
    assert f"otactl_cohort_crash_uptime_s_total{cohort} 1200.0" in text
    assert (
        'otactl_cohort_devices_total{model="t9-engine",region="eu",release="2.1.0",ring="canary",variant="hp-300"} 2.0'
        in text
    )
    assert "otactl_reports_accepted_total 5.0" in text
    assert 'otactl_devices_enrolled{model="t9-engine",region="us",variant="hp-400"} 1.0' in text
    # one family per cohort counter of counters.COUNTERS, with its help, one sample per cohort (4 here)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for c in counters.COUNTERS:
        family = families.pop(f"otactl_cohort_{c.name}")
        assert (family.type, family.documentation) == ("counter", c.help)
        assert len([s for s in family.samples if s.name.endswith("_total")]) == 4, c.name
    assert set(families) == {"otactl_report_events", "otactl_reports_accepted", "otactl_reports_rejected",
                             "otactl_devices_enrolled"}  # fmt: skip


def test_healthz_and_methods(app) -> None:  # type: ignore[no-untyped-def]
    assert request(app, "GET", "/healthz").json()["status"] == "ok"
    assert request(app, "GET", "/v1/reports").status_code == 405


def test_store_failure_answers_503_and_stores_nothing(fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = ReportStore(tmp_path / "t.db")
    app = create_app(store, fleet.registry, clock=lambda: fleet.now)
    store.close()  # every later write fails
    response = post(app, [good(fleet)])
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert request(app, "GET", "/healthz").status_code == 503
    with contextlib.closing(ReportStore(tmp_path / "t.db")) as reopened:
        assert reopened.report_count() == 0
