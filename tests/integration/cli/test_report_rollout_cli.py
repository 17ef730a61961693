"""`otactl report rollout` through the real console script: the fleet report's workspace (made by the CLI:
two releases published, the example fleet imported, signed reports in its telemetry database), a rollout
started on a plan whose first ring is the two lab devices, their signed reports about the release admitted
by the ingest's own checks, a person's pause (with markup in the reason) and resume, and a controller step.
Then the report in every format, read back and compared; the model's index; an unreadable telemetry
database (exit 0, the gap said, counts unknown); an unknown id (one error line, exit 1).
"""

from __future__ import annotations

import html as htmllib
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fixtures import charts
from fixtures.repo import PASSPHRASE, assert_one_error_line, ok, run_otactl
from integration.cli.test_report_fleet_cli import MODEL, example_fleet, fleet_template, key_of  # noqa: F401

from otactl.fleet.records import load_inventory
from otactl.telemetry.checks import ReportVerifier, Verified
from otactl.telemetry.devices import DeviceRegistry, EnrolledDevice
from otactl.telemetry.report import Event
from otactl.telemetry.reporter import DeviceReporter
from otactl.telemetry.store import ReportStore

pytestmark = pytest.mark.integration
PLAN = """\
schema: otactl/canary-plan/1
name: lab-first
strata: [model, variant]
rings:
  - name: lab
    selector: {tags: [lab]}
    soak_device_hours: 100
    min_reporting_devices: 2
    gates:
      - {metric: crash_rate, max_ratio: 1.5, missing: wait}
  - name: all
    selector: {percent: 100}
    soak_device_hours: 0
    min_reporting_devices: 1
    gates: []
"""
XSS = "<img src=x onerror=alert(1)> $x$"
COLUMNS = ["devices", "pinned", "offered", "downloaded", "installed", "booted", "committed", "healthy", "failed",
           "reverted", "waiting"]
# (ring, variant) -> COLUMNS: t9-0000 (lab, hp-300) was offered 2.1.0 and failed to download it; t9-0001 (lab,
# hp-400) went all the way to committed, one hour on it (not yet the 24 h soak); no other device is in the window
EXPECTED = {
    ("lab", "hp-300"): [1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0],
    ("lab", "hp-400"): [1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0],
    ("lab", "all"): [2, 0, 2, 2, 1, 1, 1, 0, 1, 0, 0],
    ("all", "hp-300"): [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ("all", "hp-400"): [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ("all", "hp-500"): [5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ("all", "all"): [10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
}


def _reports(db: Path, inventory: Path) -> None:
    """The lab devices' reports about 2.1.0, signed and admitted now (after the rollout started)."""
    registry = DeviceRegistry(EnrolledDevice.from_record(r) for r in load_inventory(inventory))
    verifier = ReportVerifier(registry)
    at = datetime.now(UTC)  # the ingest's clock, after the rollout started (not cut to the second: it must be later)
    failing = DeviceReporter(registry.get("t9-0000"), key_of("t9-0000"), next_seq=1000)
    good = DeviceReporter(registry.get("t9-0001"), key_of("t9-0001"), next_seq=1000)
    sends = [failing.event("2.1.0", "lab", Event.OFFERED, at), failing.event("2.1.0", "lab", Event.DOWNLOADED, at),
             failing.event("2.1.0", "lab", Event.FAILED, at, "no space left")]
    sends += [good.event("2.1.0", "lab", e, at) for e in (Event.OFFERED, Event.DOWNLOADED, Event.INSTALLED,
                                                          Event.BOOTED, Event.COMMITTED)]
    sends.append(good.health("2.1.0", "lab", at, 3600))
    admitted = [verifier.check(s.to_json(), at) for s in sends]
    assert all(isinstance(v, Verified) for v in admitted), admitted
    store = ReportStore(db)
    try:
        assert store.ingest([v for v in admitted if isinstance(v, Verified)], at) == [None] * len(sends)
    finally:
        store.close()


@pytest.fixture(scope="module")
def rollout_template(fleet_template: Path,  # noqa: F811 - the fleet report's pytest fixture
                     tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    import os

    os.environ["OTACTL_KEY_PASSPHRASE"] = PASSPHRASE
    ws = tmp_path_factory.mktemp("rollout-report") / "ws"
    shutil.copytree(fleet_template, ws, symlinks=True)
    plan = ws / "canary" / "lab-first.yaml"
    plan.parent.mkdir(exist_ok=True)
    plan.write_text(PLAN)
    started = json.loads(ok(run_otactl("rollout", "start", MODEL, "2.1.0", "--plan", str(plan), "-o", "json",
                                       cwd=ws)).stdout)
    _reports(ws / "telemetry.db", example_fleet(ws.parent / "inventory.csv"))
    ok(run_otactl("rollout", "pause", MODEL, "--reason", XSS, "--key", "release-manager", cwd=ws))
    ok(run_otactl("rollout", "resume", MODEL, "--reason", "looked at it", "--key", "release-manager", cwd=ws))
    stepped = run_otactl("rollout", "step", MODEL, cwd=ws)  # two devices, 1 of 100 device-hours: it holds
    assert stepped.returncode == 4, stepped.stderr
    return ws, started["rollout_id"]


@pytest.fixture
def ws(rollout_template: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    dest = tmp_path / "ws"
    shutil.copytree(rollout_template[0], dest, symlinks=True)
    return dest.resolve(), rollout_template[1]


def _from_json(doc: dict) -> dict[tuple[str, str], list[int | None]]:
    (d,) = doc["rollouts"]
    keys = ["devices", "pinned", "offered", "downloaded", "installed", "booted", "committed", "healthy", "failed",
            "reverted", "waiting"]
    return {(ring["name"], f["variant"]): [f[k] for k in keys] for ring in d["rings"] for f in ring["funnel"]}


def _rows(rows: list[list[str]]) -> dict[tuple[str, str], list[int]]:
    return {(r[0], r[1]): [int(x) for x in r[2:]] for r in rows}


def test_every_format_of_one_rollout_shows_the_same_numbers(ws: tuple[Path, str], tmp_path: Path) -> None:
    root, rid = ws
    doc = json.loads(ok(run_otactl("report", "rollout", rid, "-o", "json", cwd=root)).stdout)
    assert doc["schema"] == "otactl/rollout-report/1" and [s["ok"] for s in doc["sources"]] == [True] * 4
    assert _from_json(doc) == EXPECTED
    (d,) = doc["rollouts"]
    assert (d["rollout_id"], d["status"], d["ring"]) == (rid, "running", "lab")
    assert d["release_approval"]["release_managers"] == ["release-manager"] and d["release_approval"]["ci"]
    assert [(a["action"], a["actor"]) for a in d["audit"] if not a["controller"]] == [
        ("pause", "release-manager"), ("resume", "release-manager")]
    assert d["audit"][0]["action"] == "start" and d["audit"][0]["controller"]
    (hold,) = d["decisions"]  # the step held: its verdict, in words, with what the ring still needs
    assert (hold["action"], hold["verdict"], hold["recorded"]) == ("hold", "wait", False)
    assert any("device-hours" in w for w in hold["words"]), hold["words"]
    lab = d["rings"][0]
    assert lab["adoption"][-1]["devices"] == 2  # t9-0000 ran 2.1.0 before the rollout; t9-0001 committed it

    piped = ok(run_otactl("report", "rollout", rid, cwd=root)).stdout  # -o table, piped: tab-separated tables
    blocks = [b.split("\n") for b in piped.strip().split("\n\n")]
    funnel = next(b for b in blocks if b[0].startswith("ring\tvariant\tdevices\tpinned"))
    assert _rows([row.split("\t") for row in funnel[1:]]) == EXPECTED

    tsv = tmp_path / "report.tsv"
    ok(run_otactl("report", "rollout", rid, "--out", str(tsv), cwd=root))
    block = next(b for b in tsv.read_text().split("\n\n") if b.startswith(f"# {rid}: funnel"))
    assert _rows([row.split("\t") for row in block.split("\n")[2:]]) == EXPECTED

    md = ok(run_otactl("report", "rollout", rid, "-o", "markdown", cwd=root)).stdout
    rows = re.findall(r"^\| (lab|all) \| (hp-\d00|all) \| ((?:\d+ \| )+\d+) \|$", md, re.M)
    assert {(ring, v): [int(x) for x in cells.split(" | ")] for ring, v, cells in rows} == EXPECTED
    assert "&lt;img src=x onerror=alert(1)&gt; $x$" in md and "<img" not in md

    page_file = tmp_path / "rollout.html"
    result = ok(run_otactl("report", "rollout", rid, "-o", "html", "--out", str(page_file), cwd=root))
    assert result.stdout == "" and str(page_file) in result.stderr
    page = page_file.read_text()
    assert charts.external_references(page) == [] and "<script" not in page and "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt; $x$" in page
    table = re.search(rf"<h2>{re.escape(rid)}: funnel per ring and variant</h2>\s*<table>(.*?)</table>", page, re.S)
    assert table is not None
    cells = [[htmllib.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
             for row in re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]]
    assert _rows(cells) == EXPECTED
    adoption = charts.svgs(page)[0]
    assert [int(n) for n in charts.values(adoption, "end")] == [r["adoption"][-1]["devices"] for r in d["rings"]
                                                                if r["adoption"] is not None]


def test_the_model_gives_the_index_and_rollout_report_still_works(ws: tuple[Path, str]) -> None:
    root, rid = ws
    doc = json.loads(ok(run_otactl("report", "rollout", MODEL, "-o", "json", cwd=root)).stdout)
    assert [(r["rollout_id"], r["status"], r["current"]) for r in doc["index"]] == [(rid, "running", True)]
    assert doc["rollouts"] == [] and [s["name"] for s in doc["sources"]] == ["rollout state", "audit log"]
    md = ok(run_otactl("rollout", "report", MODEL, "--format", "md", cwd=root)).stdout  # the old command: in detail
    assert f"## {rid}: funnel per ring and variant" in md
    assert "| lab | all | 2 | 0 | 2 | 2 | 1 | 1 | 1 | 0 | 1 | 0 | 0 |" in md


def test_unreadable_telemetry_is_stated_and_counts_are_unknown(ws: tuple[Path, str]) -> None:
    root, rid = ws
    result = ok(run_otactl("report", "rollout", rid, "--telemetry", "sqlite:missing.db", "-o", "json", cwd=root))
    doc = json.loads(result.stdout)
    telemetry = doc["sources"][-1]
    assert (telemetry["ok"], telemetry["detail"]) == (False, f"telemetry database {root}/missing.db does not exist")
    assert {k: v[2:] for k, v in _from_json(doc).items()} == {k: [None] * 9 for k in EXPECTED}
    assert {k: v[:2] for k, v in _from_json(doc).items()} == {k: v[:2] for k, v in EXPECTED.items()}
    assert "otactl: warning: telemetry not read" in result.stderr and "does not exist" in result.stderr
    md = ok(run_otactl("report", "rollout", rid, "--telemetry", "sqlite:missing.db", "-o", "markdown",
                       cwd=root)).stdout
    assert "| lab | all | 2 | 0 | unknown |" in md and "Funnel counts are unknown, not zero." in md


@pytest.mark.parametrize("name", ["t9-engine-9.9.9-000000", "no-such-model"])
def test_an_unknown_model_or_id_is_one_error_line(ws: tuple[Path, str], name: str) -> None:
    result = run_otactl("report", "rollout", name, cwd=ws[0])
    assert result.returncode == 1 and result.stdout == ""
    assert_one_error_line(result, repr(name))
