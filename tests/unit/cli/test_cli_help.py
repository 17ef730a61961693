"""Every command's help has an example that parses, every option and argument has help, and
``otactl --help`` stays light (issue 11, terminal habits)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Iterator

import pytest
import typer

from otactl.cli.main import app

ROOT = typer.main.get_command(app)


def _walk(cmd: typer.core.TyperGroup | typer.core.TyperCommand, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], typer.core.TyperCommand | typer.core.TyperGroup]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(ROOT))
IDS = [" ".join(("otactl", *p)) for p, _ in COMMANDS]


def _examples(help_text: str) -> list[str]:
    """The command lines under ``Example:`` (continuation lines joined, ``&&`` split)."""
    lines = help_text.split("Example:", 1)[1].splitlines()
    joined: list[str] = []
    for raw in lines:
        line = raw.strip()
        if not line:
            if joined:
                break
            continue
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line
        else:
            joined.append(line)
    commands = [part for line in joined for part in line.split("&&")]
    return [part.split(" > ")[0].split(" | ")[0].strip() for part in commands]  # no redirections, pipes


def _parse(argv: list[str]) -> None:
    """Resolve sub-commands and parse the leaf's arguments as click would (raises on a bad option)."""
    cmd = ROOT
    name = "otactl"
    while getattr(cmd, "commands", None) and argv and not argv[0].startswith("-"):
        name = argv[0]
        assert name in cmd.commands, f"no command {name!r}"
        cmd, argv = cmd.commands[name], argv[1:]
    with cmd.make_context(name, argv):
        pass


def test_the_walk_sees_every_group_and_command() -> None:
    assert {"otactl rollout report", "otactl keys list", "otactl fleet import", "otactl init",
            "otactl rollout pause", "otactl sim rollout"} <= set(IDS)
    assert len(IDS) > 40


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=IDS)
def test_help_has_an_example_that_parses(path: tuple[str, ...], cmd: typer.core.TyperCommand,
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.delenv("OTACTL_WORKSPACE", raising=False)
    help_text = cmd.help or ""
    assert "Example:" in help_text, f"{' '.join(path) or 'otactl'}: no Example section"
    examples = _examples(help_text)
    assert examples, help_text
    for example in examples:
        words = [w for w in shlex.split(example) if "=" not in w or w.startswith("-")]
        if words[0] == "cd":
            continue
        assert words[0] == "otactl", example
        assert list(path) == words[1:1 + len(path)], f"{example!r} is not an example of {path}"
        _parse(words[1:])


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=IDS)
def test_every_option_and_argument_has_help(path: tuple[str, ...], cmd: typer.core.TyperCommand) -> None:
    missing = [p.name for p in cmd.params if not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"{' '.join(('otactl', *path))}: no help for {missing}"


def test_a_bad_example_would_fail() -> None:
    with pytest.raises(typer._click.exceptions.UsageError):
        _parse(["rollout", "plan", "t9-engine", "2.1.0", "--no-such-option"])
    assert _examples("x\n\n\b\nExample:\n  otactl a \\\n    --b c && otactl d\n\nlater") == \
        ["otactl a  --b c", "otactl d"]


def test_help_imports_nothing_heavy() -> None:
    """`otactl --help` loads typer and the command modules, not TUF, crypto, S3, HTTP or YAML."""
    code = "import sys, otactl.cli.main; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                 .stdout.split())
    heavy = {"tuf", "securesystemslib", "nacl", "boto3", "botocore", "httpx", "yaml", "rich", "otactl.app",
             "otactl.repo", "sqlite3", "argon2"}
    assert not heavy & loaded, sorted(heavy & loaded)
    assert "otactl.cli.rollout" in loaded  # the probe sees the command modules it claims to


# Commands that print no result of their own to render: servers, and a fetch that writes the target's bytes.
NO_OUTPUT_OPTION = {("repo", "serve"), ("repo", "fetch"), ("telemetry", "serve"),
                    ("telemetry", "route")}


@pytest.mark.parametrize(("path", "cmd"), [(p, c) for p, c in COMMANDS if not hasattr(c, "commands")],
                         ids=[i for i, (_, c) in zip(IDS, COMMANDS, strict=True) if not hasattr(c, "commands")])
def test_every_command_that_reports_takes_dash_o(path: tuple[str, ...], cmd: typer.core.TyperCommand) -> None:
    flags = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
    if path in NO_OUTPUT_OPTION:
        assert "-o" not in flags
        return
    assert {"-o", "--output"} <= flags, f"otactl {' '.join(path)}: no -o/--output"
