"""Helpers for the release unit tests (importable from test modules; fixtures are in conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]
if str(TESTS) not in sys.path:  # tests/conftest.py normally puts tests/ on the path
    sys.path.insert(0, str(TESTS))

from otactl.app import release  # noqa: E402
from otactl.app.context import Context  # noqa: E402
from otactl.release.manifest import load_manifest  # noqa: E402

REPO_ROOT = TESTS.parent
MANIFESTS = REPO_ROOT / "manifests"


def ship(ctx: Context, manifest: Path, approver: str = "release-manager") -> None:
    """Build, approve with a release manager's key, publish."""
    m = load_manifest(manifest)
    release.build(ctx, m)
    release.approve(ctx, f"{m.model}/{m.version}", approver)
    release.publish(ctx, f"{m.model}/{m.version}")
