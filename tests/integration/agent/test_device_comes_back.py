"""A device that comes back after a year offline (issue 12, decision 1204).

The repository's clock runs a year behind the wall clock and catches up: the device is made at the
factory at T0 (a year and a month ago) on release A, with the TUF metadata it verified then. Over the
year the root key is rotated three times (each time the old key is retired: it can no longer sign),
the timestamp, snapshot and targets keys once each, and two releases ship: B (only from A) and C (only
from B, with B as its stepping stone). Today the device polls once, over real HTTP with python-tuf's
ngclient, its every cached metadata file long expired (ngclient reads the wall clock; nothing is
monkeypatched): it walks N.root.json in order and installs B, then C.

The negative case: one intermediate root is missing from the server; the device refuses to go on
(no root chain, no update) and stays on A.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nacl.signing
import pytest

from otactl.agent.agent import Agent
from otactl.agent.model import ReleaseDescriptor, SlotManifest
from otactl.agent.state import CONFIG_FILE, DESCRIPTOR_FILE, FIRMWARE_FILE, ActivePointer, DeviceState, Identity
from otactl.app import release as release_svc
from otactl.app.context import Context
from otactl.app.fleet import import_devices
from otactl.app.init import init_workspace
from otactl.app.keys import rotate_key
from otactl.app.policy import publish_policy
from otactl.app.repo import refresh
from otactl.fleet.records import DeviceRecord
from otactl.release.manifest import load_manifest
from otactl.repo import layout
from otactl.repo.client import HttpxFetcher
from otactl.repo.serve import serve_in_thread
from otactl.telemetry.report import format_time

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
PASSPHRASE = "come-back-passphrase"
DEVICE = "t9-back-0001"
MODEL, REV, VARIANT = "t9-engine", "revB", "hp-400"
A, B, C = "2.0.0", "3.0.0", "4.0.0"
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(days=400)


def _manifest(base: Path, version: str, compatible_from: str, stone: str | None) -> Path:
    for rev in ("revA", "revB"):
        (base / f"t9-{rev}-{version}.bin").write_bytes(f"t9 {rev} firmware {version}\n".encode() * 500)
    path = base / f"t9-engine-{version}.yaml"
    path.write_text(
        "schema: otactl/manifest/1\nmodel: t9-engine\n"
        f"version: {version}\nsecurity_version: {int(version[0]) - 1}\n"
        f"firmware:\n  revA: {{file: t9-revA-{version}.bin}}\n  revB: {{file: t9-revB-{version}.bin}}\n"
        "variants:\n  hp-300: {max_hp: 300}\n  hp-400: {max_hp: 400}\n"
        f"compatible_from: [\"{compatible_from}\"]\nstepping_stone: {json.dumps(stone)}\n")
    return path


def _at(ws: Path, when: datetime) -> Context:
    return Context.open(ws, now=when)


def _ship(ws: Path, when: datetime, manifest: Path) -> None:
    m = load_manifest(manifest)
    release_svc.build(_at(ws, when), m)
    release_svc.approve(_at(ws, when), f"{m.model}/{m.version}", "release-manager")
    release_svc.publish(_at(ws, when), f"{m.model}/{m.version}")


def _policy(ws: Path, when: datetime, release: str) -> None:
    publish_policy(_at(ws, when), {
        "model": MODEL, "rollout_id": f"back-{release}", "salt": "back", "baseline": release,
        "rings": [{"name": "all", "selector": {"percent": 100}, "release": release}]})


def _factory(ctx: Context, device_dir: Path, key: nacl.signing.SigningKey) -> None:
    """What the factory leaves on a device at T0: release A in slot a, root v1 as its trust anchor,
    and the TUF metadata it verified then (ngclient's cache: one file per role, as ngclient names them)."""
    root_v1 = ctx.store.get(layout.metadata_key("root", 1))
    device = DeviceState.provision(device_dir, Identity(DEVICE, MODEL, REV), root_v1, key)
    repo = ctx.repository()
    cache = device.tuf_dir / "metadata"
    cache.mkdir(parents=True)
    (cache / "root.json").write_bytes(root_v1)
    (cache / "timestamp.json").write_bytes(ctx.store.get(layout.metadata_key("timestamp", None)))
    (cache / "snapshot.json").write_bytes(ctx.store.get(layout.metadata_key("snapshot", repo.snapshot.signed.version)))
    for entry, meta in repo.snapshot.signed.meta.items():
        name = entry.removesuffix(".json")
        if name in ("targets", "releases", "rollouts", "devices", "withdrawals") or name == repo.bin_for(
                layout.device_path(DEVICE)):
            (cache / entry).write_bytes(ctx.store.get(layout.metadata_key(name, meta.version)))

    def target(path: str) -> bytes:
        found = repo.find_target(path)
        assert found is not None, path
        return ctx.store.get(layout.target_key(path, found[1].hashes["sha256"]))

    descriptor_bytes = target(layout.release_path(MODEL, A))
    desc = ReleaseDescriptor.from_bytes(descriptor_bytes, "A")
    slot = device.clear_slot("a")
    (slot / FIRMWARE_FILE).write_bytes(target(desc.firmware[REV].target))
    (slot / CONFIG_FILE).write_bytes(target(desc.configs[VARIANT].target))
    (slot / DESCRIPTOR_FILE).write_bytes(descriptor_bytes)
    device.write_manifest("a", SlotManifest(MODEL, A, VARIANT, REV, desc.security_version, desc.firmware[REV],
                                            desc.configs[VARIANT], format_time(T0)))
    device.set_active(ActivePointer("a"))


@dataclass(frozen=True)
class Year:
    ws: Path
    device: Path
    roots: int  # the last root version


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Year]:
    base = tmp_path_factory.mktemp("come-back")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
        ws = base / "ws"
        init_workspace(ws, store_url=None, endpoint_url=None, release_managers=["release-manager"], approvals=1,
                       bin_bit_length=2, now=T0, shared_passphrase=True)
        _ship(ws, T0, ROOT / "manifests" / f"t9-engine-{A}.yaml")
        key = nacl.signing.SigningKey(hashlib.sha256(DEVICE.encode()).digest())
        record = DeviceRecord(DEVICE, MODEL, REV, VARIANT, "eu", (), bytes(key.verify_key).hex())
        import_devices(_at(ws, T0), [record], "factory")
        _policy(ws, T0, A)
        _factory(_at(ws, T0), base / "device", key)

        images = base / "images"
        images.mkdir()
        day = T0
        for offset, step in [(30, "root"), (60, "timestamp"), (90, "root"), (120, "snapshot"), (150, "B"),
                             (200, "targets"), (250, "root"), (300, "C"), (330, "policy-B"), (340, "offline"),
                             (370, "policy-C")]:
            day = T0 + timedelta(days=offset)
            if step == "B":
                _ship(ws, day, _manifest(images, B, "2.0.*", None))
            elif step == "C":
                _ship(ws, day, _manifest(images, C, "3.0.*", B))
            elif step == "offline":  # `repo refresh` warned (exit 4); the offline keys re-sign what lapses
                assert {r.role for r in refresh(_at(ws, day)).expiring_offline} >= {"withdrawals"}
                refresh(_at(ws, day), offline=True)
                assert refresh(_at(ws, day)).expiring_offline == []
            elif step.startswith("policy-"):
                _policy(ws, day, {"B": B, "C": C}[step.removeprefix("policy-")])
            else:
                rotate_key(_at(ws, day), step, None)
            refresh(_at(ws, day))  # the cron job that keeps the online roles signed
        refresh(_at(ws, NOW), force=True)
        ctx = _at(ws, NOW)
        roots = ctx.repository().root.signed.version
        yield Year(ws, base / "device", roots)


def _copy(year: Year, tmp_path: Path) -> tuple[Context, Path]:
    ws = tmp_path / "ws"
    shutil.copytree(year.ws, ws, symlinks=True)
    device = tmp_path / "device"
    shutil.copytree(year.device, device, symlinks=True)
    return Context.open(ws, now=NOW), device


def _cached_expiries(device: Path) -> dict[str, datetime]:
    out = {}
    for path in sorted((device / "tuf" / "metadata").glob("*.json")):
        expires = json.loads(path.read_bytes())["signed"]["expires"]
        out[path.name] = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    return out


def test_a_device_back_after_a_year_walks_the_roots_and_the_stepping_stones(year: Year, tmp_path: Path) -> None:
    ctx, device = _copy(year, tmp_path)
    cached = _cached_expiries(device)
    assert {"root.json", "timestamp.json", "snapshot.json", "targets.json", "releases.json"} <= set(cached)
    assert all(expires < NOW for expires in cached.values()), cached  # everything it holds has lapsed
    assert year.roots >= 5  # root key x3, timestamp, snapshot, targets: one root each... at least five
    root_v1 = json.loads(ctx.store.get(layout.metadata_key("root", 1)))["signed"]
    root_now = json.loads(ctx.store.get(layout.metadata_key("root", None)))["signed"]
    assert not set(root_v1["roles"]["root"]["keyids"]) & set(root_now["roles"]["root"]["keyids"])
    for role in ("timestamp", "snapshot", "targets"):
        assert root_v1["roles"][role]["keyids"] != root_now["roles"][role]["keyids"], role

    server, url = serve_in_thread(ctx.store)
    requested: list[str] = []
    try:
        http = httpx.Client(event_hooks={"request": [lambda r: requested.append(r.url.path)]})
        agent = Agent(device, url, None, fetcher=HttpxFetcher(http))
        result = agent.check_and_update(NOW)
        agent.close()
        http.close()
    finally:
        server.shutdown()
        server.server_close()
    assert (result.outcome, result.active, result.target) == ("committed", C, C), result.detail
    roots = [p.rsplit("/", 1)[1] for p in requested if p.endswith(".root.json")]
    assert roots[:year.roots] == [f"{n}.root.json" for n in range(2, year.roots + 1)] + [f"{year.roots + 1}.root.json"]
    trusted = json.loads((device / "tuf" / "metadata" / "root.json").read_bytes())["signed"]
    assert trusted["version"] == year.roots
    # through the stone: B was installed first (it is in the other slot now), then C
    state = DeviceState(device)
    assert state.manifest(state.active().slot) is not None
    other = "a" if state.active().slot == "b" else "b"
    previous = state.manifest(other)
    assert previous is not None and previous.version == B
    firmware = [p for p in requested if p.startswith("/targets/firmware/")]
    assert [f"/{B}/" in p for p in firmware] == [True, False] and f"/{C}/" in firmware[1]


def test_a_device_refuses_when_an_intermediate_root_is_missing(year: Year, tmp_path: Path) -> None:
    ctx, device = _copy(year, tmp_path)
    missing = 3
    assert missing < year.roots
    ctx.store.delete(layout.metadata_key("root", missing))
    assert not ctx.store.exists(layout.metadata_key("root", missing))
    before = sorted(str(p.relative_to(device)) for p in device.rglob("slot-*/*"))
    server, url = serve_in_thread(ctx.store)
    try:
        agent = Agent(device, url, None)
        result = agent.check_and_update(NOW)
        agent.close()
    finally:
        server.shutdown()
        server.server_close()
    assert result.outcome == "error" and result.active == A, result
    assert "refused by the TUF client" in result.detail
    trusted = json.loads((device / "tuf" / "metadata" / "root.json").read_bytes())["signed"]
    assert trusted["version"] == missing - 1  # it walked as far as the chain went, and no further
    assert sorted(str(p.relative_to(device)) for p in device.rglob("slot-*/*")) == before
