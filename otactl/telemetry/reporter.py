"""The device side of reporting: build, sign and post reports (for the device agent and simulator).

A :class:`DeviceReporter` holds one device's identity, signing key and next ``seq``; every report
it makes gets the next ``seq``, so replays are impossible by construction. :func:`post_reports`
sends a batch and returns the ingest's per-report results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
import nacl.signing

from otactl.telemetry.devices import EnrolledDevice
from otactl.telemetry.report import DeviceId, Envelope, Event, Health, Kind, Report, Transfer, Waiting, sign_report


class DeviceReporter:
    def __init__(self, device: EnrolledDevice, key: nacl.signing.SigningKey, *, next_seq: int = 1) -> None:
        if bytes(key.verify_key).hex() != device.public_key:
            raise ValueError(f"key does not match device {device.device_id}'s enrolled public key")
        self.device = device
        self._key = key
        self.next_seq = next_seq

    def __repr__(self) -> str:
        return f"DeviceReporter({self.device.device_id!r}, next_seq={self.next_seq})"

    def _report(self, release: str, ring: str | None, time: datetime, **kind: Any) -> Report:
        report = Report(
            device_id=DeviceId(self.device.device_id),
            seq=self.next_seq,
            time=time.replace(microsecond=0),
            model=self.device.model,
            variant=self.device.variant,
            region=self.device.region,
            ring=ring,
            release=release,
            **kind,
        )
        self.next_seq += 1
        return report

    def event(
        self, release: str, ring: str | None, event: Event, time: datetime, reason: str | None = None,
        transfer: Transfer | None = None,
    ) -> Envelope:
        return self.sign(self._report(release, ring, time, kind=Kind.EVENT, event=event, reason=reason,
                                      transfer=transfer))

    def health(
        self,
        release: str,
        ring: str | None,
        time: datetime,
        uptime_s: int,
        crashes: int = 0,
        errors: int = 0,
        metrics: Mapping[str, int | str] | None = None,
        waiting: Waiting | None = None,
    ) -> Envelope:
        health = Health(uptime_s, crashes, errors, tuple(sorted((metrics or {}).items())))
        return self.sign(self._report(release, ring, time, kind=Kind.HEALTH, health=health, waiting=waiting))

    def sign(self, report: Report) -> Envelope:
        return sign_report(report, self._key)


def batch_body(envelopes: Sequence[Envelope]) -> dict[str, list[dict[str, str]]]:
    return {"reports": [e.to_json() for e in envelopes]}


def post_reports(client: httpx.Client, url: str, envelopes: Sequence[Envelope]) -> dict[str, Any]:
    """POST a batch to ``url`` (``.../v1/reports``); the ingest's results document."""
    response = client.post(url, json=batch_body(envelopes))
    response.raise_for_status()
    doc: dict[str, Any] = response.json()
    return doc
