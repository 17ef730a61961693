"""The CLI's view of long work (decision 1101): rich bars on a terminal, plain lines when a passphrase
prompt could appear, nothing at all when stderr is piped or the terminal is dumb."""

from __future__ import annotations

import io

import pytest

from otactl import progress as hook
from otactl.cli import common


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def work() -> None:
    """What a service does: two pieces of work, one counted in items, one in bytes."""
    with hook.task("writing device records", 3) as step:
        for _ in range(3):
            step.advance()
    with hook.task("hashing fw.bin", 2_000_000, "bytes") as step:
        step.advance(2_000_000)


def on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> Tty:
    """stderr a terminal, stdin not (no prompt can appear). Called in the test itself: pytest puts its own
    sys.stderr back between a fixture's setup and the test."""
    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr("sys.stdin", io.StringIO())
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "120")
    return err


def test_a_terminal_gets_a_spinner_and_a_bar_per_piece_of_work(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = on_a_terminal(monkeypatch)
    with common.progress("importing") as relabel:
        relabel("importing 3 devices")
        work()
    text = terminal.getvalue()
    for shown in ("importing 3 devices", "writing device records", "0/3", "hashing fw.bin", "0 bytes/2.0 MB"):
        assert shown in text, repr(text)
    assert "\x1b[?25l" in text  # a live display: the cursor is hidden while it redraws
    assert "\x1b[3" not in text  # NO_COLOR: no colour


def test_without_a_label_nothing_is_drawn_until_the_work_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = on_a_terminal(monkeypatch)
    with common.progress():
        assert terminal.getvalue() == ""  # a passphrase asked before the first piece of work is not overdrawn
        work()
    assert "writing device records" in terminal.getvalue()


@pytest.mark.parametrize("case", ["piped", "dumb terminal"])
def test_piped_or_dumb_means_nothing_at_all(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    err: io.StringIO = on_a_terminal(monkeypatch)
    monkeypatch.setattr("sys.stdin", Tty())  # even where plain lines would replace the display
    monkeypatch.delenv("OTACTL_KEY_PASSPHRASE", raising=False)
    if case == "piped":
        err = io.StringIO()
        monkeypatch.setattr("sys.stderr", err)
    else:
        monkeypatch.setenv("TERM", "dumb")
    with common.progress("importing", prompts=True) as relabel:
        relabel("again")
        work()
    assert err.getvalue() == ""


def test_a_possible_prompt_turns_the_display_into_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = on_a_terminal(monkeypatch)
    monkeypatch.setattr("sys.stdin", Tty())
    for name in ("OTACTL_KEY_PASSPHRASE", "OTACTL_KEY_PASSPHRASE_ONLINE"):
        monkeypatch.delenv(name, raising=False)
    with common.progress("reading inventory.csv", prompts=True) as relabel:
        work()
        relabel("publishing")
    assert terminal.getvalue().splitlines() == [
        "reading inventory.csv ...", "writing device records (3) ...", "hashing fw.bin ...", "publishing ..."]
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", "x")  # nothing to ask: the live display again
    terminal.truncate(0)
    with common.progress("reading inventory.csv", prompts=True):
        work()
    assert "\x1b[?25l" in terminal.getvalue()


def test_the_display_ends_with_the_command_even_when_it_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = on_a_terminal(monkeypatch)
    with pytest.raises(RuntimeError), common.progress("working"):
        with hook.task("doomed", 2) as step:
            step.advance()
        raise RuntimeError("boom")
    text = terminal.getvalue()
    assert text.rindex("\x1b[?25h") > text.rindex("doomed")  # stopped: the cursor is shown again
