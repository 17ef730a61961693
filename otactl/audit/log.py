"""Audit log entries stored one object per entry: ``audit/<stream>/<seq:010d>.json``.

Each entry holds the SHA-256 of the previous entry's canonical bytes and is signed (ed25519,
through a securesystemslib Signer) by the actor's key. Appending uses a create-only conditional
write on the next sequence number, so two writers can never both append entry N: one wins, the
other gets a ConflictError. ``verify`` walks the chain and checks every link and signature.

A *transition* entry records one revision of a rollout's state: its details carry ``rollout_id``,
``revision`` and ``state_sha256`` (docs/decisions/0504-audit-first-transitions.md). The log is
the rollouts' commit point: ``append`` with ``base`` writes the entry only if the newest transition
in the log is ``base`` (the revision the writer read), so of two writers that read the same
revision exactly one gets its entry in, and the state is rolled forward from the log.

A *release manager's statement* (decision 1105): an ``approve`` or ``reinstate`` entry carries the
release manager's own ed25519 signature over the statement's fields (``STATEMENT_FIELDS``, read from
the entry's details), by the key ``signer_keyid`` (default: the entry's own key). The entry itself
may be signed by whoever took the statement in (CI's online key): ``verify`` checks both, so a key
that writes the log cannot forge a release manager's approval.
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
# action -> the details a release manager signs (canonical JSON of exactly these keys)
STATEMENT_FIELDS: dict[str, tuple[str, ...]] = {
    "approve": ("rollout_id", "ring", "plan_sha256", "evidence_sha256"),
    "reinstate": ("model", "version", "reason", "clears_policy_version"),
}


def statement_payload(action: str, details: dict[str, Any]) -> dict[str, Any]:
    """What a release manager signed for an ``action`` entry (KeyError: an action with no statement)."""
    return {f: details.get(f) for f in STATEMENT_FIELDS[action]}


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


@dataclass(frozen=True)
class Revision:
    """A rollout state's identity in the log: which rollout, which revision (1 = its start)."""

    rollout_id: str
    revision: int


def transition_of(entry: AuditEntry) -> tuple[Revision, str] | None:
    """The revision and state digest a transition entry records (None for other entries)."""
    d = entry.details
    if not isinstance(d.get("revision"), int) or not isinstance(d.get("rollout_id"), str):
        return None
    return Revision(d["rollout_id"], d["revision"]), str(d.get("state_sha256", ""))


def _tail(store: BlobStore, stream: str) -> tuple[AuditEntry | None, AuditEntry | None]:
    """The last entry and the newest transition entry (reading back from the end)."""
    keys = list(store.list(f"audit/{stream}/"))
    last = None
    for key in reversed(keys):
        entry = _parse(store.get(key), f"{store.url}{key}")
        last = last or entry
        if transition_of(entry) is not None:
            return last, entry
    return last, None


def head(store: BlobStore, stream: str) -> AuditEntry | None:
    """The newest transition entry of ``stream`` (None: no rollout has been recorded)."""
    return _tail(store, stream)[1]


_ANY = object()


def _at(rev: object) -> str:
    return f"{rev.rollout_id} revision {rev.revision}" if isinstance(rev, Revision) else "no rollout"
RETRIES = 20


def append(store: BlobStore, stream: str, signer: Signer, actor: str, action: str,
           details: dict[str, Any], now: datetime, *, base: Revision | object | None = _ANY) -> AuditEntry:
    """Append one entry. With ``base`` (a Revision, or None for "no transition yet"), only while the
    newest transition in the log is ``base``: otherwise ConflictError, and nothing is written. A
    lost race for the sequence number is retried while that still holds (the newcomer was not a
    transition of this stream), so a writer fails only when another transition got in first."""
    for _ in range(RETRIES):
        last, newest = _tail(store, stream)
        if base is not _ANY:
            now_at = None if newest is None else transition_of(newest)
            at = None if now_at is None else now_at[0]
            if at != base:
                raise ConflictError(f"audit log {stream}: another writer recorded a change first (the log is at "
                                    f"{_at(at)}, this change was made from {_at(base)})",
                                    hint="run `otactl rollout status` and retry")
        seq, prev = (1, GENESIS) if last is None else (last.seq + 1, last.digest())
        unsigned = AuditEntry(seq, now.isoformat(), actor, signer.public_key.keyid, action, details, prev, "")
        sig = signer.sign(canonical(unsigned.body()))
        entry = AuditEntry(**{**unsigned.__dict__, "signature": sig.signature})
        data = canonical({**entry.body(), "signature": entry.signature})
        try:
            store.put_if(_key(stream, seq), data, None)
        except ConflictError:
            if base is _ANY:
                raise ConflictError(f"audit log {stream}: entry {seq} was appended by another writer; "
                                    "retry") from None
            continue
        return entry
    raise ConflictError(f"audit log {stream}: {RETRIES} other writers appended first; retry")


@dataclass(frozen=True)
class VerifyReport:
    stream: str
    entries: int
    actors: list[str]
    head: str


def _check_statement(entry: AuditEntry, where: str, key_for: Callable[[str], Key | None],
                     is_release_manager: Callable[[str], bool]) -> None:
    """An approval or reinstatement must carry a release manager's signature over its statement."""
    if entry.action not in STATEMENT_FIELDS:
        return
    d = entry.details
    if "signature" not in d:
        if entry.action == "reinstate" and is_release_manager(entry.keyid):
            return  # before decision 1105 the entry's own signature was the release manager's
        raise VerificationError(f"{where}: the {entry.action} carries no release manager's signature")
    keyid = str(d.get("signer_keyid", entry.keyid))
    who = str(d.get("release_manager", entry.actor))
    key = key_for(keyid)
    if key is None or not is_release_manager(keyid):
        raise VerificationError(f"{where}: the {entry.action} is signed by key {keyid[:16]} ({who!r}), which is "
                                "not a release manager's key")
    try:
        key.verify_signature(Signature(keyid, str(d["signature"])), canonical(statement_payload(entry.action, d)))
    except Exception:  # noqa: BLE001 - securesystemslib raises several error types
        raise VerificationError(f"{where}: the release manager's signature over the {entry.action} ({who!r}) "
                                "does not verify (entry altered or forged)") from None


def verify(store: BlobStore, stream: str, key_for: Callable[[str], Key | None],
           is_release_manager: Callable[[str], bool] = lambda keyid: True) -> VerifyReport:
    """Check sequence, hash chain, every signature and every release manager's statement (by a key
    ``is_release_manager`` accepts); raise VerificationError at the first break."""
    prev = GENESIS
    actors: set[str] = set()
    revisions: dict[str, int] = {}
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
        _check_statement(entry, where, key_for, is_release_manager)
        actors.add(entry.actor)
        prev = entry.digest()
        t = transition_of(entry)
        if t is not None:
            rev = t[0]
            expected = revisions.get(rev.rollout_id, 0) + 1
            if rev.revision != expected:
                raise VerificationError(
                    f"{where}: rollout {rev.rollout_id} revision {rev.revision} follows revision "
                    f"{expected - 1} (a state change recorded twice or skipped)")
            revisions[rev.rollout_id] = rev.revision
    return VerifyReport(stream, len(items), sorted(actors), prev)
