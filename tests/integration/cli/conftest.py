"""CLI habit fixtures (tests/fixtures/repo.py): one workspace initialised by the real CLI, copied per test."""

from fixtures.repo import workspace, workspace_template  # noqa: F401 - pytest fixtures
