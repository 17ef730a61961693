"""A rollout's persisted record: the pure ``RolloutState`` plus what the controller needs around it.

Stored as JSON at ``rollouts-state/<model>.json`` beside the repository and written only with a
conditional write against the etag it was read with (optimistic concurrency); finished rollouts
are archived under ``rollouts-state/<model>/<rollout_id>.json``. Each revision of a record is a
transition recorded in the audit log first, its exact bytes journaled at
``rollouts-journal/<model>/<rollout_id>/<revision>-<sha256>.json`` (``otactl.app.journal``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from otactl.app import stored
from otactl.app.stored import Fields
from otactl.errors import ConflictError, NotFoundError, StoreError
from otactl.rollout.decide import TERMINAL, Action, Approval, HistoryEntry, ReleaseRef, RolloutState, Status
from otactl.rollout.plan import KeyId, Plan, parse_plan
from otactl.store.base import BlobStore

SCHEMA = "otactl/rollout-state/1"


def state_key(model: str) -> str:
    return f"rollouts-state/{model}.json"


def archive_key(model: str, rollout_id: str) -> str:
    return f"rollouts-state/{model}/{rollout_id}.json"


def journal_key(model: str, rollout_id: str, revision: int, sha256: str) -> str:
    return f"rollouts-journal/{model}/{rollout_id}/{revision:06d}-{sha256}.json"


@dataclass(frozen=True)
class RolloutRecord:
    model: str
    rollout_id: str
    salt: str
    plan_path: str
    plan_text: str
    release: ReleaseRef
    baseline: ReleaseRef
    state: RolloutState
    policy_version: int
    paused_by: str | None = None  # "gate" or an operator's key name
    last_verdict: dict[str, Any] | None = None
    etag: str | None = None  # of the stored object this record was read from
    revision: int = 0  # the transition that wrote it (1 = start; 0 = a record from before revisions)
    policy: dict[str, Any] | None = None  # the policy document to publish at ``policy_version``

    @property
    def plan(self) -> Plan:
        return parse_plan(self.plan_text, self.plan_path)

    @property
    def terminal(self) -> bool:
        return self.state.status in TERMINAL

    def with_state(self, state: RolloutState, **changes: Any) -> RolloutRecord:
        return replace(self, state=state, **changes)

    def to_json(self) -> dict[str, Any]:
        s = self.state
        return {
            "schema": SCHEMA, "model": self.model, "rollout_id": self.rollout_id, "salt": self.salt,
            "plan_path": self.plan_path, "plan_text": self.plan_text,
            "release": {"version": self.release.version, "security_version": self.release.security_version},
            "baseline": {"version": self.baseline.version, "security_version": self.baseline.security_version},
            "policy_version": self.policy_version, "paused_by": self.paused_by, "last_verdict": self.last_verdict,
            "revision": self.revision, "policy": self.policy,
            "state": {
                "release": s.release, "ring_index": s.ring_index, "status": s.status.value,
                "ring_started": [t.isoformat() for t in s.ring_started],
                "approvals": sorted([a.ring, a.key_id] for a in s.approvals),
                "history": [{"time": h.time.isoformat(), "ring_index": h.ring_index, "action": h.action.value,
                             "reason": h.reason} for h in s.history],
                "evidence": [[k, v] for k, v in s.evidence],
            },
        }


KIND = "rollout state"


def _ref(f: Fields, key: str) -> ReleaseRef:
    ref = f.obj(key)
    return ReleaseRef(ref.text("version"), ref.integer("security_version"))


def _approval(s: Fields, i: int, raw: Any) -> Approval:
    if not (isinstance(raw, list) and len(raw) == 2):
        raise s.error(f"approvals.{i}", f"must be a [ring, key] pair, got {raw!r:.60}")
    return Approval(s.text_of(f"approvals.{i}.0", raw[0]), KeyId(s.text_of(f"approvals.{i}.1", raw[1])))


def _history(s: Fields, i: int, raw: Any) -> HistoryEntry:
    h = s.obj_of(f"history.{i}", raw)
    action = h.choice("action", tuple(a.value for a in Action))
    return HistoryEntry(h.time("time"), h.integer("ring_index"), Action(action), h.text("reason"))


def _evidence(s: Fields, i: int, raw: Any) -> tuple[str, float]:
    if not (isinstance(raw, list) and len(raw) == 2):
        raise s.error(f"evidence.{i}", f"must be a [key, e-value] pair, got {raw!r:.60}")
    return s.text_of(f"evidence.{i}.0", raw[0]), s.number_of(f"evidence.{i}.1", raw[1])


def from_json(doc: Any, etag: str | None, where: str) -> RolloutRecord:
    """A record from its JSON form; a StoreError naming ``where`` and the field if anything is off."""
    if isinstance(doc, Fields):
        f = doc
    elif isinstance(doc, dict):
        f = Fields(doc, where, KIND)
    else:
        raise StoreError(f"{where}: corrupt {KIND}: not a JSON object")
    if f.doc.get("schema") != SCHEMA:
        raise f.error("schema", f"must be {SCHEMA!r}, got {f.doc.get('schema')!r:.60}")
    s = f.obj("state")
    started = [s.time_of(f"ring_started.{i}", t) for i, t in enumerate(s.items("ring_started"))]
    try:
        state = RolloutState(
            release=s.text("release"), ring_index=s.integer("ring_index"),
            status=Status(s.choice("status", tuple(x.value for x in Status))),
            ring_started=tuple(started),
            approvals=frozenset(_approval(s, i, a) for i, a in enumerate(s.items("approvals"))),
            history=tuple(_history(s, i, h) for i, h in enumerate(s.items("history"))),
            evidence=tuple(_evidence(s, i, e) for i, e in enumerate(s.items("evidence", optional=True))),
        )
    except ValueError as exc:  # RolloutState's own invariants (one start time per reached ring, ...)
        raise s.error(None, str(exc)) from None
    last_verdict = f.optional_obj("last_verdict")
    policy = f.optional_obj("policy")
    revision = f.integer("revision") if "revision" in f.doc else 0
    if revision < 0:
        raise f.error("revision", f"must not be negative, got {revision}")
    return RolloutRecord(
        f.text("model"), f.text("rollout_id"), f.text("salt"), f.text("plan_path"), f.text("plan_text"),
        _ref(f, "release"), _ref(f, "baseline"), state, f.integer("policy_version"),
        f.optional_text("paused_by"), None if last_verdict is None else last_verdict.doc, etag,
        revision, None if policy is None else policy.doc,
    )


def parse(data: bytes, etag: str | None, where: str) -> RolloutRecord:
    """A record from the stored bytes (garbage, truncated JSON, wrong types: one StoreError)."""
    return from_json(stored.decode(data, where, KIND), etag, where)


def load(store: BlobStore, model: str) -> RolloutRecord | None:
    try:
        v = store.get_versioned(state_key(model))
    except NotFoundError:
        return None
    where = f"{store.url}{state_key(model)}"
    record = parse(v.data, v.etag, where)
    if record.model != model:
        raise StoreError(f"{where}: corrupt {KIND}: field 'model': {record.model!r:.60}, expected {model!r}")
    return record


def load_key(store: BlobStore, key: str) -> RolloutRecord:
    """The record at ``key``: the current one or an archived one (``rollouts-state/<model>/<id>.json``)."""
    v = store.get_versioned(key)
    return parse(v.data, v.etag, f"{store.url}{key}")


def archived(store: BlobStore, model: str) -> list[RolloutRecord]:
    """Every finished rollout of ``model``, in key order."""
    return [load_key(store, key) for key in store.list(f"rollouts-state/{model}/")]


def require(store: BlobStore, model: str) -> RolloutRecord:
    record = load(store, model)
    if record is None:
        raise NotFoundError(f"model {model!r}: no rollout (start one with `otactl rollout start`)")
    return record


def encode(record: RolloutRecord) -> bytes:
    return json.dumps(record.to_json(), indent=1, sort_keys=True).encode()


def save(store: BlobStore, record: RolloutRecord, *, create: bool = False) -> RolloutRecord:
    """Write if nobody else wrote since ``record`` was read; else ConflictError.

    Only for writes that are not transitions (a hold's latest verdict): the revision stays the
    same. Transitions go through ``otactl.app.journal.commit``."""
    try:
        etag = store.put_if(state_key(record.model), encode(record), None if create else record.etag)
    except ConflictError:
        raise ConflictError(
            f"rollout {record.rollout_id}: its state changed since it was read (another operator or "
            "controller acted at the same time); nothing was published",
            hint="run `otactl rollout status` and retry") from None
    return replace(record, etag=etag)
