"""Signed withdrawal end to end (decision 0502): a real device agent (python-tuf ngclient over HTTP on
127.0.0.1) refuses a withdrawn release that a policy signed by the online key points it at, says so
in its reports, and someone holding only the online keys can neither remove the withdrawal nor roll
it back."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agent_it_fixtures import Served
from test_agent_http import make_device
from tuf.api.metadata import Metadata, Targets

from otactl.agent.agent import Agent
from otactl.app import withdraw
from otactl.app.context import Context
from otactl.repo import layout
from otactl.repo.repository import meta_file, to_bytes
from otactl.sim.ingest import running_ingest

pytestmark = pytest.mark.integration


def _online_only_publish(ctx: Context, withdrawals: Metadata[Targets] | None, version: int) -> None:
    """What someone holding only the online keys can publish: ``withdrawals`` metadata of their own
    (or, with None, an older genuine ``version``) listed in a new snapshot and timestamp they sign."""
    online = ctx.signers.get("online")
    store = ctx.store
    ts = Metadata.from_bytes(store.get(layout.metadata_key("timestamp", None)))
    snap = Metadata.from_bytes(store.get(layout.metadata_key("snapshot", ts.signed.snapshot_meta.version)))
    if withdrawals is not None:
        store.put(layout.metadata_key("withdrawals", version), to_bytes(withdrawals))
    data = store.get(layout.metadata_key("withdrawals", version))
    snap.signed.meta["withdrawals.json"] = meta_file("withdrawals", version, data)
    snap.signed.version += 1
    snap.signatures.clear()
    snap.sign(online)
    snap_bytes = to_bytes(snap)
    store.put(layout.metadata_key("snapshot", snap.signed.version), snap_bytes)
    ts.signed.snapshot_meta = meta_file("snapshot", snap.signed.version, snap_bytes)
    ts.signed.version += 1
    ts.signatures.clear()
    ts.sign(online)
    store.put(layout.metadata_key("timestamp", None), to_bytes(ts))


def test_a_withdrawn_release_is_refused_whatever_an_online_signed_policy_says(served: Served, tmp_path: Path) -> None:
    path, record = make_device(served, tmp_path, "t9-4100", "revB", "hp-400")
    served.all_on("2.0.0")
    with running_ingest(tmp_path / "t.db", [record]) as ingest:
        agent = Agent(path, served.url, ingest.url)
        assert agent.run_once(datetime.now(UTC)).check.active == "2.0.0"

        result = withdraw.withdraw(served.ws._fresh(), "2.1.0", "bricks revB on cold boot", "release-manager")
        assert result.status == "withdrawn"
        served.all_on("2.1.0")  # the policy is signed by the online key alone
        run = agent.run_once(datetime.now(UTC))
        assert (run.check.outcome, run.check.active, run.check.target) == ("refused", "2.0.0", "2.1.0")
        assert "withdrawn by the release managers (bricks revB on cold boot)" in run.check.detail
        assert agent.device.manifest("b") is None  # nothing of 2.1.0 was downloaded or installed
        # the ingest got the refusal as a signed report
        conn = sqlite3.connect(ingest.db)
        failed = conn.execute("SELECT release, reason FROM reports WHERE event = 'failed'").fetchall()
        conn.close()
        assert len(failed) == 1 and failed[0][0] == "2.1.0" and "withdrawn" in failed[0][1]
        assert run.flush is not None and run.flush.pending == 0
    agent.close()


def test_the_online_keys_alone_cannot_unwithdraw(served: Served, tmp_path: Path) -> None:
    path, _ = make_device(served, tmp_path, "t9-4101", "revB", "hp-400")
    served.all_on("2.0.0")
    agent = Agent(path, served.url, None)
    assert agent.check_and_update(datetime.now(UTC)).active == "2.0.0"
    ctx = served.ws._fresh()
    empty_version = ctx.repository().role("withdrawals").signed.version  # the genuine list before
    withdraw.withdraw(ctx, "2.1.0", "recalled", "release-manager")
    served.all_on("2.1.0")
    assert agent.check_and_update(datetime.now(UTC)).outcome == "refused"  # it has seen the withdrawal
    genuine = ctx.repository().role("withdrawals")

    # 1. a withdrawals list without the entry, signed by the online key: the device refuses the metadata
    forged: Metadata[Targets] = Metadata.from_bytes(to_bytes(genuine))
    forged.signed.targets.clear()
    forged.signed.version += 1
    forged.signed.expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    forged.signatures.clear()
    forged.sign(ctx.signers.get("online"))
    _online_only_publish(ctx, forged, forged.signed.version)
    result = agent.check_and_update(datetime.now(UTC))
    assert (result.outcome, result.active) == ("error", "2.0.0")
    assert "UnsignedMetadataError" in result.detail and "withdrawals" in result.detail

    # 2. the older genuine list (signed by the release managers, without the entry): a rollback
    _online_only_publish(ctx, None, empty_version)
    result = agent.check_and_update(datetime.now(UTC))
    assert (result.outcome, result.active) == ("error", "2.0.0")
    assert "BadVersionNumberError" in result.detail and "withdrawals.json" in result.detail
    assert agent.device.manifest("b") is None  # 2.1.0 never reached a slot

    # the control: the same forged list signed by the release manager is accepted (so 1. tested the keys)
    forged.signatures.clear()
    forged.sign(ctx.signers.get("release-manager"))
    _online_only_publish(ctx, forged, genuine.signed.version + 1)
    assert agent.check_and_update(datetime.now(UTC)).outcome == "committed"
    agent.close()
