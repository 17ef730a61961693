"""Ring approvals (``otactl rollout approve``): a release manager signs the plan and the ring's evidence.

Three ways in, one record (decision 1105):

- a release manager's signer workspace (``otactl join``) reads the rollout record from the store,
  shows what is approved (ring, plan, evidence) and stores the signed statement
  (``otactl.app.statements``): nothing else is written there;
- CI takes the statements for the current ring in: at every ``rollout step`` (and so ``watch``), before
  the ring is evaluated again, and on ``rollout approve MODEL`` without ``--key``. Each is checked
  against the trust configuration's release-manager keys and the current rollout, ring, plan and
  evidence (a statement for anything else is stale), then committed with one audit entry signed by
  CI's actor (the online rollouts key) that carries the release manager's name and signature;
- ``--key NAME`` where NAME's key is here (a lab, the demo): signed and committed at once, the entry
  signed by NAME.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from otactl.app import journal, statements
from otactl.app import rollout_state as rs
from otactl.app.context import Context
from otactl.errors import NotFoundError, UsageError, VerificationError
from otactl.rollout import decide as core
from otactl.rollout.plan import KeyId


def evidence_digest(evidence: dict[str, Any] | None) -> str:
    """SHA-256 of the evidence as sorted JSON (it holds floats, which canonical JSON forbids)."""
    return hashlib.sha256(json.dumps(evidence or {}, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def payload(record: rs.RolloutRecord) -> dict[str, Any]:
    """What an approval of the record's current ring signs."""
    return {"rollout_id": record.rollout_id, "ring": record.plan.rings[record.state.ring_index].name,
            "plan_sha256": hashlib.sha256(record.plan_text.encode()).hexdigest(),
            "evidence_sha256": evidence_digest(record.last_verdict)}


@dataclass(frozen=True)
class ApprovalRequest:
    """A ring approval signed in a signer workspace, waiting in the store for CI."""

    model: str
    rollout_id: str
    release: str
    ring: str
    release_manager: str
    plan: str
    plan_sha256: str
    evidence_sha256: str
    evidence: str  # the ring's last verdict in one line (what was approved)
    reasons: list[str]
    stored: str  # the statement's store key

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _evidence_summary(record: rs.RolloutRecord, ring: str) -> tuple[str, list[str]]:
    v = record.last_verdict
    if v is None or v.get("ring") != ring:
        return f"none yet: ring {ring!r} has not been evaluated since it started", []
    return f"verdict {v.get('phase')} for ring {ring!r}", [str(r) for r in v.get("reasons", [])]


def request(ctx: Context, model: str, key: str | None) -> ApprovalRequest:
    """In a signer workspace: sign the approval of the current ring and store it for CI."""
    name = key or ctx.workspace.actor
    if name is None or name not in ctx.trust.release_managers:
        raise UsageError(f"key {name!r} is not a release manager's key in the repository's signed metadata "
                         f"(release managers: {', '.join(ctx.trust.release_managers) or 'none'})")
    record = rs.load(ctx.store, model)
    if record is None:
        raise NotFoundError(f"model {model!r}: no rollout in {ctx.store.url}")
    core.operate(record.plan, record.state, core.Action.APPROVE, ctx.now, "", KeyId(name))  # the plan's rules
    signer = ctx.signers.get(name)  # "not here" for someone else's key; unlock before anything is written
    body = payload(record)
    st = statements.sign("approve", body, name, signer)
    stored = statements.approval_key(model, record.rollout_id, body["ring"], name)
    ctx.store.put(stored, st.to_bytes())
    summary, reasons = _evidence_summary(record, body["ring"])
    return ApprovalRequest(model, record.rollout_id, record.release.version, body["ring"], name, record.plan.name,
                           body["plan_sha256"], body["evidence_sha256"], summary, reasons, stored)


@dataclass(frozen=True)
class Intake:
    record: rs.RolloutRecord
    taken: list[str]  # release managers whose approvals were recorded
    refused: list[str]  # one line per statement refused (forged, altered, stale, not allowed)


def take_in(ctx: Context, record: rs.RolloutRecord, actor: journal.Actor) -> Intake:
    """Record every valid stored approval of the record's current ring, one transition each."""
    taken: list[str] = []
    refused: list[str] = []
    if record.terminal:
        return Intake(record, taken, refused)
    current = payload(record)
    prefix = statements.approval_prefix(record.model, record.rollout_id, current["ring"])
    for key in sorted(ctx.store.list(prefix)):
        where = f"{ctx.store.url}{key}"
        try:
            st = statements.Statement.from_bytes(ctx.store.get(key), where)
            if st.action != "approve":
                raise VerificationError(f"{where}: a {st.action} statement where a ring approval belongs")
            name = statements.verify(ctx, st, where)
            stale = statements.stale_fields(st, current)
            if stale:
                raise VerificationError(f"{where}: {name}'s approval is stale ({'; '.join(stale)}); refusing it",
                                        hint="the release manager approves again (`otactl rollout approve`)")
            try:
                state, _ = core.operate(record.plan, record.state, core.Action.APPROVE, ctx.now, "", KeyId(name))
            except core.TransitionError as exc:
                if KeyId(name) in {a.key_id for a in record.state.approvals if a.ring == current["ring"]}:
                    ctx.store.delete(key)  # recorded already (a crash after the commit): done
                    continue
                raise VerificationError(f"{where}: {exc}") from None
        except (VerificationError, NotFoundError) as exc:
            refused.append(str(exc))
            continue
        record = journal.commit(ctx, record, record.with_state(state), actor, core.Action.APPROVE.value,
                                st.audit_details(name))
        ctx.store.delete(key)
        taken.append(name)
    return Intake(record, taken, refused)


def approve_here(ctx: Context, record: rs.RolloutRecord, key: str) -> tuple[rs.RolloutRecord, core.Decision]:
    """``--key NAME`` with NAME's key here: sign the statement and commit it, the entry signed by NAME."""
    state, decision = core.operate(record.plan, record.state, core.Action.APPROVE, ctx.now, "", KeyId(key))
    if key not in ctx.trust.release_managers:
        raise UsageError(f"key {key!r} is not a release manager's key (release managers: "
                         f"{', '.join(ctx.trust.release_managers) or 'none'}); only a release manager approves "
                         "a ring")
    actor = journal.Actor(key, ctx.signers.get(key))
    st = statements.sign("approve", payload(record), key, actor.signer)
    new = journal.commit(ctx, record, record.with_state(state), actor, core.Action.APPROVE.value,
                         st.audit_details(key))
    return new, decision
