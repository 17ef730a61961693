"""Rollout reports from the recorded state (current and archived) and the audit log. Pure rendering."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class RolloutSummary:
    rollout_id: str
    model: str
    release: str
    baseline: str
    status: str
    rings: list[str]
    ring_index: int
    history: list[dict[str, Any]]  # time, ring_index, action, reason
    last_verdict: dict[str, Any] | None
    audit_entries: int


def summarise(doc: dict[str, Any], audit_entries: int) -> RolloutSummary:
    from otactl.rollout.plan import parse_plan

    plan = parse_plan(doc["plan_text"], doc["plan_path"])
    state = doc["state"]
    started = {"time": state["ring_started"][0], "ring_index": 0, "action": "start",
               "reason": f"rollout started in ring {plan.rings[0].name!r}"}
    return RolloutSummary(doc["rollout_id"], doc["model"], doc["release"]["version"], doc["baseline"]["version"],
                          state["status"], [r.name for r in plan.rings], state["ring_index"],
                          [started, *state["history"]],
                          doc.get("last_verdict"), audit_entries)


def _evidence_rows(s: RolloutSummary) -> list[dict[str, Any]]:
    rows = []
    for gate in (s.last_verdict or {}).get("gates", []):
        for ev in gate.get("evidence", []):
            rows.append({"metric": gate["metric"], **ev})
    return rows


def _num(x: Any, fmt: str = ".3g") -> str:
    return "n/a" if x is None or isinstance(x, str) else format(float(x), fmt)


def markdown(summaries: list[RolloutSummary], generated: datetime) -> str:
    out = [f"# Rollout report\n\nGenerated {generated.isoformat()}.\n"]
    for s in summaries:
        out.append(f"## {s.rollout_id}: {s.model} {s.baseline} → {s.release}\n")
        out.append(f"Status **{s.status}** at ring `{s.rings[s.ring_index]}` "
                   f"({s.ring_index + 1} of {len(s.rings)}: {' → '.join(s.rings)}); "
                   f"{s.audit_entries} audit entries.\n")
        out.append("| time | ring | action | reason |\n|---|---|---|---|")
        for h in s.history:
            out.append(f"| {h['time']} | {s.rings[h['ring_index']]} | {h['action']} | "
                       f"{h['reason'].replace('|', '/')} |")
        rows = _evidence_rows(s)
        if rows:
            v = s.last_verdict or {}
            out.append(f"\nLast verdict **{v.get('phase', '?').upper()}** for ring `{v.get('ring')}`, "
                       f"{v.get('devices', 0)} devices, {_num(v.get('device_hours'), '.0f')} device-hours, "
                       f"window {v.get('since')} - {v.get('until')}.\n")
            out.append("| metric | scope | test | events | exposure | rate | reference | ratio | 95% interval | "
                       "e-value | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                interval = r.get("interval")
                iv = f"{_num(interval[0])} - {_num(interval[1])}" if interval else "n/a"
                out.append(f"| {r['metric']} | {r['scope']} | {r['test']} | {r['events']} | "
                           f"{_num(r['exposure'], '.0f')} | {_num(r['rate'])} | {_num(r['reference_rate'])} | "
                           f"{_num(r['ratio'])} | {iv} | {_num(r['e_value'])} | {r['phase']} |")
        out.append("")
    return "\n".join(out) + "\n"


def _timeline_svg(s: RolloutSummary) -> str:
    """Ring reached over time: one step line, red when rolled back."""
    w, h, pad = 560, 160, 40
    if not s.history:
        return ""
    times = [datetime.fromisoformat(x["time"]) for x in s.history]
    t0, t1 = times[0], max(times[-1], times[0])
    span = max((t1 - t0).total_seconds(), 1.0)
    n = max(len(s.rings) - 1, 1)

    def xy(t: datetime, ring: int) -> tuple[float, float]:
        return pad + (w - 2 * pad) * (t - t0).total_seconds() / span, h - pad - (h - 2 * pad) * ring / n

    pts = []
    prev = None
    for t, x in zip(times, s.history, strict=True):
        ring = x["ring_index"] if x["action"] != "rollback" else -0.0
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
    rows = [r for r in _evidence_rows(s) if r.get("ratio") not in (None, "inf") and r.get("interval")]
    if not rows:
        return ""
    w, row_h, left = 560, 18, 230
    h = row_h * len(rows) + 30
    hi = max(2.0, max(float(r["interval"][1]) for r in rows if r["interval"][1] not in (None, "inf")))

    def x(v: float) -> float:
        return left + (w - left - 10) * min(v, hi) / hi

    parts = [f'<line x1="{x(1):.1f}" y1="0" x2="{x(1):.1f}" y2="{h - 20}" stroke="#999" stroke-dasharray="3"/>']
    for i, r in enumerate(rows):
        y = 12 + i * row_h
        lo, up = float(r["interval"][0]), float(r["interval"][1]) if r["interval"][1] != "inf" else hi
        colour = {"fail": "#c0392b", "wait": "#f39c12"}.get(r["phase"], "#27ae60")
        parts.append(f'<text x="0" y="{y + 4}" font-size="10">{html.escape(r["metric"] + " " + r["scope"])}</text>')
        parts.append(f'<line x1="{x(lo):.1f}" y1="{y}" x2="{x(up):.1f}" y2="{y}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<circle cx="{x(float(r["ratio"])):.1f}" cy="{y}" r="3" fill="{colour}"/>')
    parts.append(f'<text x="{x(1):.1f}" y="{h - 5}" font-size="10">ratio 1 (same as control)</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
            f'aria-label="effect ratios with 95% intervals">{"".join(parts)}</svg>')


def html_page(summaries: list[RolloutSummary], generated: datetime) -> str:
    import markdown_it  # rich depends on markdown-it-py: already installed with otactl

    body = []
    md = markdown_it.MarkdownIt("commonmark").enable("table")
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
