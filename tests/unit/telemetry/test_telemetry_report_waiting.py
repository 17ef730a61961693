"""The optional ``waiting`` field of a health report (decision 1202): compatible (a report without it
is byte-for-byte what it was), strict (only on health reports, exactly release and reason)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from securesystemslib.formats import encode_canonical

from otactl.telemetry.report import (
    DeviceId,
    Event,
    Health,
    Kind,
    Report,
    ReportError,
    Transfer,
    TransferMode,
    Waiting,
    parse_payload,
)

T = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def health(waiting: Waiting | None = None) -> Report:
    return Report(DeviceId("t9-0001"), 7, T, "t9-engine", "hp-400", "eu", "canary", "2.0.0", Kind.HEALTH,
                  health=Health(3600), waiting=waiting)


def test_a_waiting_health_report_round_trips_and_one_without_is_unchanged() -> None:
    w = Waiting("2.1.0", "outside maintenance window until 02:00 Europe/Berlin")
    report = health(w)
    assert parse_payload(report.to_payload()) == report
    assert json.loads(report.to_payload())["waiting"] == {"release": "2.1.0", "reason": w.reason}
    assert "waiting" not in json.loads(health().to_payload())


def mutate(**changes: object) -> str:
    doc = json.loads(health(Waiting("2.1.0", "precondition engine_off: engine running")).to_payload())
    doc.update(changes)
    return str(encode_canonical(doc))


@pytest.mark.parametrize(("name", "payload", "message"), [
    ("extra key", mutate(waiting={"release": "2.1.0", "reason": "x", "until": "02:00"}),
     "waiting must be an object with exactly release and reason"),
    ("empty reason", mutate(waiting={"release": "2.1.0", "reason": ""}), "waiting.reason must be text"),
    ("bad release", mutate(waiting={"release": "../x", "reason": "r"}), "waiting.release must be an identifier"),
    ("on an event", mutate(kind="event", event="downloaded", health=None), "waiting belongs on a health report"),
    ("with transfer", mutate(transfer={"mode": "full", "bytes": 1}), "transfer and waiting do not go on one"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 20 else "")
def test_the_ingest_refuses_a_malformed_waiting_field(name: str, payload: str, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        parse_payload(payload)


def test_waiting_is_not_allowed_on_a_report_the_agent_builds_as_an_event() -> None:
    with pytest.raises(ValueError, match="waiting belongs on a health report"):
        Report(DeviceId("t9-0001"), 7, T, "t9-engine", "hp-400", "eu", "canary", "2.1.0", Kind.EVENT,
               event=Event.DOWNLOADED, transfer=Transfer(TransferMode.FULL, 10), waiting=Waiting("2.1.0", "r"))
