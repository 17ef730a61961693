"""Clear a release's bad mark: a release manager's signed, audited action (``otactl release reinstate``).

A rollback, by a gate or by an operator, lists the release in its model's rollout policy
(``bad_releases``), and every later policy keeps it (``decide.next_policy`` unions the previous
policy's marks), so no rollout can target it again. Only a release manager clears the mark: a
statement (model, version, reason, and the policy version whose mark it clears) signed by a key
that the trust configuration lists as a release manager's (``otactl.app.statements``). The service
publishes the next policy without the release (signed by the online rollouts key, as every policy;
it ships nothing: the rings keep pointing where they point) and appends an audit entry
``reinstate`` that carries the release manager's name and signature over the statement.

Two ways to sign (decision 1105): in a release manager's signer workspace the statement is stored
(``requests/<model>/reinstate/<version>.json``) and CI runs ``release reinstate MODEL VERSION``
without ``--key``, which verifies it (a release manager's key, this model and version, the policy
version still published) and records it, the entry signed by CI's actor; with ``--key NAME`` and
NAME's key here (a lab) it is signed and recorded at once, the entry signed by NAME.

Everything is read and checked, and the key unlocked, before anything is written. Then it is a
transition of the model's rollout record like any other (``journal.commit``): the record (the
active rollout of another release, or the last ended one) names the new policy and its version;
the audit entry is the commit, so a concurrent step gets a ConflictError or this one does, and a
crash is finished by the next command (docs/decisions/0106-missing-data-and-reinstate.md,
0504-audit-first-transitions.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from otactl.app import journal, statements
from otactl.app import rollout_state as rs
from otactl.app.context import Context
from otactl.app.policy import current_policy
from otactl.errors import UsageError, VerificationError
from otactl.rollout import decide as core


@dataclass(frozen=True)
class ReinstateResult:
    model: str
    version: str
    reason: str
    actor: str  # the release manager who signed the reinstatement
    rollout_id: str | None  # the rollout whose rollback marked the release bad, when one is on record
    policy_version: int  # of the policy published without the mark
    bad_releases: tuple[str, ...]  # still marked bad
    recorded_by: str = ""  # whose key signed the audit entry (the release manager's, or CI's actor)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "reason": self.reason, "actor": self.actor,
                "rollout_id": self.rollout_id, "policy_version": self.policy_version,
                "bad_releases": list(self.bad_releases), "recorded_by": self.recorded_by or self.actor}


@dataclass(frozen=True)
class ReinstateRequest:
    """A reinstatement signed in a signer workspace, waiting in the store for CI."""

    model: str
    version: str
    reason: str
    release_manager: str
    clears_policy_version: int
    stored: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _release_manager(ctx: Context, key: str | None) -> str:
    """The same rule as ``release approve``: the trust configuration's release managers."""
    if key is None or key not in ctx.trust.release_managers:
        raise UsageError(f"key {key!r} is not a release manager's key; only a release manager may reinstate "
                         f"a release (release managers: {', '.join(ctx.trust.release_managers) or 'none'})")
    return key


def _marked_by(ctx: Context, model: str, version: str, current: rs.RolloutRecord | None) -> str | None:
    """The latest rolled-back rollout of ``version`` (the current record or an archived one)."""
    records = [*([] if current is None else [current]), *rs.archived(ctx.store, model)]
    rolled_back = [r for r in records if r.release.version == version and r.state.status is core.Status.ROLLED_BACK]
    if not rolled_back:
        return None
    return max(rolled_back, key=lambda r: (r.state.history[-1].time if r.state.history else r.state.ring_started[-1],
                                           r.rollout_id)).rollout_id


def _marked_policy(ctx: Context, model: str, version: str, record: rs.RolloutRecord | None) -> dict[str, Any]:
    """The published policy that marks ``version`` bad; UsageError when nothing is to be reinstated."""
    previous = current_policy(ctx, ctx.repository(), model)
    bad = [str(v) for v in (previous or {}).get("bad_releases", [])]
    if previous is None or version not in bad:
        raise UsageError(f"release {model}/{version} is not marked bad (marked bad for {model}: "
                         f"{', '.join(bad) or 'none'}); nothing to reinstate")
    if record is None:
        raise UsageError(f"model {model!r} has no rollout on record, so nothing here marked {version} bad")
    if not record.terminal and record.release.version == version:
        raise UsageError(f"rollout {record.rollout_id} of {model}/{version} is {record.state.status.value}; "
                         "abort it first (`otactl rollout abort`), then reinstate")
    return previous


def _statement(model: str, version: str, reason: str, policy: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "version": version, "reason": reason,
            "clears_policy_version": int(policy["policy_version"])}


def reinstate(ctx: Context, model: str, version: str, reason: str | None,
              key: str | None) -> ReinstateResult | ReinstateRequest:
    """Sign (in a signer workspace: and store), or take in, or sign and record, a reinstatement."""
    from otactl.app.signer import SignerContext

    reason = (reason or "").strip() or None
    if isinstance(ctx, SignerContext):
        return _request(ctx, model, version, reason, key or ctx.workspace.actor)
    if key is None:
        return _take_in(ctx, model, version, reason)
    if reason is None:
        raise UsageError("--reason: say why the release is reinstated (it is recorded in the audit log)")
    actor = journal.Actor(_release_manager(ctx, key), ctx.signers.get(key))  # unlock before anything is written
    record = journal.recover(ctx, model)
    previous = _marked_policy(ctx, model, version, record)
    st = statements.sign("reinstate", _statement(model, version, reason, previous), actor.name, actor.signer)
    return _record(ctx, record, previous, st, actor.name, actor)


def _request(ctx: Context, model: str, version: str, reason: str | None, key: str | None) -> ReinstateRequest:
    if reason is None:
        raise UsageError("--reason: say why the release is reinstated (it is recorded in the audit log)")
    name = _release_manager(ctx, key)
    signer = ctx.signers.get(name)  # "not here" for someone else's key
    previous = _marked_policy(ctx, model, version, rs.load(ctx.store, model))
    st = statements.sign("reinstate", _statement(model, version, reason, previous), name, signer)
    stored = statements.reinstate_key(model, version)
    ctx.store.put(stored, st.to_bytes())
    return ReinstateRequest(model, version, reason, name, int(previous["policy_version"]), stored)


def _take_in(ctx: Context, model: str, version: str, reason: str | None) -> ReinstateResult:
    """CI: verify the reinstatement a release manager signed on their machine, and record it."""
    from otactl.app.rollout import resolve_actor

    key = statements.reinstate_key(model, version)
    where = f"{ctx.store.url}{key}"
    data = ctx.store.get_optional(key)
    if data is None:
        raise UsageError(f"release {model}/{version}: no reinstatement signed by a release manager is waiting "
                         f"({where}); a release manager runs `otactl release reinstate {model} {version} --reason "
                         "R` in their signer workspace", hint="or, with the key here, add --key NAME")
    st = statements.Statement.from_bytes(data, where)
    if st.action != "reinstate":
        raise VerificationError(f"{where}: a {st.action} statement where a reinstatement belongs; refusing it")
    name = statements.verify(ctx, st, where)
    if (st.payload["model"], st.payload["version"]) != (model, version):
        raise VerificationError(f"{where}: {name} signed the reinstatement of {st.payload['model']}/"
                                f"{st.payload['version']}, not {model}/{version}; refusing it")
    if reason is not None and reason != st.payload["reason"]:
        raise UsageError(f"release {model}/{version}: {name} signed the reason {st.payload['reason']!r}; take it in "
                         "as it is (leave out --reason)")
    actor = resolve_actor(ctx, None, person=False)  # unlock before anything is written
    record = journal.recover(ctx, model)
    previous = _marked_policy(ctx, model, version, record)
    stale = statements.stale_fields(st, _statement(model, version, str(st.payload["reason"]), previous))
    if stale:
        raise VerificationError(f"{where}: {name}'s reinstatement is stale ({'; '.join(stale)}: the rollout policy "
                                "changed since it was signed); refusing it",
                                hint=f"{name} signs it again (`otactl release reinstate {model} {version}`)")
    result = _record(ctx, record, previous, st, name, actor)
    ctx.store.delete(key)
    return result


def _record(ctx: Context, record: rs.RolloutRecord | None, previous: dict[str, Any], st: statements.Statement,
            name: str, actor: journal.Actor) -> ReinstateResult:
    assert record is not None  # _marked_policy refused a model with no rollout
    model, version = str(st.payload["model"]), str(st.payload["version"])
    rollout_id = _marked_by(ctx, model, version, record)
    doc = core.reinstate_policy(previous, version)
    new = replace(record, policy=doc, policy_version=int(doc["policy_version"]))
    journal.commit(ctx, record, new, actor, core.Action.REINSTATE.value,
                   {**st.audit_details(name), "marked_by": rollout_id, "policy_version": int(doc["policy_version"])})
    return ReinstateResult(model, version, str(st.payload["reason"]), name, rollout_id, int(doc["policy_version"]),
                           tuple(doc["bad_releases"]), actor.name)
