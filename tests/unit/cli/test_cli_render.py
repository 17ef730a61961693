"""Tables: plain tab-separated lines when piped, rich tables that never cut a value on a TTY;
the workspace found from a subfolder like git (issue 11, terminal habits)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from otactl.cli import render
from otactl.errors import UsageError
from otactl.workspace import WORKSPACE_FILE, Workspace, find_root

KEYID = "8f2a" * 16  # 64 hex characters, like an ed25519 key id


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_piped_table_is_a_header_then_rows_tab_separated_full_values(capsys: pytest.CaptureFixture[str]) -> None:
    render.table("keys", ["name", "keyid", "note"], [["alice", KEYID, "two\twords\nand a line"], ["ci", None, 7]])
    out, err = capsys.readouterr()
    assert out.splitlines() == ["name\tkeyid\tnote", f"alice\t{KEYID}\ttwo words and a line", "ci\t\t7"]
    assert "keys" in err  # the title is a diagnostic: stdout stays parseable
    assert not set("─│┃━┏╭…") & set(out)


def test_piped_tables_of_one_command_are_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(2):  # a new stdout (another command) starts without the separator
        out = io.StringIO()
        monkeypatch.setattr("sys.stdout", out)
        render.table("a", ["x"], [[1]])
        render.table("b", ["y"], [[2]])
        assert out.getvalue() == "x\n1\n\ny\n2\n"


@pytest.mark.parametrize("no_color", [True, False], ids=["NO_COLOR", "colour"])
def test_tty_table_wraps_long_values_instead_of_cutting_them(monkeypatch: pytest.MonkeyPatch, no_color: bool) -> None:
    tty = Tty()
    monkeypatch.setattr("sys.stdout", tty)
    monkeypatch.setenv("COLUMNS", "40")
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.setenv("FORCE_COLOR", "1")
    render.table("keys", ["name", "keyid"], [["alice", KEYID]])
    text = tty.getvalue()
    assert "…" not in text and "│" in text
    cells = "".join(line.split("│")[2] for line in text.splitlines() if line.count("│") == 3)
    assert KEYID in "".join(cells.split()), text
    assert ("\x1b[" in text) is not no_color  # styles only without NO_COLOR


def test_error_is_one_line_whatever_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    render.print_error(UsageError("bad\nvalue  here", hint="try\n--help"))
    assert capsys.readouterr().err == "otactl: error: bad value here\n  hint: try --help\n"


def test_workspace_is_found_from_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / WORKSPACE_FILE).write_text("schema: otactl/workspace/1\nstore: file://repository\n")
    deep = tmp_path / "manifests" / "images" / "revB"
    deep.mkdir(parents=True)
    assert find_root(deep) == tmp_path.resolve()
    assert find_root(tmp_path) == tmp_path.resolve()


def test_no_workspace_upwards_keeps_the_error_naming_where_you_are(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_root(deep) == deep.resolve()
    with pytest.raises(UsageError, match=re.escape(f"{deep.resolve()}: not an otactl workspace")):
        Workspace.open(find_root(deep))


def test_a_directory_named_like_the_file_is_not_a_workspace(tmp_path: Path) -> None:
    (tmp_path / WORKSPACE_FILE).mkdir()
    (tmp_path / "sub").mkdir()
    assert find_root(tmp_path / "sub") == (tmp_path / "sub").resolve()
