"""The rollout decision (a pure function of plan, state, verdict and ``now``) and the next policy.

Decision table, first matching row wins:

| state status       | ring verdict | approvals met | last ring | action          |
|--------------------|--------------|---------------|-----------|-----------------|
| complete           | any          | any           | any       | complete        |
| rolled_back        | any          | any           | any       | rollback        |
| aborted            | any          | any           | any       | abort           |
| paused             | any          | any           | any       | pause           |
| running            | fail         | any           | any       | on_failure      |
| running            | wait         | any           | any       | hold            |
| running            | pass         | no            | any       | await_approval  |
| running            | pass         | yes           | no        | advance         |
| running            | pass         | yes           | yes       | complete        |

Approvals on a ring are needed to leave it (they sign the plan and that ring's evidence).

Operator actions are transitions of the same state (``operate``), checked here and nowhere else:

| action    | allowed from     | state after            | policy                                    |
|-----------|------------------|------------------------|-------------------------------------------|
| pause     | running          | paused                 | unchanged (devices keep what they have)   |
| resume    | paused           | running                | unchanged                                 |
| rollback  | running, paused  | rolled_back (terminal) | all rings to the baseline; release bad    |
| abort     | running, paused  | aborted (terminal)     | all rings to the baseline; NOT marked bad |
| approve   | running, paused  | one more approval      | unchanged (the plan's key, once per ring) |

An abort stops a rollout for a reason that is not the release's fault (wrong plan, wrong time); a
rollback says the release hurt the fleet. Reinstating a release changes only the policy
(``reinstate_policy``). ``policy_version`` is set in one place: ``next_policy`` and
``reinstate_policy`` give the next one (published + 1); the controller records exactly that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from otactl.errors import OtactlError, UsageError
from otactl.rollout.gates import Phase, RingVerdict, carry_out
from otactl.rollout.plan import KeyId, OnFailure, Plan

POLICY_SCHEMA = "otactl/rollout-policy/1"


class Status(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"
    COMPLETE = "complete"
    ABORTED = "aborted"


TERMINAL = (Status.COMPLETE, Status.ROLLED_BACK, Status.ABORTED)


class Action(StrEnum):
    ADVANCE = "advance"
    HOLD = "hold"
    AWAIT_APPROVAL = "await_approval"
    ROLLBACK = "rollback"
    PAUSE = "pause"
    COMPLETE = "complete"
    # operator actions (``operate``) and the start
    START = "start"
    RESUME = "resume"
    ABORT = "abort"
    APPROVE = "approve"
    REINSTATE = "reinstate"


class PolicyError(OtactlError):
    """The next rollout policy would break an invariant (bad release, security floor)."""


class TransitionError(UsageError):
    """An operator action that the rollout's state does not allow (exit 2)."""


@dataclass(frozen=True)
class Approval:
    ring: str
    key_id: KeyId


@dataclass(frozen=True)
class HistoryEntry:
    time: datetime
    ring_index: int
    action: Action
    reason: str


@dataclass(frozen=True)
class RolloutState:
    release: str
    ring_index: int = 0
    status: Status = Status.RUNNING
    ring_started: tuple[datetime, ...] = ()  # when each reached ring was entered
    approvals: frozenset[Approval] = frozenset()
    history: tuple[HistoryEntry, ...] = ()
    # e-values carried out of finished rings, keyed metric|test|margin|scope (gates.carry_out)
    evidence: tuple[tuple[str, float], ...] = ()

    @property
    def carry(self) -> dict[str, float]:
        return dict(self.evidence)

    def __post_init__(self) -> None:
        if self.ring_index < 0:
            raise ValueError("ring_index must not be negative")
        if len(self.ring_started) != self.ring_index + 1:
            raise ValueError("ring_started needs one start time per reached ring")
        if any(t.tzinfo is None for t in self.ring_started):
            raise ValueError("times must be timezone-aware UTC")


@dataclass(frozen=True)
class Decision:
    action: Action
    ring_index: int  # the ring the rollout is at after this decision
    reasons: tuple[str, ...]

    @property
    def changes_policy(self) -> bool:
        return self.action in (Action.ADVANCE, Action.ROLLBACK, Action.ABORT)


def start(release: str, now: datetime) -> RolloutState:
    return RolloutState(release=release, ring_started=(now,))


def decide(plan: Plan, state: RolloutState, verdict: RingVerdict | None,
           now: datetime) -> Decision:
    """What to do now. ``verdict`` is the current ring's (None when it was not evaluated)."""
    i = state.ring_index
    if state.status is Status.COMPLETE:
        return Decision(Action.COMPLETE, i, ("rollout already complete",))
    if state.status is Status.ROLLED_BACK:
        return Decision(Action.ROLLBACK, i, ("rollout already rolled back",))
    if state.status is Status.ABORTED:
        return Decision(Action.ABORT, i, ("rollout was aborted",))
    if state.status is Status.PAUSED:
        return Decision(Action.PAUSE, i, ("rollout paused after a failed gate; resume or "
                                          "roll back by hand",))
    ring = plan.rings[i]
    if verdict is None or verdict.ring != ring.name:
        return Decision(Action.HOLD, i, (f"no verdict for ring {ring.name!r} yet",))
    hours = (now - state.ring_started[i]).total_seconds() / 3600
    if verdict.phase is Phase.FAIL:
        action = Action.ROLLBACK if ring.on_failure is OnFailure.ROLLBACK else Action.PAUSE
        return Decision(action, i, (f"ring {ring.name!r} failed after {hours:.1f} h",
                                    *verdict.reasons))
    if verdict.phase is Phase.WAIT:
        return Decision(Action.HOLD, i, verdict.reasons)
    if ring.approvals is not None:
        have = {a.key_id for a in state.approvals if a.ring == ring.name}
        have &= set(ring.approvals.keys)
        if len(have) < ring.approvals.required:
            return Decision(Action.AWAIT_APPROVAL, i, (
                f"ring {ring.name!r} passed; {len(have)} of {ring.approvals.required} "
                f"approvals from {', '.join(ring.approvals.keys)}",))
    if i == len(plan.rings) - 1:
        return Decision(Action.COMPLETE, i, (f"last ring {ring.name!r} passed",))
    return Decision(Action.ADVANCE, i + 1, (f"ring {ring.name!r} passed after {hours:.1f} h; "
                                            f"advancing to {plan.rings[i + 1].name!r}",))


_NEXT_STATUS = {
    Action.ADVANCE: Status.RUNNING, Action.HOLD: None, Action.AWAIT_APPROVAL: None,
    Action.ROLLBACK: Status.ROLLED_BACK, Action.PAUSE: Status.PAUSED,
    Action.COMPLETE: Status.COMPLETE, Action.ABORT: Status.ABORTED,
}


def apply(state: RolloutState, decision: Decision, now: datetime,
          verdict: RingVerdict | None = None) -> RolloutState:
    """The state after a decision (idempotent for hold, await and repeated terminal actions).

    On advance, the finished ring's e-values are kept so the next ring's tests continue them.
    """
    status = _NEXT_STATUS[decision.action] or state.status
    started, evidence = state.ring_started, state.evidence
    if decision.ring_index > state.ring_index:
        started = (*started, now)
        if verdict is not None:
            evidence = tuple(sorted(carry_out(verdict, state.carry).items()))
    if status is state.status and started == state.ring_started:
        return state
    entry = HistoryEntry(now, decision.ring_index, decision.action, "; ".join(decision.reasons))
    return replace(state, ring_index=decision.ring_index, status=status, ring_started=started,
                   history=(*state.history, entry), evidence=evidence)


_OPERATOR_FROM = {
    Action.PAUSE: (Status.RUNNING,),
    Action.RESUME: (Status.PAUSED,),
    Action.ROLLBACK: (Status.RUNNING, Status.PAUSED),
    Action.ABORT: (Status.RUNNING, Status.PAUSED),
    Action.APPROVE: (Status.RUNNING, Status.PAUSED),
}
_OPERATOR_TO = {Action.PAUSE: Status.PAUSED, Action.RESUME: Status.RUNNING, Action.ROLLBACK: Status.ROLLED_BACK,
                Action.ABORT: Status.ABORTED}


def operate(plan: Plan, state: RolloutState, action: Action, now: datetime, reason: str,
            key: KeyId | None = None) -> tuple[RolloutState, Decision]:
    """An operator's action (the table above): the new state and the decision it records.

    Raises :class:`TransitionError` when the state does not allow it; nothing else checks."""
    allowed = _OPERATOR_FROM.get(action)
    if allowed is None:
        raise TransitionError(f"{action.value!r} is not an operator action")
    if state.status not in allowed:
        raise TransitionError(f"the rollout is {state.status.value}; cannot {action.value} it "
                              f"(allowed when {' or '.join(s.value for s in allowed)})")
    i = state.ring_index
    ring = plan.rings[i]
    if action is Action.APPROVE:
        if key is None:
            raise TransitionError("an approval needs the approving key")
        if ring.approvals is None:
            raise TransitionError(f"ring {ring.name!r} needs no approval")
        if key not in ring.approvals.keys:
            raise TransitionError(f"key {key!r} may not approve ring {ring.name!r} (the plan names: "
                                  f"{', '.join(ring.approvals.keys)})")
        approval = Approval(ring.name, key)
        if approval in state.approvals:
            raise TransitionError(f"ring {ring.name!r} is already approved with key {key!r}")
        decision = Decision(Action.APPROVE, i, (f"ring {ring.name!r} approved by {key}",))
        return replace(state, approvals=state.approvals | {approval}), decision
    decision = Decision(action, i, (reason,))
    entry = HistoryEntry(now, i, action, reason)
    return replace(state, status=_OPERATOR_TO[action], history=(*state.history, entry)), decision


@dataclass(frozen=True)
class ReleaseRef:
    version: str
    security_version: int


def next_policy(plan: Plan, state: RolloutState, *, model: str, rollout_id: str, salt: str,
                release: ReleaseRef, last_good: ReleaseRef, previous: Mapping[str, Any] | None,
                bad_releases: Sequence[str] = (), min_security_version: int = 0
                ) -> dict[str, Any]:
    """The rollout-policy/1 document for ``state`` (docs/formats.md).

    Rings up to the current one get the release, the rest (or all, once rolled back or aborted)
    the last known good release. Never a bad release, never below the security floor. A rollback
    marks the release bad; an abort does not.
    """
    prev_version = 0 if previous is None else int(previous["policy_version"])
    bad = sorted({*bad_releases, *(previous or {}).get("bad_releases", [])})
    if state.status is Status.ROLLED_BACK and release.version not in bad:
        bad = sorted({*bad, release.version})
    floor = max(min_security_version, int((previous or {}).get("min_security_version", 0)))
    if last_good.version in bad:
        raise PolicyError(f"last known good release {last_good.version} is marked bad")
    if last_good.security_version < floor:
        raise PolicyError(f"last known good release {last_good.version} is below the security "
                          f"floor {floor}")
    rolled_back = state.status in (Status.ROLLED_BACK, Status.ABORTED)
    if not rolled_back and release.version in bad:
        raise PolicyError(f"release {release.version} is marked bad")
    if not rolled_back and release.security_version < floor:
        raise PolicyError(f"release {release.version} is below the security floor {floor}")
    rings = []
    for i, ring in enumerate(plan.rings):
        on_new = not rolled_back and i <= state.ring_index
        rings.append({"name": ring.name, "selector": ring.selector.to_json(),
                      "release": release.version if on_new else last_good.version,
                      **plan.install_rules(ring).to_json()})  # windows, preconditions (decision 1202)
    doc = {"schema": POLICY_SCHEMA, "model": model, "rollout_id": rollout_id, "salt": salt,
           "policy_version": prev_version + 1, "baseline": last_good.version, "rings": rings,
           "bad_releases": bad, "min_security_version": floor}
    if plan.region_timezones:
        doc["region_timezones"] = dict(plan.region_timezones)
    return doc


def reinstate_policy(previous: Mapping[str, Any], version: str) -> dict[str, Any]:
    """The rollout policy after a release manager clears ``version``'s bad mark.

    The same rings, baseline and security floor, one version higher, with ``version`` no longer in
    ``bad_releases``. It ships nothing: the rings keep pointing where they point; a new rollout can
    target ``version`` again (docs/decisions/0106-missing-data-and-reinstate.md).
    """
    bad = [str(v) for v in previous.get("bad_releases", [])]
    if version not in bad:
        raise PolicyError(f"release {version} is not marked bad")
    return {**previous, "policy_version": int(previous["policy_version"]) + 1,
            "bad_releases": sorted(set(bad) - {version})}
