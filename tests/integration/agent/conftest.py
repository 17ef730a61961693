"""Agent integration fixtures (agent_it_fixtures.py)."""

from agent_it_fixtures import agent_template, served  # noqa: F401 - pytest fixtures
