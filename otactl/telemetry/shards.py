"""Ingest shards: which shard holds a device, and how a batch of reports splits and merges.

A device's shard is ``sha256(device_id) mod N`` (the first 8 bytes of the digest, big-endian): it
depends on the device id alone, so every router and every shard agree on it without talking, and a
device's replay state (its last ``seq``) lives in exactly one shard's database
(docs/decisions/0207-telemetry-shards.md). Pure functions, no I/O: the router (router.py) and the
ingest's admission check (checks.py) both call them.

    split(envelopes, 3)  ->  {0: [0, 4], 1: [1], 2: [2, 3]}      (indexes into the batch)
    merge(4, {0: results0, 1: results1, 2: results2})  ->  results in the batch's order
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otactl.errors import UsageError
from otactl.telemetry.report import IDENTIFIER

MAX_SHARDS = 1024
SPEC_HELP = "I/N: shard I of N, 0 <= I < N, e.g. 0/3"
_SPEC = re.compile(r"([0-9]{1,4})/([0-9]{1,4})")
UNROUTABLE_SHARD = 0  # where a report without a readable device id goes, to be refused and counted there


def shard_of(device_id: str, count: int) -> int:
    """The shard (0 .. count-1) that holds ``device_id``."""
    if count < 1:
        raise ValueError(f"a shard count must be at least 1, not {count}")
    digest = hashlib.sha256(device_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: an ingest that holds only the devices that hash to it."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"the shard count must be 1 to {MAX_SHARDS}, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} does not exist among {self.count} (0 to {self.count - 1})")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, device_id: str) -> bool:
        return shard_of(device_id, self.count) == self.index

    @classmethod
    def parse(cls, spec: str, option: str = "--shard") -> Shard:
        """``"I/N"``, or a UsageError naming the option and what is wrong."""
        m = _SPEC.fullmatch(spec.strip())
        if m is None:
            raise UsageError(f"{option} {spec!r}: expected {SPEC_HELP}")
        try:
            return cls(int(m[1]), int(m[2]))
        except ValueError as exc:
            raise UsageError(f"{option} {spec!r}: {exc}") from None


_CANONICAL_HEAD = '{"device_id":"'  # canonical JSON sorts keys: device_id is a report's first


def device_id_of(envelope: object) -> str | None:
    """The device id an envelope's payload names, read without verifying anything (the shard does
    that); None when it cannot be read. A payload the ingest accepts is canonical JSON, so this reads
    the very id the ingest's strict parser does: in canonical form it is the first key, read without
    parsing the payload (a sixth of the router's work otherwise); any other payload is parsed."""
    if not isinstance(envelope, dict):
        return None
    payload = envelope.get("payload")
    if not isinstance(payload, str):
        return None
    if payload.startswith(_CANONICAL_HEAD):
        end = payload.find('"', len(_CANONICAL_HEAD))
        candidate = payload[len(_CANONICAL_HEAD) : end]
        if end > 0 and IDENTIFIER.fullmatch(candidate):
            return candidate
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    device_id = doc.get("device_id") if isinstance(doc, dict) else None
    return device_id if isinstance(device_id, str) else None


def split(envelopes: Sequence[object], count: int) -> dict[int, list[int]]:
    """The batch's indexes per shard, each in batch order; only shards that get a report are keys.

    An envelope without a readable device id goes to :data:`UNROUTABLE_SHARD`, whose admission
    refuses it (malformed) and counts it, as one ingest would: nothing is dropped on the way.
    """
    parts: dict[int, list[int]] = {}
    for index, envelope in enumerate(envelopes):
        device_id = device_id_of(envelope)
        shard = UNROUTABLE_SHARD if device_id is None else shard_of(device_id, count)
        parts.setdefault(shard, []).append(index)
    return dict(sorted(parts.items()))


class BadShardAnswer(ValueError):
    """A shard's results document does not match the part it was sent."""


def part_results(doc: Any, size: int) -> list[dict[str, Any]]:
    """The per-report results of a shard's 200 answer to a part of ``size`` reports, checked."""
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list) or len(results) != size:
        raise BadShardAnswer(f"expected {size} results")
    for i, result in enumerate(results):
        if not isinstance(result, dict) or result.get("index") != i or result.get("status") not in (
            "accepted", "refused"
        ):  # fmt: skip
            raise BadShardAnswer(f"result {i} is not an accepted or refused report")
    return results


def merge(size: int, parts: Mapping[int, list[int]], answers: Mapping[int, list[dict[str, Any]] | str]
          ) -> list[dict[str, Any]]:  # fmt: skip
    """Per-report results in the batch's order.

    ``answers[shard]`` is that part's checked results (:func:`part_results`), or why the shard could
    not take it: its reports are then ``{"status": "unavailable", "detail": why}`` (send them again).
    """
    out: list[dict[str, Any] | None] = [None] * size
    for shard, indexes in parts.items():
        answer = answers[shard]
        for j, index in enumerate(indexes):
            if isinstance(answer, str):
                out[index] = {"index": index, "status": "unavailable", "detail": answer}
            else:
                out[index] = {**answer[j], "index": index}
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        raise ValueError(f"reports {missing[:5]} are in no part")
    return [r for r in out if r is not None]
