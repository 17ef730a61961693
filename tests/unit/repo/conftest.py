"""Repository test fixtures (tests/fixtures/repo.py): a module-wide initialised workspace, copied per test."""

from fixtures.repo import workspace, workspace_template  # noqa: F401 - pytest fixtures
