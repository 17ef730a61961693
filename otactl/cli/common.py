"""Options shared by commands."""

from __future__ import annotations

from pathlib import Path

import typer

from otactl.cli.render import Output

WorkspaceOpt = typer.Option(Path(), "--workspace", "-w", envvar="OTACTL_WORKSPACE",
                            help="Release workspace directory.", show_default=True)
OutputOpt = typer.Option(Output.table, "--output", "-o", help="table or json (versioned, stable).")
