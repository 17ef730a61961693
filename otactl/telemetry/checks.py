"""The stateless half of report admission: envelope shape, size, parse, enrolment, signature, clock.

Checks run in a fixed order, so each refused report gets exactly one reason:
malformed envelope → oversized → unsigned → malformed payload → wrong_shard (an ingest shard
refuses a device that hashes to another shard, before spending a signature check on it: decision
0207) → unknown_key → bad_signature → mismatch → future. The stateful check (replayed: ``seq``
not above the device's last) runs in the store, inside the transaction that writes the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from otactl.telemetry.devices import DeviceRegistry
from otactl.telemetry.report import (
    Envelope,
    Refusal,
    Report,
    ReportError,
    parse_payload,
    verify_signature,
)
from otactl.telemetry.shards import Shard, shard_of

DEFAULT_MAX_PAYLOAD_BYTES = 4096
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Verified:
    report: Report
    envelope: Envelope


@dataclass(frozen=True)
class Refused:
    reason: Refusal
    detail: str


class ReportVerifier:
    def __init__(
        self,
        registry: DeviceRegistry,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        shard: Shard | None = None,
    ) -> None:
        self.registry = registry
        self.shard = shard
        self.max_payload_bytes = max_payload_bytes
        self.clock_skew = clock_skew

    def check(self, raw: object, now: datetime) -> Verified | Refused:
        """Admit one envelope (as decoded from the request body) or say why not."""
        try:
            return Verified(*self._check(raw, now))
        except ReportError as err:
            return Refused(err.reason, err.detail)

    def _check(self, raw: object, now: datetime) -> tuple[Report, Envelope]:
        if not isinstance(raw, dict):
            raise ReportError(Refusal.MALFORMED, "an envelope must be an object")
        unknown = set(raw) - {"payload", "signature"}
        if unknown:
            raise ReportError(Refusal.MALFORMED, f"unknown envelope field {sorted(unknown)[0]!r}")
        payload = raw.get("payload")
        if not isinstance(payload, str):
            raise ReportError(Refusal.MALFORMED, "payload must be a string")
        try:
            data = payload.encode("utf-8")
        except UnicodeEncodeError:
            raise ReportError(Refusal.MALFORMED, "payload is not valid UTF-8 text") from None
        if len(data) > self.max_payload_bytes:
            raise ReportError(Refusal.OVERSIZED, f"payload is {len(data)} bytes, over {self.max_payload_bytes}")
        signature = raw.get("signature")
        if signature is None or signature == "":
            raise ReportError(Refusal.UNSIGNED, "the envelope carries no signature")
        if not isinstance(signature, str):
            raise ReportError(Refusal.MALFORMED, "signature must be a hex string")
        report = parse_payload(payload)
        if self.shard is not None and not self.shard.holds(report.device_id):
            raise ReportError(
                Refusal.WRONG_SHARD,
                f"device {report.device_id!r} belongs to shard {shard_of(report.device_id, self.shard.count)}"
                f"/{self.shard.count}, this ingest is shard {self.shard}",
            )
        key = self.registry.verify_key(report.device_id)
        device = self.registry.get(report.device_id)
        if key is None or device is None:
            raise ReportError(Refusal.UNKNOWN_KEY, f"device {report.device_id!r} is not enrolled")
        verify_signature(data, signature, key)
        if (report.model, report.variant, report.region) != (
            device.model, device.variant, device.region
        ):  # fmt: skip
            raise ReportError(
                Refusal.MISMATCH,
                f"report says {report.model}/{report.variant}/{report.region}, enrolment says {device.stratum}",
            )
        if report.time > now + self.clock_skew:
            raise ReportError(
                Refusal.FUTURE,
                f"time {report.time.isoformat()} is beyond now ({now.isoformat()}) + {self.clock_skew}",
            )
        return report, Envelope(payload, signature)
