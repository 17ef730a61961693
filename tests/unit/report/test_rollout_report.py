"""The rollout report's numbers, from one fixture rollout, and the same numbers in every format.

The fixture: a three-ring plan (tag rings ``lab`` and ``canary``, then the whole fleet), twelve
devices with known rings and variants, each device's reports about the release chosen so that every
funnel column has its own count, two gate decisions and a hold with their evidence, and an audit log
with a person's pause and resume. The unit tests check the aggregation's counts, then render the
report as the terminal's tables, JSON, Markdown and HTML and read the numbers back out of each.
"""

from __future__ import annotations

import html as htmllib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fixtures import charts

from otactl.audit.log import AuditEntry
from otactl.cli.render import json_text
from otactl.report import evidence
from otactl.report import rollout_render as render
from otactl.report import rollout_report as core
from otactl.report.fleet import Source
from otactl.rollout import decide
from otactl.rollout.plan import KeyId, parse_plan

T0 = datetime(2026, 11, 2, 8, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)
MODEL, RELEASE, BASELINE, RID = "t9-engine", "2.1.0", "2.0.0", "t9-engine-2.1.0-a1b2c3"
PLAN = parse_plan("""\
schema: otactl/canary-plan/1
name: three-rings
strata: [model, variant]
rings:
  - name: lab
    selector: {tags: [lab]}
    soak_device_hours: 40
    min_reporting_devices: 2
    gates:
      - {metric: crash_rate, max_ratio: 1.5, missing: wait}
    approvals: {required: 1, keys: [release-manager]}
  - name: canary
    selector: {tags: [canary]}
    soak_device_hours: 500
    min_reporting_devices: 5
    gates:
      - {metric: crash_rate, max_ratio: 1.5, missing: wait}
  - name: all
    selector: {percent: 100}
    soak_device_hours: 0
    min_reporting_devices: 1
    gates: []
""", "canary/three-rings.yaml")
HOSTILE = "<img src=x onerror=alert(1)> $x$ [click](javascript:alert(2)) | cell"


def dev(device_id: str, variant: str, tag: str | None = None, pin: str | None = None) -> core.FleetDevice:
    return core.FleetDevice(device_id, MODEL, variant, "eu", (tag,) if tag else (), pin)


FLEET = [
    dev("L1", "hp-300", "lab"), dev("L2", "hp-400", "lab"),
    dev("C1", "hp-300", "canary"), dev("C2", "hp-300", "canary"), dev("C3", "hp-300", "canary"),
    dev("C4", "hp-400", "canary"), dev("C5", "hp-400", "canary"), dev("C6", "hp-400", "canary", pin="2.0.0"),
    dev("A1", "hp-300"), dev("A2", "hp-300"), dev("A3", "hp-500"), dev("A4", "hp-500"),
]
ALL_EVENTS = ("offered", "downloaded", "installed", "booted", "committed")


def seen(device_id: str, events: tuple[str, ...], *, hours: float = 0.0, crashes: int = 0,
         running: tuple[tuple[datetime, str], ...] = (), at: datetime = T0 + H,
         waiting: bool = False) -> core.DeviceHistory:
    return core.DeviceHistory(device_id, dict.fromkeys(events, at), hours, crashes, running, waiting)


HISTORY = {h.device_id: h for h in [
    seen("L1", ALL_EVENTS, hours=30, running=((T0 - 100 * H, BASELINE), (T0 + H, RELEASE),
                                              (T0 + 51 * H, BASELINE))),  # healthy; reverts after the end
    seen("L2", ("committed",), hours=30, crashes=2, running=((T0 + 2 * H, RELEASE),)),  # crashed: not healthy
    seen("C1", ALL_EVENTS, hours=10, running=((T0 + 30 * H, RELEASE), (T0 + 50 * H, BASELINE))),  # too short
    seen("C2", ("offered", "downloaded", "installed", "reverted")),
    seen("C3", ("offered", "failed")),
    seen("C4", ("offered", "downloaded"), waiting=True),  # downloaded, waits for its maintenance window
    seen("X9", ALL_EVENTS, hours=99),  # reports, but not in the signed fleet: in no ring
]}
# (ring, variant) -> devices, pinned, offered, downloaded, installed, booted, committed, healthy, failed, reverted,
# waiting for window
EXPECTED = {
    ("lab", "hp-300"): (1, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0),
    ("lab", "hp-400"): (1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0),  # a committed event says it got through every stage
    ("lab", "all"): (2, 0, 2, 2, 2, 2, 2, 1, 0, 0, 0),
    ("canary", "hp-300"): (3, 0, 3, 2, 2, 1, 1, 0, 1, 1, 0),
    ("canary", "hp-400"): (3, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1),
    ("canary", "all"): (6, 1, 4, 3, 2, 1, 1, 0, 1, 1, 1),
    ("all", "hp-300"): (2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    ("all", "hp-500"): (2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    ("all", "all"): (4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
}
EXPECTED_HOURS = {"lab": 26.0, "canary": 24.0}  # lab T0 -> T0+26h, canary T0+26h -> the rollback at T0+50h
EXPECTED_ADOPTION = {"lab": 2, "canary": 0}  # devices on the release at the end of the window
FAIL_WORDS = "crash rate 1.9x the control (95% interval 1.2-3.1), above the tolerated 1.5x: rolled back"
WAIT_WORDS = "crash rate: needs ~1,800 more device-hours before it can pass"


def ev(scope: str, test: str, ratio: float, interval: tuple[float, float] | None, phase: str, *,
       margin: float = 1.5, needs: float | None = None) -> dict[str, Any]:
    return {"scope": scope, "test": test, "margin": margin, "events": 38, "exposure": 1200.0, "rate": 0.0317,
            "reference_rate": 0.0167, "ratio": ratio, "interval": None if interval is None else list(interval),
            "e_value": 120.0 if phase == "fail" else 0.5, "threshold": 50.0, "phase": phase, "note": "",
            "needs": needs}


def verdict(ring: str, phase: str, rows: list[dict[str, Any]], reasons: list[str]) -> dict[str, Any]:
    return {"ring": ring, "phase": phase, "reasons": reasons, "devices": 6, "device_hours": 1200.0,
            "since": T0.isoformat(), "until": (T0 + 50 * H).isoformat(),
            "gates": [{"metric": "crash_rate", "phase": phase, "reason": reasons[-1], "evidence": rows}]}


DECISIONS = [
    evidence.decision(T0 + 12 * H, "lab", "hold", None, verdict("lab", "wait", [
        ev("overall", "control", 1.1, (0.6, 2.0), "pass"),
        ev("overall", "power-control", 1.1, (0.6, 2.0), "wait", margin=2.0, needs=1834.0)],
        ["soak 12 of 40 device-hours", "crash_rate: not enough evidence yet"])),
    evidence.decision(T0 + 26 * H, "lab", "advance", "online", verdict("lab", "pass", [
        ev("overall", "control", 1.05, (0.7, 1.4), "pass"),
        ev("overall", "power-control", 1.05, (0.7, 1.4), "pass", margin=2.0)],
        ["soak done, every gate passed with the harm ruled out"])),
    evidence.decision(T0 + 50 * H, "canary", "rollback", "online", verdict("canary", "fail", [
        ev("overall", "control", 1.9, (1.2, 3.1), "fail"),
        ev("t9-engine/hp-300/*", "control", 2.4, (1.3, 4.4), "fail"),
        ev(HOSTILE, "control", 0.9, (0.3, float("inf")), "pass")],
        ["soak 300 of 500 device-hours", "crash_rate regressed in overall"])),
]
STATE = decide.RolloutState(
    RELEASE, 1, decide.Status.ROLLED_BACK, (T0, T0 + 26 * H),
    approvals=frozenset({decide.Approval("lab", KeyId("release-manager"))}),
    history=(decide.HistoryEntry(T0 + 26 * H, 1, decide.Action.ADVANCE, "ring 'lab' passed after 26.0 h"),
             decide.HistoryEntry(T0 + 40 * H, 1, decide.Action.PAUSE, HOSTILE),
             decide.HistoryEntry(T0 + 41 * H, 1, decide.Action.RESUME, "looked fine"),
             decide.HistoryEntry(T0 + 50 * H, 1, decide.Action.ROLLBACK, "ring 'canary' failed after 24.0 h")))


def entry(seq: int, hours: float, actor: str, action: str, **details: Any) -> AuditEntry:
    return AuditEntry(seq, (T0 + hours * H).isoformat(), actor, "k" * 64, action,
                      {"rollout_id": RID, "revision": seq, **details}, "0" * 64, "sig")


AUDIT = [
    entry(1, 0, "online", "start", release=RELEASE, baseline=BASELINE, plan="three-rings"),
    entry(2, 25, "release-manager", "approve", ring="lab"),
    entry(3, 26, "online", "advance", ring="lab", reasons=["ring 'lab' passed after 26.0 h"], verdict="pass"),
    entry(4, 40, "alice", "pause", ring="canary", reason=HOSTILE),
    entry(5, 41, "alice", "resume", ring="canary", reason="looked fine"),
    entry(6, 50, "online", "rollback", ring="canary", reasons=["crash_rate regressed"], verdict="fail"),
    AuditEntry(7, T0.isoformat(), "online", "k" * 64, "start", {"rollout_id": "another"}, "0" * 64, "sig"),
]
ROW = core.index_row(RID, RELEASE, BASELINE, PLAN, STATE, current=True)
SOURCES = (Source("rollout state", "file:///x/rollouts-state/", True, "1 rollouts"),
           Source("telemetry", "sqlite:/x/telemetry.db", True, "reports of 7 devices"))
NOW = T0 + 60 * H


def detail(history: dict[str, core.DeviceHistory] | None = HISTORY) -> core.RolloutDetail:
    approval = core.ReleaseApproval(RELEASE, "published", 2, ("ci",), ("release-manager",))
    return core.build_detail(ROW, plan=PLAN, state=STATE, salt="s", policy_version=4, paused_by="gate",
                             devices=FLEET, history=history, decisions=DECISIONS, audit_entries=AUDIT,
                             controller_keys=frozenset({"online"}), release_approval=approval, now=NOW)


def report(history: dict[str, core.DeviceHistory] | None = HISTORY) -> core.RolloutReport:
    sources = SOURCES if history is not None else (
        SOURCES[0], Source("telemetry", "sqlite:/x/t.db", False, "telemetry database /x/t.db does not exist"))
    return core.RolloutReport(NOW, MODEL, RID, sources, (ROW,), (detail(history),))


# ------------------------------------------------------------------------------- the aggregation
def test_funnel_per_ring_and_variant() -> None:
    d = detail()
    found = {(r.name, f.variant): (f.devices, f.pinned, *(f.counts[k] for k in (*core.FUNNEL, *core.OUTCOMES)))
             for r in d.rings for f in r.funnel if f.counts is not None}
    assert found == EXPECTED
    assert d.unassigned == 0 and sum(f.devices for r in d.rings for f in r.funnel if f.variant == "all") == 12


def test_ring_times_states_and_adoption() -> None:
    d = detail()
    assert [(r.name, r.state.value) for r in d.rings] == [("lab", "passed"), ("canary", "rolled back"),
                                                         ("all", "not reached")]
    assert {r.name: r.hours for r in d.rings if r.hours is not None} == EXPECTED_HOURS
    assert d.rings[0].approved_by == ("release-manager",) and d.rings[0].soak_hours_per_device == 24
    lab, canary, rest = (r.adoption for r in d.rings)
    assert lab == ((T0, 0), (T0 + H, 1), (T0 + 2 * H, 2), (T0 + 50 * H, 2))
    assert canary == ((T0, 0), (T0 + 30 * H, 1), (T0 + 50 * H, 0))
    assert rest is None  # not reached
    assert d.window == (T0, T0 + 50 * H)


def test_decisions_in_words_and_who_acted() -> None:
    d = detail()
    words = [w for x in d.decisions for w in x.words()]
    assert FAIL_WORDS in words and WAIT_WORDS + " (to rule out a 2x regression vs the control; now 1.1x)" in words
    assert "crash rate in t9-engine/hp-300/* 2.4x the control (95% interval 1.3-4.4), above the tolerated 1.5x: " \
           "rolled back" in words
    assert "soak 12 of 40 device-hours" in words  # what the hold still waited for
    assert [(a.action, a.actor) for a in d.actions] == [("approve", "release-manager"), ("pause", "alice"),
                                                        ("resume", "alice")]
    assert [e.seq for e in d.audit] == [1, 2, 3, 4, 5, 6]  # only this rollout's entries


def test_unreadable_telemetry_makes_every_funnel_count_unknown_never_zero() -> None:
    r = report(None)
    d = r.rollouts[0]
    assert all(f.counts is None for ring in d.rings for f in ring.funnel)
    assert [f.devices for f in d.rings[1].funnel] == [3, 3, 6]  # the signed fleet is still counted
    doc = r.to_json()["rollouts"][0]
    assert all(f[k] is None for ring in doc["rings"] for f in ring["funnel"] for k in (*core.FUNNEL, *core.OUTCOMES))
    md = render.markdown(r)
    assert "Funnel counts are unknown, not zero." in md and "| lab | hp-300 | 1 | 0 | unknown |" in md
    page = render.html_page(r)
    assert "Ring reached over time" in page and "Adoption over time" not in page
    assert _funnel_from_html(page)[("canary", "all")] == ["6", "1", *["unknown"] * 9]


# ----------------------------------------------------------------------------- every format agrees
Funnel = dict[tuple[str, str], list[str]]


def _expected_funnel() -> Funnel:
    return {k: [str(n) for n in v] for k, v in EXPECTED.items()}


def _funnel_rows(rows: list[list[str]]) -> Funnel:
    return {(row[0], row[1]): row[2:] for row in rows}


def _markdown_tables(text: str) -> dict[str, list[list[str]]]:
    blocks: dict[str, list[list[str]]] = {}
    title = ""
    for line in text.splitlines():
        if line.startswith("## "):
            title, blocks[line[3:]] = line[3:], []
        elif line.startswith("| ") and title:
            cells = re.split(r"(?<!\\) \| ", line[2:-2])
            blocks[title].append([re.sub(r"\\(.)", r"\1", htmllib.unescape(c.strip())) for c in cells])
    return {k: v[1:] for k, v in blocks.items()}  # without the header row


def _html_tables(page: str) -> dict[str, list[list[str]]]:
    out = {}
    for title, table in re.findall(r"<h2>(.*?)</h2>\s*<table>(.*?)</table>", page, re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
        out[htmllib.unescape(re.sub(r"\\(.)", r"\1", title))] = [
            [htmllib.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in rows]
    return out


def _funnel_from_html(page: str) -> Funnel:
    return _funnel_rows(_html_tables(page)[f"{RID}: funnel per ring and variant"])


def _hours(rows: list[list[str]]) -> dict[str, float]:
    return {row[0]: float(row[5]) for row in rows if row[5] != "-"}


def test_every_format_shows_the_same_numbers() -> None:
    r = report()
    funnel_title, rings_title, words_title = (f"{RID}: funnel per ring and variant", f"{RID}: rings",
                                              f"{RID}: gate decisions")
    expected = _expected_funnel()
    tables = {title: [[str(v) for v in row] for row in rows] for title, _, rows in render.sections(r)}
    assert _funnel_rows(tables[funnel_title]) == expected
    assert _hours(tables[rings_title]) == EXPECTED_HOURS
    assert any(FAIL_WORDS in row[-1] for row in tables[words_title])

    doc = json.loads(json_text(core.SCHEMA_KIND, r.to_json()))
    assert doc["schema"] == "otactl/rollout-report/1"
    (d,) = doc["rollouts"]
    from_json = {(ring["name"], f["variant"]): [str(f[k]) for k in ("devices", "pinned", *core.FUNNEL,
                                                                    *core.OUTCOMES)]
                 for ring in d["rings"] for f in ring["funnel"]}
    assert from_json == expected
    assert {ring["name"]: ring["hours"] for ring in d["rings"] if ring["hours"] is not None} == EXPECTED_HOURS
    assert FAIL_WORDS in [w for x in d["decisions"] for w in x["words"]]
    assert {ring["name"]: ring["adoption"][-1]["devices"] for ring in d["rings"] if ring["adoption"]} == \
        EXPECTED_ADOPTION

    blocks = {}
    for block in render.tsv(r).strip().split("\n\n"):
        title, _columns, *rows = block.split("\n")
        blocks[title.removeprefix("# ")] = [row.split("\t") for row in rows]
    assert _funnel_rows(blocks[funnel_title]) == expected and _hours(blocks[rings_title]) == EXPECTED_HOURS

    md = render.markdown(r)
    md_tables = _markdown_tables(md)
    assert _funnel_rows(md_tables[funnel_title]) == expected and _hours(md_tables[rings_title]) == EXPECTED_HOURS
    assert f"  - {render.md_text(FAIL_WORDS)}" in md and render.md_text(WAIT_WORDS) in md

    page = render.html_page(r)
    html_tables = _html_tables(page)
    assert _funnel_rows(html_tables[funnel_title]) == expected and _hours(html_tables[rings_title]) == EXPECTED_HOURS
    assert FAIL_WORDS in htmllib.unescape(page)
    # the charts: adoption per ring ends at each ring's last count; each ratio at its evidence's value
    adoption, *ratio_charts = charts.svgs(page)
    ends = [int(n) for n in charts.values(adoption, "end")]
    assert dict(zip(["lab", "canary"], ends[:2], strict=True)) == EXPECTED_ADOPTION
    assert "devices on 2.1.0" in adoption and "time (UTC)" in adoption
    shown = [v for svg in ratio_charts for v in charts.values(svg, "ratio")]
    control = [f"{evidence.times(e['ratio'])}x" for x in d["decisions"] for g in x["gates"] for e in g["evidence"]
               if e["test"] == "control"]
    assert shown == control == ["1.1x", "1.1x", "1.9x", "2.4x", "0.9x"]
    assert all("(log scale)" in svg and "tolerated (max_ratio)" in svg for svg in ratio_charts)


def test_the_index_of_a_models_rollouts() -> None:
    archived = core.index_row("t9-engine-2.0.0-000001", "2.0.0", "1.9.0", PLAN,
                              decide.RolloutState("2.0.0", 2, decide.Status.COMPLETE, (T0 - 99 * H, T0 - 90 * H,
                                                                                       T0 - 80 * H),
                                                  history=(decide.HistoryEntry(T0 - 70 * H, 2, decide.Action.COMPLETE,
                                                                               "last ring passed"),)),
                              current=False)
    r = core.RolloutReport(NOW, MODEL, MODEL, SOURCES[:1], (archived, ROW))
    rows = {title: rows for title, _, rows in render.sections(r)}[f"Rollouts of {MODEL}"]
    assert [(x[0], x[3], x[4], x[7], x[9]) for x in rows] == [
        ("t9-engine-2.0.0-000001", "complete", "all (3 of 3)", "29.0", "archived"),
        (RID, "rolled_back", "canary (2 of 3)", "50.0", "current")]
    doc = r.to_json()
    assert [x["status"] for x in doc["index"]] == ["complete", "rolled_back"] and doc["rollouts"] == []
    md = render.markdown(r)
    assert "`otactl report rollout ROLLOUT_ID`" in md and "## Rollouts of t9-engine" in md
    page = render.html_page(r)
    assert [row[0] for row in _html_tables(page)[f"Rollouts of {MODEL}"]] == [archived.rollout_id, RID]


# --------------------------------------------------------------------------- a page that reads safely
def test_html_is_self_contained_and_deterministic() -> None:
    page = render.html_page(report())
    assert charts.external_references(page) == [] and "<script" not in page.lower()
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg",
                                                             "http://www.w3.org/1999/xlink"}
    assert "@media print" in page and "max-width:100%" in page  # a laptop screen and paper
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # several inline charts, no shared id
    assert render.html_page(report()) == page


def _tags(page: str) -> set[str]:
    return {m.lower() for m in re.findall(r"<\s*([a-zA-Z][a-zA-Z0-9:]*)", page)}


def test_untrusted_text_stays_text() -> None:
    r = report()
    page = render.html_page(r)
    assert "<img" not in page and "<a " not in page and "javascript:alert(2)](" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the pause reason and the verdict's scope, shown
    assert _tags(page) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "strong", "ul",
                           "li", "table", "thead", "tbody", "tr", "th", "td", "code", "svg", "g", "path", "defs",
                           "clippath", "use", "text", "rect"}, _tags(page)
    # in the chart the scope is a label, escaped by the SVG writer, a dollar sign a dollar (no mathtext)
    ratio = next(svg for svg in charts.svgs(page) if "log scale" in svg and "onerror" in svg)
    assert "crash rate, &lt;img src=x onerror=alert(1)&gt; $x$ [click](javascript:alert(2)) | cell" in ratio
    md = render.markdown(r)
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    assert not re.search(r"(?<!\\)\]\(", md)  # no live link
    audit = _markdown_tables(md)[f"{RID}: audit trail"]
    assert [row[3] for row in audit] == ["start", "approve", "advance", "pause", "resume", "rollback"]
    assert audit[3][-1] == " ".join(HOSTILE.split())  # a `|` in the reason split no cell


@pytest.mark.parametrize(("value", "shown"), [(1834.0, "1,800"), (12.0, "12"), (4.0, "4"), (15_400.0, "15,000"),
                                              (0.5, "0.5")])
def test_amounts_in_words_are_rounded_for_reading(value: float, shown: str) -> None:
    assert evidence.about(value) == shown
