"""Fleet unit-test fixtures: a workspace (real CLI init, 16 bins) with t9-engine 2.0.0 published."""

from __future__ import annotations

import shutil
from pathlib import Path

import fixtures.repo as repo_fixtures
import pytest
from fleet_parts import MANIFESTS

from otactl.app import release
from otactl.app.context import Context
from otactl.release.manifest import load_manifest

workspace_template = repo_fixtures.workspace_template
workspace = repo_fixtures.workspace


@pytest.fixture(scope="module")
def fleet_template(workspace_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("fleet") / "ws"
    shutil.copytree(workspace_template, dest, symlinks=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTACTL_KEY_PASSPHRASE", repo_fixtures.PASSPHRASE)
        ctx = Context.open(dest)
        m = load_manifest(MANIFESTS / "t9-engine-2.0.0.yaml")
        release.build(ctx, m)
        release.approve(ctx, "2.0.0", "release-manager")
        release.publish(ctx, "2.0.0")
    return dest


@pytest.fixture
def fleet_ws(fleet_template: Path, workspace: Path) -> Path:
    """A private copy of ``fleet_template`` (``workspace`` sets the passphrase and clears OTACTL_*)."""
    shutil.rmtree(workspace)
    shutil.copytree(fleet_template, workspace, symlinks=True)
    return workspace
