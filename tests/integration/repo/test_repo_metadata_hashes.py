"""Hashes where versions are not enough (decision 0503), over HTTP on 127.0.0.1 with ngclient.

Two writers loaded from the same repository both sign version N+1 of the same files; one publishes.
The loser's files are genuinely signed, with the same keys and versions: a mirror that serves them in
place of the winner's is refused because timestamp and snapshot carry their length and sha256.
Each refusal has a control (the same substitution with a version-only entry is accepted), so the
test fails if the hashes are not what stops it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.repo import http_client, initial_root, open_context, served, stage_target
from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, MetaFile

from otactl.app.context import Context
from otactl.repo import layout
from otactl.repo.repository import to_bytes

pytestmark = pytest.mark.integration


def _race(ws: Path) -> tuple[Context, dict[str, bytes], str, str]:
    """Writers A and B from one base; A publishes. Returns B's signed files and both targets."""
    ctx = open_context(ws)
    winner, won = stage_target(ctx, "a")
    loser, lost = stage_target(ctx, "b")
    files = dict(loser.sign_all())  # genuinely signed, never published
    winner.publish()
    return ctx, files, won, lost


def _resign(ctx: Context, snapshot_entry: str | None) -> None:
    """The control: re-sign snapshot (and timestamp) with the online key, dropping one entry's hashes."""
    online = ctx.signers.get("online")
    ts = Metadata.from_bytes(ctx.store.get(layout.metadata_key("timestamp", None)))
    key = layout.metadata_key("snapshot", ts.signed.snapshot_meta.version)
    snap = Metadata.from_bytes(ctx.store.get(key))
    if snapshot_entry is not None:
        snap.signed.meta[snapshot_entry] = MetaFile(snap.signed.meta[snapshot_entry].version)
        snap.signatures.clear()
        snap.sign(online)
        ctx.store.put(key, to_bytes(snap))
    ts.signed.snapshot_meta = MetaFile(ts.signed.snapshot_meta.version)
    ts.signed.version += 1
    ts.signatures.clear()
    ts.sign(online)
    ctx.store.put(layout.metadata_key("timestamp", None), to_bytes(ts))


def test_an_equal_version_snapshot_signed_by_the_same_key_is_refused(workspace: Path, tmp_path: Path) -> None:
    ctx, loser, _, _ = _race(workspace)
    version = Metadata.from_bytes(ctx.store.get(layout.metadata_key("timestamp", None))).signed.snapshot_meta.version
    key = layout.metadata_key("snapshot", version)
    assert key in loser and loser[key] != ctx.store.get(key)  # same name and version, other bytes
    ctx.store.put(key, loser[key])  # what a stale or hostile mirror serves
    with (served(ctx.store) as url, http_client(initial_root(workspace), url, tmp_path / "dev") as (updater, _),
          pytest.raises(tuf_exc.LengthOrHashMismatchError)):
        updater.refresh()

    _resign(ctx, None)  # the control: a timestamp with the version only takes the substitute
    with served(ctx.store) as url, http_client(initial_root(workspace), url, tmp_path / "dev2") as (updater, _):
        updater.refresh()


def test_an_equal_version_releases_role_signed_to_its_threshold_is_refused(workspace: Path, tmp_path: Path) -> None:
    """Two releases staged on one base are both signed to the threshold as releases vN+1; only one
    publishes. Serving the other's metadata would show devices a release set nobody published."""
    ctx, loser, won, lost = _race(workspace)
    version = ctx.repository().role("releases").signed.version
    key = layout.metadata_key("releases", version)
    assert key in loser and loser[key] != ctx.store.get(key)
    ctx.store.put(key, loser[key])
    with served(ctx.store) as url, http_client(initial_root(workspace), url, tmp_path / "dev") as (updater, _):
        updater.refresh()
        with pytest.raises(tuf_exc.LengthOrHashMismatchError):
            updater.get_targetinfo(won)

    _resign(ctx, "releases.json")  # the control: version only, the loser's release set is accepted
    with served(ctx.store) as url, http_client(initial_root(workspace), url, tmp_path / "dev2") as (updater, _):
        updater.refresh()
        assert updater.get_targetinfo(won) is None and updater.get_targetinfo(lost) is not None


def test_which_entries_carry_hashes(workspace: Path) -> None:
    repo = open_context(workspace).repository()
    ts = repo.timestamp.signed.snapshot_meta
    assert ts.length is not None and ts.hashes is not None and set(ts.hashes) == {"sha256"}
    hashed = {n for n, m in repo.snapshot.signed.meta.items() if m.hashes is not None and m.length is not None}
    plain = {n for n, m in repo.snapshot.signed.meta.items() if m.hashes is None and m.length is None}
    assert hashed == {"targets.json", "releases.json", "rollouts.json", "devices.json", "withdrawals.json",
                      "release-index.json"}
    assert plain and all(n.startswith(f"{layout.BIN_PREFIX}-") for n in plain)  # bins: version only


def test_a_repository_published_before_hashes_gets_them_at_its_next_publication(workspace: Path) -> None:
    ctx = open_context(workspace)
    online = ctx.signers.get("online")
    repo = ctx.repository()
    snap = repo.snapshot
    for name, meta in list(snap.signed.meta.items()):
        snap.signed.meta[name] = MetaFile(meta.version)
    snap.signatures.clear()
    snap.sign(online)
    ctx.store.put(layout.metadata_key("snapshot", snap.signed.version), to_bytes(snap))
    assert all(m.hashes is None for m in ctx.repository().snapshot.signed.meta.values())

    repo = ctx.repository()
    repo.edit("rollouts")
    repo.publish()
    after = ctx.repository().snapshot.signed.meta
    for name in ("targets.json", "releases.json", "devices.json", "withdrawals.json"):  # unchanged roles too
        data = ctx.store.get(layout.metadata_key(name.removesuffix(".json"), after[name].version))
        after[name].verify_length_and_hashes(data)
        assert after[name].hashes is not None
