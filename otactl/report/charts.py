"""Charts for the HTML reports: matplotlib (Agg) drawn to SVG, inlined in the page. Shared by the fleet
and the rollout report; nothing here computes a number the report does not already hold.

matplotlib is imported inside :func:`_module`, never at module import: the CLI imports no plotting
library unless it renders HTML (``otactl --help`` stays fast). Output is deterministic (a fixed
``svg.hashsalt``, no date in the metadata) and self-contained: text stays text (``svg.fonttype``
``none``, so no embedded glyphs and no font file), the XML prolog and RDF metadata are dropped, and
every id is prefixed per chart so several inline SVGs in one page never share an id.

Labels are untrusted text (release, ring, variant names from records): matplotlib escapes what it
writes into the SVG, and mathtext is off (``text.parse_math`` False, no TeX), so a ``$`` is a dollar.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from otactl.report.evidence import times

RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "otactl-report",
    "text.usetex": False,
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 72,
}
PHASE_COLOURS = {"fail": "#c0392b", "wait": "#e67e22", "pass": "#27ae60"}
RING_COLOURS = ("#2e86c1", "#8e44ad", "#16a085", "#d35400", "#7f8c8d", "#c0392b", "#2c3e50")
WIDTH_IN = 7.5


def _module(name: str) -> Any:
    """A matplotlib module, imported on first use (typed loosely: its stubs are not what we check)."""
    import importlib

    if name == "matplotlib.pyplot":
        importlib.import_module("matplotlib").use("Agg", force=True)
    return importlib.import_module(name)


def _pyplot() -> Any:
    return _module("matplotlib.pyplot")


def _rc() -> Any:
    return _module("matplotlib").rc_context(RC)


_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(xlink:href="#|href="#|url\(#)([^")]+)')


def _svg(fig: Any, prefix: str, label: str) -> str:
    plt = _pyplot()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)
    text = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', text)
    text = _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text)
    import html

    aria = html.escape(label, quote=True)
    return text.replace("<svg ", f'<svg role="img" aria-label="{aria}" class="chart" ', 1).strip()


def _figure(height_in: float) -> tuple[Any, Any]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH_IN, max(height_in, 1.6)))
    return fig, ax


def _time_axis(ax: Any) -> None:
    mdates = _module("matplotlib.dates")
    locator = mdates.AutoDateLocator(tz=mdates.UTC, minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    # ticks at the level of seconds read as full times (a simulated rollout can last minutes), never "40"
    formats = ["%Y", "%b", "%d", "%H:%M", "%H:%M", "%H:%M:%S"]
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=mdates.UTC, formats=formats))
    ax.set_xlabel("time (UTC)")


# ------------------------------------------------------------------------------------ the charts
def bar_chart(labels: Sequence[str], counts: Sequence[int], *, xlabel: str, ylabel: str, prefix: str,
              title: str, muted: Sequence[bool] = ()) -> str:
    """Horizontal bars, one per label, with its count written beside it (ids ``<prefix>-label-i``,
    ``<prefix>-count-i``: tests read them back)."""
    with _rc():
        fig, ax = _figure(0.35 * len(labels) + 1.0)
        ys = list(range(len(labels)))
        colours = ["#95a5a6" if i < len(muted) and muted[i] else "#2e86c1" for i in ys]
        ax.barh(ys, counts, color=colours, height=0.6)
        ax.set_yticks(ys, [""] * len(ys))
        ax.invert_yaxis()
        top = max(counts, default=0)
        ax.set_xlim(0, max(top * 1.15, 1))
        for i, (name, n) in enumerate(zip(labels, counts, strict=True)):
            ax.text(-0.01, i, name, ha="right", va="center", transform=ax.get_yaxis_transform(),
                    gid=f"label-{i}")
            ax.text(n + top * 0.01, i, str(n), va="center", gid=f"count-{i}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel, labelpad=60)
        ax.grid(axis="y", visible=False)
        ax.set_title(title, loc="left")
        return _svg(fig, prefix, title)


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[datetime, int]]
    total: int  # devices in the ring: the line it can reach


def adoption_chart(series: Sequence[Series], *, release: str, marks: Sequence[tuple[datetime, str]], prefix: str,
                   title: str) -> str:
    """Devices on ``release`` over time, one step line per ring, each ring's size as a dotted line, and
    the rollout's events (ring started, rolled back) as vertical marks. Each line ends in its last count
    (ids ``<prefix>-end-i``)."""
    with _rc():
        fig, ax = _figure(3.0)
        for i, s in enumerate(series):
            colour = RING_COLOURS[i % len(RING_COLOURS)]
            xs = [t for t, _ in s.points]
            ys = [n for _, n in s.points]
            ax.step(xs, ys, where="post", color=colour, label=f"{s.label} ({s.total} devices)", linewidth=1.8)
            ax.axhline(s.total, color=colour, linestyle=":", linewidth=0.8)
            if xs:
                ax.text(xs[-1], ys[-1], f" {ys[-1]}", color=colour, va="center", gid=f"end-{i}")
        for t, what in marks:
            ax.axvline(t, color="#555", linewidth=0.6, linestyle="--")
            ax.text(t, 1.0, f" {what}", rotation=90, va="top", ha="right", fontsize=7, color="#555",
                    transform=ax.get_xaxis_transform())
        _time_axis(ax)
        ax.set_ylabel(f"devices on {release}")
        ax.set_ylim(bottom=0, top=max([s.total for s in series] + [1]) * 1.1)
        ax.yaxis.get_major_locator().set_params(integer=True)
        if series:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(len(series), 4), fontsize=8,
                      frameon=False)
        ax.set_title(title, loc="left")
        return _svg(fig, prefix, title)


def reached_chart(rings: Sequence[str], steps: Sequence[tuple[datetime, int]], *, prefix: str, title: str,
                  rolled_back: bool) -> str:
    """The ring the rollout had reached over time (``-1``: none, after a rollback or abort)."""
    with _rc():
        fig, ax = _figure(0.3 * len(rings) + 1.6)
        ax.step([t for t, _ in steps], [i for _, i in steps], where="post", linewidth=2,
                color=PHASE_COLOURS["fail"] if rolled_back else PHASE_COLOURS["pass"])
        ax.set_yticks(range(-1, len(rings)), ["baseline only", *rings])
        ax.set_ylim(-1.5, len(rings) - 0.5)
        _time_axis(ax)
        ax.set_ylabel("ring reached")
        ax.set_title(title, loc="left")
        return _svg(fig, prefix, title)


@dataclass(frozen=True)
class Ratio:
    label: str
    ratio: float
    interval: tuple[float, float] | None
    tolerated: float | None  # the gate's max_ratio (or 1 for a limit: the ratio is to the limit)
    phase: str


def ratio_chart(rows: Sequence[Ratio], *, prefix: str, title: str, xlabel: str) -> str:
    """Each rate against its control as a ratio with its 95% interval, on a log scale; 1 (the control)
    and each row's tolerated ratio marked. Each point's value is written beside it (ids
    ``<prefix>-ratio-i``)."""
    ticker = _module("matplotlib.ticker")

    finite = [v for r in rows for v in (r.ratio, *(r.interval or ()), r.tolerated or 1.0)
              if v is not None and math.isfinite(v) and v > 0]
    lo_axis = max(min([0.5, *finite]) / 1.3, 0.1)  # beyond 10x either way the point sits at the edge
    hi_axis = min(max([2.0, *finite]) * 1.3, 100.0)
    with _rc():
        fig, ax = _figure(0.32 * len(rows) + 1.3)
        ax.set_xscale("log")
        ax.set_xlim(lo_axis, hi_axis)
        ys = list(range(len(rows)))
        ax.axvline(1.0, color="#333", linewidth=0.9, label="same as the control (1x)")
        marked = False
        for i, r in enumerate(rows):
            colour = PHASE_COLOURS.get(r.phase, "#555")
            if r.interval is not None:
                lo, hi = (max(min(v, hi_axis), lo_axis) if math.isfinite(v) else hi_axis for v in r.interval)
                ax.plot([lo, hi], [i, i], color=colour, linewidth=2.2, solid_capstyle="butt")
                for edge, end, marker in ((r.interval[1] >= hi_axis, hi_axis, ">"), (r.interval[0] <= lo_axis,
                                                                                       lo_axis, "<")):
                    if edge:  # the interval goes on beyond the axis
                        ax.plot([end], [i], marker=marker, color=colour, markersize=5, clip_on=False)
            point = max(min(r.ratio, hi_axis), lo_axis)
            ax.plot([point], [i], marker="o", color=colour, markersize=5, clip_on=False)
            ax.text(point, i - 0.28, f"{times(r.ratio)}x", ha="center", va="bottom", fontsize=7, gid=f"ratio-{i}")
            if r.tolerated is not None:
                ax.plot([r.tolerated, r.tolerated], [i - 0.4, i + 0.4], color=PHASE_COLOURS["fail"], linewidth=1.4,
                        linestyle="--", label=None if marked else "tolerated (max_ratio)")
                marked = True
        ax.set_yticks(ys, [r.label for r in rows])
        ax.set_ylim(len(rows) - 0.5, -0.7)
        ticks = [t for t in (0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 50, 100) if lo_axis <= t <= hi_axis]
        ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", visible=False)
        # below the axis label whatever the chart's height: half an inch under the axes, in axes units
        axes_height_in = ax.get_position().height * fig.get_figheight()
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / max(axes_height_in, 0.5)), ncol=2, fontsize=7,
                  frameon=False)
        ax.set_title(title, loc="left")
        return _svg(fig, prefix, title)
