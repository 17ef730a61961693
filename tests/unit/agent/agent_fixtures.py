"""Agent unit-test fixtures: one published repository per module (init, releases 2.0.0, 2.1.0 and
2.2.0 with stepping stone 2.1.0, a three-device fleet), copied per test; devices read it through
ngclient's store fetcher (no HTTP)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from otactl.agent.agent import Agent
from otactl.agent.state import DeviceState, Identity
from otactl.app.fleet import import_devices
from otactl.app.policy import publish_policy
from otactl.fleet.records import DeviceRecord
from otactl.repo.client import StoreFetcher
from otactl.sim.scenario import ReleaseSpec
from otactl.sim.workspace import SimWorkspace

PASSPHRASE = "agent-unit-test-passphrase"
MANIFESTS = Path(__file__).resolve().parents[3] / "manifests"
MODEL = "t9-engine"
STONE_MANIFEST = """\
schema: otactl/manifest/1
model: t9-engine
version: 2.2.0
security_version: 2
firmware:
  revA: {from_release: 2.1.0}
  revB: {from_release: 2.1.0}
variants:
  hp-300: {max_hp: 300, torque_limit_nm: 1200, boost_map: eco, storage: v2}
  hp-400: {max_hp: 400, torque_limit_nm: 1550, boost_map: standard, storage: v2}
  hp-500: {max_hp: 500, torque_limit_nm: 1950, boost_map: sport, storage: v2}
compatible_from: ["2.1.*"]
stepping_stone: 2.1.0
notes: needs the 2.1.0 storage migration first
"""
# device id -> (hardware revision, variant, tags)
DEVICES = {"dev-300": ("revA", "hp-300", ()), "dev-400": ("revB", "hp-400", ()),
           "dev-lab": ("revB", "hp-500", ("lab",))}


def device_key(device_id: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(f"agent-test:{device_id}".encode()).digest())


def record(device_id: str, **changes: Any) -> DeviceRecord:
    rev, variant, tags = DEVICES[device_id]
    fields: dict[str, Any] = {"device_id": device_id, "model": MODEL, "hardware_revision": rev, "variant": variant,
                              "region": "eu", "tags": tags, "public_key": bytes(device_key(device_id).verify_key).hex()}
    fields.update(changes)
    return DeviceRecord(**fields)


@pytest.fixture(scope="module")
def repo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("agent-repo")
    (base / "m").mkdir()
    (base / "m" / "t9-engine-2.2.0.yaml").write_text(STONE_MANIFEST)
    specs = [ReleaseSpec(MANIFESTS / "t9-engine-2.0.0.yaml", "2.0.0"),
             ReleaseSpec(MANIFESTS / "t9-engine-2.1.0.yaml", "2.1.0"),
             ReleaseSpec(base / "m" / "t9-engine-2.2.0.yaml", "2.2.0")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
        ws = SimWorkspace.create(base / "ws", bin_bits=1)
        assert ws.ensure_releases(specs) == ["2.0.0", "2.1.0", "2.2.0"]
        import_devices(ws.ctx, [record(d) for d in DEVICES], "test fleet")
    return base / "ws"


@dataclass
class Repo:
    ws: SimWorkspace
    devices_dir: Path

    def publish(self, rings: list[tuple[str, dict[str, Any], str]], *, baseline: str = "2.0.0",
                bad: list[str] | None = None, min_sv: int = 0) -> None:
        publish_policy(self.ws._fresh(), {
            "model": MODEL, "rollout_id": "test", "salt": "s", "baseline": baseline,
            "rings": [{"name": n, "selector": sel, "release": rel} for n, sel, rel in rings],
            "bad_releases": bad or [], "min_security_version": min_sv})

    def all_on(self, release: str, **kw: Any) -> None:
        self.publish([("all", {"percent": 100}, release)], **kw)

    def set_record(self, device_id: str, **changes: Any) -> None:
        import_devices(self.ws._fresh(), [record(device_id, **changes)], "test")

    def provision(self, device_id: str, key: nacl.signing.SigningKey | None = None) -> Path:
        rev = DEVICES[device_id][0]
        path = self.devices_dir / device_id
        DeviceState.provision(path, Identity(device_id, MODEL, rev), self.ws.trust_anchor(),
                              key or device_key(device_id))
        return path

    def agent(self, device_id: str, **kw: Any) -> Agent:
        path = self.devices_dir / device_id
        if not path.exists():
            self.provision(device_id)
        return Agent(path, StoreFetcher.PREFIX, None, fetcher=StoreFetcher(self.ws.ctx.store), **kw)


@pytest.fixture
def repo(repo_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Repo]:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    shutil.copytree(repo_template, tmp_path / "ws", symlinks=True)
    yield Repo(SimWorkspace.open(tmp_path / "ws"), tmp_path / "devices")
