"""`release reinstate`: only a release manager's signed, audited action clears a bad mark."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from app_parts import MODEL, OPERATOR, build_template, ctx_at, plan_file, policy, snapshot, verify_audit
from securesystemslib.signer import Signature

from otactl.app import reinstate as service
from otactl.app import rollout
from otactl.app import rollout_state as rs
from otactl.audit import log as audit
from otactl.errors import ExitCode, UsageError, VerificationError
from otactl.keys.keyfile import public_key
from otactl.release.bundle import canonical
from otactl.rollout import decide as core
from otactl.rollout.decide import PolicyError

REASON = "crash spike traced to a faulty telemetry agent build, not to 2.1.0"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_template(tmp_path_factory.mktemp("tpl") / "ws", ("2.0.0", "2.1.0", "2.1.1"))


def rolled_back(ws: Path, version: str = "2.1.0") -> str:
    """Start ``version`` and roll it back by hand: it is marked bad. Returns the rollout id."""
    started = rollout.start(ctx_at(ws), MODEL, version, plan_file(ws), baseline="2.0.0")
    rollout.rollback(ctx_at(ws, 1), MODEL, "operator: field reports", key=OPERATOR)
    assert version in policy(ws)["bad_releases"]
    return started.rollout_id


def test_reinstate_clears_the_mark_and_a_new_rollout_starts(ws: Path) -> None:
    first = rolled_back(ws)
    before = snapshot(ws)
    with pytest.raises(PolicyError, match=re.escape("release 2.1.0 is marked bad")):
        rollout.start(ctx_at(ws, 2), MODEL, "2.1.0", plan_file(ws))
    assert snapshot(ws) == before  # refused before the state was written: nothing to abort

    result = service.reinstate(ctx_at(ws, 3), MODEL, "2.1.0", REASON, "release-manager")
    assert (result.actor, result.rollout_id, result.bad_releases) == ("release-manager", first, ())
    doc = policy(ws)
    assert doc["bad_releases"] == [] and doc["policy_version"] == result.policy_version == 3
    assert {r["release"] for r in doc["rings"]} == {"2.0.0"}  # reinstating ships nothing

    again = rollout.start(ctx_at(ws, 4), MODEL, "2.1.0", plan_file(ws))
    assert (again.status, again.ring) == ("running", "canary") and again.rollout_id != first
    assert [r["release"] for r in policy(ws)["rings"]] == ["2.1.0", "2.0.0"]

    report = verify_audit(ws)
    assert report.entries == 4 and "release-manager" in report.actors  # start, rollback, reinstate, start
    entry = next(e for e in audit.entries(ctx_at(ws).store, MODEL) if e.action == "reinstate")
    assert entry.actor == "release-manager"
    assert entry.keyid == ctx_at(ws).trust.keys["release-manager"].keyid
    details = {k: v for k, v in entry.details.items() if k not in ("state_sha256", "signature")}
    assert details == {"model": MODEL, "version": "2.1.0", "reason": REASON, "marked_by": first, "policy_version": 3,
                       "clears_policy_version": 2, "release_manager": "release-manager",
                       "signer_keyid": entry.keyid, "rollout_id": first, "revision": 3}  # the ended rollout's record
    signed = audit.statement_payload("reinstate", entry.details)  # the release manager's own signature over it
    public_key(ctx_at(ws).trust.keys["release-manager"].public).verify_signature(
        Signature(entry.keyid, entry.details["signature"]), canonical(signed))


def test_the_old_rolled_back_rollout_does_not_bring_the_mark_back(ws: Path) -> None:
    rolled_back(ws)
    service.reinstate(ctx_at(ws, 2), MODEL, "2.1.0", REASON, "release-manager")
    stepped = rollout.step(ctx_at(ws, 3), MODEL, rollout_source_never_read())  # the terminal record
    assert stepped.status == "rolled_back" and policy(ws)["bad_releases"] == []
    rollout.start(ctx_at(ws, 4), MODEL, "2.1.1", plan_file(ws), baseline="2.0.0")  # an unrelated rollout
    rollout.rollback(ctx_at(ws, 5), MODEL, "operator: 2.1.1 misbehaves", key=OPERATOR)
    assert policy(ws)["bad_releases"] == ["2.1.1"]  # the new mark only, 2.1.0 stays cleared


def test_reinstate_beside_an_active_rollout_of_another_release(ws: Path) -> None:
    rolled_back(ws)
    rollout.start(ctx_at(ws, 2), MODEL, "2.1.1", plan_file(ws), baseline="2.0.0")
    result = service.reinstate(ctx_at(ws, 3), MODEL, "2.1.0", REASON, "release-manager")
    doc = policy(ws)
    assert doc["bad_releases"] == [] and [r["release"] for r in doc["rings"]] == ["2.1.1", "2.0.0"]
    record = rs.require(ctx_at(ws).store, MODEL)
    assert record.policy_version == result.policy_version == doc["policy_version"]  # crash recovery stays exact
    rollout.rollback(ctx_at(ws, 4), MODEL, "operator", key=OPERATOR)
    assert policy(ws)["bad_releases"] == ["2.1.1"]


@pytest.mark.parametrize(
    ("key", "version", "reason", "message"),
    [
        ("ci", "2.1.0", REASON, "key 'ci' is not a release manager's key"),
        ("online", "2.1.0", REASON, "key 'online' is not a release manager's key"),
        ("nobody", "2.1.0", REASON, "key 'nobody' is not a release manager's key"),
        ("release-manager", "2.1.1", REASON, "release t9-engine/2.1.1 is not marked bad (marked bad for "
                                             "t9-engine: 2.1.0)"),
        ("release-manager", "9.9.9", REASON, "release t9-engine/9.9.9 is not marked bad"),
        ("release-manager", "2.1.0", "  ", "--reason: say why"),
    ],
    ids=["ci-key", "online-key", "unknown-key", "not-bad", "no-such-release", "empty-reason"],
)
def test_reinstate_refuses_and_writes_nothing(ws: Path, key: str, version: str, reason: str, message: str) -> None:
    rolled_back(ws)
    before = snapshot(ws)
    with pytest.raises(UsageError) as caught:
        service.reinstate(ctx_at(ws, 2), MODEL, version, reason, key)
    assert message in str(caught.value) and caught.value.exit_code == ExitCode.USAGE
    assert snapshot(ws) == before


def test_a_record_the_audit_log_does_not_know_is_replaced_by_the_logged_one(ws: Path) -> None:
    """A rollout record written around the log (an active rollout of the release marked bad) is not
    the rollout's state: the log is. Reinstate first restores the logged record, then proceeds."""
    first = rolled_back(ws)
    store = ctx_at(ws).store
    record = rs.require(store, MODEL)
    rs.save(store, replace(record, rollout_id="t9-engine-2.1.0-stale", state=core.start("2.1.0", ctx_at(ws).now)))
    with pytest.raises(VerificationError, match=re.escape("state is at revision 2, the audit log at t9-engine-2.1.0-")):
        verify_audit(ws)
    result = service.reinstate(ctx_at(ws, 2), MODEL, "2.1.0", REASON, "release-manager")
    assert result.rollout_id == first
    restored = rs.require(store, MODEL)
    assert (restored.rollout_id, restored.state.status, restored.revision) == (first, core.Status.ROLLED_BACK, 3)
    verify_audit(ws)


def test_reinstate_policy_is_pure() -> None:
    previous = {"policy_version": 4, "bad_releases": ["1.0.0", "2.1.0"], "rings": [], "baseline": "2.0.0"}
    assert core.reinstate_policy(previous, "2.1.0") == {**previous, "policy_version": 5, "bad_releases": ["1.0.0"]}
    with pytest.raises(PolicyError, match="not marked bad"):
        core.reinstate_policy(previous, "3.0.0")


def rollout_source_never_read() -> object:
    class Never:
        def cohort_counts(self, query: object) -> dict:
            raise AssertionError("a finished rollout reads no telemetry")

    return Never()
