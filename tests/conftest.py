"""Fixtures shared by every test. Keep this file to imports; the fixtures live in tests/fixtures/."""

from fixtures.kdf import cheap_key_derivation  # noqa: F401 - pytest fixture (autouse)
from fixtures.s3server import s3_bucket, s3_endpoint  # noqa: F401 - pytest fixtures
