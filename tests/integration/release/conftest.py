"""Release integration fixtures: workspaces built by the real CLI once per module, copied per test.

- ``fresh_ws``: ``otactl init`` only.
- ``published_ws``: plus t9-engine 2.0.0 built, approved, published, and the example fleet imported.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import fixtures.repo as repo_fixtures
import pytest
from fixtures.repo import ok
from release_cli_parts import INVENTORY, MANIFESTS, otactl, ship

workspace_template = repo_fixtures.workspace_template
workspace = repo_fixtures.workspace


@pytest.fixture(scope="module")
def published_template(workspace_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("published") / "ws"
    shutil.copytree(workspace_template, dest, symlinks=True)
    ship(dest, MANIFESTS / "t9-engine-2.0.0.yaml")
    ok(otactl(dest, "fleet", "import", str(INVENTORY)))
    return dest


@pytest.fixture
def fresh_ws(workspace: Path) -> Path:
    return workspace


@pytest.fixture
def published_ws(published_template: Path, workspace: Path) -> Path:
    shutil.rmtree(workspace)
    shutil.copytree(published_template, workspace, symlinks=True)
    return workspace
