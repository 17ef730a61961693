"""Options shared by commands, and the terminal's view of long work (progress, decision 1101)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from otactl import progress as hook
from otactl.cli.render import Output, console, info


def _find_workspace(value: Path | None) -> Path:
    """No --workspace (nor $OTACTL_WORKSPACE): the nearest directory upwards holding otactl.yaml, like git."""
    if value is not None:
        return value
    from otactl.workspace import find_root

    return find_root(Path.cwd())


WorkspaceOpt = typer.Option(None, "--workspace", "-w", envvar="OTACTL_WORKSPACE", callback=_find_workspace,
                            help="Release workspace directory (default: the nearest one holding otactl.yaml, "
                                 "from here upwards).", show_default=False)
OutputOpt = typer.Option(Output.table, "--output", "-o", help="table or json (versioned, stable).")
ModelArg = typer.Argument(..., metavar="MODEL", help="Product model, e.g. t9-engine.")
VersionArg = typer.Argument(..., metavar="VERSION", help="Release version, e.g. 2.1.0.")


# ------------------------------------------------------------------------------------------ progress
def progress_allowed() -> bool:
    """A display that redraws itself only on a terminal that can move the cursor (not piped, not dumb)."""
    return sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"


def may_prompt() -> bool:
    """Could a key's passphrase prompt appear (a TTY on stdin, no passphrase in the environment)?"""
    return sys.stdin.isatty() and not any(k.startswith("OTACTL_KEY_PASSPHRASE") and v for k, v in os.environ.items())


class _Lines:
    """One plain line per piece of work: nothing is redrawn over a passphrase prompt."""

    def start(self, label: str, total: int | None, unit: hook.Unit) -> hook.Task:
        info(f"{label} ..." if total is None or unit == "bytes" else f"{label} ({total}) ...")
        return hook.Silent().start(label, total, unit)


def _count(done: float, total: float | None, unit: hook.Unit) -> str:
    if total is None:
        return ""
    if unit == "bytes":
        from rich.filesize import decimal

        return f"{decimal(int(done))}/{decimal(int(total))}"
    return f"{int(done)}/{int(total)}"


class _RichTask:
    def __init__(self, bar: Any, label: str, total: int | None, unit: hook.Unit) -> None:
        self._bar, self._total, self._unit, self._done = bar, total, unit, 0
        self._lock = threading.Lock()  # a service may advance from its worker threads
        self._id = bar.add_task(label, total=total, count=_count(0, total, unit))

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._done += n
            self._bar.update(self._id, completed=self._done, count=_count(self._done, self._total, self._unit))

    def close(self) -> None:
        self._bar.remove_task(self._id)


class _RichBars:
    """rich.progress on stderr: a spinner for the command, a bar for each piece of work the service reports."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.fields[count]}"), TimeElapsedColumn(),
                            console=console(stderr=True), transient=True)
        self.running = False
        self.label: Any = None

    def _run(self) -> None:
        if not self.running:
            self.bar.start()
            self.running = True

    def relabel(self, text: str) -> None:
        self._run()
        if self.label is None:
            self.label = self.bar.add_task(text, total=None, count="")
        else:
            self.bar.update(self.label, description=text)

    def start(self, label: str, total: int | None, unit: hook.Unit) -> hook.Task:
        self._run()
        return _RichTask(self.bar, label, total, unit)

    def stop(self) -> None:
        if self.running:
            self.bar.stop()


@contextmanager
def progress(label: str | None = None, *, prompts: bool = False) -> Iterator[Callable[[str], None]]:
    """Show long work on stderr, on a terminal only (CI and pipes stay quiet; decision 1101).

    ``label`` is a spinner for the command as a whole (none: only the bars of the work the services
    report through :mod:`otactl.progress`). Yields a function that relabels the spinner. When the work
    may ask for a key's passphrase (``prompts``) and could, every label and piece of work is one plain
    line instead: a redrawn display would overwrite the prompt. rich is imported only when a display
    is shown."""
    if not progress_allowed():
        yield lambda _text: None
        return
    if prompts and may_prompt():
        if label is not None:
            info(f"{label} ...")
        with hook.reporting(_Lines()):
            yield lambda text: info(f"{text} ...")
        return
    bars = _RichBars()
    try:
        if label is not None:
            bars.relabel(label)
        with hook.reporting(bars):
            yield bars.relabel
    finally:
        bars.stop()
