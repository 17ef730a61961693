"""Simulator test fixtures: one workspace with 2.0.0 and 2.1.0 published per module, copied per test
(a fresh workspace costs an Argon2id derivation per key)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from otactl.sim.scenario import load_scenario
from otactl.sim.workspace import SimWorkspace

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "examples" / "scenarios"
PASSPHRASE = "sim-test-passphrase"


@pytest.fixture(scope="module")
def published_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim-template") / "ws"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
        ws = SimWorkspace.create(path)
        assert ws.ensure_releases(load_scenario(SCENARIOS / "t9-update.yaml").releases) == ["2.0.0", "2.1.0"]
    return path


@pytest.fixture
def published(published_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the published workspace; its keys unlock with the passphrase in the env."""
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    dest = tmp_path / "ws"
    shutil.copytree(published_template, dest, symlinks=True)
    return dest
