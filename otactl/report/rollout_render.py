"""The rollout report as terminal tables, Markdown and one self-contained HTML page with charts. Pure
rendering: every number comes from :class:`~otactl.report.rollout_report.RolloutReport`, and the
tables of every format are made from one list of sections, so all formats show the same numbers.

Rollout ids, ring, release and variant names, actors, the reasons operators typed and every field
of a stored verdict are untrusted text: the Markdown escapes them with
:func:`~otactl.report.rollouts.md_text`, the HTML page renders that Markdown with raw HTML disabled,
and the charts' labels are escaped by matplotlib's SVG writer (mathtext off: otactl/report/charts.py).
"""

from __future__ import annotations

from typing import Any

from otactl.report.evidence import Decision, fmt
from otactl.report.rollout_report import (
    ALL_VARIANTS,
    FUNNEL,
    OUTCOMES,
    FunnelRow,
    IndexRow,
    RingRow,
    RolloutDetail,
    RolloutReport,
    when,
)
from otactl.report.rollouts import md_text

Section = tuple[str, list[str], list[list[Any]]]
UNKNOWN = "unknown"
FUNNEL_COLUMNS = ["offered", "downloaded", "installed", "booted", "committed", "healthy after soak", "failed",
                  "reverted", "waiting for window"]


def _t(x: Any) -> str:
    return "-" if x is None else when(x) or "-"


def _hours(h: float | None) -> str:
    return "-" if h is None else f"{h:.1f}"


def _index(rows: tuple[IndexRow, ...]) -> list[list[Any]]:
    return [[r.rollout_id, r.release, r.baseline, r.status, f"{r.ring} ({r.ring_number} of {r.rings})", _t(r.started),
             _t(r.ended), "-" if r.ended is None else _hours((r.ended - r.started).total_seconds() / 3600), r.plan,
             "current" if r.current else "archived"] for r in rows]


def _actor(name: str | None, controller: bool, recorded: bool = True) -> str:
    if name is None:
        return "- (not in the audit log)" if recorded else "- (a hold: not a transition)"
    return f"{name} (controller)" if controller else name


def detail_sections(d: RolloutDetail) -> list[Section]:
    rid = d.row.rollout_id
    a = d.release_approval
    controller = {e.actor for e in d.audit if e.controller}
    out: list[Section] = [
        (f"{rid}: release approval", ["release", "status", "release managers", "CI", "signatures needed", "note"],
         [] if a is None else [[a.release, a.status, ", ".join(a.release_managers) or "none", ", ".join(a.ci) or "none",
                                a.threshold, a.detail or "-"]]),
        (f"{rid}: rings", ["ring", "selects", "state", "started", "passed", "hours", "soak (device-hours)",
                           "per-device soak (h)", "min reporting devices", "approvals"],
         [[r.name, r.selector, r.state.value, _t(r.started), _t(r.passed), _hours(r.hours), f"{r.soak_device_hours:g}",
           f"{r.soak_hours_per_device:g}", r.min_reporting_devices,
           "-" if not r.approvals_required else
           f"{len(r.approved_by)} of {r.approvals_required} from {', '.join(r.approval_keys)}"
           f" (by: {', '.join(r.approved_by) or 'none'})"] for r in d.rings]),
        (f"{rid}: funnel per ring and variant", ["ring", "variant", "devices", "pinned", *FUNNEL_COLUMNS],
         [[r.name, f.variant, f.devices, f.pinned,
           *((UNKNOWN,) * len(FUNNEL_COLUMNS) if f.counts is None else (f.counts[k] for k in (*FUNNEL, *OUTCOMES)))]
          for r in d.rings for f in r.funnel]),
        (f"{rid}: gate decisions", ["time", "ring", "verdict", "action", "signed by", "in words"],
         [[_t(x.time), x.ring, (x.phase or "-").upper(), x.outcome, _actor(x.actor, x.actor in controller, x.recorded),
           "; ".join(x.words()) or "-"] for x in d.decisions]),
        (f"{rid}: gate evidence", ["time", "ring", "metric", "scope", "test", "events", "exposure", "rate",
                                   "reference", "ratio", "95% interval", "e-value", "fails at", "verdict"],
         [[_t(x.time), x.ring, e.metric, e.scope, e.test, fmt(e.events, ".0f"), fmt(e.exposure, ".0f"), fmt(e.rate),
           fmt(e.reference_rate), fmt(e.ratio), "n/a" if e.interval is None else
           f"{fmt(e.interval[0])} - {fmt(e.interval[1])}", fmt(e.e_value), fmt(e.threshold), e.phase]
          for x in d.decisions for g in x.gates for e in g.evidence]),
        (f"{rid}: history", ["time", "ring", "action", "reason"],
         [[_t(h.time), h.ring, h.action, h.reason] for h in d.history]),
        (f"{rid}: who acted", ["time", "action", "actor", "ring", "reason"],
         [[e.time, e.action, e.actor, e.ring or "-", e.reason or "-"] for e in d.actions]),
        (f"{rid}: audit trail", ["seq", "time", "actor", "action", "ring", "revision", "reason"],
         [[e.seq, e.time, _actor(e.actor, e.controller), e.action, e.ring or "-",
           "-" if e.revision is None else e.revision, e.reason or "-"] for e in d.audit]),
    ]  # fmt: skip
    return out


def sections(r: RolloutReport) -> list[Section]:
    """(title, columns, rows) of every table: the terminal tables, the Markdown and the HTML share them."""
    out: list[Section] = [
        ("Sources", ["source", "spec", "read", "detail"],
         [[s.name, s.spec, "yes" if s.ok else "NO", s.detail] for s in r.sources]),
        (f"Rollouts of {r.model}", ["rollout", "release", "baseline", "status", "ring reached", "started", "ended",
                                    "hours", "plan", "record"], _index(r.index)),
    ]
    for d in r.rollouts:
        out += detail_sections(d)
    return out


def tsv(r: RolloutReport) -> str:
    """The tables as tab-separated text (what `-o table` writes with ``--out``)."""
    def cell(v: Any) -> str:
        return " ".join(str(v).split())

    blocks = ["\n".join(["# " + title, "\t".join(columns), *("\t".join(cell(v) for v in row) for row in rows)])
              for title, columns, rows in sections(r)]
    return "\n\n".join(blocks) + "\n"


def gap(r: RolloutReport) -> str | None:
    failed = [s for s in r.sources if not s.ok]
    if not failed:
        return None
    return ("This report could not read or verify: " + "; ".join(f"{s.name} ({s.spec}): {s.detail}" for s in failed)
            + ("." if all(s.name != "telemetry" for s in failed) else ". Funnel counts are unknown, not zero."))


def _total(r: RingRow) -> FunnelRow:
    return next(f for f in r.funnel if f.variant == ALL_VARIANTS)


def _summary(d: RolloutDetail) -> list[str]:
    """The rollout in sentences, for a PR comment or release notes (Markdown, escaped)."""
    row, a = d.row, d.release_approval
    lines = [f"**{md_text(row.rollout_id)}**: {md_text(row.baseline)} → {md_text(row.release)}, status "
             f"**{md_text(row.status)}** at ring {md_text(row.ring)} ({row.ring_number} of {row.rings}), "
             f"started {_t(row.started)}"
             + (f", ended {_t(row.ended)}." if row.ended else ".")]
    if a is not None:
        lines.append(f"Release {md_text(a.release)} ({md_text(a.status)}) signed by release managers "
                     f"{md_text(', '.join(a.release_managers) or 'none')} and CI {md_text(', '.join(a.ci) or 'none')} "
                     f"({a.threshold} signatures needed).")
    total = _total(d.rings[d.row.ring_number - 1])
    if total.counts is not None:
        lines.append(f"Ring {md_text(d.row.ring)}: {total.counts['committed']} of {total.devices} devices committed "
                     f"the release, {total.counts['healthy']} healthy after soak, {total.counts['failed']} failed, "
                     f"{total.counts['reverted']} reverted.")
    else:
        lines.append(f"Ring {md_text(d.row.ring)}: {total.devices} devices; the funnel is unknown (telemetry not "
                     "read).")
    out = [" ".join(lines), ""]
    for x in d.decisions:
        out.append(f"- {_t(x.time)} ring {md_text(x.ring)}: **{md_text((x.phase or '-').upper())}**, "
                   f"{md_text(x.outcome)}")
        out += [f"  - {md_text(w)}" for w in x.words()]
    for e in d.actions:
        out.append(f"- {md_text(e.time)}: {md_text(e.action)} by **{md_text(e.actor)}**"
                   + (f": {md_text(e.reason)}" if e.reason and e.action != "start" else ""))
    return [*out, ""]


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> list[str]:
    out = [f"## {md_text(title)}\n"]
    if not rows:
        return [*out, "None.\n"]
    out.append("| " + " | ".join(md_text(c) for c in columns) + " |")
    out.append("|" + "---|" * len(columns))
    out.extend("| " + " | ".join(md_text(v) for v in row) + " |" for row in rows)
    return [*out, ""]


def _head(r: RolloutReport) -> list[str]:
    what = (f"model {md_text(r.model)}: {len(r.index)} rollouts" if not r.rollouts or r.query == r.model
            else f"rollout {md_text(r.query)} of model {md_text(r.model)}")
    out = [f"Generated {_t(r.generated)}, {what}.\n"]
    g = gap(r)
    if g:
        out.append(f"**{md_text(g)}**\n")
    if not r.rollouts:
        out.append("One rollout in detail: `otactl report rollout ROLLOUT_ID`.\n")
    return out


def _parts(r: RolloutReport) -> list[tuple[RolloutDetail | None, str]]:
    """The Markdown in parts: the head, sources and index; then each rollout's brief (its charts go
    after it in the page), then its tables."""
    first = _head(r)
    for title, columns, rows in sections(r)[:2]:
        first += _table(title, columns, rows)
    parts: list[tuple[RolloutDetail | None, str]] = [(None, "\n".join(first))]
    for d in r.rollouts:
        parts.append((d, "\n".join([f"## {md_text(d.row.rollout_id)} in brief\n", *_summary(d)])))
        tables: list[str] = []
        for title, columns, rows in detail_sections(d):
            tables += _table(title, columns, rows)
        parts.append((None, "\n".join(tables)))
    return parts


def markdown(r: RolloutReport) -> str:
    return "# Rollout report\n\n" + "\n".join(text for _, text in _parts(r)) + "\n"


# ------------------------------------------------------------------------------------ HTML
def _charts(d: RolloutDetail, n: int) -> str:
    import html

    from otactl.report import charts

    out = []
    reached = [(r.started, r.name) for r in d.rings if r.started is not None]
    if d.row.ended is not None and d.row.status in ("rolled_back", "aborted"):
        reached.append((d.row.ended, d.row.status.replace("_", " ")))
    rid = d.row.rollout_id
    if d.telemetry_read:
        series = [charts.Series(r.name, r.adoption or (), _total(r).devices) for r in d.rings if r.adoption is not None]
        out.append("<h3>Adoption over time per ring</h3>" + charts.adoption_chart(
            series, release=d.row.release, marks=[(t, f"{w}") for t, w in reached], prefix=f"c{n}a",
            title=f"{rid}: devices running {d.row.release}, per ring"))
    else:
        steps = [(t, i) for i, (t, _) in enumerate(reached[: len(d.rings)])]
        if d.row.ended is not None and d.row.status in ("rolled_back", "aborted"):
            steps.append((d.row.ended, -1))
        steps.append((d.row.ended or d.window[1], steps[-1][1]))
        out.append("<h3>Ring reached over time</h3><p>The telemetry was not read: the chart shows the rings the "
                   "rollout reached, not devices.</p>" + charts.reached_chart(
                       [r.name for r in d.rings], steps, prefix=f"c{n}r", title=f"{rid}: ring reached",
                       rolled_back=d.row.status == "rolled_back"))
    for k, x in enumerate(d.decisions):
        rows = _ratios(x)
        if rows:
            out.append(f"<h3>{html.escape(_t(x.time))}, ring {html.escape(x.ring)}: rates against the control "
                       f"({html.escape((x.phase or '-').upper())}, {html.escape(x.outcome)})</h3>"
                       + charts.ratio_chart(rows, prefix=f"c{n}d{k}", title=f"{rid}: {x.ring} at {_t(x.time)}",
                                            xlabel="rate ratio to the control (log scale), 95% interval"))
    return "".join(out)


def _ratios(x: Decision) -> list[Any]:
    import math

    from otactl.report import charts

    rows = []
    for g in x.gates:
        for e in g.evidence:
            if e.test == "control" and e.ratio is not None and math.isfinite(e.ratio) and e.ratio > 0:
                rows.append(charts.Ratio(f"{e.label}, {e.scope}", e.ratio, e.interval, e.margin, e.phase))
    return rows


STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:75em;margin:1.5em auto;padding:0 1em;"
    "color:#222;line-height:1.4}"
    "table{border-collapse:collapse;font-size:.82em;margin-bottom:1em;display:block;overflow-x:auto;max-width:100%}"
    "td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}th{background:#f4f4f4}"
    "svg.chart{max-width:100%;height:auto;display:block;margin:.5em 0 1.5em}"
    "h2{margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1em}"
    "@media print{body{max-width:none;margin:0;font-size:10pt}table{display:table;overflow:visible;font-size:8pt}"
    "svg.chart{page-break-inside:avoid;break-inside:avoid}h2,h3{page-break-after:avoid;break-after:avoid}"
    "tr{page-break-inside:avoid;break-inside:avoid}}"
)


def html_page(r: RolloutReport) -> str:
    import html

    import markdown_it  # rich depends on markdown-it-py: already installed with otactl

    md = markdown_it.MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML stays text
    body = []
    for n, (d, text) in enumerate(_parts(r)):
        body.append(md.render(text))
        if d is not None:
            body.append(_charts(d, n))
    title = html.escape(f"otactl rollout report: {r.query}")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{title}</title>"
            f"<style>{STYLE}</style></head><body><h1>Rollout report</h1>{''.join(body)}</body></html>\n")
