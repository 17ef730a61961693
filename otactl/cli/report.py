"""`otactl report fleet|rollout`: what the fleet runs against what it should run; how a rollout went."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from otactl.cli.common import WorkspaceOpt
from otactl.cli.render import info, json_text, table

if TYPE_CHECKING:
    from otactl.report.rollout_report import RolloutReport

app = typer.Typer(no_args_is_help=True)


class ReportOutput(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"
    html = "html"


TelemetryOpt = typer.Option("sqlite:telemetry.db", "--telemetry", envvar="OTACTL_TELEMETRY_SOURCE",
                            help="sqlite:PATH, the embedded ingest's database (relative to the workspace).")
OutFileOpt = typer.Option(None, "--out", help="Write the report to this file (default: stdout).")


@app.command("fleet")
def fleet(
    model: str = typer.Option(None, "--model", help="Only this product model, e.g. t9-engine (default: all)."),
    not_seen_days: int = typer.Option(7, "--not-seen-days", min=1,
                                      help="A device with no report in this many days is 'not seen'."),
    telemetry: str = TelemetryOpt,
    output: ReportOutput = typer.Option(ReportOutput.table, "--output", "-o",
                                        help="table, json (otactl/fleet-report/1), markdown or html "
                                             "(one self-contained page)."),
    out: Path = OutFileOpt,
    workspace: Path = WorkspaceOpt,
) -> None:
    """Devices per model, hardware revision, variant and release; compliance with each device's target;
    signed records that disagree with what devices report; and what the report could not read.

    A telemetry source that cannot be read is stated in the report (sources) and on stderr, and the
    signed fleet is still listed, every device 'unknown': exit 0 (decision 1103).

    \b
    Example:
      otactl report fleet --model t9-engine --not-seen-days 3
      otactl report fleet -o html --out fleet.html
    """
    from otactl.app.context import Context
    from otactl.app.fleet_report import fleet_report
    from otactl.report import fleet_render
    from otactl.report.fleet import SCHEMA_KIND

    report = fleet_report(Context.open(workspace), telemetry, model=model, not_seen_days=not_seen_days)
    for source in report.sources:
        if not source.ok:
            info(f"otactl: warning: {source.name} not read ({source.spec}): {source.detail}")
    if output is ReportOutput.table and out is None:
        for title, columns, rows in fleet_render.sections(report):
            table(title, columns, rows)
        return
    if output is ReportOutput.json:
        text = json_text(SCHEMA_KIND, report.to_json())
    elif output is ReportOutput.html:
        text = fleet_render.html_page(report)
    elif output is ReportOutput.markdown:
        text = fleet_render.markdown(report)
    else:
        text = fleet_render.tsv(report)
    _write(text, out)


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    from otactl.fsutil import atomic_write

    atomic_write(out, text.encode())
    info(f"report written to {out}")


def render_rollout(report: RolloutReport, output: ReportOutput, out: Path | None) -> None:
    """Show a rollout report (``otactl report rollout`` and ``otactl rollout report``)."""
    from otactl.report import rollout_render
    from otactl.report.rollout_report import SCHEMA_KIND

    for source in report.sources:
        if not source.ok:
            info(f"otactl: warning: {source.name} not read ({source.spec}): {source.detail}")
    if output is ReportOutput.table and out is None:
        for title, columns, rows in rollout_render.sections(report):
            table(title, columns, rows)
        return
    text = {ReportOutput.json: lambda: json_text(SCHEMA_KIND, report.to_json()),
            ReportOutput.html: lambda: rollout_render.html_page(report),
            ReportOutput.markdown: lambda: rollout_render.markdown(report),
            ReportOutput.table: lambda: rollout_render.tsv(report)}[output]()
    _write(text, out)


@app.command("rollout")
def rollout(
    name: str = typer.Argument(..., metavar="MODEL|ROLLOUT_ID",
                               help="A model (the index of its rollouts, current and archived) or one rollout's id "
                                    "(that rollout in detail)."),
    telemetry: str = TelemetryOpt,
    output: ReportOutput = typer.Option(ReportOutput.table, "--output", "-o",
                                        help="table, json (otactl/rollout-report/1), markdown or html "
                                             "(one self-contained page with charts)."),
    out: Path = OutFileOpt,
    workspace: Path = WorkspaceOpt,
) -> None:
    """How a rollout went: each ring's funnel per variant (offered to healthy after soak), each gate
    decision with its evidence in words, time in each ring, who approved the release and who acted,
    and the audit trail. Given a model: the index of its rollouts.

    A telemetry source that cannot be read is stated in the report (sources) and on stderr, and the
    funnel counts are unknown: exit 0 (decision 1104). An unknown model or id, or a corrupt record, is
    one error line, exit 1.

    \b
    Example:
      otactl report rollout t9-engine
      otactl report rollout t9-engine-2.1.0-3f9a1c -o html --out rollout.html
    """
    from otactl.app.context import Context
    from otactl.app.rollout_report import rollout_report

    render_rollout(rollout_report(Context.open(workspace), name, telemetry), output, out)
