"""Helpers for the fleet unit tests (fixtures are in conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]
if str(TESTS) not in sys.path:  # tests/conftest.py normally puts tests/ on the path
    sys.path.insert(0, str(TESTS))

REPO_ROOT = TESTS.parent
INVENTORY_CSV = REPO_ROOT / "examples" / "fleet" / "inventory.csv"
INVENTORY_YAML = Path(__file__).parent / "good_inventories" / "inventory.yaml"
MANIFESTS = REPO_ROOT / "manifests"
