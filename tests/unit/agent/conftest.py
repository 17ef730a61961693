"""Agent unit-test fixtures (agent_fixtures.py): a published repository per module, copied per test."""

from agent_fixtures import repo, repo_template  # noqa: F401 - pytest fixtures
