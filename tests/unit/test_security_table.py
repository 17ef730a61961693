"""docs/security.md's table names tests that exist, and every row says how it ends.

Each row of the table is an attack, fault or input class, the test that covers it (pytest node ids in
backticks in the Test column) and its result. A node id must name a file under tests/ that defines the
function (``Class::method`` forms too, parsed with ``ast``); a parametrized case (``name[id]``) must also
be among the ids pytest collects from that file. A row that claims "pass" names at least one test; a row
without a test is a "known limit" that links to its decision record, or says "not tested". So the table
cannot keep naming a test that was renamed or removed. The controls at the end feed the same checks a
copy of the table with one name broken, so they are known to fail.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
COLUMNS = ["Class", "Attack, fault or input", "Expected outcome", "Test", "Result"]
NODE_ID = re.compile(r"^tests/[\w/.-]+\.py(::[A-Za-z_]\w*)+(\[[^\]]+\])?$")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")
NO_TEST = {"—", "-", ""}


def split_row(line: str) -> list[str]:
    """The cells of one Markdown table row (an escaped ``\\|`` stays inside its cell)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def table_rows(text: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every row of the one table whose header is COLUMNS."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|") and split_row(line) == COLUMNS), None)
    if start is None:
        raise AssertionError(f"no table with the columns {' | '.join(COLUMNS)}")
    if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[start + 1].strip()):
        raise AssertionError(f"line {start + 2}: the header is not followed by a separator row")
    rows = []
    for i in range(start + 2, len(lines)):
        if not lines[i].startswith("|"):
            break
        rows.append((i + 1, split_row(lines[i])))
    return rows


def node_ids(cell: str) -> tuple[list[str], str]:
    """The node ids in a Test cell, and whatever else the cell holds besides them and ``<br>``."""
    ids = re.findall(r"`([^`]+)`", cell)
    rest = re.sub(r"`[^`]+`", "", cell).replace("<br>", "").replace(",", "").strip()
    return ids, rest


@cache
def defined_tests(path: Path) -> frozenset[str]:
    """Every function in ``path``, as ``name`` and ``Class::name`` (nested classes too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(prefix + node.name)
            elif isinstance(node, ast.ClassDef):
                walk(node.body, f"{prefix}{node.name}::")

    walk(tree.body, "")
    return frozenset(names)


def node_id_problem(node_id: str, root: Path, collected: frozenset[str] | None) -> str | None:
    if not NODE_ID.match(node_id):
        return f"{node_id!r} is not a pytest node id (tests/...py::test_name)"
    file, _, name = node_id.partition("::")
    path = root / file
    if not path.is_file():
        return f"{node_id}: no file {file}"
    base = name.split("[", 1)[0]
    if base not in defined_tests(path):
        return f"{node_id}: {file} defines no {base}"
    if not base.rsplit("::", 1)[-1].startswith("test"):
        return f"{node_id}: {base} is not a test function"
    if "[" in name and collected is not None and node_id not in collected:
        return f"{node_id}: pytest collects no such case from {file}"
    return None


def problems(text: str, root: Path = ROOT, collected: frozenset[str] | None = None) -> list[str]:
    """Everything wrong with the table in ``text``; empty when it is right."""
    try:
        rows = table_rows(text)
    except AssertionError as exc:
        return [str(exc)]
    out = [] if rows else ["the table has no rows"]
    for line, cells in rows:
        where = f"docs/security.md:{line}"
        if len(cells) != len(COLUMNS):
            out.append(f"{where}: {len(cells)} cells, expected {len(COLUMNS)}")
            continue
        row = dict(zip(COLUMNS, cells, strict=True))
        for column in ("Class", "Attack, fault or input", "Expected outcome", "Result"):
            if not row[column]:
                out.append(f"{where}: empty {column}")
        ids, rest = node_ids(row["Test"])
        if rest not in NO_TEST:
            out.append(f"{where}: Test holds {rest!r} besides node ids in backticks")
        out += [f"{where}: {p}" for i in ids if (p := node_id_problem(i, root, collected))]
        result = row["Result"].lower()
        if result.startswith("pass") and not ids:
            out.append(f"{where}: the result says pass but the row names no test")
        if ids and not result.startswith("pass"):
            out.append(f"{where}: the row names tests but its result is {row['Result']!r}")
        if not ids and not (result.startswith("known limit") or result.startswith("not tested")):
            out.append(f"{where}: a row without a test must be a 'known limit' or 'not tested'")
        if result.startswith("known limit") and "decisions/" not in row["Result"]:
            out.append(f"{where}: a known limit must link to its decision record")
    for target in LINK.findall(text):
        if not target.startswith(("http://", "https://")) and not (root / "docs" / target).is_file():
            out.append(f"docs/security.md: the link {target} names no file under docs/")
    return out


def parametrized_files(text: str) -> list[str]:
    files = {i.partition("::")[0] for _, cells in table_rows(text) if len(cells) == len(COLUMNS)
             for i in node_ids(cells[3])[0] if "[" in i}
    return sorted(f for f in files if (ROOT / f).is_file())


@pytest.fixture(scope="module")
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def collected(doc_text: str) -> frozenset[str]:
    """The node ids pytest collects from the files whose parametrized cases the table names."""
    files = parametrized_files(doc_text)
    if not files:
        return frozenset()
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return frozenset(line.strip() for line in result.stdout.splitlines() if "::" in line)


def test_every_test_the_table_names_exists_and_every_row_has_a_result(doc_text: str,
                                                                       collected: frozenset[str]) -> None:
    found = problems(doc_text, collected=collected)
    assert not found, "\n".join(found)
    rows = table_rows(doc_text)
    assert len(rows) >= 40  # the classes of issue 9, not a stub
    classes = {cells[0] for _, cells in rows}
    for needed in ("TUF attacks on the device", "Online-key compromise", "Crash points per command and store",
                   "Concurrency", "Fuzz classes", "Forged and replayed reports", "Secrets in output"):
        assert needed in classes, needed


# ------------------------------------------------------------------------------------ controls
def _first_id(text: str, *, bracketed: bool) -> str:
    return next(i for _, cells in table_rows(text) for i in node_ids(cells[3])[0] if ("[" in i) is bracketed)


def test_a_renamed_or_removed_test_is_caught(doc_text: str, collected: frozenset[str]) -> None:
    name = _first_id(doc_text, bracketed=False)
    file, _, func = name.partition("::")
    for broken, says in ((f"{file}::{func}_renamed", "defines no"), (f"{file[:-3]}_gone.py::{func}", "no file"),
                         (f"{file}::NoSuchClass::{func}", "defines no"), (func, "not a pytest node id")):
        found = problems(doc_text.replace(f"`{name}`", f"`{broken}`", 1), collected=collected)
        assert any(broken in p and says in p for p in found), (broken, found)


def test_a_parametrized_case_that_is_not_collected_is_caught(doc_text: str, collected: frozenset[str]) -> None:
    name = _first_id(doc_text, bracketed=True)
    broken = name.split("[", 1)[0] + "[no-such-case]"
    found = problems(doc_text.replace(f"`{name}`", f"`{broken}`", 1), collected=collected)
    assert any(broken in p and "collects no such case" in p for p in found), found
    # without the collected ids only the function name is checked, and it still exists
    assert problems(doc_text.replace(f"`{name}`", f"`{broken}`", 1)) == problems(doc_text)


def test_an_empty_result_or_an_unbacked_pass_is_caught(doc_text: str, collected: frozenset[str]) -> None:
    lines = doc_text.splitlines()
    line_no, cells = next((n, c) for n, c in table_rows(doc_text) if c[4].startswith("pass"))
    empty = list(cells)
    empty[4] = ""
    unbacked = list(cells)
    unbacked[3] = "—"
    for change, says in ((empty, "empty Result"), (unbacked, "names no test")):
        copy = [*lines[: line_no - 1], "| " + " | ".join(change) + " |", *lines[line_no:]]
        found = problems("\n".join(copy), collected=collected)
        assert any(f":{line_no}:" in p and says in p for p in found), (says, found)


def test_the_parser_reads_class_methods_and_cells() -> None:
    assert split_row(r"| a | b \| c | `x` |") == ["a", r"b \| c", "`x`"]
    assert node_ids("`tests/a.py::test_x`<br>`tests/a.py::TestC::test_y[p, q]`") == (
        ["tests/a.py::test_x", "tests/a.py::TestC::test_y[p, q]"], "")
    assert NODE_ID.match("tests/unit/x.py::TestC::test_y[case]")
    assert "test_the_parser_reads_class_methods_and_cells" in defined_tests(Path(__file__))
