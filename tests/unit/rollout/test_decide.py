"""Rollout decisions and the next rollout policy (table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from otactl.rollout.decide import (
    Action,
    Approval,
    HistoryEntry,
    PolicyError,
    ReleaseRef,
    RolloutState,
    Status,
    TransitionError,
    apply,
    decide,
    next_policy,
    operate,
    start,
)
from otactl.rollout.gates import Phase, RingVerdict
from otactl.rollout.plan import KeyId, RingName, load_plan

from .test_plan import ROOT

PLAN = load_plan(ROOT / "canary" / "default.yaml")  # lab, canary, early (1 approval), half, all
T0 = datetime(2026, 3, 1, tzinfo=UTC)
NOW = T0 + timedelta(hours=30)


def verdict(ring: int, phase: Phase) -> RingVerdict:
    return RingVerdict(RingName(PLAN.rings[ring].name), phase, (f"{phase.value} reason",), (),
                       100, 1000.0, T0, NOW)


def at(ring: int, status: Status = Status.RUNNING, approvals: tuple[str, ...] = ()) -> RolloutState:
    return RolloutState("2.1.0", ring, status, tuple(T0 for _ in range(ring + 1)),
                        frozenset(Approval(PLAN.rings[ring].name, KeyId(k)) for k in approvals))


CASES = [
    ("pass-advances", at(1), verdict(1, Phase.PASS), Action.ADVANCE, 2),
    ("wait-holds", at(1), verdict(1, Phase.WAIT), Action.HOLD, 1),
    ("fail-rolls-back", at(1), verdict(1, Phase.FAIL), Action.ROLLBACK, 1),
    ("pass-needs-approval", at(2), verdict(2, Phase.PASS), Action.AWAIT_APPROVAL, 2),
    ("foreign-key-is-no-approval", at(2, approvals=("mallory",)), verdict(2, Phase.PASS),
     Action.AWAIT_APPROVAL, 2),
    ("approved-advances", at(2, approvals=("rm-bob",)), verdict(2, Phase.PASS),
     Action.ADVANCE, 3),
    ("last-ring-completes", at(4), verdict(4, Phase.PASS), Action.COMPLETE, 4),
    ("verdict-of-another-ring-holds", at(1), verdict(0, Phase.PASS), Action.HOLD, 1),
    ("no-verdict-holds", at(1), None, Action.HOLD, 1),
    ("rolled-back-stays", at(1, Status.ROLLED_BACK), verdict(1, Phase.PASS), Action.ROLLBACK, 1),
    ("paused-stays", at(1, Status.PAUSED), verdict(1, Phase.PASS), Action.PAUSE, 1),
    ("complete-stays", at(4, Status.COMPLETE), verdict(4, Phase.FAIL), Action.COMPLETE, 4),
]


@pytest.mark.parametrize(("name", "state", "v", "action", "ring"), CASES,
                         ids=[c[0] for c in CASES])
def test_decision_table(name: str, state: RolloutState, v: RingVerdict | None, action: Action,
                        ring: int) -> None:
    d = decide(PLAN, state, v, NOW)
    assert (d.action, d.ring_index) == (action, ring)
    assert d.reasons


def test_pause_when_the_ring_says_so() -> None:
    from dataclasses import replace
    rings = list(PLAN.rings)
    rings[1] = replace(rings[1], on_failure=type(rings[1].on_failure)("pause"))
    plan = replace(PLAN, rings=tuple(rings))
    assert decide(plan, at(1), verdict(1, Phase.FAIL), NOW).action is Action.PAUSE


def test_apply_records_history_and_is_idempotent_for_hold() -> None:
    s = start("2.1.0", T0)
    held = apply(s, decide(PLAN, s, verdict(0, Phase.WAIT), NOW), NOW)
    assert held is s
    moved = apply(s, decide(PLAN, s, verdict(0, Phase.PASS), NOW), NOW)
    assert moved.ring_index == 1 and moved.ring_started == (T0, NOW)
    assert moved.history[-1].action is Action.ADVANCE
    failed = apply(moved, decide(PLAN, moved, verdict(1, Phase.FAIL), NOW), NOW)
    assert failed.status is Status.ROLLED_BACK


def test_state_refuses_naive_times_and_missing_starts() -> None:
    with pytest.raises(ValueError, match="timezone"):
        RolloutState("1", 0, ring_started=(datetime(2026, 1, 1),))
    with pytest.raises(ValueError, match="one start time"):
        RolloutState("1", 2, ring_started=(T0,))


NEW, GOOD = ReleaseRef("2.1.0", 3), ReleaseRef("2.0.0", 2)


def policy(state: RolloutState, **kw: object) -> dict[str, object]:
    args: dict[str, object] = {"model": "t9", "rollout_id": "t9-2.1.0-1a", "salt": "1a",
                               "release": NEW, "last_good": GOOD, "previous": None}
    args.update(kw)
    return next_policy(PLAN, state, **args)  # type: ignore[arg-type]


def test_policy_points_reached_rings_at_the_release_and_the_rest_at_last_good() -> None:
    doc = policy(at(1), previous={"policy_version": 4, "bad_releases": ["1.9.9"],
                                  "min_security_version": 2})
    assert doc["schema"] == "otactl/rollout-policy/1" and doc["policy_version"] == 5
    assert [r["release"] for r in doc["rings"]] == ["2.1.0", "2.1.0", "2.0.0", "2.0.0", "2.0.0"]
    assert doc["rings"][1]["selector"] == {"percent": 3.0}
    assert doc["baseline"] == "2.0.0" and doc["bad_releases"] == ["1.9.9"]
    assert doc["min_security_version"] == 2


def test_rollback_points_every_ring_at_last_good_and_marks_the_release_bad() -> None:
    doc = policy(at(2, Status.ROLLED_BACK), previous={"policy_version": 7})
    assert {r["release"] for r in doc["rings"]} == {"2.0.0"}
    assert "2.1.0" in doc["bad_releases"] and doc["policy_version"] == 8


@pytest.mark.parametrize(("name", "kw", "message"), [
    ("last-good-is-bad", {"bad_releases": ["2.0.0"]}, "marked bad"),
    ("last-good-below-floor", {"min_security_version": 3}, "below the security floor"),
    ("floor-from-previous", {"previous": {"policy_version": 1, "min_security_version": 4}},
     "below the security floor"),
    ("release-is-bad", {"bad_releases": ["2.1.0"]}, "release 2.1.0 is marked bad"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_policy_refuses_bad_releases_and_the_security_floor(name: str, kw: dict[str, object],
                                                            message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy(at(1), **kw)


# ------------------------------------------------------------------------- operator transitions
OPERATOR_CASES = [
    # action, from status, allowed?, status after
    (Action.PAUSE, Status.RUNNING, True, Status.PAUSED),
    (Action.PAUSE, Status.PAUSED, False, None),
    (Action.PAUSE, Status.COMPLETE, False, None),
    (Action.RESUME, Status.PAUSED, True, Status.RUNNING),
    (Action.RESUME, Status.RUNNING, False, None),
    (Action.ROLLBACK, Status.RUNNING, True, Status.ROLLED_BACK),
    (Action.ROLLBACK, Status.PAUSED, True, Status.ROLLED_BACK),
    (Action.ROLLBACK, Status.ABORTED, False, None),
    (Action.ABORT, Status.RUNNING, True, Status.ABORTED),
    (Action.ABORT, Status.PAUSED, True, Status.ABORTED),
    (Action.ABORT, Status.ROLLED_BACK, False, None),
    (Action.ABORT, Status.COMPLETE, False, None),
    (Action.ADVANCE, Status.RUNNING, False, None),  # not an operator action
]


@pytest.mark.parametrize(("action", "status", "allowed", "after"), OPERATOR_CASES,
                         ids=[f"{a.value}-from-{s.value}" for a, s, _, _ in OPERATOR_CASES])
def test_operator_transitions(action: Action, status: Status, allowed: bool, after: Status | None) -> None:
    state = at(1, status)
    if not allowed:
        with pytest.raises(TransitionError):
            operate(PLAN, state, action, NOW, "why")
        return
    new, decision = operate(PLAN, state, action, NOW, "why")
    assert new.status is after and decision.action is action and decision.reasons == ("why",)
    assert new.history[-1] == HistoryEntry(NOW, 1, action, "why") and new.ring_index == 1


def test_approval_is_a_transition_checked_against_the_plan() -> None:
    state = at(2)  # ring 2 (early) needs one approval from rm-alice or rm-bob
    new, decision = operate(PLAN, state, Action.APPROVE, NOW, "", KeyId("rm-bob"))
    assert Approval(PLAN.rings[2].name, KeyId("rm-bob")) in new.approvals and decision.action is Action.APPROVE
    for bad_state, key, message in [(new, "rm-bob", "already approved"), (state, "mallory", "may not approve"),
                                    (at(1), "rm-bob", "needs no approval"), (at(2, Status.COMPLETE), "rm-bob",
                                                                             "cannot approve")]:
        with pytest.raises(TransitionError, match=message):
            operate(PLAN, bad_state, Action.APPROVE, NOW, "", KeyId(key))


def test_abort_returns_rings_to_the_baseline_without_marking_the_release_bad() -> None:
    aborted, _ = operate(PLAN, at(2), Action.ABORT, NOW, "wrong plan")
    rolled, _ = operate(PLAN, at(2), Action.ROLLBACK, NOW, "field reports")
    kw = {"model": "m", "rollout_id": "r", "salt": "s", "release": ReleaseRef("2.1.0", 1),
          "last_good": ReleaseRef("2.0.0", 1), "previous": None}
    abort_doc, rollback_doc = next_policy(PLAN, aborted, **kw), next_policy(PLAN, rolled, **kw)
    assert {r["release"] for r in abort_doc["rings"]} == {r["release"] for r in rollback_doc["rings"]} == {"2.0.0"}
    assert abort_doc["bad_releases"] == [] and rollback_doc["bad_releases"] == ["2.1.0"]
    assert decide(PLAN, aborted, verdict(2, Phase.PASS), NOW).action is Action.ABORT  # terminal
