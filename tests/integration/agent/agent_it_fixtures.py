"""Agent integration fixtures: a published workspace (2.0.0, 2.1.0) per module, copied per test,
served on 127.0.0.1 by the test setup."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otactl.app.policy import publish_policy
from otactl.repo.serve import serve_in_thread
from otactl.sim.scenario import ReleaseSpec
from otactl.sim.workspace import SimWorkspace

ROOT = Path(__file__).resolve().parents[3]
PASSPHRASE = "agent-it-passphrase"


@pytest.fixture(scope="module")
def agent_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agent-it") / "ws"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
        ws = SimWorkspace.create(path)
        ws.ensure_releases([ReleaseSpec(ROOT / "manifests" / f"t9-engine-{v}.yaml", v) for v in ("2.0.0", "2.1.0")])
    return path


@dataclass
class Served:
    ws: SimWorkspace
    url: str

    def all_on(self, release: str) -> None:
        publish_policy(self.ws._fresh(), {
            "model": "t9-engine", "rollout_id": "it", "salt": "it", "baseline": "2.0.0",
            "rings": [{"name": "all", "selector": {"percent": 100}, "release": release}]})

    def root(self) -> Path:
        return self.ws.path / "signing" / "root.json"

    def publish(self, doc: dict[str, Any]) -> None:
        publish_policy(self.ws._fresh(), doc)


@pytest.fixture
def served(agent_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    shutil.copytree(agent_template, tmp_path / "ws", symlinks=True)
    ws = SimWorkspace.open(tmp_path / "ws")
    server, url = serve_in_thread(ws.ctx.store)
    try:
        yield Served(ws, url)
    finally:
        server.shutdown()
        server.server_close()
