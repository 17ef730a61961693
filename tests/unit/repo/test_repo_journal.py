"""Crash safety of journaled publication (issue 2).

A store wrapper, passed in through the constructor, dies after N writes in the middle of a
publication. Whatever N, a TUF client sees the old repository or the new one, never a broken one;
every other command refuses and points at ``otactl repo publish``, which completes the job;
publishing again changes nothing. The same holds for key rotations, crashed at every write, and
the new key survives whenever the journaled publication will make the repository trust it.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.repo import (
    CrashingStore,
    SimulatedCrash,
    assert_one_error_line,
    initial_root,
    ok,
    open_context,
    run_otactl,
    store_client,
    tree,
    trusted_version,
)

from otactl.app.context import Context
from otactl.app.keys import generate_key, rotate_key
from otactl.app.repo import publish_pending, refresh
from otactl.errors import StoreError
from otactl.repo import layout
from otactl.repo.repository import JOURNAL_KEY, Repository, replay_journal
from otactl.store.directory import DirectoryStore
from otactl.workspace import HANDOVER_DIR

NEW_PATH = "firmware/m/2.0.0/fw.bin"
NEW_DATA = b"firmware 2.0.0 " * 64
TIMESTAMP = layout.metadata_key("timestamp", None)


def _start_publication(ctx: Context, store: CrashingStore) -> Repository:
    """Upload the new target's bytes (not part of publication), then stage its listing."""
    sha256 = hashlib.sha256(NEW_DATA).hexdigest()
    ctx.store.put(layout.target_key(NEW_PATH, sha256), NEW_DATA)
    repo = Repository.load(store, ctx.trust, ctx.signers, ctx.now)
    repo.add_target("releases", NEW_PATH, len(NEW_DATA), sha256, {"model": "m", "version": "2.0.0"})
    return repo


def _writes_of_one_publication(workspace: Path, ctx: Context) -> list[str]:
    """The store writes a full publication makes, recorded on a throw-away copy of the workspace."""
    probe = workspace.parent / "probe"
    shutil.copytree(workspace, probe)
    probe_ctx = Context(ctx.workspace, ctx.trust, DirectoryStore(probe / "repository"), ctx.signers, ctx.now)
    store = CrashingStore(probe_ctx.store, writes_allowed=None)
    _start_publication(probe_ctx, store).publish()
    return store.writes


def test_publication_writes_the_journal_first_and_timestamp_last(workspace: Path) -> None:
    ctx = open_context(workspace)
    writes = _writes_of_one_publication(workspace, ctx)
    assert writes[0] == JOURNAL_KEY
    assert writes[-1] == JOURNAL_KEY  # removed last
    files = writes[1:-1]
    assert files[-1] == TIMESTAMP
    assert files[-2].endswith(".snapshot.json")
    assert any(f.endswith(".releases.json") for f in files[:-2])


# Where the process dies: a function of the write sequence, and whether clients see the new repository.
CRASH_POINTS = [
    pytest.param(lambda w: 1, False, id="after-journal"),
    pytest.param(lambda w: 2, False, id="after-first-metadata-file"),
    pytest.param(lambda w: w.index(TIMESTAMP), False, id="just-before-timestamp"),
    pytest.param(lambda w: w.index(TIMESTAMP) + 1, True, id="after-timestamp-before-journal-removed"),
]


@pytest.mark.parametrize(("crash_after", "new_visible"), CRASH_POINTS)
def test_crash_mid_publication_leaves_a_whole_repository_and_publish_completes_it(
    workspace: Path,
    tmp_path: Path,
    crash_after: Callable[[list[str]], int],
    new_visible: bool,
) -> None:
    ctx = open_context(workspace)
    writes = _writes_of_one_publication(workspace, ctx)
    client_dir = tmp_path / "device"
    store_client(initial_root(workspace), ctx.store, client_dir).refresh()
    assert trusted_version(client_dir, "timestamp") == 1

    _crash_mid_publication(ctx, crash_after(writes))

    # a device still sees a whole repository: the old one, or (timestamp already moved) the new one
    device = store_client(b"", ctx.store, client_dir)
    device.refresh()
    assert (device.get_targetinfo(NEW_PATH) is not None) is new_visible
    assert trusted_version(client_dir, "timestamp") == (2 if new_visible else 1)

    # loading the repository to change it is refused, pointing at the command that completes it
    with pytest.raises(StoreError) as refused:
        open_context(workspace).repository()
    assert "unfinished publication" in str(refused.value)
    assert "otactl repo publish" in (refused.value.hint or "")

    # `otactl repo publish` (the service behind it) completes it; the device sees the new version
    assert publish_pending(open_context(workspace))[-1] == TIMESTAMP
    assert not ctx.store.exists(JOURNAL_KEY)
    device = store_client(b"", ctx.store, client_dir)
    device.refresh()
    info = device.get_targetinfo(NEW_PATH)
    assert info is not None
    assert Path(device.download_target(info, str(tmp_path / "fw.bin"))).read_bytes() == NEW_DATA
    assert trusted_version(client_dir, "timestamp") == 2

    # publishing again is a no-op
    after = tree(workspace)
    assert publish_pending(open_context(workspace)) == []
    assert tree(workspace) == after


def _crash_mid_publication(ctx: Context, writes_allowed: int) -> None:
    with pytest.raises(SimulatedCrash):
        _start_publication(ctx, CrashingStore(ctx.store, writes_allowed=writes_allowed)).publish()
    assert ctx.store.exists(JOURNAL_KEY)


def test_cli_refuses_while_pending_and_repo_publish_completes(workspace: Path, tmp_path: Path) -> None:
    ctx = open_context(workspace)
    _crash_mid_publication(ctx, writes_allowed=2)
    before = tree(workspace)
    for argv in (["repo", "status"], ["repo", "refresh", "--force"], ["keys", "rotate", "timestamp"]):
        result = run_otactl(*argv, cwd=workspace)
        assert result.returncode == 1, result.stderr
        assert_one_error_line(result, "unfinished publication")
        assert "otactl repo publish" in result.stderr
    assert tree(workspace) == before  # no new key file, no trust change, store untouched

    completed = ok(run_otactl("repo", "publish", cwd=workspace))
    assert "completed a pending publication" in completed.stdout
    device = store_client(initial_root(workspace), ctx.store, tmp_path / "device")
    device.refresh()
    assert device.get_targetinfo(NEW_PATH) is not None

    after = tree(workspace)
    assert "up to date" in ok(run_otactl("repo", "publish", cwd=workspace)).stdout
    assert tree(workspace) == after


def test_crash_while_completing_is_completed_by_the_next_run(workspace: Path, tmp_path: Path) -> None:
    ctx = open_context(workspace)
    with pytest.raises(SimulatedCrash):
        _start_publication(ctx, CrashingStore(ctx.store, writes_allowed=2)).publish()
    with pytest.raises(SimulatedCrash):
        replay_journal(CrashingStore(ctx.store, writes_allowed=1))  # the first replay dies too
    assert ctx.store.exists(JOURNAL_KEY)
    assert replay_journal(ctx.store)[-1] == TIMESTAMP
    assert replay_journal(ctx.store) == []  # idempotent
    device = store_client(initial_root(workspace), ctx.store, tmp_path / "device")
    device.refresh()
    assert device.get_targetinfo(NEW_PATH) is not None


def test_crash_before_the_journal_changes_nothing(workspace: Path, tmp_path: Path) -> None:
    ctx = open_context(workspace)
    sha256 = hashlib.sha256(NEW_DATA).hexdigest()
    ctx.store.put(layout.target_key(NEW_PATH, sha256), NEW_DATA)
    before = tree(workspace)
    with pytest.raises(SimulatedCrash):
        _start_publication(ctx, CrashingStore(ctx.store, writes_allowed=0)).publish()
    assert tree(workspace) == before
    assert publish_pending(open_context(workspace)) == []
    assert open_context(workspace).repository().timestamp.signed.version == 1
    device = store_client(initial_root(workspace), ctx.store, tmp_path / "device")
    device.refresh()
    assert device.get_targetinfo(NEW_PATH) is None


def _fresh_copy(workspace: Path, dest: Path) -> Path:
    shutil.copytree(workspace, dest)
    return dest.resolve()


def _rotation_writes(workspace: Path, role: str) -> list[str]:
    probe = _fresh_copy(workspace, workspace.parent / f"probe-{role}")
    ctx = open_context(probe)
    store = CrashingStore(ctx.store, writes_allowed=None)
    rotate_key(Context(ctx.workspace, ctx.trust, store, ctx.signers, ctx.now), role, None)
    return store.writes


@pytest.mark.parametrize("role", ["timestamp", "targets"])
def test_a_crash_at_any_write_of_a_key_rotation_leaves_devices_and_signers_working(
    workspace: Path, tmp_path: Path, role: str
) -> None:
    """Devices keep updating through the crash, and the completed rotation can still be signed for."""
    writes = _rotation_writes(workspace, role)
    assert len(writes) >= 5
    for crash_after in range(1, len(writes)):
        ws = _fresh_copy(workspace, tmp_path / f"ws-{crash_after}")
        ctx = open_context(ws)
        client_dir = tmp_path / f"device-{crash_after}"
        store_client(initial_root(ws), ctx.store, client_dir).refresh()
        crashing = Context(ctx.workspace, ctx.trust, CrashingStore(ctx.store, crash_after), ctx.signers, ctx.now)
        with pytest.raises(SimulatedCrash):
            rotate_key(crashing, role, None)

        where = f"rotating {role}, crashed after {writes[:crash_after]}"
        try:
            store_client(b"", ctx.store, client_dir).refresh()  # old repository or new, never broken
        except Exception as exc:
            pytest.fail(f"{where}: a device cannot update: {exc!r}")

        assert publish_pending(open_context(ws)), where
        store_client(b"", ctx.store, client_dir).refresh()
        assert trusted_version(client_dir, "root") == 2, where
        try:  # the rotated role can still be signed for: its new key was not lost
            refresh(open_context(ws), force=True)  # re-signs timestamp
            if role == "targets":
                repo = open_context(ws).repository()
                repo.edit("targets")
                repo.publish()
        except Exception as exc:
            pytest.fail(f"{where}: cannot sign after completing the rotation: {exc!r}")
        store_client(b"", ctx.store, client_dir).refresh()


@pytest.mark.parametrize(
    ("writes_allowed", "trusted"),
    [pytest.param(0, False, id="crash-before-the-journal"), pytest.param(1, True, id="crash-after-the-journal")],
)
def test_a_crash_while_adding_a_release_manager_keeps_the_key_exactly_when_it_will_be_trusted(
    workspace: Path, writes_allowed: int, trusted: bool
) -> None:
    ctx = open_context(workspace)
    crashing = Context(ctx.workspace, ctx.trust, CrashingStore(ctx.store, writes_allowed), ctx.signers, ctx.now)
    with pytest.raises(SimulatedCrash):
        generate_key(crashing, "alice", release_manager=True)
    publish_pending(open_context(workspace))

    after = open_context(workspace)
    releases = after.repository().role("targets").signed.delegations.roles["releases"]  # type: ignore[union-attr]
    assert len(releases.keyids) == (3 if trusted else 2)
    assert (workspace / HANDOVER_DIR / "alice" / "alice.key").exists() is trusted
    assert ("alice" in after.trust.keys) is trusted
    if trusted:
        assert after.trust.keys["alice"].keyid in releases.keyids
        assert "alice" in after.trust.roles["releases"].keys
