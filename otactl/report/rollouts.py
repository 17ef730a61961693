"""Rollout reports from the recorded state (current and archived) and the audit log. Pure rendering.

Every string that comes from a record (reasons an operator typed, release and ring names, verdict
fields) is untrusted text: the Markdown escapes it (HTML special characters as entities, Markdown
punctuation with backslashes, so it is neither live HTML nor a link or an image), and the HTML page
renders that Markdown with raw HTML disabled and escapes what it writes into the SVG charts.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from otactl.errors import OtactlError, StoreError


@dataclass(frozen=True)
class Event:
    time: datetime
    ring_index: int
    action: str
    reason: str


@dataclass(frozen=True)
class RolloutSummary:
    rollout_id: str
    model: str
    release: str
    baseline: str
    status: str
    rings: list[str]
    ring_index: int
    history: list[Event]  # the start, then the record's history
    last_verdict: dict[str, Any] | None
    audit_entries: int

    def ring(self, index: int) -> str:
        return self.rings[index] if 0 <= index < len(self.rings) else f"#{index} (not in the plan)"


def summarise(record: Any, audit_entries: int, where: str | None = None) -> RolloutSummary:
    """A summary of one rollout record (a ``RolloutRecord``, or its JSON form, checked field by field)."""
    from otactl.app import rollout_state as rs

    if not isinstance(record, rs.RolloutRecord):
        rollout_id = record.get("rollout_id") if isinstance(record, dict) else None
        record = rs.from_json(record, None, where or f"rollout record {rollout_id!r:.60}")
    where = where or f"rollout {record.rollout_id}"
    try:
        plan = record.plan
    except OtactlError as exc:
        raise StoreError(f"{where}: corrupt rollout state: field 'plan_text': the recorded plan does not "
                         f"parse ({exc})") from None
    state = record.state
    started = Event(state.ring_started[0], 0, "start", f"rollout started in ring {plan.rings[0].name!r}")
    history = [started, *(Event(h.time, h.ring_index, h.action.value, h.reason) for h in state.history)]
    return RolloutSummary(record.rollout_id, record.model, record.release.version, record.baseline.version,
                          state.status.value, [r.name for r in plan.rings], state.ring_index, history,
                          record.last_verdict, audit_entries)


# ------------------------------------------------------------------------------------ escaping
# Inline Markdown that could make text something else: code, emphasis, links and images, table cells.
_MD_PUNCTUATION = re.compile(r"([\\`*_\[\]|])")


def md_text(value: Any) -> str:
    """Untrusted text for a Markdown paragraph or table cell: no HTML, links, images or emphasis survive."""
    text = " ".join(str(value).split())  # a newline would end the table row
    return _MD_PUNCTUATION.sub(r"\\\1", html.escape(text, quote=False))


def _evidence_rows(s: RolloutSummary) -> list[dict[str, Any]]:
    verdict = s.last_verdict if isinstance(s.last_verdict, dict) else {}
    gates = verdict.get("gates")
    rows = []
    for gate in gates if isinstance(gates, list) else []:
        if not isinstance(gate, dict) or not isinstance(gate.get("evidence"), list):
            continue
        for ev in gate["evidence"]:
            if isinstance(ev, dict):
                rows.append({**ev, "metric": gate.get("metric")})
    return rows


def _float(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float | str):
        return None
    try:
        value = float(x)  # the JSON form writes infinities as "inf"
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _num(x: Any, fmt: str = ".3g") -> str:
    value = _float(x)
    return "n/a" if value is None or isinstance(x, str) else format(value, fmt)


def _interval(row: dict[str, Any]) -> tuple[float, float] | None:
    iv = row.get("interval")
    if not isinstance(iv, list | tuple) or len(iv) != 2:
        return None
    lo, hi = _float(iv[0]), _float(iv[1])
    return None if lo is None or hi is None else (lo, hi)


def markdown(summaries: list[RolloutSummary], generated: datetime) -> str:
    out = [f"# Rollout report\n\nGenerated {generated.isoformat()}.\n"]
    for s in summaries:
        out.append(f"## {md_text(s.rollout_id)}: {md_text(s.model)} {md_text(s.baseline)} → {md_text(s.release)}\n")
        out.append(f"Status **{md_text(s.status)}** at ring {md_text(s.ring(s.ring_index))} "
                   f"({s.ring_index + 1} of {len(s.rings)}: {' → '.join(md_text(r) for r in s.rings)}); "
                   f"{s.audit_entries} audit entries.\n")
        out.append("| time | ring | action | reason |\n|---|---|---|---|")
        for h in s.history:
            out.append(f"| {h.time.isoformat()} | {md_text(s.ring(h.ring_index))} | {md_text(h.action)} | "
                       f"{md_text(h.reason)} |")
        rows = _evidence_rows(s)
        if rows:
            v = s.last_verdict or {}
            out.append(f"\nLast verdict **{md_text(str(v.get('phase', '?')).upper())}** for ring "
                       f"{md_text(v.get('ring'))}, {md_text(v.get('devices', 0))} devices, "
                       f"{_num(v.get('device_hours'), '.0f')} device-hours, "
                       f"window {md_text(v.get('since'))} - {md_text(v.get('until'))}.\n")
            out.append("| metric | scope | test | events | exposure | rate | reference | ratio | 95% interval | "
                       "e-value | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                interval = _interval(r)
                iv = f"{_num(interval[0])} - {_num(interval[1])}" if interval else "n/a"
                out.append(f"| {md_text(r.get('metric'))} | {md_text(r.get('scope'))} | {md_text(r.get('test'))} | "
                           f"{md_text(r.get('events'))} | {_num(r.get('exposure'), '.0f')} | {_num(r.get('rate'))} | "
                           f"{_num(r.get('reference_rate'))} | {_num(r.get('ratio'))} | {iv} | "
                           f"{_num(r.get('e_value'))} | {md_text(r.get('phase'))} |")
        out.append("")
    return "\n".join(out) + "\n"


def _timeline_svg(s: RolloutSummary) -> str:
    """Ring reached over time: one step line, red when rolled back."""
    w, h, pad = 560, 160, 40
    if not s.history:
        return ""
    times = [x.time for x in s.history]
    t0, t1 = times[0], max(times[-1], times[0])
    span = max((t1 - t0).total_seconds(), 1.0)
    n = max(len(s.rings) - 1, 1)

    def xy(t: datetime, ring: float) -> tuple[float, float]:
        return pad + (w - 2 * pad) * (t - t0).total_seconds() / span, h - pad - (h - 2 * pad) * ring / n

    pts = []
    prev: float | None = None
    for t, x in zip(times, s.history, strict=True):
        ring = float(min(max(x.ring_index, 0), n)) if x.action != "rollback" else 0.0
        if prev is not None:
            pts.append(xy(t, prev))
        pts.append(xy(t, ring))
        prev = ring
    colour = "#c0392b" if s.status == "rolled_back" else "#27ae60"
    labels = "".join(f'<text x="4" y="{xy(t0, i)[1] + 4:.0f}" font-size="10">{html.escape(r)}</text>'
                     for i, r in enumerate(s.rings))
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
            f'aria-label="ring reached over time">{labels}'
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/></svg>')


def _ratio_svg(s: RolloutSummary) -> str:
    """Effect ratio with its interval per scope, against the gate's tolerated ratio of 1."""
    rows = []
    for r in _evidence_rows(s):
        ratio, interval = _float(r.get("ratio")), _interval(r)
        if ratio is not None and math.isfinite(ratio) and interval is not None and math.isfinite(interval[0]):
            rows.append((r, ratio, interval))
    if not rows:
        return ""
    w, row_h, left = 560, 18, 230
    h = row_h * len(rows) + 30
    hi = max(2.0, max((iv[1] for _, _, iv in rows if math.isfinite(iv[1])), default=2.0))

    def x(v: float) -> float:
        return left + (w - left - 10) * max(min(v, hi), 0.0) / hi

    parts = [f'<line x1="{x(1):.1f}" y1="0" x2="{x(1):.1f}" y2="{h - 20}" stroke="#999" stroke-dasharray="3"/>']
    for i, (r, ratio, (lo, up)) in enumerate(rows):
        y = 12 + i * row_h
        colour = {"fail": "#c0392b", "wait": "#f39c12"}.get(str(r.get("phase")), "#27ae60")
        label = html.escape(f"{r.get('metric')} {r.get('scope')}")
        parts.append(f'<text x="0" y="{y + 4}" font-size="10">{label}</text>')
        parts.append(f'<line x1="{x(lo):.1f}" y1="{y}" x2="{x(up):.1f}" y2="{y}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<circle cx="{x(ratio):.1f}" cy="{y}" r="3" fill="{colour}"/>')
    parts.append(f'<text x="{x(1):.1f}" y="{h - 5}" font-size="10">ratio 1 (same as control)</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
            f'aria-label="effect ratios with 95% intervals">{"".join(parts)}</svg>')


def html_page(summaries: list[RolloutSummary], generated: datetime) -> str:
    import markdown_it  # rich depends on markdown-it-py: already installed with otactl

    body = []
    # html=False: raw HTML in the Markdown is rendered as text, never as markup (the text is escaped anyway)
    md = markdown_it.MarkdownIt("commonmark", {"html": False}).enable("table")
    for s in summaries:
        body.append(md.render(markdown([s], generated).split("\n", 3)[-1]))
        body.append("<h3>Ring reached over time</h3>" + _timeline_svg(s))
        ratio = _ratio_svg(s)
        if ratio:
            body.append("<h3>Effect vs control (last verdict)</h3>" + ratio)
    style = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:2px 6px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>otactl rollout report</title>"
            f"<style>{style}</style></head><body><h1>Rollout report</h1><p>Generated {generated.isoformat()}.</p>"
            f"{''.join(body)}</body></html>\n")
