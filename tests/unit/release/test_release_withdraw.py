"""Signed withdrawal (decision 0502): the release managers' threshold, pending like an approval.

A workspace with three release managers, two of whom must approve (and so withdraw), made once per
module in-process; t9-engine 2.0.0 and 2.1.0 published.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures.repo import PASSPHRASE, open_context
from release_parts import MANIFESTS

from otactl.app import release, withdraw
from otactl.app.context import Context, utcnow
from otactl.app.init import init_workspace
from otactl.errors import ExitCode, NotFoundError, UsageError, VerificationError
from otactl.release.manifest import load_manifest
from otactl.repo import layout
from otactl.repo.repository import JOURNAL_KEY

MANAGERS = ["rm1", "rm2", "rm3"]


def _ship(ctx: Context, version: str) -> None:
    m = load_manifest(MANIFESTS / f"t9-engine-{version}.yaml")
    release.build(ctx, m)
    for rm in ("rm1", "rm2"):
        release.approve(ctx, f"t9-engine/{version}", rm)
    release.publish(ctx, f"t9-engine/{version}")


@pytest.fixture(scope="module")
def two_of_three_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w2of3") / "ws"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
        init_workspace(path, store_url=None, endpoint_url=None, release_managers=MANAGERS, approvals=2,
                       bin_bit_length=1, now=utcnow(), shared_passphrase=True)
        ctx = open_context(path)
        _ship(ctx, "2.0.0")
        _ship(ctx, "2.1.0")
    return path


@pytest.fixture
def ws(two_of_three_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    shutil.copytree(two_of_three_template, tmp_path / "ws", symlinks=True)
    return tmp_path / "ws"


def _listed(ctx: Context) -> dict[str, str]:
    return withdraw.withdrawn_versions(ctx, "t9-engine")


def test_init_delegates_withdrawals_to_the_release_managers_threshold(ws: Path) -> None:
    ctx = open_context(ws)
    delegation = ctx.repository().role("targets").signed.get_delegated_role("withdrawals")
    names = sorted(ctx.trust.key_by_id(k).name for k in delegation.keyids)  # type: ignore[union-attr]
    assert (names, delegation.threshold) == (MANAGERS, 2)  # no CI key, no online key


def test_one_manager_records_a_pending_withdrawal_and_the_second_publishes_it(ws: Path) -> None:
    ctx = open_context(ws)
    first = withdraw.withdraw(ctx, "2.1.0", "bricks revA units on cold boot", "rm1")
    assert (first.status, first.signed_by, first.missing, first.threshold) == ("pending", ["rm1"], ["rm2", "rm3"], 2)
    assert _listed(ctx) == {}  # nothing a device could see yet
    assert release.info(ctx, release.ReleaseRef("t9-engine", "2.1.0")).status == "published"

    second = withdraw.withdraw(ctx, "t9-engine/2.1.0", None, "rm2")
    assert (second.status, second.signed_by, second.missing) == ("withdrawn", ["rm1", "rm2"], [])
    assert _listed(ctx) == {"2.1.0": "bricks revA units on cold boot"}
    state = json.loads(ctx.store.get(release.state_key("t9-engine", "2.1.0")))
    assert state["status"] == "withdrawn" and state["withdrawn"]["signed_by"] == ["rm1", "rm2"]
    assert not ctx.store.exists(withdraw.staged_key("t9-engine", "2.1.0"))
    # the entry names a real target file: a client can download the withdrawal document itself
    tf = ctx.repository().role("withdrawals").signed.targets[layout.withdrawal_path("t9-engine", "2.1.0")]
    doc = json.loads(ctx.store.get(layout.target_key(tf.path, tf.hashes["sha256"])))
    assert (doc["schema"], doc["version"], doc["reason"]) == ("otactl/withdrawal/1", "2.1.0",
                                                              "bricks revA units on cold boot")
    # again: nothing more to sign, the same answer (idempotent)
    assert withdraw.withdraw(ctx, "2.1.0", None, "rm3").status == "withdrawn"
    with pytest.raises(UsageError, match="withdrawn"):
        release.approve(ctx, "2.1.0", "rm3")


@pytest.mark.parametrize(("name", "first", "second", "message"), [
    ("same-manager-twice", ("why", "rm1"), (None, "rm1"), "already signed with key 'rm1'"),
    ("ci-key", ("why", "ci"), None, "key 'ci' cannot sign a withdrawal"),
    ("online-key", ("why", "online"), None, "key 'online' cannot sign a withdrawal"),
    ("no-reason", (None, "rm1"), None, "say why with --reason"),
    ("another-reason", ("why", "rm1"), ("other", "rm2"), "gives the reason 'why'"),
])
def test_refusals_are_usage_errors_and_publish_nothing(ws: Path, name: str, first: tuple[str | None, str],
                                                       second: tuple[str | None, str] | None, message: str) -> None:
    ctx = open_context(ws)
    before = ctx.repository().timestamp.signed.version
    calls = [first] if second is None else [first, second]
    with pytest.raises(UsageError, match=message) as raised:
        for reason, key in calls:
            withdraw.withdraw(ctx, "2.1.0", reason, key)
    assert raised.value.exit_code == ExitCode.USAGE
    assert ctx.repository().timestamp.signed.version == before and _listed(ctx) == {}


def test_an_unknown_release_is_not_found(ws: Path) -> None:
    with pytest.raises(NotFoundError, match=r"9\.9\.9"):
        withdraw.withdraw(open_context(ws), "t9-engine/9.9.9", "why", "rm1")


def test_the_repository_refuses_withdrawals_without_the_threshold(ws: Path) -> None:
    """Bypassing the service: withdrawals metadata signed by the online key, or by one manager of two."""
    ctx = open_context(ws)
    for keys in (["online"], ["rm1"]):
        md = withdraw._propose(ctx, ctx.repository(), release.ReleaseRef("t9-engine", "2.1.0"),
                               ctx.repository().role("withdrawals"), "why")
        for k in keys:
            md.sign(ctx.signers.get(k), append=True)
        repo = ctx.repository()
        repo.put_signed("withdrawals", md)
        with pytest.raises(VerificationError, match=r"role 'withdrawals': .* signatures needed"):
            repo.publish()
        assert not ctx.store.exists(JOURNAL_KEY)
    assert _listed(ctx) == {}


def test_a_pending_withdrawal_made_on_an_older_version_is_proposed_again(ws: Path) -> None:
    ctx = open_context(ws)
    withdraw.withdraw(ctx, "2.1.0", "cold boot", "rm1")
    withdraw.withdraw(ctx, "2.0.0", "old", "rm1")
    withdraw.withdraw(ctx, "2.0.0", None, "rm3")  # publishes withdrawals v2: the 2.1.0 proposal is stale
    again = withdraw.withdraw(ctx, "2.1.0", None, "rm2")
    assert (again.status, again.signed_by, again.reason) == ("pending", ["rm2"], "cold boot")
    assert "must be given again" in again.notes[0] and "rm1" in again.notes[0]
    assert withdraw.withdraw(ctx, "2.1.0", None, "rm1").status == "withdrawn"
    assert _listed(ctx) == {"2.0.0": "old", "2.1.0": "cold boot"}


def test_a_fully_signed_withdrawal_whose_publication_failed_is_published_by_the_next_run(ws: Path) -> None:
    ctx = open_context(ws)
    md = withdraw._propose(ctx, ctx.repository(), release.ReleaseRef("t9-engine", "2.1.0"),
                           ctx.repository().role("withdrawals"), "why")
    for k in ("rm1", "rm2"):
        md.sign(ctx.signers.get(k), append=True)
    ctx.store.put(withdraw.staged_key("t9-engine", "2.1.0"), md.to_bytes())
    assert withdraw.withdraw(ctx, "2.1.0", None, "rm3").status == "withdrawn"
    assert _listed(ctx) == {"2.1.0": "why"}


def test_a_staged_release_can_be_withdrawn_before_it_is_published(ws: Path) -> None:
    """Its staged metadata may already carry the threshold: without a signed withdrawal, whoever
    holds the online key could publish it."""
    ctx = open_context(ws)
    release.build(ctx, load_manifest(MANIFESTS / "t9-engine-2.1.1-config.yaml"))
    withdraw.withdraw(ctx, "2.1.1", "wrong torque map", "rm1")
    assert withdraw.withdraw(ctx, "2.1.1", None, "rm2").status == "withdrawn"
    assert _listed(ctx) == {"2.1.1": "wrong torque map"}
    with pytest.raises(UsageError, match="withdrawn"):
        release.publish(ctx, "2.1.1")


def test_a_workspace_without_the_role_says_so(ws: Path) -> None:
    ctx = open_context(ws)
    ctx.trust.roles.pop("withdrawals")
    with pytest.raises(UsageError, match="no role 'withdrawals'"):
        withdraw.withdraw(ctx, "2.1.0", "why", "rm1")
