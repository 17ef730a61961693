"""Progress of long work, reported by the services to whoever shows it (decision 1101).

A service says what it is doing and how much there is; it never draws anything::

    with progress.task("writing device records", total=len(records)) as step:
        for record in records:
            ...
            step.advance()

The reporter is taken from a context variable: silent unless a caller installs one with
:func:`reporting` (the CLI does, with a rich bar on a terminal; tests install a recorder). Nothing
here imports rich. A task's ``advance`` may be called from worker threads if the reporter allows it
(the CLI's does); a reporter is looked up once, when the task starts, in the caller's thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, Protocol

Unit = Literal["items", "bytes"]


class Task(Protocol):
    """One piece of long work: ``total`` units (None: not known), done ``advance(n)`` at a time."""

    def advance(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    def start(self, label: str, total: int | None, unit: Unit) -> Task: ...


class _SilentTask:
    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class Silent:
    """The default: nobody is watching."""

    def start(self, label: str, total: int | None, unit: Unit) -> Task:
        return _SilentTask()


_SILENT = Silent()
_reporter: ContextVar[Reporter | None] = ContextVar("otactl_progress", default=None)  # None: silent


@contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Install ``reporter`` for the work done inside the block (in this thread and context)."""
    token = _reporter.set(reporter)
    try:
        yield reporter
    finally:
        _reporter.reset(token)


@contextmanager
def task(label: str, total: int | None = None, unit: Unit = "items") -> Iterator[Task]:
    """Report a piece of work to the current reporter; it is closed when the block ends, however."""
    if total is not None and total < 0:
        raise ValueError(f"progress total must not be negative, got {total}")
    started = (_reporter.get() or _SILENT).start(label, total, unit)
    try:
        yield started
    finally:
        started.close()
