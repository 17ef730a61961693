"""Report payloads: canonical form, strict parsing, signing and verification."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st
from securesystemslib.formats import encode_canonical

from otactl.telemetry.report import (
    Envelope,
    Event,
    Health,
    Kind,
    Refusal,
    Report,
    ReportError,
    parse_payload,
    parse_time,
    sign_report,
    verify_signature,
)

NOW = datetime(2026, 11, 27, 19, 0, 0, tzinfo=UTC)


def signing_key(device_id: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(device_id.encode()).digest())


def event_report(**changes: object) -> Report:
    fields: dict[str, object] = dict(
        device_id="trk-0001", seq=17, time=NOW, model="t9-engine", variant="hp-400", region="eu",
        ring="canary", release="2.1.0", kind=Kind.EVENT, event=Event.INSTALLED,
    )  # fmt: skip
    fields.update(changes)
    return Report(**fields)  # type: ignore[arg-type]


def payload_dict(**changes: object) -> dict[str, object]:
    doc = event_report().to_mapping()
    doc.update(changes)
    return doc


def canonical(doc: object) -> str:
    return str(encode_canonical(doc))


def test_payload_is_the_documented_shape() -> None:
    doc = json.loads(event_report().to_payload())
    assert doc == {
        "schema": "otactl/report/1", "device_id": "trk-0001", "seq": 17, "time": "2026-11-27T19:00:00Z",
        "model": "t9-engine", "variant": "hp-400", "region": "eu", "ring": "canary",
        "release": "2.1.0", "kind": "event", "event": "installed", "reason": None, "health": None,
    }  # fmt: skip


identifiers = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,20}", fullmatch=True)
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=[chr(c) for c in range(32)]),
    max_size=40,
)
metric_values = st.one_of(
    st.integers(-(2**53) + 1, 2**53 - 1), st.from_regex(r"-?(0|[1-9][0-9]{0,5})(\.[0-9]{1,4})?", fullmatch=True)
)
health_st = st.builds(
    Health,
    uptime_s=st.integers(0, 2**53 - 1),
    crashes=st.integers(0, 1000),
    errors=st.integers(0, 1000),
    metrics=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), metric_values, max_size=4).map(
        lambda d: tuple(sorted(d.items()))
    ),
)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)).map(
    lambda t: t.replace(microsecond=0)
)


@st.composite
def reports(draw: st.DrawFn) -> Report:
    kind = draw(st.sampled_from(Kind))
    return Report(
        device_id=draw(identifiers),  # type: ignore[arg-type]
        seq=draw(st.integers(0, 2**53 - 1)),
        time=draw(times),
        model=draw(identifiers),
        variant=draw(identifiers),
        region=draw(identifiers),
        ring=draw(st.none() | identifiers),
        release=draw(identifiers),
        kind=kind,
        event=draw(st.sampled_from(Event)) if kind is Kind.EVENT else None,
        reason=draw(st.none() | texts) if kind is Kind.EVENT else None,
        health=draw(health_st) if kind is Kind.HEALTH else None,
    )


@given(reports())
def test_parse_inverts_to_payload(report: Report) -> None:
    assert parse_payload(report.to_payload()) == report


@given(reports())
def test_fast_canonical_check_agrees_with_securesystemslib(report: Report) -> None:
    payload = report.to_payload()
    assert payload == canonical(json.loads(payload))  # and parse_payload accepted it above


BAD_PAYLOADS = {
    "not JSON": ("{", "Expecting"),
    "not an object": ("[1]", "not a JSON object"),
    "unknown field": (canonical(payload_dict(extra=1)), "unknown field 'extra'"),
    "missing field": (canonical({k: v for k, v in payload_dict().items() if k != "ring"}), "missing field 'ring'"),
    "unknown kind": (canonical(payload_dict(kind="log")), "unknown kind 'log'"),
    "unknown event": (canonical(payload_dict(event="exploded")), "unknown event 'exploded'"),
    "newer schema": (canonical(payload_dict(schema="otactl/report/2")), "unsupported schema"),
    "other schema": (canonical(payload_dict(schema="otactl/device/1")), "unsupported schema"),
    "not canonical (spaces)": (json.dumps(payload_dict(), sort_keys=True), "not canonical"),
    "not canonical (key order)": (json.dumps(payload_dict(), separators=(",", ":")), "not canonical"),
    "duplicate key": (canonical(payload_dict())[:-1] + ',"seq":18}', "not canonical"),
    "float metric": (
        json.dumps(
            payload_dict(
                kind="health",
                event=None,
                health={"uptime_s": 1, "crashes": 0, "errors": 0, "metrics": {"temp_c": 71.5}},
            ),
            sort_keys=True,
            separators=(",", ":"),
        ),
        "canonical JSON has no floats",
    ),
    "NaN": (canonical(payload_dict())[:-1] + ',"x":NaN}', "no floats"),
    "time with offset": (canonical(payload_dict(time="2026-11-27T20:00:00+01:00")), "RFC 3339 UTC"),
    "time without zone": (canonical(payload_dict(time="2026-11-27T19:00:00")), "RFC 3339 UTC"),
    "time with fraction": (canonical(payload_dict(time="2026-11-27T19:00:00.5Z")), "RFC 3339 UTC"),
    "impossible time": (canonical(payload_dict(time="2026-02-30T19:00:00Z")), "day is out of range"),
    "negative seq": (canonical(payload_dict(seq=-1)), "seq must be an integer"),
    "boolean seq": (canonical(payload_dict(seq=True)), "seq must be an integer"),
    "huge seq": (canonical(payload_dict(seq=2**63)), "seq must be an integer"),
    "event with health": (
        canonical(payload_dict(health={"uptime_s": 1, "crashes": 0, "errors": 0})),
        "needs event and no health",
    ),
    "health without health": (canonical(payload_dict(kind="health", event=None)), "needs health"),
    "health with unknown counter": (
        canonical(
            payload_dict(kind="health", event=None, health={"uptime_s": 1, "crashes": 0, "errors": 0, "reboots": 1})
        ),
        "unknown field 'reboots'",
    ),
    "negative crashes": (
        canonical(payload_dict(kind="health", event=None, health={"uptime_s": 1, "crashes": -1, "errors": 0})),
        "health.crashes",
    ),
    "raw control character": (canonical(payload_dict(reason="a\nb")), "Invalid control character"),
    "escaped control character": (
        json.dumps(payload_dict(reason="a\nb"), sort_keys=True, separators=(",", ":")),
        "not canonical JSON (escape \\n)",
    ),
    "escaped non-ASCII": (canonical(payload_dict(reason="caf")).replace('caf"', 'caf\\u00e9"'), "escape \\u"),
    "escaped slash": (canonical(payload_dict(reason="a/b")).replace("a/b", "a\\/b"), "escape \\/"),
    "bad identifier": (canonical(payload_dict(variant="hp 400")), "variant must be an identifier"),
    "path in ring": (canonical(payload_dict(ring="../x")), "ring must be an identifier"),
}


@pytest.mark.parametrize("payload, message", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_bad_payloads_are_malformed(payload: str, message: str) -> None:
    with pytest.raises(ReportError) as err:
        parse_payload(payload)
    assert err.value.reason is Refusal.MALFORMED
    assert message in err.value.detail


def test_quotes_backslashes_and_unicode_round_trip() -> None:
    report = event_report(reason='C:\\new "café" \u2028 ok')
    assert '"reason":"C:\\\\new \\"café\\" \u2028 ok"' in report.to_payload()
    assert parse_payload(report.to_payload()) == report


def test_health_metrics_take_integers_and_decimal_strings() -> None:
    report = event_report(kind=Kind.HEALTH, event=None, health=Health(60, 1, 2, (("rpm", 900), ("temp_c", "71.5"))))
    assert '"metrics":{"rpm":900,"temp_c":"71.5"}' in report.to_payload()
    assert parse_payload(report.to_payload()) == report


@pytest.mark.parametrize(
    "bad", [("temp_c", 71.5), ("temp_c", "71,5"), ("temp_c", "1e3"), ("Temp C", 1), ("x", True)], ids=repr
)
def test_health_metrics_refuse_other_values(bad: tuple[str, object]) -> None:
    with pytest.raises(ValueError):
        Health(60, 0, 0, (bad,))  # type: ignore[arg-type]


def test_report_times_must_be_utc_whole_seconds() -> None:
    with pytest.raises(ValueError, match="UTC"):
        event_report(time=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    with pytest.raises(ValueError, match="UTC"):
        event_report(time=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="whole seconds"):
        event_report(time=NOW.replace(microsecond=5))
    assert parse_time("2026-11-27T19:00:00Z") == NOW


def test_signature_verifies_over_the_payload_bytes() -> None:
    key = signing_key("trk-0001")
    envelope = sign_report(event_report(), key)
    verify_signature(envelope.payload.encode(), envelope.signature, key.verify_key)


SIGNATURE_CASES = {
    "tampered payload": lambda e: Envelope(e.payload.replace('"seq":17', '"seq":18'), e.signature),
    "other device's key": lambda e: sign_report(event_report(), signing_key("trk-0002")),
    "flipped bit": lambda e: Envelope(e.payload, format(int(e.signature, 16) ^ 1, "0128x")),
    "not hex": lambda e: Envelope(e.payload, "zz" * 64),
    "too short": lambda e: Envelope(e.payload, e.signature[:-2]),
}


@pytest.mark.parametrize("tamper", SIGNATURE_CASES.values(), ids=SIGNATURE_CASES.keys())
def test_bad_signatures_are_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    key = signing_key("trk-0001")
    envelope = tamper(sign_report(event_report(), key))
    with pytest.raises(ReportError) as err:
        verify_signature(envelope.payload.encode(), envelope.signature, key.verify_key)
    assert err.value.reason is Refusal.BAD_SIGNATURE
