"""Fixtures of the application-service tests (they live in app_parts.py)."""

from app_parts import template, ws  # noqa: F401 - pytest fixtures
