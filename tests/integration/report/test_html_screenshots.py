"""The HTML reports in a real browser: written by the real CLI, opened in headless Chromium (Debian's
package; `scripts/ensure-system-deps.sh` installs it, and the test fails, never skips, without it).

The story is the demo's, run for real by the simulator (160 engines, the rollout controller, 2.1.0
to every device, 2.2.0 rolled back by its canary gate); the reports come from the real CLI.

For each report the browser's screenshot must be a real render, not only a file: a PNG of the
viewport's size, with the page's content inside it (nothing cut off), and every ``<svg>`` chart
painting pixels of its own. Where the browser laid each chart out is found by rendering the page with
each chart outlined in a colour of its own; what it painted, by rendering it with the charts hidden
(``visibility: hidden`` keeps the layout) and comparing. The DOM the browser built (``--dump-dom``)
holds the charts and the report's numbers, and the page loads nothing from the network: every request
goes to a recording proxy that answers 403, and a control page that does load a remote image and
stylesheet proves the recorder sees them (and that a chart painting nothing is caught).

The screenshots are kept in ``tmp_path``; with ``OTACTL_UPDATE_SCREENSHOTS=1`` (``make screenshots``)
they are also copied to ``docs/screenshots/``, so the pictures in the docs are the ones this test checked.
"""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import shutil
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from fixtures.repo import cli_env, ok, run_otactl
from PIL import Image, ImageChops

from otactl.sim.controlled import ControlledSimulation
from otactl.sim.scenario import load_scenario

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs" / "screenshots"
UPDATE = os.environ.get("OTACTL_UPDATE_SCREENSHOTS") == "1"
MODEL = "t9-engine"
PASSPHRASE = "screenshot-test-passphrase"
# The viewport: as wide as a laptop screen, and as tall as the page needs (the first of these heights the
# page's content ends inside), so the screenshot holds the whole page; the one kept is cut to the content.
WIDTH, HEIGHTS = 1280, (4000, 8000, 16000)
TIMEOUT = 120  # seconds for one browser run: a hung browser fails the test instead of hanging it
# Requests the browser makes for itself (component and account services) whatever the page; any other
# request through the proxy came from the page.
BROWSER_OWN = frozenset({"update.googleapis.com", "accounts.google.com", "clients2.google.com",
                         "redirector.gvt1.com"})


# ------------------------------------------------------------------------------------ the browser
class _Recorder(socketserver.ThreadingTCPServer):
    """An HTTP proxy on loopback that records each request's target and refuses it."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.lock = threading.Lock()
        self.targets: list[str] = []

    def take(self) -> list[str]:
        with self.lock:
            taken, self.targets = self.targets, []
        return taken


class _RecordingHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        words = self.rfile.readline(8192).decode("latin-1").split()  # CONNECT host:443 / GET http://host/x
        assert isinstance(self.server, _Recorder)
        with self.server.lock:
            self.server.targets.append(words[1] if len(words) > 1 else " ".join(words))
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def _host(target: str) -> str:
    return (urlsplit(target).hostname or "") if "://" in target else target.rsplit(":", 1)[0]


@pytest.fixture(scope="module")
def proxy() -> Iterator[_Recorder]:
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@dataclass(frozen=True)
class Render:
    image: Image.Image  # RGB
    dom: str  # the DOM the browser built, serialised
    page_requests: list[str]  # what went through the proxy but the browser's own services


class Browser:
    def __init__(self, proxy: _Recorder, work: Path) -> None:
        exe = shutil.which("chromium")
        assert exe is not None, ("chromium is not installed: `make system-deps` (scripts/ensure-system-deps.sh) "
                                 "installs Debian's chromium")
        self.exe, self.proxy, self.work = exe, proxy, work
        self.runs = 0

    def render(self, page: Path, height: int) -> Render:
        self.runs += 1
        png = self.work / f"render-{self.runs}.png"
        host, port = self.proxy.server_address[:2]
        self.proxy.take()
        result = subprocess.run(
            [self.exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={WIDTH},{height}", f"--user-data-dir={self.work / 'profile'}", "--no-first-run",
             "--disable-extensions", "--disable-sync", "--disable-background-networking",
             "--disable-component-update", f"--proxy-server=http://{host!s}:{port}", "--proxy-bypass-list=<-loopback>",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no name resolves if the proxy were bypassed
             f"--screenshot={png}", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=TIMEOUT, cwd=self.work, check=False)
        assert result.returncode == 0 and png.is_file(), f"chromium exit {result.returncode}: {result.stderr[-3000:]}"
        requests = [t for t in self.proxy.take() if _host(t) not in BROWSER_OWN]
        with Image.open(png) as image:
            assert image.format == "PNG"
            return Render(image.convert("RGB"), result.stdout, requests)


@pytest.fixture
def browser(proxy: _Recorder, tmp_path: Path) -> Browser:
    (tmp_path / "browser").mkdir()
    return Browser(proxy, tmp_path / "browser")


# ------------------------------------------------------------------------------------ the checks
SVG = re.compile(r"<svg\b", re.I)


def content_bottom(image: Image.Image) -> int:
    """The row below the page's last non-white pixel."""
    box = image.convert("L").point(lambda v: 255 if v < 250 else 0).getbbox()
    return 0 if box is None else box[3]


def with_charts(page: str, style: str) -> str:
    """The page with ``data-chart="k"`` on its k-th ``<svg>`` and ``style`` in its head."""
    parts = SVG.split(page)
    marked = parts[0] + "".join(f'<svg data-chart="{k}"{rest}' for k, rest in enumerate(parts[1:]))
    head = re.search(r"</head>", marked, re.I)
    style = f"<style>{style}</style>"
    return style + marked if head is None else marked[:head.start()] + style + marked[head.start():]


def outline(k: int) -> tuple[int, int, int]:
    """A colour no chart draws with, one per chart: where the browser put chart ``k``."""
    return (255, 0, 3 * k)


HIDDEN = "[data-chart]{visibility:hidden !important}"  # the layout stays as it was


def outlined(charts: int) -> str:
    rgb = [outline(k) for k in range(charts)]
    return "".join(f'[data-chart="{k}"]{{outline:3px solid rgb{c} !important;outline-offset:3px}}'
                   for k, c in enumerate(rgb))


@dataclass(frozen=True)
class Painted:
    pixels: int  # pixels inside the chart's box that change when the charts are hidden
    box: tuple[int, int, int, int] | None  # where the browser laid the chart out
    colours: int  # distinct colours inside the box

    def problem(self) -> str | None:
        if self.box is None:
            return "is not in the screenshot"
        width, height = self.box[2] - self.box[0], self.box[3] - self.box[1]
        if self.pixels < 300 or width < 100 or height < 30 or self.colours < 4:
            return f"paints {self.pixels} pixels of a {width}x{height} box in {self.colours} colours"
        return None


def painted(full: Image.Image, hidden: Image.Image, located: Image.Image, k: int) -> Painted:
    pixels = np.asarray(located)
    ys, xs = np.nonzero(np.all(pixels == outline(k), axis=2))
    if len(xs) == 0:
        return Painted(0, None, 0)
    box = (int(xs.min()) + 6, int(ys.min()) + 6, int(xs.max()) - 5, int(ys.max()) - 5)  # inside the outline
    if box[2] <= box[0] or box[3] <= box[1]:
        return Painted(0, box, 0)
    diff = ImageChops.difference(full.crop(box), hidden.crop(box)).convert("L")
    changed = int((np.asarray(diff) > 16).sum())
    return Painted(changed, box, len(full.crop(box).getcolors(maxcolors=1 << 20) or []))


_REF = re.compile(r"""\b(?:src|href|xlink:href|srcset|poster|data|action|background)\s*=\s*["']?([^"'\s>]*)""", re.I)
_URL = re.compile(r"""url\(\s*["']?([^"')]*)""", re.I)
_TAGS_THAT_LOAD = re.compile(r"<\s*(script|link|iframe|frame|object|embed|base)\b", re.I)


def remote_references(page: str) -> list[str]:
    """What in the HTML could make the browser load something: attributes and CSS urls that point
    anywhere but inside the page (``#id``, ``data:``), CSS imports, elements that load or run."""
    found = [ref for ref in _REF.findall(page) + _URL.findall(page) if not ref.startswith(("#", "data:"))]
    found += [f"@import {m}" for m in re.findall(r"@import\s+([^;]*)", page, re.I)]
    found += [f"<{tag.lower()}>" for tag in _TAGS_THAT_LOAD.findall(page)]
    return found


def page_text(dom: str) -> str:
    """The text a reader sees outside the charts, whitespace folded."""
    text = re.sub(r"<svg\b.*?</svg>", " ", dom, flags=re.S | re.I)
    text = re.sub(r"<(style|title)\b.*?</\1>", " ", text, flags=re.S | re.I)
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def check_in_browser(browser: Browser, page: Path, *, min_charts: int, shown: list[str], name: str,
                     tmp_path: Path) -> None:
    """Render ``page``; check the screenshot, every chart, the DOM and the network; keep the screenshot."""
    source = page.read_text()
    assert remote_references(source) == []
    for height in HEIGHTS:
        full = browser.render(page, height)
        assert full.image.size == (WIDTH, height)
        bottom = content_bottom(full.image)
        if bottom < height - 40:
            break
    assert 400 < bottom < height - 40, f"the page's content ends at row {bottom} of {height}"
    assert full.page_requests == [], "the page loaded from the network"
    assert len(full.image.getcolors(maxcolors=1 << 20) or []) >= 64  # text, tables and charts, antialiased
    rgb = np.asarray(full.image, dtype=np.int16)
    coloured = int((rgb.max(axis=2) - rgb.min(axis=2) >= 64).sum())
    assert coloured >= 1000, f"{coloured} coloured pixels: no chart in colour"

    dom = full.dom
    assert not re.search(r"<\s*(script|iframe|object|embed)\b", dom, re.I)
    charts = len(SVG.findall(dom))
    assert charts == len(SVG.findall(source)) >= min_charts, (charts, min_charts)
    text = page_text(dom)
    missing = [s for s in shown if s not in text]
    assert missing == [], f"not shown by the browser: {missing}"

    renders = {}
    for variant, style in (("hidden", HIDDEN), ("located", outlined(charts))):
        path = page.with_name(f"{page.stem}-{variant}.html")
        path.write_text(with_charts(source, style))
        renders[variant] = browser.render(path, height)
        assert renders[variant].page_requests == []
    problems = {k + 1: painted(full.image, renders["hidden"].image, renders["located"].image, k).problem()
                for k in range(charts)}
    assert {k: p for k, p in problems.items() if p} == {}, f"charts of {charts} that do not render"

    kept = tmp_path / name
    full.image.crop((0, 0, WIDTH, bottom + 32)).save(kept, optimize=True)
    (tmp_path / f"{Path(name).stem}.dom.html").write_text(dom)
    if UPDATE:
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept, DOCS / name)


# ------------------------------------------------------------------------------------ the reports
@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo's story, for real: 160 simulated engines (TUF clients on loopback, signed reports into
    SQLite) under the rollout controller; 2.1.0 walks to every device, 2.2.0 crashes five times as
    often and its canary gate rolls it back. The workspace and its telemetry database."""
    work = tmp_path_factory.mktemp("story")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
        sim = ControlledSimulation(load_scenario(ROOT / "examples/scenarios/t9-demo-rollouts.yaml"), work / "sim",
                                   plan=ROOT / "canary/demo.yaml", releases=["2.1.0", "2.2.0"], baseline="2.0.0")
        try:
            sim.run()
        finally:
            sim.close()
    assert [(r.status, r.final_ring) for r in sim.rollouts] == [("complete", "all"), ("rolled_back", "canary")]
    assert sim.workspace_path is not None
    return sim.workspace_path, work / "sim" / "telemetry.db"


def otactl(*args: str, cwd: Path) -> str:
    return ok(run_otactl(*args, cwd=cwd, env=cli_env(PASSPHRASE))).stdout


def test_fleet_report_in_a_browser(story: tuple[Path, Path], browser: Browser, tmp_path: Path) -> None:
    ws, db = story
    doc = json.loads(otactl("report", "fleet", "--telemetry", f"sqlite:{db}", "-o", "json", cwd=ws))
    page = tmp_path / "fleet-report.html"
    otactl("report", "fleet", "--telemetry", f"sqlite:{db}", "-o", "html", "--out", str(page), cwd=ws)
    shown = [MODEL, *(r["release"] for m in doc["models"] for r in m["releases"]),
             *[d["device_id"] for d in doc["devices"] if d["status"] != "on_target"][:20],
             f"{sum(m['devices'] for m in doc['models'])} devices"]
    check_in_browser(browser, page, min_charts=len(doc["models"]), shown=shown, name="fleet-report.png",
                     tmp_path=tmp_path)


def test_rollout_report_in_a_browser(story: tuple[Path, Path], browser: Browser, tmp_path: Path) -> None:
    ws, db = story
    page = tmp_path / "rollout-report.html"
    otactl("rollout", "report", MODEL, "--telemetry", f"sqlite:{db}", "-o", "html", "--out", str(page), cwd=ws)
    archive = sorted((ws / "repository" / "rollouts-state" / MODEL).glob("*.json"))
    rollouts = [json.loads(p.read_text()) for p in archive]
    assert [r["state"]["status"] for r in rollouts] == ["complete", "rolled_back"]
    shown = [*(r["rollout_id"] for r in rollouts), "2.0.0", "2.1.0", "2.2.0", "rolled_back", "complete",
             *(h["reason"] for r in rollouts for h in r["state"]["history"] if h["action"] == "rollback")]
    check_in_browser(browser, page, min_charts=2, shown=shown, name="rollout-report.png", tmp_path=tmp_path)


def test_the_checks_catch_a_page_that_loads_from_the_network_and_a_chart_that_paints_nothing(
        browser: Browser, tmp_path: Path) -> None:
    """The control: without it, a recorder that sees nothing and a diff that finds nothing would pass."""
    page = tmp_path / "probe.html"
    source = ("<!doctype html><html><head><link rel='stylesheet' href='https://fonts.example/report.css'></head>"
              "<body><h1>probe</h1><svg width='300' height='120'></svg>"
              "<img src='http://otactl-probe.invalid/pixel.png' alt=''></body></html>")
    page.write_text(source)
    assert remote_references(source) == ["https://fonts.example/report.css", "http://otactl-probe.invalid/pixel.png",
                                         "<link>"]
    full = browser.render(page, HEIGHTS[0])
    assert {_host(t) for t in full.page_requests} == {"fonts.example", "otactl-probe.invalid"}
    renders = []
    for variant, style in (("hidden", HIDDEN), ("located", outlined(1))):
        path = tmp_path / f"probe-{variant}.html"
        path.write_text(with_charts(source, style))
        renders.append(browser.render(path, HEIGHTS[0]).image)
    chart = painted(full.image, *renders, 0)
    assert chart.box is not None and chart.pixels == 0
    assert (chart.box[2] - chart.box[0], chart.box[3] - chart.box[1]) == (300, 120)  # found where it was laid out
