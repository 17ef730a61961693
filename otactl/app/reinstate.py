"""Clear a release's bad mark: a release manager's signed, audited action (``otactl release reinstate``).

A rollback, by a gate or by an operator, lists the release in its model's rollout policy
(``bad_releases``), and every later policy keeps it (``decide.next_policy`` unions the previous
policy's marks), so no rollout can target it again. Only a release manager clears the mark: the key
must be one of the trust configuration's release managers (the rule ``release approve`` applies).
The service publishes the next policy without the release (signed by the online rollouts key, as
every policy; it ships nothing: the rings keep pointing where they point) and appends an audit entry
``reinstate`` signed by the release manager's key.

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

from otactl.app import journal
from otactl.app import rollout_state as rs
from otactl.app.context import Context
from otactl.app.policy import current_policy
from otactl.errors import UsageError
from otactl.rollout import decide as core


@dataclass(frozen=True)
class ReinstateResult:
    model: str
    version: str
    reason: str
    actor: str  # the release manager's key name
    rollout_id: str | None  # the rollout whose rollback marked the release bad, when one is on record
    policy_version: int  # of the policy published without the mark
    bad_releases: tuple[str, ...]  # still marked bad

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "reason": self.reason, "actor": self.actor,
                "rollout_id": self.rollout_id, "policy_version": self.policy_version,
                "bad_releases": list(self.bad_releases)}


def _release_manager(ctx: Context, key: str) -> str:
    """The same rule as ``release approve``: the trust configuration's release managers."""
    if key not in ctx.trust.release_managers:
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


def reinstate(ctx: Context, model: str, version: str, reason: str, key: str) -> ReinstateResult:
    reason = reason.strip()
    if not reason:
        raise UsageError("--reason: say why the release is reinstated (it is recorded in the audit log)")
    actor = _release_manager(ctx, key)
    signer = ctx.signers.get(actor)  # unlock (or fail) before anything is written
    record = journal.recover(ctx, model)
    repo = ctx.repository()
    previous = current_policy(ctx, repo, model)
    bad = [str(v) for v in (previous or {}).get("bad_releases", [])]
    if previous is None or version not in bad:
        raise UsageError(f"release {model}/{version} is not marked bad (marked bad for {model}: "
                         f"{', '.join(bad) or 'none'}); nothing to reinstate")
    if record is None:
        raise UsageError(f"model {model!r} has no rollout on record, so nothing here marked {version} bad")
    if not record.terminal and record.release.version == version:
        raise UsageError(f"rollout {record.rollout_id} of {model}/{version} is {record.state.status.value}; "
                         "abort it first (`otactl rollout abort`), then reinstate")
    rollout_id = _marked_by(ctx, model, version, record)
    doc = core.reinstate_policy(previous, version)
    new = replace(record, policy=doc, policy_version=int(doc["policy_version"]))
    journal.commit(ctx, record, new, journal.Actor(actor, signer), core.Action.REINSTATE.value,
                   {"version": version, "reason": reason, "marked_by": rollout_id,
                    "policy_version": int(doc["policy_version"])})
    return ReinstateResult(model, version, reason, actor, rollout_id, int(doc["policy_version"]),
                           tuple(doc["bad_releases"]))
