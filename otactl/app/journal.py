"""Rollout transitions with the audit log as the commit point (docs/decisions/0504-audit-first-transitions.md).

Every change of a rollout's record is a *transition* with exactly one audit entry. A transition
is written in this order, each write idempotent:

1. the new record's exact bytes, journaled at ``rollouts-journal/<model>/<id>/<revision>-<sha256>.json``
   (content-addressed: a writer that loses the race leaves at most an orphan nobody names);
2. the audit entry, signed by the actor, naming ``rollout_id``, ``revision`` and ``state_sha256``,
   appended only if the log's newest transition is the revision the writer read. This create-only
   write is the commit: of two writers that read revision N, one gets N+1 in, the other a
   ConflictError before anything else is written;
3. the record itself (``rollouts-state/<model>.json``);
4. the rollout policy the record names, at exactly its ``policy_version``;
5. the archive copy, when the rollout has ended.

A crash before 2 changes nothing (the command did not happen; run it again). A crash after 2
leaves the log ahead of the state: ``recover`` — run first by every command that changes a
rollout, and by ``otactl rollout recover`` — finds the journaled bytes by the entry's digest and
finishes 3 to 5. ``check`` says whether state, policy and log agree (``otactl audit verify``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from securesystemslib.signer import Signer

from otactl.app import rollout_state as rs
from otactl.app.context import Context
from otactl.app.policy import current_policy, publish_policy
from otactl.audit import log as audit
from otactl.errors import ConflictError, NotFoundError, StoreError, VerificationError

RETRIES = 8


@dataclass(frozen=True)
class Actor:
    """Who signs a transition's audit entry: a key name from the trust configuration and its signer."""

    name: str
    signer: Signer


def base_of(record: rs.RolloutRecord | None) -> audit.Revision | None:
    """The log position a change made from ``record`` must find (None: no transition recorded yet)."""
    if record is None or record.revision == 0:
        return None
    return audit.Revision(record.rollout_id, record.revision)


def published_version(ctx: Context, model: str) -> int:
    """The version of the model's published rollout policy (0: none)."""
    doc = current_policy(ctx, ctx.repository(), model)
    return 0 if doc is None else int(doc.get("policy_version", 0))


def _write_state(ctx: Context, record: rs.RolloutRecord, data: bytes, expected: str | None,
                 exists: bool) -> rs.RolloutRecord:
    """Step 3: write ``data`` (revision ``record.revision``) unless the state already reached it."""
    for _ in range(RETRIES):
        try:
            etag = ctx.store.put_if(rs.state_key(record.model), data, expected if exists else None)
            return replace(record, etag=etag)
        except ConflictError:
            current = rs.load(ctx.store, record.model)
            if current is not None and current.rollout_id == record.rollout_id and current.revision >= record.revision:
                return current  # another command rolled this transition forward (or went past it)
            expected, exists = (None, False) if current is None else (current.etag, True)
    raise ConflictError(f"rollout {record.rollout_id}: could not write revision {record.revision}; "
                        "run `otactl rollout recover`")


def _finish(ctx: Context, record: rs.RolloutRecord) -> None:
    """Steps 4 and 5: the policy the record names, and the archive copy of an ended rollout."""
    if record.policy is not None and record.policy_version > published_version(ctx, record.model):
        publish_policy(ctx, record.policy)
    if record.terminal:
        key = rs.archive_key(record.model, record.rollout_id)
        data = rs.encode(replace(record, etag=None))
        if ctx.store.get_optional(key) != data:
            ctx.store.put(key, data)


def commit(ctx: Context, before: rs.RolloutRecord | None, after: rs.RolloutRecord, actor: Actor,
           action: str, details: dict[str, Any]) -> rs.RolloutRecord:
    """Record ``after`` as the next revision of the model's rollout (``before``: the record it was
    made from, as read after ``recover``), signed by ``actor``. Returns the stored record.

    A concurrent writer that got its transition in first makes this a ConflictError with nothing
    recorded (an orphan journal object at most)."""
    same = before is not None and before.rollout_id == after.rollout_id
    revision = before.revision + 1 if same and before is not None else 1
    after = replace(after, revision=revision, etag=None)
    data = rs.encode(after)
    sha = hashlib.sha256(data).hexdigest()
    journal = rs.journal_key(after.model, after.rollout_id, revision, sha)
    ctx.store.put(journal, data)
    entry = {**details, "rollout_id": after.rollout_id, "revision": revision, "state_sha256": sha}
    try:
        audit.append(ctx.store, after.model, actor.signer, actor.name, action, entry, ctx.now, base=base_of(before))
    except ConflictError as exc:
        ctx.store.delete(journal)
        why = str(exc).split("(", 1)[1].rstrip(")") if "(" in str(exc) else str(exc)
        raise ConflictError(f"rollout {after.rollout_id}: another operator or controller changed it first ({why}); "
                            "nothing was recorded", hint="run `otactl rollout status` and retry") from None
    stored = _write_state(ctx, after, data, None if before is None else before.etag, before is not None)
    _finish_committed(ctx, stored)
    return stored


def _finish_committed(ctx: Context, record: rs.RolloutRecord) -> None:
    """Steps 4-5 after the commit. The change is recorded whatever happens here: a publication by another
    command at the same moment (which may be finishing this very policy) is waited for and its journal
    replayed; if the repository stays busy, the next command finishes it, and the command still succeeds."""
    import sys
    import time

    from otactl.repo.repository import JOURNAL_KEY, replay_journal

    for attempt in range(RETRIES):
        try:
            if ctx.store.exists(JOURNAL_KEY):
                replay_journal(ctx.store)
            _finish(ctx, record)
            return
        except StoreError:  # ConflictError, or "an unfinished publication is pending"
            time.sleep(0.05 * (attempt + 1))
    print(f"otactl: warning: rollout {record.rollout_id} revision {record.revision} is recorded; its policy or "
          f"archive is left to the next command (run `otactl rollout recover {record.model}`)", file=sys.stderr)


def recover(ctx: Context, model: str) -> rs.RolloutRecord | None:
    """Finish a transition whose audit entry is recorded but whose state, policy or archive is not
    (a command that crashed or is still running); return the model's record, up to date.

    A repository publication that stopped part-way (the policy's, or any other) is finished first,
    as ``otactl repo publish`` would: its journal holds every signed file, copied in order."""
    from otactl.repo.repository import JOURNAL_KEY, replay_journal

    if ctx.store.exists(JOURNAL_KEY):
        replay_journal(ctx.store)
    for _ in range(RETRIES):
        record = rs.load(ctx.store, model)
        head = audit.head(ctx.store, model)
        at = None if head is None else audit.transition_of(head)
        if at is None:
            break
        rev, sha = at
        if record is not None and record.rollout_id == rev.rollout_id and record.revision > rev.revision:
            raise StoreError(f"rollout {record.rollout_id}: state is at revision {record.revision} but the audit "
                             f"log ends at revision {rev.revision}: the log lost entries (run `otactl audit verify`)")
        behind = record is None or record.rollout_id != rev.rollout_id or record.revision < rev.revision
        if not behind:
            break
        key = rs.journal_key(model, rev.rollout_id, rev.revision, sha)
        try:
            data = ctx.store.get(key)
        except NotFoundError:
            raise StoreError(f"audit log {model}: entry {head.seq if head else '?'} records rollout "
                             f"{rev.rollout_id} revision {rev.revision}, but its journaled state {key} is "
                             "missing") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise StoreError(f"{ctx.store.url}{key}: does not match the digest its audit entry signs")
        target = rs.parse(data, None, f"{ctx.store.url}{key}")
        try:
            _write_state(ctx, target, data, None if record is None else record.etag, record is not None)
        except ConflictError:
            continue
    record = rs.load(ctx.store, model)
    if record is not None:
        _finish(ctx, record)
    return record


@dataclass(frozen=True)
class Agreement:
    """What ``check`` found: the log's newest transition, the state's revision, the published policy."""

    rollout_id: str | None
    log_revision: int
    state_revision: int
    policy_version: int
    published_version: int


def check(ctx: Context, model: str) -> Agreement:
    """State, policy and audit log agree, or a VerificationError that says what a crash left and how
    to finish it (``otactl rollout recover``)."""
    record = rs.load(ctx.store, model)
    head = audit.head(ctx.store, model)
    at = None if head is None else audit.transition_of(head)
    published = published_version(ctx, model)
    if record is None:
        if at is not None:
            raise VerificationError(f"rollout {at[0].rollout_id}: the audit log records revision {at[0].revision} "
                                    "but there is no rollout state; run `otactl rollout recover " + model + "`")
        return Agreement(None, 0, 0, 0, published)
    log_rev = 0
    if at is not None:
        rev = at[0]
        if rev.rollout_id != record.rollout_id or rev.revision != record.revision:
            raise VerificationError(
                f"rollout {record.rollout_id}: state is at revision {record.revision}, the audit log at "
                f"{rev.rollout_id} revision {rev.revision} (a command stopped part-way); "
                f"run `otactl rollout recover {model}`")
        log_rev = rev.revision
    elif record.revision != 0:
        raise VerificationError(f"rollout {record.rollout_id}: state is at revision {record.revision} but the audit "
                                "log records no transition (entries lost)")
    if record.policy is not None and published < record.policy_version:
        raise VerificationError(f"rollout {record.rollout_id}: policy version {record.policy_version} is recorded "
                                f"but {published} is published; run `otactl rollout recover {model}`")
    if record.terminal and ctx.store.get_optional(rs.archive_key(model, record.rollout_id)) is None:
        raise VerificationError(f"rollout {record.rollout_id} ended but is not archived; run "
                                f"`otactl rollout recover {model}`")
    return Agreement(record.rollout_id, log_rev, record.revision, record.policy_version, published)
