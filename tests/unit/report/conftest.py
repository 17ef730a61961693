"""Report fixtures: a workspace made once by the real CLI (`otactl init`), copied per test."""

from __future__ import annotations

import fixtures.repo as repo_fixtures

workspace_template = repo_fixtures.workspace_template
workspace = repo_fixtures.workspace
