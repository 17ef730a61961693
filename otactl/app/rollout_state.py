"""A rollout's persisted record: the pure ``RolloutState`` plus what the controller needs around it.

Stored as JSON at ``rollouts-state/<model>.json`` beside the repository and written only with a
conditional write against the etag it was read with (optimistic concurrency); finished rollouts
are archived under ``rollouts-state/<model>/<rollout_id>.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from otactl.errors import ConflictError, NotFoundError, VerificationError
from otactl.rollout.decide import Action, Approval, HistoryEntry, ReleaseRef, RolloutState, Status
from otactl.rollout.plan import KeyId, Plan, parse_plan
from otactl.store.base import BlobStore

SCHEMA = "otactl/rollout-state/1"
TERMINAL = (Status.COMPLETE, Status.ROLLED_BACK)


def state_key(model: str) -> str:
    return f"rollouts-state/{model}.json"


def archive_key(model: str, rollout_id: str) -> str:
    return f"rollouts-state/{model}/{rollout_id}.json"


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
            "state": {
                "release": s.release, "ring_index": s.ring_index, "status": s.status.value,
                "ring_started": [t.isoformat() for t in s.ring_started],
                "approvals": sorted([a.ring, a.key_id] for a in s.approvals),
                "history": [{"time": h.time.isoformat(), "ring_index": h.ring_index, "action": h.action.value,
                             "reason": h.reason} for h in s.history],
                "evidence": [[k, v] for k, v in s.evidence],
            },
        }


def from_json(doc: dict[str, Any], etag: str | None, where: str) -> RolloutRecord:
    try:
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"schema is not {SCHEMA}")
        s = doc["state"]
        state = RolloutState(
            release=s["release"], ring_index=int(s["ring_index"]), status=Status(s["status"]),
            ring_started=tuple(datetime.fromisoformat(t) for t in s["ring_started"]),
            approvals=frozenset(Approval(r, KeyId(k)) for r, k in s["approvals"]),
            history=tuple(HistoryEntry(datetime.fromisoformat(h["time"]), int(h["ring_index"]),
                                       Action(h["action"]), h["reason"]) for h in s["history"]),
            evidence=tuple((str(k), float(v)) for k, v in s.get("evidence", [])),
        )
        return RolloutRecord(
            doc["model"], doc["rollout_id"], doc["salt"], doc["plan_path"], doc["plan_text"],
            ReleaseRef(doc["release"]["version"], int(doc["release"]["security_version"])),
            ReleaseRef(doc["baseline"]["version"], int(doc["baseline"]["security_version"])),
            state, int(doc["policy_version"]), doc.get("paused_by"), doc.get("last_verdict"), etag,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise VerificationError(f"{where}: corrupt rollout state ({exc})") from None


def load(store: BlobStore, model: str) -> RolloutRecord | None:
    try:
        v = store.get_versioned(state_key(model))
    except NotFoundError:
        return None
    try:
        doc = json.loads(v.data)
    except ValueError as exc:
        raise VerificationError(f"{store.url}{state_key(model)}: corrupt rollout state ({exc})") from None
    return from_json(doc, v.etag, f"{store.url}{state_key(model)}")


def require(store: BlobStore, model: str) -> RolloutRecord:
    record = load(store, model)
    if record is None:
        raise NotFoundError(f"model {model!r}: no rollout (start one with `otactl rollout start`)")
    return record


def save(store: BlobStore, record: RolloutRecord, *, create: bool = False) -> RolloutRecord:
    """Write if nobody else wrote since ``record`` was read; else ConflictError."""
    data = json.dumps(record.to_json(), indent=1, sort_keys=True).encode()
    expected = None if create else record.etag
    try:
        etag = store.put_if(state_key(record.model), data, expected)
    except ConflictError:
        raise ConflictError(
            f"rollout {record.rollout_id}: its state changed since it was read (another operator or "
            "controller acted at the same time); nothing was published",
            hint="run `otactl rollout status` and retry") from None
    if record.terminal:
        store.put(archive_key(record.model, record.rollout_id), data)
    return replace(record, etag=etag)
