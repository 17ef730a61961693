"""Director layout (decision 0407): a fleet change that crashes at any write leaves every device on its
old chain or its new one, never a broken one; `otactl repo publish` clears the writer lock it leaves, and
the same import run again makes the index consistent with the chains (`fleet verify`)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from fixtures.repo import CrashingStore, SimulatedCrash

from otactl.app import director as director_app
from otactl.app import director_served
from otactl.app.context import Context, utcnow
from otactl.app.fleet import import_devices
from otactl.app.init import init_workspace
from otactl.app.repo import publish_pending
from otactl.fleet import index as fleet_index
from otactl.fleet.records import DeviceRecord
from otactl.repo import director, layout
from otactl.repo.repository import JOURNAL_KEY

IDS = [f"dev-{i}" for i in range(4)]


def _records(tag: str) -> list[DeviceRecord]:
    return [DeviceRecord(d, "m", "revA", "base", "eu", (tag,), hashlib.sha256(d.encode()).hexdigest())
            for d in IDS]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("director") / "ws"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTACTL_KEY_PASSPHRASE", "director-crash-test")
        init_workspace(path, store_url=None, endpoint_url=None, release_managers=["release-manager"],
                       approvals=1, bin_bit_length=0, now=utcnow(), shared_passphrase=True, device_layout="director")
        import_devices(Context.open(path), _records("before"), "factory")
    return path


def _chains(ctx: Context) -> dict[str, tuple[int, str]]:
    root = director_app.root(ctx)
    out = {}
    for device_id in IDS:
        version, tf = director.read_chain(root, device_id, ctx.store.get)  # raises on a broken chain
        assert tf is not None
        out[device_id] = (version, tf.hashes["sha256"])
    return out


# every write of a 4-device change: 4 records, 8 chain files, 4 timestamps, the lock, index shards
# (chunks of 2: the write passes and index saves of a large import, on 4 devices)
@pytest.mark.parametrize("chunk", [2, 20_000])
@pytest.mark.parametrize("writes_allowed", [0, 1, 3, 5, 9, 13, 15, 17, 19])
def test_a_crash_at_any_write_leaves_whole_chains_and_running_again_completes(
        template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writes_allowed: int, chunk: int) -> None:
    monkeypatch.setattr(director_app, "CHUNK", chunk)
    ws = tmp_path / "ws"
    shutil.copytree(template, ws, symlinks=True)
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", "director-crash-test")
    ctx = Context.open(ws)
    before = _chains(ctx)
    crashing = Context(ctx.workspace, ctx.trust, CrashingStore(ctx.store, writes_allowed), ctx.signers, ctx.now)
    with pytest.raises(SimulatedCrash):
        import_devices(crashing, _records("after"), "inventory")
    middle = _chains(Context.open(ws))  # every chain verifies: old or new, never broken
    for device_id, (version, _) in middle.items():
        assert version in (before[device_id][0], before[device_id][0] + 1)

    publish_pending(Context.open(ws))  # clears the lock a crash left (nothing to replay)
    assert not Context.open(ws).store.exists(JOURNAL_KEY)
    import_devices(Context.open(ws), _records("after"), "inventory")
    after = Context.open(ws)
    checked, problems = director_app.verify(after)
    assert (checked, problems) == (len(IDS), [])
    for device_id, (version, _) in _chains(after).items():
        assert version >= middle[device_id][0]  # never below what a device may have seen
        row = director_app.Index(after).get(device_id)
        assert row is not None and row.tags == ("after",) and row.version == version


# ------------------------------------------------------- chains signed on request (decision 0408)
@pytest.fixture(scope="module")
def served_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("director-served") / "ws"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTACTL_KEY_PASSPHRASE", "director-crash-test")
        init_workspace(path, store_url=None, endpoint_url=None, release_managers=["release-manager"],
                       approvals=1, bin_bit_length=0, now=utcnow(), shared_passphrase=True,
                       device_layout="director-served")
        import_devices(Context.open(path), _records("before"), "factory")
    return path


def _served_chains(ctx: Context) -> dict[str, tuple[int, str]]:
    """Each device's chain as the service signs it now, verified as its client would, and the record
    the service hands out for it checked against that chain."""
    from otactl.app.director_served import ChainService

    service = ChainService(ctx)

    def get(key: str) -> bytes:
        data = service.get(key)
        assert data is not None, key
        return data

    root = director_app.root(ctx)
    out = {}
    for device_id in IDS:
        version, tf = director.read_chain(root, device_id, get)
        assert tf is not None
        tf.verify_length_and_hashes(get(layout.target_key(tf.path, tf.hashes["sha256"])))
        out[device_id] = (version, tf.hashes["sha256"])
    return out


# the lock, then per index shard its packs and the shard, then the lock again
SERVED_WRITES = 2 + len({fleet_index.shard_of(d) for d in IDS}) + len({director_served.pack_of(d) for d in IDS})


def test_a_served_change_writes_the_lock_then_a_pack_and_an_index_shard_per_shard(
        served_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(served_template, ws, symlinks=True)
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", "director-crash-test")
    ctx = Context.open(ws)
    store = CrashingStore(ctx.store, None)
    import_devices(Context(ctx.workspace, ctx.trust, store, ctx.signers, ctx.now), _records("after"), "inventory")
    assert len(store.writes) == SERVED_WRITES and store.writes[0] == store.writes[-1] == JOURNAL_KEY
    packs: list[str] = []
    for key in store.writes[1:-1]:  # each shard's packs, then the shard (its commit point)
        if key.startswith("director/records/"):
            packs.append(key)
            continue
        assert key.startswith("director/index/") and packs, store.writes
        assert {p.rpartition("/")[2][:2] for p in packs} == {key.rpartition("/")[2][:2]}, store.writes
        packs = []
    assert packs == []
    assert not [k for k in ctx.store.list("") if k.startswith(("director/devices/", "targets/devices/"))]


@pytest.mark.parametrize("writes_allowed", range(SERVED_WRITES))
def test_a_crash_at_any_served_write_leaves_devices_on_whole_chains_and_running_again_completes(
        served_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writes_allowed: int) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(served_template, ws, symlinks=True)
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", "director-crash-test")
    ctx = Context.open(ws)
    before = _served_chains(ctx)
    crashing = Context(ctx.workspace, ctx.trust, CrashingStore(ctx.store, writes_allowed), ctx.signers, ctx.now)
    with pytest.raises(SimulatedCrash):
        import_devices(crashing, _records("after"), "inventory")
    middle = _served_chains(Context.open(ws))  # every device: its old chain and record, or its new ones
    for device_id, (version, _) in middle.items():
        assert version in (before[device_id][0], before[device_id][0] + 1)

    publish_pending(Context.open(ws))  # clears the lock a crash left
    import_devices(Context.open(ws), _records("after"), "inventory")
    after = Context.open(ws)
    assert director_app.verify(after) == (len(IDS), [])
    for device_id, (version, _) in _served_chains(after).items():
        assert version >= middle[device_id][0]
        row = director_app.Index(after).get(device_id)
        assert row is not None and row.tags == ("after",) and row.version == version
