"""Terminal habits through the real console script (issue 11): piped tables, the workspace from a
subfolder, one-line usage errors, NO_COLOR on a real terminal, Ctrl-C, --version, completion, progress."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.repo import assert_one_error_line, cli_env, ok, otactl_argv, run_otactl

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]

BOXES = set("─│┃━┏╭╰…")


def on_a_terminal(*args: str, cwd: Path, env: dict[str, str], stdout_tty: bool = True,
                  timeout: float = 60, term: str = "xterm-256color") -> tuple[int, str, str]:
    """Run otactl with stderr (and stdout unless ``stdout_tty`` is False) on a pseudo-terminal.

    Returns (exit code, what the terminal got, what a piped stdout got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*otactl_argv(), *args], cwd=cwd, env={**env, "TERM": term},
                            stdin=subprocess.DEVNULL, stderr=slave,
                            stdout=slave if stdout_tty else subprocess.PIPE)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    piped = ""
    if proc.stdout is not None:
        with proc.stdout:
            piped = proc.stdout.read().decode()
    code = proc.wait(timeout=timeout)
    os.close(master)
    return code, b"".join(chunks).decode(errors="replace"), piped


# ----------------------------------------------------------------------------------- piped tables
def test_piped_table_holds_whole_key_ids_tab_separated(workspace: Path) -> None:
    keys = json.loads(ok(run_otactl("keys", "list", "-o", "json", cwd=workspace)).stdout)["keys"]
    env = cli_env()
    env["COLUMNS"] = "60"  # narrow: a rich table would have to cut or fold
    out = ok(run_otactl("keys", "list", cwd=workspace, env=env)).stdout
    lines = out.splitlines()
    assert lines[0].split("\t") == ["name", "keyid", "roles", "private key here", "uri"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    assert {k["name"]: k["keyid"] for k in keys} == {name: row[1] for name, row in rows.items()}
    assert all(len(row[1]) == 64 for row in rows.values())
    assert not BOXES & set(out), out


# ------------------------------------------------------------------------------ workspace discovery
def test_workspace_is_found_from_a_subfolder(workspace: Path) -> None:
    deep = workspace / "manifests" / "notes"
    deep.mkdir(parents=True)
    out = ok(run_otactl("keys", "list", "-o", "json", cwd=deep)).stdout
    assert json.loads(out)["keys"]
    status = json.loads(ok(run_otactl("repo", "status", "-o", "json", cwd=deep)).stdout)
    assert {r["role"] for r in status["roles"]} >= {"root", "timestamp"}


def test_outside_any_workspace_the_error_is_unchanged(tmp_path: Path) -> None:
    result = run_otactl("keys", "list", cwd=tmp_path)
    assert result.returncode == 2
    line = assert_one_error_line(result, str(tmp_path.resolve()))
    assert line == (f"otactl: error: {tmp_path.resolve()}: not an otactl workspace (no otactl.yaml); "
                    "run `otactl init` first")


def test_explicit_workspace_and_env_still_win(workspace: Path, tmp_path: Path) -> None:
    ok(run_otactl("keys", "list", "--workspace", str(workspace), cwd=tmp_path))
    ok(run_otactl("keys", "list", cwd=tmp_path, env=cli_env(OTACTL_WORKSPACE=str(workspace))))
    # an explicit --workspace is taken as given, not searched upwards
    result = run_otactl("keys", "list", "-w", str(workspace / "manifests"), cwd=tmp_path)
    assert result.returncode == 2 and "not an otactl workspace" in result.stderr


# ------------------------------------------------------------------------------------ usage errors
@pytest.mark.parametrize(("args", "names"), [
    pytest.param(["rollout", "plan"], ["Missing argument"], id="missing-argument"),
    pytest.param(["keys", "list", "--bogus"], ["--bogus"], id="unknown-option"),
    pytest.param(["keys", "list", "-o", "yaml"], ["'yaml'", "table", "json"], id="bad-choice"),
    pytest.param(["nosuch"], ["nosuch"], id="unknown-command"),
    pytest.param(["rollout", "plan", "t9-engine", "2.1.0"], ["--plan"], id="missing-option"),
    pytest.param(["repo", "serve", "--port", "eighty"], ["--port", "integer"], id="bad-integer"),
    pytest.param(["rollout", "report", "t9-engine", "-o", "pdf"], ["pdf", "md or html"], id="report-format"),
])
def test_usage_errors_are_one_line_exit_2(workspace: Path, args: list[str], names: list[str]) -> None:
    assert Path(otactl_argv()[0]).name == "otactl"  # the installed console script, not python -m
    result = run_otactl(*args, cwd=workspace)
    assert result.returncode == 2, result.stderr
    assert_one_error_line(result, *names)
    assert result.stdout == ""
    assert not BOXES & set(result.stderr), result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_report_takes_dash_o_and_keeps_format_as_an_alias(workspace: Path) -> None:
    for flag in ("-o", "--output", "--format"):
        result = run_otactl("rollout", "report", "t9-engine", flag, "html", cwd=workspace)
        assert "no such option" not in result.stderr.lower(), result.stderr
        assert result.returncode in (0, 1), result.stderr  # no rollout yet may be an error, never usage


# ---------------------------------------------------------------------------------------- NO_COLOR
TERMINAL_CASES = [
    pytest.param(["--help"], id="help"),
    pytest.param(["keys", "list", "--bogus"], id="usage-error"),
    pytest.param(["keys", "list", "--workspace", "/nonexistent"], id="error"),
    pytest.param(["keys", "list"], id="table"),
    pytest.param(["rollout"], id="group-help"),
]


@pytest.mark.parametrize("args", TERMINAL_CASES)
def test_no_color_means_no_escape_sequence_on_a_terminal(workspace: Path, args: list[str]) -> None:
    _, seen, _ = on_a_terminal(*args, cwd=workspace, env=cli_env(NO_COLOR="1"))
    assert seen.strip(), "nothing reached the terminal"
    assert "\x1b" not in seen, repr(seen[:400])


def test_without_no_color_the_terminal_gets_colour(workspace: Path) -> None:
    """The control: the same terminal without NO_COLOR does get escapes (so the test above can fail)."""
    env = {k: v for k, v in cli_env().items() if k != "NO_COLOR"}
    for args in (["keys", "list", "--workspace", "/nonexistent"], ["keys", "list"], ["--help"]):
        _, seen, _ = on_a_terminal(*args, cwd=workspace, env=env)
        assert "\x1b[" in seen, (args, seen[:300])


# ------------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_ends_with_one_line_and_exit_130(workspace: Path) -> None:
    proc = subprocess.Popen([*otactl_argv(), "repo", "serve", "--port", "0"], cwd=workspace, env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("serving "), first
        url = next(word for word in first.split() if word.startswith("http://"))
        for _ in range(200):  # answering requests: in serve_forever, where ^C is handled (a sleep raced it)
            try:
                httpx.get(f"{url.rstrip('/')}/metadata/timestamp.json", timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()] == ["otactl: interrupted"]
    assert out == ""


# ---------------------------------------------------------------------------- version, completion
def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    result = ok(run_otactl("--version", cwd=tmp_path))
    assert result.stdout == f"otactl {version('otactl')}\n"


def test_show_completion_prints_a_bash_script(tmp_path: Path) -> None:
    script = ok(run_otactl("--show-completion", "bash", cwd=tmp_path)).stdout
    assert "complete " in script and "_OTACTL_COMPLETE" in script and "otactl" in script


def test_completion_completes_commands_and_options(tmp_path: Path) -> None:
    def complete(words: str) -> list[str]:
        env = cli_env(_OTACTL_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(len(words.split()) - 1))
        return ok(run_otactl(cwd=tmp_path, env=env)).stdout.split()

    assert complete("otactl rol") == ["rollout"]
    assert "report" in complete("otactl rollout rep")
    assert "--output" in complete("otactl keys list --ou")


# -------------------------------------------------------------------------------------- progress
def test_progress_on_a_terminal_and_silence_when_piped(workspace: Path) -> None:
    code, seen, piped = on_a_terminal("repo", "verify", cwd=workspace, env=cli_env(), stdout_tty=False)
    assert code == 0, seen
    assert "verifying" in seen  # the spinner, on stderr
    assert piped.startswith("ok: ")  # the result, on stdout
    quiet = ok(run_otactl("repo", "verify", cwd=workspace))
    assert quiet.stderr == ""


def test_no_ansi_in_piped_output_even_without_no_color(workspace: Path) -> None:
    env = {k: v for k, v in cli_env().items() if k != "NO_COLOR"}
    for args in (["keys", "list"], ["repo", "status"], ["--help"]):
        result = ok(run_otactl(*args, cwd=workspace, env=env))
        assert not re.search("\x1b", result.stdout + result.stderr), args


# (command, what must be done first, the bars' descriptions the services report, a check of stdout)
INVENTORY = str(ROOT / "examples/fleet/inventory.csv")
IMPORT = ("fleet", "import", INVENTORY)
PROGRESS_CASES = {
    "release build": (["release", "build", str(ROOT / "manifests/t9-engine-2.0.0.yaml")], [],
                      ["hashing t9-revA-2.0.0.bin", "hashing t9-revB-2.0.0.bin", "copying images to the store"],
                      lambda out: out.startswith("t9-engine/2.0.0: staged")),
    "fleet import": ([*IMPORT, "-o", "json"], [],
                     ["writing device records", "signing metadata", "writing metadata"],
                     lambda out: json.loads(out)["devices"] == 12),
    "repo verify": (["repo", "verify", "-o", "json"], [IMPORT], ["reading role metadata", "verifying targets"],
                    lambda out: json.loads(out)["targets_checked"] == 12),
    "fleet list": (["fleet", "list", "-o", "json"], [IMPORT], ["reading device hash bins", "reading device records"],
                   lambda out: len(json.loads(out)["devices"]) == 12),
    "rollout plan": (["rollout", "plan", "t9-engine", "2.0.0", "--plan", str(ROOT / "canary/demo.yaml"), "-o", "json"],
                     [IMPORT], ["reading device records"], lambda out: json.loads(out)["fleet_devices"] == 12),
}


@pytest.mark.parametrize("args, before, bars, result", PROGRESS_CASES.values(), ids=PROGRESS_CASES.keys())
def test_long_work_shows_bars_on_a_terminal_and_nothing_when_piped(
        workspace: Path, args: list[str], before: list[tuple[str, ...]], bars: list[str], result: Any) -> None:
    for step in before:
        ok(run_otactl(*step, cwd=workspace))
    piped_copy = workspace.parent / "piped"
    shutil.copytree(workspace, piped_copy, symlinks=True)
    code, seen, out = on_a_terminal(*args, cwd=workspace, env=cli_env(), stdout_tty=False)
    assert code == 0, seen
    for bar in bars:
        assert bar in seen, (bar, seen[-2000:])
    assert result(out), out  # stdout holds the result alone, JSON included
    quiet = ok(run_otactl(*args, cwd=piped_copy))
    assert quiet.stderr == ""  # piped: no bar, no line, no escape
    assert result(quiet.stdout)


def test_a_dumb_terminal_gets_no_progress(workspace: Path) -> None:
    code, seen, out = on_a_terminal(*IMPORT, "-o", "json", cwd=workspace, env=cli_env(), stdout_tty=False,
                                    term="dumb")
    assert code == 0 and json.loads(out)["devices"] == 12
    assert seen == "", seen  # TERM=dumb cannot move the cursor: no redrawn display at all

