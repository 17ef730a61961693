"""Signed reports on the device: numbered, kept on disk until the ingest accepts them, posted in
batches (POST /v1/reports, docs/formats.md).

Signing and the payload format are telemetry's (``otactl.telemetry.reporter``): this module only
keeps the ``seq`` counter across restarts and the outbox across ingest outages. A batch the ingest
answers with 200 leaves the outbox (its refused reports are counted: they can never succeed); a
connection error or a 5xx keeps it for the next flush; a 413 halves the batch size. A 503 from the
shard router (decision 0207) that carries every report's result keeps only the reports answered
``unavailable``: the others reached their shard. The outbox is bounded: past ``capacity`` the oldest
reports are dropped and counted.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

import httpx
import nacl.signing

from otactl.agent.state import DeviceState, ReportLog
from otactl.telemetry.devices import EnrolledDevice
from otactl.telemetry.report import Envelope, Event, Transfer, Waiting
from otactl.telemetry.reporter import DeviceReporter, batch_body

log = logging.getLogger("otactl.agent")

REPORTS_PATH = "/v1/reports"


@dataclass(frozen=True)
class FlushResult:
    posted: int  # reports in batches the ingest answered
    accepted: int
    refused: int
    pending: int  # still in the outbox
    error: str | None = None  # why the last attempt failed (the outbox is kept)


def _one_line(reason: str | None) -> str | None:
    """A report's reason is one line of at most 256 characters (exception texts can hold newlines)."""
    if not reason:
        return None
    return re.sub(r"[\x00-\x1f\s]+", " ", reason).strip()[:256] or None


def _taken(response: httpx.Response, size: int) -> list[str] | None:
    """Each report's status in a 503 that answers every report (the shard router's), else None."""
    if response.status_code != 503:
        return None
    try:
        results = response.json()["results"]
        statuses = [str(r["status"]) for r in results]
    except (ValueError, KeyError, TypeError):
        return None
    ordered = [r.get("index") for r in results] == list(range(size))
    if len(statuses) != size or not ordered or not set(statuses) <= {"accepted", "refused", "unavailable"}:
        return None
    return statuses


class Outbox:
    def __init__(self, state: DeviceState, key: nacl.signing.SigningKey, *, capacity: int = 5000,
                 batch_size: int = 200) -> None:
        self._state = state
        self._key = key
        self.capacity = capacity
        self.batch_size = batch_size
        self.log: ReportLog = state.load_reports()
        self._dirty = False  # reports queued since the last save

    def __repr__(self) -> str:
        return f"Outbox({self._state.identity.device_id!r}, pending={len(self.log.outbox)})"

    def _reporter(self, device: EnrolledDevice) -> DeviceReporter:
        return DeviceReporter(device, self._key, next_seq=self.log.next_seq)

    def _add(self, reporter: DeviceReporter, envelope: Envelope) -> None:
        self._dirty = True
        self.log.next_seq = reporter.next_seq
        self.log.outbox.append(envelope.to_json())
        excess = len(self.log.outbox) - self.capacity
        if excess > 0:
            del self.log.outbox[:excess]
            self.log.dropped += excess

    def event(self, device: EnrolledDevice, release: str, ring: str | None, event: Event, time: datetime,
              reason: str | None = None, transfer: Transfer | None = None) -> None:
        reporter = self._reporter(device)
        self._add(reporter, reporter.event(release, ring, event, time, _one_line(reason), transfer))

    def health(self, device: EnrolledDevice, release: str, ring: str | None, time: datetime, *, uptime_s: int,
               crashes: int, errors: int, metrics: dict[str, int | str], waiting: Waiting | None = None) -> None:
        reporter = self._reporter(device)
        self._add(reporter, reporter.health(release, ring, time, uptime_s, crashes, errors, metrics, waiting))

    def save(self) -> None:
        self._state.save_reports(self.log)
        self._dirty = False

    def save_if_dirty(self) -> None:
        if self._dirty:
            self.save()

    @property
    def pending(self) -> int:
        return len(self.log.outbox)

    def flush(self, client: httpx.Client, ingest_url: str) -> FlushResult:
        """Post the outbox, oldest first, until it is empty or the ingest cannot take more."""
        url = ingest_url.rstrip("/") + REPORTS_PATH
        self.save_if_dirty()  # a report's seq is on disk before the ingest can see it: never reused
        posted = accepted = refused = 0
        error = None
        size = self.batch_size
        while self.log.outbox:
            batch = self.log.outbox[:size]
            try:
                response = client.post(url, json=batch_body([Envelope(**e) for e in batch]))
            except httpx.HTTPError as exc:
                error = f"{url}: {type(exc).__name__}: {exc}"
                break
            if response.status_code == 413 and size > 1:
                size = max(1, size // 2)
                continue
            if response.status_code >= 500 or response.status_code == 429:
                error = f"{url}: HTTP {response.status_code}"
                taken = _taken(response, len(batch))
                if taken is not None:  # a router: the shards that answered took their part
                    self.log.outbox[: len(batch)] = [e for e, r in zip(batch, taken, strict=True)
                                                     if r == "unavailable"]  # fmt: skip
                    accepted += taken.count("accepted")
                    refused += taken.count("refused")
                    posted += taken.count("accepted") + taken.count("refused")
                break
            del self.log.outbox[: len(batch)]
            posted += len(batch)
            if response.status_code != 200:
                refused += len(batch)  # the whole request was refused; retrying cannot help
                log.warning("%s: HTTP %s: %d reports refused: %s", url, response.status_code, len(batch),
                            response.text[:200])
                continue
            try:
                doc = response.json()
                ok = int(doc["accepted"])
            except (ValueError, KeyError, TypeError):
                error = f"{url}: the ingest's answer is not a results document"
                refused += len(batch)
                continue
            accepted += ok
            refused += len(batch) - ok
            for result in doc.get("results", []):
                if result.get("status") == "refused":
                    log.warning("report refused by the ingest: %s: %s", result.get("reason"), result.get("detail"))
        self.log.accepted += accepted
        self.log.refused += refused
        if posted:
            self.save()
        return FlushResult(posted, accepted, refused, len(self.log.outbox), error)
