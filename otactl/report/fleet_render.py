"""The fleet report as tables, Markdown and one self-contained HTML page. Pure rendering: every number
comes from :class:`~otactl.report.fleet.FleetReport`, so all formats show the same counts.

Device ids, models, variants, releases and source errors are untrusted text: the Markdown escapes them
with the rollout report's :func:`~otactl.report.rollouts.md_text`, the HTML page renders that Markdown
with raw HTML disabled, and the chart's labels are escaped by matplotlib's SVG writer, mathtext off
(otactl/report/charts.py).
"""

from __future__ import annotations

import html
from typing import Any

from otactl.report.fleet import Compliance, FleetReport, ModelSummary, TargetSource, label
from otactl.report.rollouts import md_text

ATTENTION_LIMIT = 200  # devices listed by name in Markdown and HTML (JSON lists every device)

Section = tuple[str, list[str], list[list[Any]]]


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def _target(m: ModelSummary) -> str:
    if m.target.source is TargetSource.POLICY:
        return f"what its rollout policy gives each device's ring (or its pin): {m.target.detail}"
    if m.target.source is TargetSource.NEWEST:
        return f"the newest published release, {m.target.release} (no rollout policy; a pin wins)"
    return "none: the model has no published release"


def sections(r: FleetReport) -> list[Section]:
    """(title, columns, rows) of every table: the terminal table and the Markdown are made from these."""
    phases = list(Compliance)
    out: list[Section] = [
        ("sources", ["source", "spec", "read", "detail"],
         [[s.name, s.spec, "yes" if s.ok else "NO", s.detail] for s in r.sources]),
        (f"compliance per model (not seen: no report in {r.not_seen_days} days)",
         ["model", "status", "devices", "share"],
         [[m.model, label(p, r.not_seen_days), m.compliance[p], _share(m.compliance[p], m.devices)]
          for m in r.models for p in phases if m.compliance[p] or p is Compliance.ON_TARGET]),  # JSON: all
        ("targets", ["model", "target source", "target"], [[m.model, m.target.source.value, _target(m)]
                                                          for m in r.models]),
        ("release distribution", ["model", "release", "devices"],
         [[m.model, rel, n] for m in r.models for rel, n in m.releases.items()]),
        ("devices per model, hardware revision, variant and release",
         ["model", "hardware revision", "variant", "release", "devices"],
         [[g.model, g.hardware_revision, g.variant, g.release, g.devices] for g in r.groups]),
        ("signed record and reported state disagree", ["device", "field", "signed record", "reported"],
         [[d.device_id, d.field, "-" if d.signed is None else d.signed, d.reported] for d in r.disagreements]),
    ]
    attention = [d for d in r.devices if d.status is not Compliance.ON_TARGET]
    out.append((f"devices not on target ({len(attention)})", ["device", "model", "status", "release", "target",
                                                             "last seen"],
                [[d.device_id, d.model, label(d.status, r.not_seen_days), d.release, d.target or "-",
                  "-" if d.last_seen is None else d.last_seen.isoformat()] for d in attention]))
    return out


def tsv(r: FleetReport) -> str:
    """The tables as tab-separated text (what `-o table` prints when piped), for ``--out``."""
    def cell(v: Any) -> str:
        return " ".join(str(v).split())

    blocks = ["\n".join(["# " + title, "\t".join(columns), *("\t".join(cell(v) for v in row) for row in rows)])
              for title, columns, rows in sections(r)]
    return "\n\n".join(blocks) + "\n"


def _gap(r: FleetReport) -> str | None:
    failed = [s for s in r.sources if not s.ok]
    if not failed:
        return None
    return ("This report could not read: " + "; ".join(f"{s.name} ({s.spec}): {s.detail}" for s in failed)
            + ". Device states are unknown; the signed fleet is complete.")


def markdown(r: FleetReport) -> str:
    scope = f"model {md_text(r.model_filter)}" if r.model_filter else "all models"
    out = [f"# Fleet report\n\nGenerated {r.generated.isoformat()}, {scope}, "
           f"{sum(m.devices for m in r.models)} devices in the signed fleet.\n"]
    gap = _gap(r)
    if gap:
        out.append(f"**{md_text(gap)}**\n")
    for title, columns, rows in sections(r):
        out.append(f"## {md_text(title[:1].upper() + title[1:])}\n")
        if not rows:
            out.append("None.\n")
            continue
        shown = rows[:ATTENTION_LIMIT]
        out.append("| " + " | ".join(md_text(c) for c in columns) + " |")
        out.append("|" + "---|" * len(columns))
        out.extend("| " + " | ".join(md_text(v) for v in row) + " |" for row in shown)
        if len(rows) > len(shown):
            out.append(f"\n{len(rows) - len(shown)} more rows: see `-o json`.")
        out.append("")
    return "\n".join(out) + "\n"


def bar_chart(m: ModelSummary, n: int = 0) -> str:
    """Devices per running release (newest first, unknown last): a matplotlib bar chart (otactl/report/charts.py)
    with a release axis and a device axis, each bar's count written beside it."""
    if not m.releases:
        return ""
    from otactl.report import charts

    labels = list(m.releases)
    return charts.bar_chart(labels, [m.releases[x] for x in labels], xlabel="devices", ylabel="release",
                            prefix=f"f{n}", title=f"{m.model}: devices per running release",
                            muted=[x == "unknown" for x in labels])


def html_page(r: FleetReport) -> str:
    import markdown_it  # rich depends on markdown-it-py: already installed with otactl

    md = markdown_it.MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML stays text
    charts = "".join(f"<h3>{html.escape(m.model)}: devices per running release</h3>{bar_chart(m, i)}"
                     for i, m in enumerate(r.models) if m.releases)
    body = md.render(markdown(r).split("\n", 2)[-1])  # without the title: the page has its own
    style = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:.85em;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:2px 6px}svg.chart{max-width:100%;height:auto;display:block}"
             "@media print{body{max-width:none;margin:0}svg.chart{break-inside:avoid;page-break-inside:avoid}"
             "tr{break-inside:avoid}}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>otactl fleet report</title>"
            f"<style>{style}</style></head><body><h1>Fleet report</h1>{body}"
            f"<h2>Version distribution</h2>{charts or '<p>No devices.</p>'}</body></html>\n")
