"""The fleet report's numbers, from one fixture fleet, and the same numbers in every format.

The fixture holds one device per compliance phase (and a few disagreements); the unit tests check
the aggregation's counts, then render the same report as the terminal's tables, JSON, Markdown and
HTML and read the counts back out of each, so no format can show a number the others do not.
"""

from __future__ import annotations

import html as htmllib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fixtures import charts

from otactl.cli.render import json_text
from otactl.report import fleet as core
from otactl.report import fleet_render as render
from otactl.report.fleet import Compliance as C

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
T9, X1 = "t9-engine", "x1-robot"


def dev(device_id: str, hw: str, variant: str, model: str = T9, region: str = "eu") -> core.SignedDevice:
    return core.SignedDevice(device_id, model, hw, variant, region)


def seen(device_id: str, running: str | None, *, ago: timedelta = HOUR, event: str | None = None,
         model: str = T9, variant: str | None = None, region: str = "eu", waiting: str | None = None
         ) -> core.LastReports:
    signed = {r.device_id: r for r in RECORDS}.get(device_id)
    return core.LastReports(device_id, NOW - ago, model, variant or (signed.variant if signed else "hp-300"),
                            region, running, event, None if event is None else "2.1.0", waiting)


RECORDS = [
    dev("t9-0001", "revA", "hp-300"),  # on target
    dev("t9-0002", "revB", "hp-400"),  # behind
    dev("t9-0003", "revB", "hp-400"),  # updating
    dev("t9-0004", "revA", "hp-500"),  # failed
    dev("t9-0005", "revB", "hp-300"),  # reverted
    dev("t9-0006", "revB", "hp-400"),  # not seen for 7 days
    dev("t9-0007", "revA", "hp-300"),  # never seen
    dev("t9-0008", "revB", "hp-500"),  # pinned to 2.0.0 and on it: on target
    dev("t9-0009", "revB", "hp-400"),  # on target, but reports variant hp-500
    dev("t9-0010", "revB", "hp-300"),  # runs 9.9.9, not published: off target
    dev("t9-0011", "revA", "hp-400"),  # downloaded 2.1.0, waiting for its maintenance window
    dev("x1-0001", "r1", "base", model=X1),  # no published release: no target
    dev("x1-0002", "r1", "base", model=X1),  # never seen
]
LAST = {r.device_id: r for r in [
    seen("t9-0001", "2.1.0"),
    seen("t9-0002", "2.0.0"),
    seen("t9-0003", "2.0.0", event="installed"),
    seen("t9-0004", "2.0.0", event="failed"),
    seen("t9-0005", "2.0.0", event="reverted"),
    seen("t9-0006", "2.0.0", ago=timedelta(days=10)),
    seen("t9-0008", "2.0.0"),
    seen("t9-0009", "2.1.0", variant="hp-500"),
    seen("t9-0010", "9.9.9"),
    seen("t9-0011", "2.0.0", event="downloaded", waiting="2.1.0"),
    seen("x1-0001", "1.0.0", model=X1, variant="base"),
    seen("ghost-1", "2.1.0"),  # reports, but the signed fleet has no such device
]}
TARGETS = {T9: core.ModelTarget(core.TargetSource.NEWEST, "2.1.0"), X1: core.ModelTarget(core.TargetSource.NONE)}
DEVICE_TARGETS = {r.device_id: ("2.0.0" if r.device_id == "t9-0008" else "2.1.0") if r.model == T9 else None
                  for r in RECORDS}
PUBLISHED = {T9: frozenset({"2.0.0", "2.1.0"}), X1: frozenset()}
SOURCES = [core.Source("signed fleet", "repository", True, "12 device records"),
           core.Source("telemetry", "sqlite:/x/telemetry.db", True, "last reports of 11 devices")]

EXPECTED = {
    T9: {C.ON_TARGET: 3, C.BEHIND: 1, C.UPDATING: 1, C.WAITING: 1, C.FAILED: 1, C.REVERTED: 1, C.OFF_TARGET: 1,
         C.NOT_SEEN: 1, C.NEVER_SEEN: 1},
    X1: {C.NO_TARGET: 1, C.NEVER_SEEN: 1},
}
EXPECTED_RELEASES = {T9: {"9.9.9": 1, "2.1.0": 2, "2.0.0": 7, "unknown": 1}, X1: {"1.0.0": 1, "unknown": 1}}


def report(last: dict[str, core.LastReports] | None = LAST, sources: list[core.Source] = SOURCES,
           **kw: Any) -> core.FleetReport:
    return core.build(RECORDS, last, targets=TARGETS, device_targets=DEVICE_TARGETS, published=PUBLISHED,
                      now=NOW, not_seen_days=7, sources=sources, **kw)


# ------------------------------------------------------------------------------- the aggregation
def test_compliance_counts_per_model() -> None:
    r = report()
    assert [m.model for m in r.models] == [T9, X1]
    for m in r.models:
        assert m.compliance == {p: EXPECTED[m.model].get(p, 0) for p in C}, m.model
        assert sum(m.compliance.values()) == m.devices
        assert list(m.compliance) == list(C)  # every phase, in one order


def test_release_distribution_newest_first_unknown_last() -> None:
    r = report()
    for m in r.models:
        assert m.releases == EXPECTED_RELEASES[m.model]
        assert list(m.releases) == list(EXPECTED_RELEASES[m.model])


def test_groups_per_model_hardware_variant_release() -> None:
    groups = {(g.model, g.hardware_revision, g.variant, g.release): g.devices for g in report().groups}
    assert groups[(T9, "revB", "hp-400", "2.0.0")] == 3  # t9-0002, t9-0003, t9-0006
    assert sum(n for (model, *_), n in groups.items() if model == T9) == 11
    assert groups[(T9, "revA", "hp-300", "unknown")] == 1
    assert groups[(X1, "r1", "base", "1.0.0")] == 1


def test_disagreements() -> None:
    found = {(d.device_id, d.field, d.signed, d.reported) for d in report().disagreements}
    assert found == {
        ("t9-0009", "variant", "hp-400", "hp-500"),
        ("t9-0010", "release", None, "9.9.9"),
        ("x1-0001", "release", None, "1.0.0"),
        ("ghost-1", "device", None, "ghost-1"),
    }


def test_model_filter_keeps_one_model_and_its_unknown_devices() -> None:
    r = report(model_filter=X1)
    assert [m.model for m in r.models] == [X1]
    assert {d.device_id for d in r.disagreements} == {"x1-0001"}  # ghost-1 reports t9-engine


def test_telemetry_not_read_makes_every_device_unknown_never_never_seen() -> None:
    failed = [SOURCES[0],
              core.Source("telemetry", "sqlite:/x/t.db", False, "telemetry database /x/t.db does not exist")]
    r = report(None, failed)
    assert not r.telemetry_read
    for m in r.models:
        assert m.compliance[C.UNKNOWN] == m.devices and m.compliance[C.NEVER_SEEN] == 0
    md = render.markdown(r)
    assert "could not read: telemetry (sqlite:/x/t.db): telemetry database /x/t.db does not exist" in md
    assert r.to_json()["sources"][1] == {"name": "telemetry", "spec": "sqlite:/x/t.db", "ok": False,
                                         "detail": "telemetry database /x/t.db does not exist"}


PHASES = [
    ("never-seen", None, "2.1.0", C.NEVER_SEEN),
    ("stale-beats-on-target", dict(running="2.1.0", ago=timedelta(days=7)), "2.1.0", C.NOT_SEEN),
    ("just-inside-window", dict(running="2.0.0", ago=timedelta(days=7) - timedelta(seconds=1)), "2.1.0", C.BEHIND),
    ("no-target", dict(running="2.0.0"), None, C.NO_TARGET),
    ("on-target-after-an-old-failure", dict(running="2.1.0", event="failed"), "2.1.0", C.ON_TARGET),
    ("booted-is-updating", dict(running="2.0.0", event="booted"), "2.1.0", C.UPDATING),
    ("offered-is-updating", dict(running="2.0.0", event="offered"), "2.1.0", C.UPDATING),
    ("committed-older-is-behind", dict(running="2.0.0", event="committed"), "2.1.0", C.BEHIND),
    ("events-only-running-unknown", dict(running=None, event="downloaded"), "2.1.0", C.UPDATING),
    ("newer-than-target", dict(running="2.2.0"), "2.1.0", C.OFF_TARGET),
    ("rc-before-final", dict(running="2.1.0-rc1"), "2.1.0", C.BEHIND),
    ("not-a-version", dict(running="nightly"), "2.1.0", C.OFF_TARGET),
]


@pytest.mark.parametrize(("last", "target", "phase"), [p[1:] for p in PHASES], ids=[p[0] for p in PHASES])
def test_phase_of_one_device(last: dict[str, Any] | None, target: str | None, phase: C) -> None:
    records = [dev("d-1", "revA", "hp-300")]
    reports = None if last is None else {"d-1": seen("d-1", **last)}
    r = core.build(records, reports or {}, targets={T9: TARGETS[T9]}, device_targets={"d-1": target},
                   published=PUBLISHED, now=NOW, not_seen_days=7, sources=SOURCES)
    assert r.devices[0].status is phase


# ----------------------------------------------------------------------------- every format agrees
def _from_json(r: core.FleetReport) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int], int]:
    doc = json.loads(json_text(core.SCHEMA_KIND, r.to_json()))
    assert doc["schema"] == "otactl/fleet-report/1"
    compliance = {(m["model"], core.label(C(p), doc["not_seen_days"])): n
                  for m in doc["models"] for p, n in m["compliance"].items()}
    releases = {(m["model"], x["release"]): x["devices"] for m in doc["models"] for x in m["releases"]}
    return _shown(compliance), releases, len(doc["disagreements"])


def _tables(rows_by_title: dict[str, list[list[str]]]) -> tuple[dict[tuple[str, str], int],
                                                                 dict[tuple[str, str], int], int]:
    compliance = next(v for k, v in rows_by_title.items() if k.lower().startswith("compliance"))
    releases = next(v for k, v in rows_by_title.items() if k.lower().startswith("release distribution"))
    disagree = next(v for k, v in rows_by_title.items() if k.lower().startswith("signed record"))
    return ({(m, s): int(n) for m, s, n, _ in compliance}, {(m, rel): int(n) for m, rel, n in releases},
            len(disagree))


def _from_tsv(text: str) -> Any:
    blocks = {}
    for block in text.strip().split("\n\n"):
        title, _columns, *rows = block.split("\n")
        blocks[title.removeprefix("# ")] = [row.split("\t") for row in rows]
    return _tables(blocks)


def _from_markdown(text: str) -> Any:
    blocks: dict[str, list[list[str]]] = {}
    title = ""
    for line in text.splitlines():
        if line.startswith("## "):
            title, blocks[line[3:]] = line[3:], []
        elif line.startswith("| ") and title:
            cells = line[2:-2].split(" | ")
            blocks[title].append([re.sub(r"\\(.)", r"\1", htmllib.unescape(c.strip())) for c in cells])
    return _tables({k: v[1:] for k, v in blocks.items()})  # without the header row


def _from_html(page: str) -> Any:
    blocks: dict[str, list[list[str]]] = {}
    for title, table in re.findall(r"<h2>(.*?)</h2>\s*(?:<table>(.*?)</table>|<p>None.</p>)", page, re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
        blocks[htmllib.unescape(title)] = [[htmllib.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
                                           for row in rows]
    return _tables(blocks)


def _shown(compliance: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """What the tables show: the phases that hold devices, and always 'on target' (JSON has all)."""
    return {k: n for k, n in compliance.items() if n or k[1] == core.label(C.ON_TARGET, 7)}


def test_every_format_shows_the_same_numbers() -> None:
    r = report()
    expected_compliance = _shown({(m, core.label(p, 7)): EXPECTED[m].get(p, 0) for m in (T9, X1) for p in C})
    expected_releases = {(m, rel): n for m, by in EXPECTED_RELEASES.items() for rel, n in by.items()}
    expected = (expected_compliance, expected_releases, 4)
    sections = {title: [[str(v) for v in row] for row in rows] for title, _, rows in render.sections(r)}
    assert _tables(sections) == expected
    assert _from_json(r) == expected
    assert _from_tsv(render.tsv(r)) == expected
    assert _from_markdown(render.markdown(r)) == expected
    page = render.html_page(r)
    assert _from_html(page) == expected
    # the chart: one bar per release with its count, per model, in the same order
    for svg, model in zip(charts.svgs(page), (T9, X1), strict=True):
        counts = [int(n) for n in charts.values(svg, "count")]
        assert dict(zip(charts.values(svg, "label"), counts, strict=True)) == EXPECTED_RELEASES[model]
        assert ">devices</text>" in svg and ">release</text>" in svg  # both axes labelled


def test_html_is_self_contained_and_deterministic() -> None:
    page = render.html_page(report())
    assert "<script" not in page and charts.external_references(page) == []
    # the only URLs are the SVG and XLink namespace names, which nothing fetches
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    assert render.html_page(report()) == page  # fixed hash salt, no date: the same bytes every time


HOSTILE = "<img src=x onerror=alert(1)>"


def test_device_and_source_text_is_escaped() -> None:
    records = [core.SignedDevice(HOSTILE, HOSTILE, "[x](javascript:alert(1))", "<b>v</b>", "eu")]
    last = {HOSTILE: core.LastReports(HOSTILE, NOW - HOUR, HOSTILE, "<script>alert(2)</script>", "eu", HOSTILE)}
    sources = [core.Source("telemetry", HOSTILE, False, "<script>alert(3)</script>")]
    r = core.build(records, last, targets={}, device_targets={HOSTILE: "1.0.0"}, published={}, now=NOW,
                   not_seen_days=7, sources=sources)
    page = render.html_page(r)
    tags = {t.lower() for t in re.findall(r"<\s*([a-zA-Z][a-zA-Z0-9]*)", page)}
    assert not tags & {"img", "script", "b", "a"}, tags
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    md = render.markdown(r)
    assert "<img" not in md and "<script" not in md
    assert "\\[x\\](javascript" in md and not re.search(r"(?<!\\)\]\(", md)  # no live link
