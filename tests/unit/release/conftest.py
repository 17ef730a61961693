"""Release unit-test fixtures: a workspace made once per module by the real CLI, copied per test.

``released`` goes one step further: t9-engine 2.0.0 built, approved and published in-process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import fixtures.repo as repo_fixtures
import pytest
from release_parts import MANIFESTS, ship

from otactl.app.context import Context

workspace_template = repo_fixtures.workspace_template
workspace = repo_fixtures.workspace
PASSPHRASE = repo_fixtures.PASSPHRASE


@pytest.fixture(scope="module")
def released_template(workspace_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template workspace with t9-engine 2.0.0 published."""
    dest = tmp_path_factory.mktemp("released") / "ws"
    shutil.copytree(workspace_template, dest, symlinks=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
        ship(Context.open(dest), MANIFESTS / "t9-engine-2.0.0.yaml")
    return dest


@pytest.fixture
def released(released_template: Path, workspace: Path) -> Path:
    """A private copy of ``released_template`` (``workspace`` sets the passphrase and clears OTACTL_*)."""
    shutil.rmtree(workspace)
    shutil.copytree(released_template, workspace, symlinks=True)
    return workspace
