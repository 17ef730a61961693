"""Output helpers: results to stdout, diagnostics to stderr, colour only on a TTY (NO_COLOR honoured).

Tables are rich tables on a terminal (cells wrap, never cut) and plain tab-separated lines when
stdout is piped or redirected: a header line, then one line per row, full values (decision 1101).
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from typing import Any

from otactl.errors import OtactlError

JSON_SCHEMA_VERSION = 1


class Output(str, Enum):
    table = "table"
    json = "json"


def no_color() -> bool:
    """https://no-color.org: set and not empty means no colour and no text styles (as rich reads it)."""
    return bool(os.environ.get("NO_COLOR"))


def _color() -> bool:
    return sys.stderr.isatty() and not no_color()


def error_line(message: str) -> str:
    """One line, whatever the message holds (click's messages may carry newlines)."""
    return " ".join(message.split())


def print_error(err: OtactlError) -> None:
    print_error_text(err.message, err.hint)


def print_error_text(message: str, hint: str | None = None) -> None:
    prefix = "\x1b[31merror\x1b[0m" if _color() else "error"
    print(f"otactl: {prefix}: {error_line(message)}", file=sys.stderr)
    if hint:
        print(f"  hint: {error_line(hint)}", file=sys.stderr)


def info(message: str) -> None:
    print(message, file=sys.stderr)


def json_text(kind: str, data: Any) -> str:
    """The versioned, stable JSON document ``otactl/<kind>/1``, as text."""
    doc = {"schema": f"otactl/{kind}/{JSON_SCHEMA_VERSION}", **data}
    return json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"


def emit_json(kind: str, data: Any) -> None:
    """Versioned, stable JSON on stdout."""
    sys.stdout.write(json_text(kind, data))


def console(*, stderr: bool = False) -> Any:
    """A rich console; with NO_COLOR it writes no escape sequence at all (``color_system=None``)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if no_color() or not stream.isatty():
        return Console(stderr=stderr, color_system=None, highlight=False)
    return Console(stderr=stderr, highlight=False)


_tables_written: list[Any] = []  # the streams that already hold a table (one command: one stream)


def _plain(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A rich table on a TTY; piped, the title goes to stderr and stdout gets header + rows, tab-separated."""
    if not sys.stdout.isatty():
        info(title)
        out = sys.stdout
        if any(s is out for s in _tables_written):
            out.write("\n")  # tables of one command stay apart
        out.write("\t".join(_plain(c) for c in columns) + "\n")
        for r in rows:
            out.write("\t".join(_plain(v) for v in r) + "\n")
        out.flush()
        _tables_written.append(out)
        return
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c, overflow="fold")  # wrap a long key id or date, never cut it
    for r in rows:
        t.add_row(*[("" if v is None else str(v)) for v in r])
    console().print(t)
