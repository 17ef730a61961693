"""Entry point. Sub-command modules import their heavy libraries inside the commands.

``run()`` owns every way out of the program (decision 1101):

- an :class:`OtactlError`: one ``otactl: error: ...`` line (and a hint) on stderr, its exit code;
- a usage error from typer/click (missing argument, bad option): the same one line, exit 2;
- Ctrl-C: ``otactl: interrupted``, exit 130 (128 + SIGINT);
- anything else is a bug: a plain traceback (no locals, so no secret reaches it).
"""

from __future__ import annotations

import os
import sys

import typer

from otactl.cli import _groups
from otactl.errors import ExitCode, OtactlError

INTERRUPTED = 130  # 128 + SIGINT, what shells report for a process that Ctrl-C ended

app = typer.Typer(
    name="otactl",
    help="Ship signed firmware and configuration to a fleet through canary rings and health gates.\n\n"
         "\b\nExample:\n"
         "  otactl init fleet-repo && cd fleet-repo\n"
         "  otactl release build manifests/t9-engine-2.1.0.yaml\n"
         "  otactl rollout plan t9-engine 2.1.0 --plan canary/default.yaml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"otactl {version('otactl')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            from otactl import __version__

            print(f"otactl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                      help="Print otactl's version and exit."),
) -> None:
    pass


_groups.register(app)


def run() -> None:
    """Console script: every error is one line on stderr with its documented exit code."""
    from typer._click import exceptions as click_exc  # typer vendors click: its exceptions live here

    if os.environ.get("NO_COLOR"):
        from typer import rich_utils

        rich_utils.COLOR_SYSTEM = None  # typer's help: no escape sequence at all, not just no colour
    try:
        code = app(prog_name="otactl", standalone_mode=False)
    except OtactlError as err:
        from otactl.cli.render import print_error

        print_error(err)
        sys.exit(int(err.exit_code))
    except click_exc.NoArgsIsHelpError as err:  # `otactl` or `otactl rollout` alone: the help
        text = err.format_message()
        if text.strip():  # typer's rich help printed itself already
            err.show()
        sys.exit(err.exit_code)
    except click_exc.UsageError as err:
        from otactl.cli.render import print_error_text

        hint = None
        if err.ctx is not None and err.ctx.command.get_help_option(err.ctx) is not None:
            hint = f"see '{err.ctx.command_path} --help'"
        print_error_text(err.format_message(), hint)
        sys.exit(int(ExitCode.USAGE))
    except click_exc.ClickException as err:  # e.g. a file click could not open
        from otactl.cli.render import print_error_text

        print_error_text(err.format_message())
        sys.exit(err.exit_code)
    except typer.Abort:  # end of input at a prompt
        from otactl.cli.render import print_error_text

        print_error_text("aborted: no input")
        sys.exit(int(ExitCode.ERROR))
    except KeyboardInterrupt:  # outside a command (while importing)
        code = INTERRUPTED
    if code == INTERRUPTED:  # typer turns Ctrl-C inside a command into exit 130, silently
        print("otactl: interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()
