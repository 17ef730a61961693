"""Device reports: the signed payload of docs/formats.md, its strict parser, signing, verification.

A report travels as an envelope ``{"payload": "<canonical JSON>", "signature": "<hex ed25519>"}``;
the signature covers the payload's UTF-8 bytes exactly as sent. The parser refuses anything the
contract does not name (unknown fields, kinds or events), floats (canonical JSON has none: metric
values are integers or decimal strings) and payloads that are not in canonical form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NewType

import nacl.exceptions
import nacl.signing
from securesystemslib.formats import encode_canonical

SCHEMA = "otactl/report/1"
SCHEMA_PREFIX = "otactl/report/"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
SIGNATURE_HEX_LEN = 128
MAX_INT = 2**53 - 1  # counters stay exact as Prometheus float64 samples
MAX_REASON_LEN = 256
MAX_METRICS = 32

DeviceId = NewType("DeviceId", str)

_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
IDENTIFIER = _IDENT  # device ids, models, variants, regions, releases: never an escape in canonical JSON
_METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]{0,30})(?:\.[0-9]{1,30})?")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_CONTROL = re.compile(r"[\x00-\x1f]")


class Kind(StrEnum):
    EVENT = "event"
    HEALTH = "health"


class Event(StrEnum):
    OFFERED = "offered"
    DOWNLOADED = "downloaded"
    INSTALLED = "installed"
    BOOTED = "booted"
    COMMITTED = "committed"
    REVERTED = "reverted"
    FAILED = "failed"


_KINDS = {k.value: k for k in Kind}
_EVENTS = {e.value: e for e in Event}
FINISHED_EVENTS = frozenset({Event.COMMITTED, Event.REVERTED, Event.FAILED})
FAILED_EVENTS = frozenset({Event.REVERTED, Event.FAILED})


class Refusal(StrEnum):
    """Why the ingest refused a report; the label of the rejected-reports counter."""

    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    UNSIGNED = "unsigned"
    WRONG_SHARD = "wrong_shard"  # the device belongs to another ingest shard (decision 0207)
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    MISMATCH = "mismatch"  # model/variant/region differ from the device's enrolment
    FUTURE = "future"
    REPLAYED = "replayed"


class ReportError(ValueError):
    """A report the ingest refuses: ``reason`` is the counter label, ``detail`` the explanation."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """RFC 3339 UTC with whole seconds, ``2026-11-27T19:00:00Z``; nothing else."""
    if not _TIME.fullmatch(text):
        raise ValueError(f"time {text!r} is not RFC 3339 UTC like 2026-11-27T19:00:00Z")
    return datetime.fromisoformat(text)  # "Z" is UTC (Python 3.11)


_KNOWN_IDENTS: set[str] = set()  # identifiers already checked: the same few recur in every report


def check_identifier(name: str, value: object) -> str:
    """Identifiers (device ids, models, variants, regions, rings, releases) in reports."""
    if type(value) is str and value in _KNOWN_IDENTS:
        return value
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise ValueError(f"{name} must be an identifier ([A-Za-z0-9._+-], max 128), got {value!r}")
    if len(_KNOWN_IDENTS) >= 100_000:
        _KNOWN_IDENTS.clear()
    _KNOWN_IDENTS.add(value)
    return value


def _count(name: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise ValueError(f"{name} must be an integer in 0..2^53-1, got {value!r}")
    return value


@dataclass(frozen=True)
class Health:
    """Counters since the device's previous health report."""

    uptime_s: int
    crashes: int = 0
    errors: int = 0
    metrics: tuple[tuple[str, int | str], ...] = ()  # sorted (name, integer or decimal string)

    def __post_init__(self) -> None:
        _count("health.uptime_s", self.uptime_s)
        _count("health.crashes", self.crashes)
        _count("health.errors", self.errors)
        if len(self.metrics) > MAX_METRICS:
            raise ValueError(f"health.metrics holds more than {MAX_METRICS} entries")
        names = [name for name, _ in self.metrics]
        if names != sorted(set(names)):
            raise ValueError("health.metrics names must be unique and sorted")
        for name, value in self.metrics:
            if not _METRIC_NAME.fullmatch(name):
                raise ValueError(f"health.metrics name {name!r} is not [A-Za-z_][A-Za-z0-9_]*")
            if isinstance(value, str):
                if not _DECIMAL.fullmatch(value):
                    raise ValueError(f"health.metrics.{name} {value!r} is not a decimal string")
            elif type(value) is not int or abs(value) > MAX_INT:
                raise ValueError(f"health.metrics.{name} must be an integer or a decimal string, got {value!r}")

    @classmethod
    def from_mapping(cls, data: object) -> Health:
        if not isinstance(data, dict):
            raise ValueError("health must be an object")
        unknown = set(data) - {"uptime_s", "crashes", "errors", "metrics"}
        if unknown:
            raise ValueError(f"health: unknown field {sorted(unknown)[0]!r}")
        if "uptime_s" not in data or "crashes" not in data or "errors" not in data:
            raise ValueError("health needs uptime_s, crashes and errors")
        metrics = data.get("metrics", {})
        if not isinstance(metrics, dict):
            raise ValueError("health.metrics must be an object")
        metric_items = tuple(sorted(metrics.items()))
        return cls(data["uptime_s"], data["crashes"], data["errors"], metric_items)

    def to_mapping(self) -> dict[str, Any]:
        return {
            "uptime_s": self.uptime_s,
            "crashes": self.crashes,
            "errors": self.errors,
            "metrics": dict(self.metrics),
        }


_FIELDS = frozenset(
    {"schema", "device_id", "seq", "time", "model", "variant", "region", "ring", "release",
     "kind", "event", "reason", "health"}
)  # fmt: skip
_FIELDS_WITH_TRANSFER = _FIELDS | {"transfer"}  # optional, on a downloaded event only (decision 1201)
_FIELDS_WITH_WAITING = _FIELDS | {"waiting"}  # optional, on a health report only (decision 1202)
_OPTIONAL = {"transfer", "waiting"}


class TransferMode(StrEnum):
    DELTA = "delta"
    FULL = "full"


_MODES = {m.value: m for m in TransferMode}


@dataclass(frozen=True)
class Transfer:
    """How a ``downloaded`` event's image came: as a signed delta or as the full image, and the bytes fetched."""

    mode: TransferMode
    bytes: int

    def __post_init__(self) -> None:
        if not isinstance(self.mode, TransferMode):
            raise ValueError(f"transfer.mode must be one of {sorted(_MODES)}, got {self.mode!r}")
        _count("transfer.bytes", self.bytes)

    @classmethod
    def from_mapping(cls, data: object) -> Transfer:
        if not isinstance(data, dict) or set(data) != {"mode", "bytes"}:
            raise ValueError("transfer must be an object with exactly mode and bytes")
        mode = _MODES.get(data["mode"]) if isinstance(data["mode"], str) else None
        if mode is None:
            raise ValueError(f"transfer.mode must be one of {sorted(_MODES)}, got {data['mode']!r}")
        return cls(mode, data["bytes"])

    def to_mapping(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "bytes": self.bytes}


@dataclass(frozen=True)
class Waiting:
    """On a health report: the device holds ``release`` downloaded and verified but does not install it
    yet (outside its maintenance window, or an install precondition not met); ``reason`` says which."""

    release: str
    reason: str

    def __post_init__(self) -> None:
        check_identifier("waiting.release", self.release)
        if not isinstance(self.reason, str) or not self.reason or len(self.reason) > MAX_REASON_LEN \
                or _CONTROL.search(self.reason):
            raise ValueError(f"waiting.reason must be text of 1 to {MAX_REASON_LEN} characters")

    @classmethod
    def from_mapping(cls, data: object) -> Waiting:
        if not isinstance(data, dict) or set(data) != {"release", "reason"}:
            raise ValueError("waiting must be an object with exactly release and reason")
        return cls(data["release"], data["reason"])

    def to_mapping(self) -> dict[str, Any]:
        return {"release": self.release, "reason": self.reason}


@dataclass(frozen=True)
class Report:
    """One device report (``otactl/report/1``). ``ring`` is None for a device in no ring.

    ``transfer`` is optional and only on a ``downloaded`` event; ``waiting`` is optional and only on a
    health report; a report without them has exactly the payload it had before the fields existed
    (the key is left out, not null).
    """

    device_id: DeviceId
    seq: int
    time: datetime
    model: str
    variant: str
    region: str
    ring: str | None
    release: str
    kind: Kind
    event: Event | None = None
    reason: str | None = None
    health: Health | None = field(default=None)
    transfer: Transfer | None = None
    waiting: Waiting | None = None  # on a health report only: an install waiting for its window (1202)

    def __post_init__(self) -> None:
        for name in ("device_id", "model", "variant", "region", "release"):
            check_identifier(name, getattr(self, name))
        if self.ring is not None:
            check_identifier("ring", self.ring)
        _count("seq", self.seq)
        if self.time.tzinfo is None or self.time.utcoffset() != UTC.utcoffset(None):
            raise ValueError("time must be timezone-aware UTC")
        if self.time.microsecond:
            raise ValueError("time must be whole seconds")
        if self.kind is Kind.EVENT:
            if not isinstance(self.event, Event) or self.health is not None:
                raise ValueError("an event report needs event and no health")
        elif self.kind is Kind.HEALTH:
            if not isinstance(self.health, Health) or self.event is not None or self.reason:
                raise ValueError("a health report needs health and no event or reason")
        else:
            raise ValueError(f"unknown kind {self.kind!r}")
        if self.reason is not None and (
            not isinstance(self.reason, str) or len(self.reason) > MAX_REASON_LEN or _CONTROL.search(self.reason)
        ):
            raise ValueError(f"reason must be text of at most {MAX_REASON_LEN} characters")
        if self.transfer is not None and (not isinstance(self.transfer, Transfer)
                                          or self.event is not Event.DOWNLOADED):
            raise ValueError("transfer belongs on a downloaded event only")
        if self.waiting is not None and (not isinstance(self.waiting, Waiting) or self.kind is not Kind.HEALTH):
            raise ValueError("waiting belongs on a health report only")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Report:
        if data.keys() != _FIELDS and data.keys() != _FIELDS_WITH_TRANSFER and data.keys() != _FIELDS_WITH_WAITING:
            unknown = set(data) - _FIELDS - _OPTIONAL
            if not unknown and set(data) >= _OPTIONAL:
                raise ValueError("transfer and waiting do not go on one report")
            if unknown:
                raise ValueError(f"unknown field {sorted(unknown)[0]!r}")
            raise ValueError(f"missing field {sorted(_FIELDS - set(data))[0]!r}")
        schema = data["schema"]
        if schema != SCHEMA:
            raise ValueError(f"unsupported schema {schema!r} (this ingest reads {SCHEMA})")
        if not isinstance(data["time"], str):
            raise ValueError("time must be a string")
        kind = _KINDS.get(data["kind"]) if isinstance(data["kind"], str) else None
        if kind is None:
            raise ValueError(f"unknown kind {data['kind']!r}")
        event = data["event"]
        if event is not None:
            event = _EVENTS.get(event) if isinstance(event, str) else None
            if event is None:
                raise ValueError(f"unknown event {data['event']!r}")
        health = data["health"]
        return cls(
            device_id=DeviceId(data["device_id"]),
            seq=data["seq"],
            time=parse_time(data["time"]),
            model=data["model"],
            variant=data["variant"],
            region=data["region"],
            ring=data["ring"],
            release=data["release"],
            kind=kind,
            event=event,
            reason=data["reason"],
            health=None if health is None else Health.from_mapping(health),
            transfer=None if "transfer" not in data else Transfer.from_mapping(data["transfer"]),
            waiting=None if "waiting" not in data else Waiting.from_mapping(data["waiting"]),
        )

    def to_mapping(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "device_id": self.device_id,
            "seq": self.seq,
            "time": format_time(self.time),
            "model": self.model,
            "variant": self.variant,
            "region": self.region,
            "ring": self.ring,
            "release": self.release,
            "kind": self.kind.value,
            "event": None if self.event is None else self.event.value,
            "reason": self.reason,
            "health": None if self.health is None else self.health.to_mapping(),
        }
        if self.transfer is not None:
            doc["transfer"] = self.transfer.to_mapping()
        if self.waiting is not None:
            doc["waiting"] = self.waiting.to_mapping()
        return doc

    def to_payload(self) -> str:
        """The canonical JSON string a device signs."""
        return str(encode_canonical(self.to_mapping()))


@dataclass(frozen=True)
class Envelope:
    payload: str
    signature: str  # hex

    def to_json(self) -> dict[str, str]:
        return {"payload": self.payload, "signature": self.signature}


def sign_report(report: Report, key: nacl.signing.SigningKey) -> Envelope:
    payload = report.to_payload()
    return Envelope(payload, key.sign(payload.encode("utf-8")).signature.hex())


def _canonical_fast(data: object) -> str:
    # Equal to securesystemslib's encode_canonical for JSON without floats and without escapes
    # other than \" and \\ (which parse_payload refuses first); a property test proves it.
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _no_floats(text: str) -> float:
    raise ValueError("numbers must be integers (canonical JSON has no floats)")


_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_decode = json.JSONDecoder(parse_float=_no_floats, parse_constant=_no_floats).decode


def _check_escapes(payload: str) -> None:
    """Canonical JSON escapes only ``"`` and ``\\``: anything else (``\\n``, ``\\u00e9``) is not canonical."""
    if "\\" in payload:
        for match in _ESCAPE.finditer(payload):
            if match.group(1) not in '"\\':
                raise ValueError(f"payload is not canonical JSON (escape \\{match.group(1)})")


def _peek_schema(data: object) -> None:
    if isinstance(data, dict):
        schema = data.get("schema")
        if isinstance(schema, str) and schema.startswith(SCHEMA_PREFIX) and schema != SCHEMA:
            raise ValueError(f"unsupported schema {schema!r} (this ingest reads {SCHEMA})")


def parse_payload(payload: str) -> Report:
    """Parse and check a payload string strictly; raises ReportError(MALFORMED)."""
    try:
        _check_escapes(payload)
        data = _decode(payload)
        if not isinstance(data, dict):
            raise ValueError("payload is not a JSON object")
        _peek_schema(data)
        if _canonical_fast(data) != payload:
            raise ValueError("payload is not canonical JSON (securesystemslib encode_canonical)")
        return Report.from_mapping(data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ReportError(Refusal.MALFORMED, str(exc)) from None


def verify_signature(payload: bytes, signature_hex: str, key: nacl.signing.VerifyKey) -> None:
    """Raises ReportError(BAD_SIGNATURE) unless ``signature_hex`` is ``key``'s over ``payload``."""
    if len(signature_hex) != SIGNATURE_HEX_LEN:
        raise ReportError(Refusal.BAD_SIGNATURE, "signature is not 64 bytes of hex")
    try:
        key.verify(payload, bytes.fromhex(signature_hex))
    except (ValueError, nacl.exceptions.BadSignatureError):
        raise ReportError(Refusal.BAD_SIGNATURE, "signature does not verify") from None
