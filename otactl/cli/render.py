"""Output helpers: results to stdout, diagnostics to stderr, colour only on a TTY (NO_COLOR honoured)."""

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


def _color() -> bool:
    return sys.stderr.isatty() and "NO_COLOR" not in os.environ


def print_error(err: OtactlError) -> None:
    prefix = "\x1b[31merror\x1b[0m" if _color() else "error"
    print(f"otactl: {prefix}: {err.message}", file=sys.stderr)
    if err.hint:
        print(f"  hint: {err.hint}", file=sys.stderr)


def info(message: str) -> None:
    print(message, file=sys.stderr)


def emit_json(kind: str, data: Any) -> None:
    """Versioned, stable JSON on stdout."""
    doc = {"schema": f"otactl/{kind}/{JSON_SCHEMA_VERSION}", **data}
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


def console() -> Any:
    from rich.console import Console

    return Console(no_color="NO_COLOR" in os.environ or not sys.stdout.isatty(), highlight=False)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[("" if v is None else str(v)) for v in r])
    console().print(t)
