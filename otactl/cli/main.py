"""Entry point. Sub-command modules import their heavy libraries inside the commands."""

from __future__ import annotations

import sys

import typer

from otactl.cli import _groups
from otactl.errors import ExitCode, OtactlError

app = typer.Typer(
    name="otactl",
    help="Ship signed firmware and configuration to a fleet through canary rings and health gates.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
_groups.register(app)


def run() -> None:
    """Console script: turn OtactlError into one line on stderr and its documented exit code.

    Usage errors are typer's own (exit 2); anything else escaping is a bug and shows a traceback
    (without locals, so no secret reaches it).
    """
    try:
        app()
    except OtactlError as err:
        from otactl.cli.render import print_error

        print_error(err)
        sys.exit(int(err.exit_code))
    except KeyboardInterrupt:
        print("otactl: interrupted", file=sys.stderr)
        sys.exit(int(ExitCode.ERROR))


if __name__ == "__main__":
    run()
