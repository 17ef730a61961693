"""Options shared by commands."""

from __future__ import annotations

from pathlib import Path

import typer

from otactl.cli.render import Output


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
