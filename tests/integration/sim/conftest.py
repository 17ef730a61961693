"""Simulator fixtures (sim_fixtures.py)."""

from sim_fixtures import published, published_template  # noqa: F401 - pytest fixtures
