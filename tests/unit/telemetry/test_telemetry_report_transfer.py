"""The optional ``transfer`` field of a ``downloaded`` event (decision 1201): how the image came
(``delta`` or ``full``) and the bytes fetched. A report without it is exactly what it was before the
field existed; the ingest's strict parser admits it only where it belongs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from securesystemslib.formats import encode_canonical

from otactl.telemetry.report import (
    Event,
    Kind,
    Refusal,
    Report,
    ReportError,
    Transfer,
    TransferMode,
    parse_payload,
)

NOW = datetime(2026, 11, 27, 19, 0, 0, tzinfo=UTC)


def downloaded(**changes: object) -> Report:
    fields: dict[str, object] = dict(
        device_id="trk-0001", seq=17, time=NOW, model="t9-engine", variant="hp-400", region="eu",
        ring="canary", release="2.1.0", kind=Kind.EVENT, event=Event.DOWNLOADED,
    )  # fmt: skip
    fields.update(changes)
    return Report(**fields)  # type: ignore[arg-type]


def test_a_report_without_transfer_has_the_payload_it_had_before() -> None:
    payload = downloaded().to_payload()
    assert "transfer" not in json.loads(payload)
    assert payload == (
        '{"device_id":"trk-0001","event":"downloaded","health":null,"kind":"event","model":"t9-engine",'
        '"reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":17,'
        '"time":"2026-11-27T19:00:00Z","variant":"hp-400"}')
    assert parse_payload(payload) == downloaded()


@pytest.mark.parametrize("mode", list(TransferMode))
def test_transfer_round_trips_in_canonical_form(mode: TransferMode) -> None:
    report = downloaded(transfer=Transfer(mode, 123456))
    payload = report.to_payload()
    assert json.loads(payload)["transfer"] == {"mode": mode.value, "bytes": 123456}
    assert payload == str(encode_canonical(report.to_mapping()))
    assert parse_payload(payload) == report


def _payload(**changes: object) -> str:
    doc = downloaded().to_mapping()
    doc.update(changes)
    return str(encode_canonical(doc))


BAD = {
    "on-another-event": (_payload(event="installed", transfer={"mode": "delta", "bytes": 1}),
                         "downloaded event only"),
    "unknown-mode": (_payload(transfer={"mode": "torrent", "bytes": 1}), "transfer.mode"),
    "negative-bytes": (_payload(transfer={"mode": "full", "bytes": -1}), "transfer.bytes"),
    "bytes-as-text": (_payload(transfer={"mode": "full", "bytes": "1"}), "transfer.bytes"),
    "extra-key": (_payload(transfer={"mode": "full", "bytes": 1, "saved": 2}), "exactly mode and bytes"),
    "null": (_payload(transfer=None), "exactly mode and bytes"),
    "another-unknown-field": (_payload(transferred=1), "unknown field 'transferred'"),
}


@pytest.mark.parametrize(("payload", "says"), list(BAD.values()), ids=list(BAD))
def test_a_bad_transfer_is_malformed(payload: str, says: str) -> None:
    with pytest.raises(ReportError) as err:
        parse_payload(payload)
    assert err.value.reason is Refusal.MALFORMED and says in err.value.detail


def test_a_health_report_carries_no_transfer() -> None:
    with pytest.raises(ValueError, match="downloaded event only"):
        downloaded(event=Event.COMMITTED, transfer=Transfer(TransferMode.FULL, 1))
