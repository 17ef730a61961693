"""The device's outbox: signed, numbered reports kept across restarts and ingest outages
(the ingest is httpx.MockTransport here; the real one is in the integration tests)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nacl.signing
import pytest

from otactl.agent.outbox import Outbox
from otactl.agent.state import DeviceState, Identity
from otactl.telemetry.devices import DeviceRegistry, EnrolledDevice
from otactl.telemetry.ingest import Ingest
from otactl.telemetry.report import Event, parse_payload, verify_signature
from otactl.telemetry.store import ReportStore

NOW = datetime(2026, 11, 27, 19, 0, 0, tzinfo=UTC)
KEY = nacl.signing.SigningKey(b"\x07" * 32)
DEVICE = EnrolledDevice("dev-1", "t9-engine", "hp-400", "eu", bytes(KEY.verify_key).hex())  # type: ignore[arg-type]


@pytest.fixture
def state(tmp_path: Path) -> DeviceState:
    return DeviceState.provision(tmp_path / "dev", Identity("dev-1", "t9-engine", "revB"), b"{}", KEY)


def client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def real_ingest(tmp_path: Path) -> tuple[httpx.Client, ReportStore]:
    """The ingest's own admission code (signature, seq, schema) behind a mock transport."""
    store = ReportStore(tmp_path / "t.db")
    ingest = Ingest(store, DeviceRegistry([DEVICE]), clock=lambda: NOW)

    def handler(request: httpx.Request) -> httpx.Response:
        status, doc = ingest.submit(request.content)
        return httpx.Response(status, json=doc)
    return client(handler), store


def queue(outbox: Outbox, n: int) -> None:
    for _ in range(n):
        outbox.event(DEVICE, "2.1.0", "canary", Event.OFFERED, NOW)


def test_reports_are_signed_numbered_and_accepted_by_the_ingest(state: DeviceState, tmp_path: Path) -> None:
    outbox = Outbox(state, KEY)
    queue(outbox, 3)
    outbox.health(DEVICE, "2.1.0", "canary", NOW, uptime_s=3600, crashes=1, errors=2, metrics={"temp_c": "71.5"})
    for env in outbox.log.outbox:
        verify_signature(env["payload"].encode(), env["signature"], KEY.verify_key)
    assert [parse_payload(e["payload"]).seq for e in outbox.log.outbox] == [1, 2, 3, 4]
    http, store = real_ingest(tmp_path)
    result = outbox.flush(http, "http://ingest.test")
    assert (result.accepted, result.refused, result.pending) == (4, 0, 0)
    assert store.report_count() == 4
    store.close()


def test_seq_and_unsent_reports_survive_a_restart(state: DeviceState) -> None:
    outbox = Outbox(state, KEY)
    queue(outbox, 2)
    outbox.save()
    again = Outbox(state, KEY)
    assert again.pending == 2
    queue(again, 1)
    assert parse_payload(again.log.outbox[-1]["payload"]).seq == 3


@pytest.mark.parametrize("failure", ["connection refused", "503", "429"])
def test_reports_are_kept_while_the_ingest_is_down_and_sent_when_it_is_back(
        state: DeviceState, tmp_path: Path, failure: str) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        if failure == "connection refused":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(int(failure), json={"error": "unavailable"})

    outbox = Outbox(state, KEY)
    queue(outbox, 5)
    result = outbox.flush(client(down), "http://ingest.test")
    assert (result.accepted, result.pending) == (0, 5) and result.error
    assert Outbox(state, KEY).pending == 5  # kept on disk too
    http, store = real_ingest(tmp_path)
    assert outbox.flush(http, "http://ingest.test").accepted == 5
    assert outbox.pending == 0 and store.report_count() == 5
    store.close()


def test_batches_are_posted_oldest_first_and_halved_on_413(state: DeviceState) -> None:
    seen: list[list[int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        batch = json.loads(request.content)["reports"]
        if len(batch) > 3:
            return httpx.Response(413, json={"error": "oversized"})
        seen.append([parse_payload(e["payload"]).seq for e in batch])
        return httpx.Response(200, json={"accepted": len(batch), "refused": 0, "results": []})

    outbox = Outbox(state, KEY, batch_size=8)
    queue(outbox, 7)
    result = outbox.flush(client(handler), "http://ingest.test")
    assert (result.accepted, result.pending) == (7, 0)
    assert seen == [[1, 2], [3, 4], [5, 6], [7]]


def test_a_routers_503_keeps_only_the_reports_its_down_shard_did_not_take(state: DeviceState) -> None:
    """The shard router answers 503 with every report's result when one shard is down (decision 0207)."""
    def router(request: httpx.Request) -> httpx.Response:
        batch = json.loads(request.content)["reports"]
        results = [{"index": i, "status": ["accepted", "unavailable", "refused"][i % 3]} for i in range(len(batch))]
        return httpx.Response(503, json={"error": "unavailable", "results": results})

    outbox = Outbox(state, KEY)
    queue(outbox, 5)
    result = outbox.flush(client(router), "http://router.test")
    assert (result.accepted, result.refused, result.pending) == (2, 1, 2) and result.error
    assert [parse_payload(e["payload"]).seq for e in Outbox(state, KEY).log.outbox] == [2, 5]  # saved

    def not_every_report(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": "unavailable", "results": [{"index": 0, "status": "accepted"}]})

    assert outbox.flush(client(not_every_report), "http://router.test").pending == 2  # kept whole


def test_refused_reports_leave_the_outbox_and_are_counted(state: DeviceState, tmp_path: Path) -> None:
    outbox = Outbox(state, KEY)
    queue(outbox, 2)
    http, store = real_ingest(tmp_path)
    outbox.flush(http, "http://ingest.test")
    outbox.log.next_seq = 1  # a device restored from an old backup reuses seqs: the ingest refuses replays
    queue(outbox, 1)
    result = outbox.flush(http, "http://ingest.test")
    assert (result.accepted, result.refused, result.pending) == (0, 1, 0)
    assert outbox.log.refused == 1
    store.close()


def test_the_outbox_is_bounded(state: DeviceState) -> None:
    outbox = Outbox(state, KEY, capacity=3)
    queue(outbox, 5)
    assert [parse_payload(e["payload"]).seq for e in outbox.log.outbox] == [3, 4, 5]
    assert outbox.log.dropped == 2


def test_a_reason_becomes_one_line_of_at_most_256_characters(state: DeviceState) -> None:
    outbox = Outbox(state, KEY)
    outbox.event(DEVICE, "2.1.0", None, Event.FAILED, NOW, "download failed:\n  Traceback-like\ttext " + "x" * 400)
    reason = parse_payload(outbox.log.outbox[0]["payload"]).reason
    assert reason is not None and "\n" not in reason and len(reason) == 256
    assert reason.startswith("download failed: Traceback-like text")
