"""`otactl rollout plan|start|step|watch|status|recover|pause|resume|abort|rollback|approve|report`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from otactl.cli.common import ModelArg, OutputOpt, VersionArg, WorkspaceOpt, progress
from otactl.cli.render import Output, emit_json, info, table

app = typer.Typer(no_args_is_help=True)

TelemetryOpt = typer.Option("sqlite:telemetry.db", "--telemetry", envvar="OTACTL_TELEMETRY_SOURCE",
                            help="sqlite:PATH (embedded ingest; relative to the workspace) or prometheus:URL.")
KeyOpt = typer.Option(None, "--key", help="Key that signs the audit entry (default: $OTACTL_ACTOR, the "
                      "workspace's `actor`, else the online rollouts key).")
PersonKeyOpt = typer.Option(None, "--key", help="Your key: it signs the audit entry (default: $OTACTL_ACTOR or the "
                            "workspace's `actor`; one of them is required).")


@contextmanager
def _source(spec: str, workspace: Path) -> Iterator[Any]:
    from otactl.telemetry.query import connect

    if spec.startswith("sqlite:") and not Path(spec[7:]).is_absolute():
        spec = f"sqlite:{(workspace / spec[7:]).resolve()}"
    source = connect(spec)
    try:
        yield source
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _show(result: Any, output: Output) -> None:
    if output is Output.json:
        data = dict(result.__dict__)
        if data.get("verdict") is None:
            data.pop("verdict", None)
        emit_json("rollout-step", data)
        return
    prefix = "dry run, nothing written: would " if getattr(result, "dry_run", False) else ""
    print(f"{result.rollout_id}: {prefix}{result.action} -> {result.status} at ring {result.ring!r} "
          f"(policy v{result.policy_version})")
    for reason in result.reasons:
        print(f"  - {reason}")


def _exit(result: Any) -> None:
    """Exit 3 (stopped: rolled back, aborted, paused) or 4 (waiting) through the error model."""
    from otactl.app.rollout import outcome_error

    error = outcome_error(result)
    if error is not None:
        raise error


@app.command("plan")
def plan(model: str = ModelArg, version: str = VersionArg,
         plan_file: Path = typer.Option(..., "--plan", help="The rollout plan, canary/<name>.yaml."),
         telemetry: str | None = typer.Option(
             None, "--telemetry", help="sqlite:PATH or prometheus:URL: also estimate, per ring, whether the "
             "fleet can give each gate the power a PASS needs (from the baseline's recent telemetry)."),
         baseline: str | None = typer.Option(None, "--baseline", help="The fleet's current release "
                                             "(default: the newest published one older than VERSION)."),
         workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Exactly which devices each ring holds, strata coverage, exposure before the first gate, and
    (with --telemetry) whether each ring can ever get the power its gates need.

    \b
    Example:
      otactl rollout plan t9-engine 2.1.0 --plan canary/default.yaml --telemetry sqlite:telemetry.db
    """
    from otactl.app import rollout
    from otactl.app.context import Context
    from otactl.bulk import collector_paused

    ctx = Context.open(workspace)
    with progress(), collector_paused():
        report = rollout.plan(ctx, model, version, plan_file)
    powered = None
    if telemetry is not None:
        from otactl.app.plan_power import plan_power

        with _source(telemetry, workspace) as source:
            powered = plan_power(ctx, model, version, plan_file, report, source, baseline)
    if output is Output.json:
        import json

        doc = report.to_json()
        if powered is not None:
            doc["power"] = powered.to_json()
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return
    table(f"plan {report.plan} for {model} {version} (salt {report.salt}; {report.fleet_devices} devices, "
          f"{report.fleet_strata} strata)", ["ring", "devices", "cumulative", "strata covered", "missing strata"],
          [[r.name, r.devices, r.cumulative, f"{r.strata_present}/{report.fleet_strata}",
            ", ".join(r.strata_missing) or "-"] for r in report.rings])
    print(f"devices exposed before the first gate can decide: {report.exposed_before_first_gate}; "
          f"unassigned: {report.unassigned}")
    for warning in report.warnings:
        info(f"warning: {warning}")
    if powered is not None:
        table(f"power before PASS (baseline {powered.baseline}, last 72 h of telemetry)",
              ["ring", "gate", "events needed", "hours to collect", "feasible", "what to change"],
              [[g.ring, g.metric, f"{g.needed_events:.0f}", "-" if g.hours is None else f"{g.hours:.1f}",
                "yes" if g.feasible else "NO", g.advice or "-"] for g in powered.gates])
        for warning in powered.warnings:
            info(f"warning: {warning}")


@app.command("start")
def start(model: str = ModelArg, version: str = VersionArg,
          plan_file: Path = typer.Option(..., "--plan", help="The rollout plan, canary/<name>.yaml."),
          baseline: str = typer.Option(None, "--baseline", help="The release the fleet runs now."),
          key: str = KeyOpt, workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Start rolling out an approved, published release: its first ring gets it.

    \b
    Example:
      otactl rollout start t9-engine 2.1.0 --plan canary/default.yaml --baseline 2.0.0
    """
    from otactl.app import rollout
    from otactl.app.context import Context

    _show(rollout.start(Context.open(workspace), model, version, plan_file, baseline=baseline, key=key), output)


@app.command("step")
def step(model: str = ModelArg, telemetry: str = TelemetryOpt, key: str = KeyOpt, workspace: Path = WorkspaceOpt,
         output: Output = OutputOpt,
         dry_run: bool = typer.Option(False, "--dry-run", help="Evaluate the gates and show the decision; write "
                                      "nothing (exit 0 unless the source cannot be read).")) -> None:
    """One idempotent controller step. Exit 0 advanced/complete, 3 rolled back/paused, 4 waiting,
    1 the telemetry source cannot be read (nothing recorded).

    \b
    Example:
      otactl rollout step t9-engine --telemetry prometheus:http://prometheus:9090
      otactl rollout step t9-engine --dry-run
    """
    from otactl.app import rollout
    from otactl.app.context import Context

    with _source(telemetry, workspace) as source:
        if dry_run:
            _show(rollout.dry_run(Context.open(workspace), model, source), output)
            return
        result = rollout.step(Context.open(workspace), model, source, key=key)
    _show(result, output)
    _exit(result)


@app.command("watch")
def watch(model: str = ModelArg, telemetry: str = TelemetryOpt,
          interval: float = typer.Option(60.0, "--interval", help="Seconds between steps."),
          timeout: float = typer.Option(3600.0, "--timeout", help="Seconds before giving up (exit 4)."),
          key: str = KeyOpt, workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Step until complete (0), rolled back, aborted or paused (3), or timed out waiting (4). For CI.

    Stops at once (exit 1, nothing recorded by that step) when the telemetry source cannot be read.

    \b
    Example:
      otactl rollout watch t9-engine --interval 300 --timeout 86400
    """
    from otactl.app import rollout
    from otactl.app.context import Context
    from otactl.errors import WaitingError

    def shown(result: Any) -> None:
        if output is Output.table:
            _show(result, output)

    with _source(telemetry, workspace) as source:
        outcome = rollout.watch(lambda: Context.open(workspace), model, source, interval=interval, timeout=timeout,
                                key=key, on_step=shown)
    if output is Output.json:
        _show(outcome.result, output)
    if outcome.timed_out:
        raise WaitingError(f"timed out after {timeout:.0f} s, still {outcome.result.action} at ring "
                           f"{outcome.result.ring!r}")
    _exit(outcome.result)


@app.command("status")
def status(model: str = typer.Argument(..., metavar="MODEL|ROLLOUT_ID",
                                       help="A model (its current rollout) or a rollout id (current or past)."),
           workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Where the rollout stands and why: the last change, the current verdict, what it waits for.

    \b
    Example:
      otactl rollout status t9-engine -o json
      otactl rollout status t9-engine-2.1.0-3f9a1c
    """
    from otactl.app import rollout
    from otactl.app.context import Context

    _show(rollout.status(Context.open(workspace), model), output)


def _operator(name: str, doc: str, example: str) -> None:
    def command(model: str = ModelArg,
                reason: str = typer.Option(..., "--reason", help="Why (recorded in the signed audit entry)."),
                key: str = PersonKeyOpt,
                workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
        from otactl.app import rollout
        from otactl.app.context import Context

        fn = {"pause": rollout.pause, "resume": rollout.resume, "rollback": rollout.rollback,
              "abort": rollout.abort}[name]
        _show(fn(Context.open(workspace), model, reason, key), output)

    command.__doc__ = f"{doc}\n\n\b\nExample:\n  otactl rollout {name} t9-engine --reason {example!r} --key alice\n"
    app.command(name)(command)


_operator("pause", "Hold the rollout where it is (devices keep what they have).", "harvest week: no changes")
_operator("resume", "Resume a paused rollout.", "harvest is over")
_operator("rollback", "Roll every ring back to the last known good release and mark this one bad.",
          "engines stall at idle in the lab ring")
_operator("abort", "Stop the rollout and put every ring back on the baseline without marking the release bad.",
          "wrong plan: restart with canary/small-fleet.yaml")


@app.command("recover")
def recover(model: str = ModelArg, workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Finish what a crashed or killed command left (state, policy, archive from the audit log) and
    check that they agree. Every command that changes a rollout does this first.

    \b
    Example:
      otactl rollout recover t9-engine
    """
    from otactl.app import rollout
    from otactl.app.context import Context

    _show(rollout.recover(Context.open(workspace), model), output)


@app.command("approve")
def approve(model: str = ModelArg,
            key: str = typer.Option(None, "--key", help="Release-manager key named by the plan (in a signer "
                                    "workspace: your own, the default). Left out in CI: take in the approvals "
                                    "release managers signed on their machines."),
            workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Approve the current ring: sign the plan and the ring's evidence (k-of-n, as the plan requires).

    In a release manager's signer workspace (`otactl join`) the signed approval goes to the store; CI
    takes it in at its next `rollout step`, or at once with `rollout approve MODEL` (no --key).

    \b
    Example:
      otactl rollout approve t9-engine --workspace ~/otactl-alice
      otactl rollout approve t9-engine
      otactl rollout approve t9-engine --key alice
    """
    from otactl.app import rollout
    from otactl.app.approvals import ApprovalRequest
    from otactl.app.signer import open_context

    result = rollout.approve(open_context(workspace), model, key)
    if not isinstance(result, ApprovalRequest):
        _show(result, output)
        return
    if output is Output.json:
        emit_json("ring-approval-request", result.to_json())
        return
    print(f"{result.rollout_id}: {result.release_manager} approves ring {result.ring!r} of {result.model} "
          f"{result.release} (plan {result.plan}, sha256 {result.plan_sha256[:16]})")
    print(f"  evidence: {result.evidence} (sha256 {result.evidence_sha256[:16]})")
    for reason in result.reasons:
        print(f"  - {reason}")
    info(f"signed and stored ({result.stored}); CI takes it in at its next `otactl rollout step {result.model}` "
         f"or `otactl rollout approve {result.model}`")


@app.command("report")
def report(model: str = typer.Argument(..., metavar="MODEL|ROLLOUT_ID",
                                       help="A model (all its rollouts) or one rollout's id."),
           fmt: str = typer.Option("md", "--output", "-o", "--format",
                                   help="md (Markdown), html (a self-contained page), json or table; "
                                        "--format is an alias."),
           out: Path = typer.Option(None, "--out", help="Write here (default: stdout)."),
           telemetry: str = TelemetryOpt,
           workspace: Path = WorkspaceOpt) -> None:
    """A report of the model's rollouts, each in detail (or of one rollout): the same report as
    `otactl report rollout`, whose MODEL form gives the index only.

    \b
    Example:
      otactl rollout report t9-engine -o html --out report.html
    """
    from otactl.app.context import Context
    from otactl.app.rollout_report import rollout_report
    from otactl.cli.report import ReportOutput, render_rollout
    from otactl.errors import UsageError

    chosen = {"md": "markdown"}.get(fmt, fmt)
    if chosen not in {o.value for o in ReportOutput}:
        raise UsageError(f"--output {fmt!r}: use table, json, md or html")
    render_rollout(rollout_report(Context.open(workspace), model, telemetry, every=True), ReportOutput(chosen), out)
