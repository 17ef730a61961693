"""Helpers for the hostile-input tests: the loaders under test, their seed files, and a hang guard."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[2]
if str(TESTS) not in sys.path:  # tests/conftest.py normally puts tests/ on the path
    sys.path.insert(0, str(TESTS))

from otactl.errors import ExitCode, OtactlError  # noqa: E402
from otactl.fleet.records import read_inventory  # noqa: E402
from otactl.release.manifest import load_manifest  # noqa: E402
from otactl.rollout.plan import load_plan  # noqa: E402
from otactl.sim.scenario import load_scenario  # noqa: E402

REPO_ROOT = TESTS.parent
HOSTILE = Path(__file__).parent / "hostile"

# target -> the loader a command calls on a user's file
LOADERS: dict[str, Callable[[Path], Any]] = {
    "manifest": load_manifest,
    "plan": load_plan,
    "inventory": read_inventory,
    "scenario": load_scenario,
}

# target -> the repository's own valid files of that kind (the seeds that mutations start from)
SEEDS: dict[str, list[Path]] = {
    "manifest": sorted((REPO_ROOT / "manifests").glob("*.yaml")),
    "plan": sorted((REPO_ROOT / "canary").glob("*.yaml")),
    "inventory": sorted((TESTS / "unit" / "fleet" / "good_inventories").glob("*.yaml")),
    "scenario": sorted((REPO_ROOT / "examples" / "scenarios").glob("*.yaml")),
}

DOCUMENTED_EXIT_CODES = {int(code) for code in ExitCode} - {int(ExitCode.OK)}


class Hung(Exception):
    """Raised by :func:`deadline` when the guarded block runs past its bound."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) if the block runs longer than ``seconds``. A guard, not a timing."""

    def expired(signum: int, frame: Any) -> None:
        raise Hung(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_clear_error(err: BaseException, *, exit_code: ExitCode | None = None) -> None:
    """The error a user may see: an OtactlError, one non-empty line, a documented exit code."""
    assert isinstance(err, OtactlError), f"{type(err).__name__} escaped: {err!r}"
    message = str(err)
    assert message.strip() and "\n" not in message and "\r" not in message, repr(message)
    assert "Traceback" not in message
    assert int(err.exit_code) in DOCUMENTED_EXIT_CODES
    if exit_code is not None:
        assert err.exit_code is exit_code, (err.exit_code, message)


def workspace_for(target: str, root: Path) -> Path:
    """Where a mutated file of ``target`` is written, so that its relative paths still resolve.

    Manifests name images next to them (``images/...``); scenarios name manifests two directories up
    (``../../manifests/...``).
    """
    if target == "manifest":
        (root / "images").mkdir(exist_ok=True)
        for image in (REPO_ROOT / "manifests" / "images").iterdir():
            link = root / "images" / image.name
            if not link.exists():
                link.symlink_to(image)
        return root
    if target == "scenario":
        if not (root / "manifests").exists():
            (root / "manifests").symlink_to(REPO_ROOT / "manifests")
        where = root / "examples" / "scenarios"
        where.mkdir(parents=True, exist_ok=True)
        return where
    return root
