"""Operator text in rollout reports is text: escaped in the HTML, inert in the Markdown.

A reason typed with ``--reason``, a release or ring name, a field of the last verdict: any of them
may hold markup. The HTML page must show it, escaped, and carry no element made from it; the
Markdown must not carry it as live HTML, a link, an image or table structure either.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fixtures.repo import assert_one_error_line, run_otactl

from otactl.app import rollout_state as rs
from otactl.app.context import Context
from otactl.errors import StoreError
from otactl.report import evidence
from otactl.report import rollout_render as render
from otactl.report import rollout_report as rr
from otactl.rollout import decide as core

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 11, 27, 19, 0, 0, tzinfo=UTC)
XSS = "<img src=x onerror=alert(1)>"
HOSTILE_REASONS = [
    XSS,
    "<script>alert(2)</script>",
    "![pixel](http://evil.example/p.png)",
    "[click me](javascript:alert(3))",
    "a | b\n| c | d |",
    "`code` **bold** _em_ \\ &amp; &lt;b&gt;",
]


def _record(reasons: list[str], *, last_verdict: dict[str, Any] | None = None) -> rs.RolloutRecord:
    plan_path = ROOT / "canary" / "default.yaml"
    history = tuple(core.HistoryEntry(T0 + timedelta(hours=i + 1), 0, core.Action.PAUSE if i % 2 == 0 else
                                      core.Action.RESUME, reason) for i, reason in enumerate(reasons))
    state = core.RolloutState(release="2.1.0", ring_index=0, status=core.Status.PAUSED, ring_started=(T0,),
                              history=history)
    return rs.RolloutRecord("t9-engine", "r-0001", "salt", str(plan_path), plan_path.read_text(),
                            core.ReleaseRef("2.1.0", 2), core.ReleaseRef("2.0.0", 1), state, 1,
                            paused_by="operator", last_verdict=last_verdict)


VERDICT = {"phase": "<b>fail</b>", "ring": XSS, "devices": 12, "device_hours": 300.0, "since": "t0", "until": "t1",
           "gates": [{"metric": XSS, "evidence": [{"scope": "<svg onload=alert(4)>", "test": "control", "events": 3,
                                                   "exposure": 100.0, "rate": 0.03, "reference_rate": 0.01,
                                                   "ratio": 3.0, "interval": [1.2, "inf"], "e_value": 25.0,
                                                   "phase": "fail"}]}]}


def _report(record: rs.RolloutRecord) -> rr.RolloutReport:
    """The report of one record, as ``otactl report rollout ID`` builds it (no audit log, no telemetry)."""
    plan = record.plan
    row = rr.index_row(record.rollout_id, record.release.version, record.baseline.version, plan, record.state,
                       current=True)
    decisions = [evidence.decision(T0, str((record.last_verdict or {}).get("ring")), "hold", None,
                                   record.last_verdict)] if record.last_verdict else []
    d = rr.build_detail(row, plan=plan, state=record.state, salt=record.salt, policy_version=1, paused_by=XSS,
                        devices=[], history=None, decisions=decisions, audit_entries=[],
                        controller_keys=frozenset(), release_approval=None, now=T0 + timedelta(days=1))
    return rr.RolloutReport(T0, record.model, record.rollout_id, (), (row,), (d,))


def _tags(html: str) -> set[str]:
    return {m.lower() for m in re.findall(r"<\s*([a-zA-Z][a-zA-Z0-9]*)", html)}


@pytest.mark.parametrize("as_json", [False, True], ids=["record", "json-form"])
def test_html_escapes_every_operator_string(as_json: bool) -> None:
    record = _record(HOSTILE_REASONS, last_verdict=VERDICT)
    if as_json:  # the record as the store holds it, read back field by field
        record = rs.from_json(json.loads(json.dumps(record.to_json())), None, "test")
    html = render.html_page(_report(record))
    assert "<img" not in html and "<script" not in html and "<svg onload" not in html
    assert "<a " not in html and "href=\"javascript" not in html  # no link made from `[click me](javascript:...)`
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # shown, as text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "&lt;svg onload=alert(4)&gt;" in html  # in the chart label, escaped
    # only the elements the page itself and its charts write
    assert _tags(html) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "strong", "ul",
                           "li", "table", "thead", "tbody", "tr", "th", "td", "svg", "g", "path", "defs", "clippath",
                           "use", "text", "rect"}, _tags(html)


def test_markdown_carries_no_live_html_links_or_images() -> None:
    md = render.markdown(_report(_record(HOSTILE_REASONS, last_verdict=VERDICT)))
    assert "<img" not in md and "<script" not in md and "<svg" not in md and "<b>" not in md
    assert "&lt;img src=x onerror=alert(1)&gt;" in md
    assert "![pixel]" not in md and "[click me](" not in md  # escaped: \[click me\]
    # every history row is one table row of four cells: `|` and newlines in a reason split nothing
    rows = [line for line in md.splitlines() if line.startswith("| 2026-")]
    history = [row for row in rows if re.search(r"\| (start|pause|resume) \|", row)]
    assert len(history) == 1 + len(HOSTILE_REASONS)  # the start, then each reason
    assert all(len(re.findall(r"(?<!\\)\|", row)) == 5 for row in history), history


def test_markdown_renders_back_to_the_text_the_operator_typed() -> None:
    """Escaping is for safety, not loss: rendered, each reason reads as typed (newlines folded)."""
    import markdown_it

    md = render.markdown(_report(_record(HOSTILE_REASONS)))
    html = markdown_it.MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    from html import unescape

    text = unescape(re.sub(r"<[^>]+>", "", html))
    for reason in HOSTILE_REASONS:
        assert " ".join(reason.split()) in text, reason


def test_a_corrupt_record_is_a_store_error_not_a_traceback() -> None:
    doc = _record(["x"]).to_json()
    doc["state"]["history"][0]["ring_index"] = "zero"
    with pytest.raises(StoreError, match=r"field 'state\.history\.0\.ring_index': must be an integer"):
        rs.from_json(doc, None, "test")


def test_the_report_command_escapes_a_reason(workspace: Path) -> None:
    """End to end: a record in the store, `otactl rollout report --format html` and `--format md`."""
    store = Context.open(workspace).store
    store.put(rs.state_key("t9-engine"), json.dumps(_record([XSS], last_verdict=VERDICT).to_json()).encode())
    for fmt in ("html", "md"):
        result = run_otactl("rollout", "report", "t9-engine", "--format", fmt, "-w", str(workspace), cwd=workspace)
        assert result.returncode == 0, result.stderr
        assert "<img" not in result.stdout and "&lt;img src=x onerror=alert(1)&gt;" in result.stdout


def test_the_report_command_on_a_record_whose_plan_does_not_parse(workspace: Path) -> None:
    store = Context.open(workspace).store
    doc = _record(["x"]).to_json()
    doc["plan_text"] = "rings: &a [*a]\n"
    store.put(rs.state_key("t9-engine"), json.dumps(doc).encode())
    result = run_otactl("report", "rollout", "t9-engine", "-w", str(workspace), cwd=workspace)
    assert result.returncode == 1, result.stderr
    assert re.search(r"field 'plan_text': the recorded plan does not parse .*YAML anchor",
                     assert_one_error_line(result, "rollouts-state/t9-engine.json"))


def test_the_report_command_on_a_corrupt_record(workspace: Path) -> None:
    store = Context.open(workspace).store
    doc = _record(["x"]).to_json()
    doc["state"]["status"] = 7
    store.put(rs.state_key("t9-engine"), json.dumps(doc).encode())
    result = run_otactl("rollout", "report", "t9-engine", "-w", str(workspace), cwd=workspace)
    assert result.returncode == 1, result.stderr
    assert "field 'state.status': must be a string, got 7" in assert_one_error_line(result)
