"""Audit log entries stored one object per entry: ``audit/<stream>/<seq:010d>.json``.

Each entry holds the SHA-256 of the previous entry's canonical bytes and is signed (ed25519,
through a securesystemslib Signer) by the actor's key. Appending uses a create-only conditional
write on the next sequence number, so two writers can never both append entry N: one wins, the
other gets a ConflictError. ``verify`` walks the chain and checks every link and signature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from securesystemslib.signer import Key, Signature, Signer

from otactl.errors import ConflictError, VerificationError
from otactl.release.bundle import canonical
from otactl.store.base import BlobStore

SCHEMA = "otactl/audit-entry/1"
GENESIS = "0" * 64


def _key(stream: str, seq: int) -> str:
    return f"audit/{stream}/{seq:010d}.json"


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: str
    actor: str  # key name
    keyid: str
    action: str
    details: dict[str, Any]
    prev: str
    signature: str

    def body(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "seq": self.seq, "time": self.time, "actor": self.actor,
                "keyid": self.keyid, "action": self.action, "details": self.details, "prev": self.prev}

    def digest(self) -> str:
        return hashlib.sha256(canonical({**self.body(), "signature": self.signature})).hexdigest()


def _parse(raw: bytes, where: str) -> AuditEntry:
    try:
        doc = json.loads(raw)
        if doc.get("schema") != SCHEMA:
            raise ValueError("unknown schema")
        return AuditEntry(int(doc["seq"]), str(doc["time"]), str(doc["actor"]), str(doc["keyid"]),
                          str(doc["action"]), dict(doc["details"]), str(doc["prev"]), str(doc["signature"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise VerificationError(f"{where}: malformed audit entry ({exc})") from None


def entries(store: BlobStore, stream: str) -> list[AuditEntry]:
    return [_parse(store.get(k), f"{store.url}{k}") for k in store.list(f"audit/{stream}/")]


def append(store: BlobStore, stream: str, signer: Signer, actor: str, action: str,
           details: dict[str, Any], now: datetime) -> AuditEntry:
    keys = list(store.list(f"audit/{stream}/"))
    if keys:
        last = _parse(store.get(keys[-1]), keys[-1])
        seq, prev = last.seq + 1, last.digest()
    else:
        seq, prev = 1, GENESIS
    unsigned = AuditEntry(seq, now.isoformat(), actor, signer.public_key.keyid, action, details, prev, "")
    sig = signer.sign(canonical(unsigned.body()))
    entry = AuditEntry(**{**unsigned.__dict__, "signature": sig.signature})
    data = canonical({**entry.body(), "signature": entry.signature})
    try:
        store.put_if(_key(stream, seq), data, None)
    except ConflictError:
        raise ConflictError(f"audit log {stream}: entry {seq} was appended by another writer; retry") from None
    return entry


@dataclass(frozen=True)
class VerifyReport:
    stream: str
    entries: int
    actors: list[str]
    head: str


def verify(store: BlobStore, stream: str, key_for: Callable[[str], Key | None]) -> VerifyReport:
    """Check sequence, hash chain and every signature; raise VerificationError at the first break."""
    prev = GENESIS
    actors: set[str] = set()
    items = entries(store, stream)
    for i, entry in enumerate(items, start=1):
        where = f"audit log {stream}, entry {i}"
        if entry.seq != i:
            raise VerificationError(f"{where}: sequence number {entry.seq} (entries missing or reordered)")
        if entry.prev != prev:
            raise VerificationError(f"{where}: hash chain broken (an earlier entry was changed or removed)")
        key = key_for(entry.keyid)
        if key is None:
            raise VerificationError(f"{where}: signed by unknown key {entry.keyid[:16]}")
        try:
            key.verify_signature(Signature(entry.keyid, entry.signature), canonical(entry.body()))
        except Exception:  # noqa: BLE001 - securesystemslib raises several error types
            raise VerificationError(f"{where}: bad signature by {entry.actor!r} (entry altered)") from None
        actors.add(entry.actor)
        prev = entry.digest()
    return VerifyReport(stream, len(items), sorted(actors), prev)
