"""Hostile YAML, one file per case under hostile/: each refused with its exact message, at once.

A file is named ``<target>-<case>.yaml`` (target: manifest, plan, inventory or scenario, the loader
the matching command calls); ``<name>.expect`` beside it holds the message (``{file}`` stands for the
path it was loaded from). The file itself stays exactly the hostile input: an empty file is empty.
Each load runs under a hang guard (a SIGALRM bound far above the time a refusal takes), so a
regression to alias expansion fails the test instead of hanging the suite.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from fuzz_parts import HOSTILE, LOADERS, assert_clear_error, deadline

from otactl.errors import ExitCode, InputFileError
from otactl.rollout.plan import parse_plan
from otactl.yamlio import MAX_BYTES, parse_yaml

CASES = sorted(HOSTILE.glob("*.yaml"))
GUARD_S = 10.0

# Each hostile rule the issue names must have a file for every target (a missing file would shrink the table).
REQUIRED = {"billion-laughs", "merge-key", "only-dashes", "empty", "comments-only"}


def _target(path: Path) -> str:
    return path.name.split("-", 1)[0]


def _expected(path: Path) -> str:
    return path.with_name(path.name + ".expect").read_text().strip().replace("{file}", str(path))


def test_every_target_has_every_required_case() -> None:
    have = {(_target(p), p.stem.split("-", 1)[1]) for p in CASES}
    missing = {(t, c) for t in LOADERS for c in REQUIRED} - have
    assert not missing, sorted(missing)
    assert all(p.with_name(p.name + ".expect").is_file() for p in CASES)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_hostile_file_is_refused_with_its_message(path: Path) -> None:
    load = LOADERS[_target(path)]
    with deadline(GUARD_S), pytest.raises(InputFileError) as err:
        load(path)
    assert str(err.value) == _expected(path)
    assert_clear_error(err.value, exit_code=ExitCode.USAGE)


@pytest.mark.parametrize("path", [p for p in CASES if _target(p) == "plan"],
                         ids=[p.stem for p in CASES if _target(p) == "plan"])
def test_hostile_plan_text_is_refused_too(path: Path) -> None:
    """A plan is also parsed from text (the copy a rollout record keeps): the same refusal."""
    with deadline(GUARD_S), pytest.raises(InputFileError) as err:
        parse_plan(path.read_text(), str(path))
    assert str(err.value) == _expected(path)


def test_a_file_over_the_size_bound_is_refused_without_parsing(tmp_path: Path) -> None:
    big = tmp_path / "inventory.yaml"
    device = "- {device_id: t9-0000, model: t9-engine}\n"
    with big.open("w") as fh:
        for _ in range(MAX_BYTES // len(device) + 1):
            fh.write(device)
    with deadline(GUARD_S), pytest.raises(InputFileError) as err:
        LOADERS["inventory"](big)
    assert str(err.value) == f"{big}: larger than 8 MiB, the limit for otactl's YAML files"


def test_bytes_that_are_not_utf8_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "plan.yaml"
    bad.write_bytes(b"schema: otactl/canary-plan/1\nname: caf\xe9\n")
    with pytest.raises(InputFileError) as err:
        LOADERS["plan"](bad)
    assert str(err.value) == f"{bad}:2: not UTF-8 text (byte 38)"


@pytest.mark.parametrize(("text", "message"), [
    ("a: 1\n\x00", "x.yaml:2: not valid YAML: unacceptable character #x0000: special characters are not allowed"),
    ("a: !!binary aGVsbG8=\n", "x.yaml:1: a: YAML tag '!!binary' is not allowed (plain mappings, lists, strings, "
                               "numbers, booleans, null and dates only)"),
    ("a: !!set {x, y}\n", "x.yaml:1: a: YAML tag '!!set' is not allowed (plain mappings, lists, strings, "
                          "numbers, booleans, null and dates only)"),
    ("? [a, b]\n: 1\n", "x.yaml:1: keys must be strings, got a list"),
    ("a: *undefined\n", "x.yaml:1: YAML alias '*undefined': otactl reads no YAML anchors or aliases "
                        "(write the value out in full)"),
    ("a: [1, 2\n", "x.yaml:2: not valid YAML: expected ',' or ']', but got '<stream end>'"),
    ("--- null\n", "x.yaml: file is empty (no YAML content, only blank lines, comments, '---' or null)"),
], ids=["nul", "binary", "set", "list-key", "undefined-alias", "unclosed", "null-document"])
def test_other_hostile_yaml(text: str, message: str) -> None:
    with deadline(GUARD_S), pytest.raises(InputFileError) as err:
        parse_yaml(text, "x.yaml")
    assert str(err.value) == message


@pytest.mark.parametrize(("text", "data"), [
    ("a: =\n", {"a": "="}),  # PyYAML's `value` tag: read as the text it is
    ("'<<': 1\n", {"<<": 1}),  # a quoted `<<` is an ordinary key
    ("a: <<\n", {"a": "<<"}),
    ("a: 2026-11-27\n", {"a": date(2026, 11, 27)}),  # dates stay dates: manifests refuse them by field
    ("a: [" + ", ".join(["[1]"] * 3) + "]\n", {"a": [[1], [1], [1]]}),
], ids=["equals", "quoted-merge", "merge-as-value", "date", "nested"])
def test_ordinary_yaml_still_reads(text: str, data: object) -> None:
    assert parse_yaml(text, "x.yaml").data == data
