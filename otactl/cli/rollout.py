"""`otactl rollout plan|start|step|watch|status|pause|resume|abort|rollback|approve`."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from otactl.cli.common import OutputOpt, WorkspaceOpt
from otactl.cli.render import Output, emit_json, info, table

app = typer.Typer(no_args_is_help=True)

TelemetryOpt = typer.Option("sqlite:telemetry.db", "--telemetry", envvar="OTACTL_TELEMETRY_SOURCE",
                            help="sqlite:PATH (embedded ingest; relative to the workspace) or prometheus:URL.")
KeyOpt = typer.Option(None, "--key", help="Key that signs the audit entry (default: the rollouts key).")


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
    print(f"{result.rollout_id}: {result.action} -> {result.status} at ring {result.ring!r} "
          f"(policy v{result.policy_version})")
    for reason in result.reasons:
        print(f"  - {reason}")


def _exit(result: Any) -> None:
    from otactl.app.rollout import exit_code_for

    code = exit_code_for(result)
    if code:
        raise typer.Exit(code)


@app.command("plan")
def plan(model: str, version: str, plan_file: Path = typer.Option(..., "--plan", help="canary/<name>.yaml"),
         telemetry: str | None = typer.Option(
             None, "--telemetry", help="sqlite:PATH or prometheus:URL: also estimate, per ring, whether the "
             "fleet can give each gate the power a PASS needs (from the baseline's recent telemetry)."),
         baseline: str | None = typer.Option(None, "--baseline", help="The fleet's current release "
                                             "(default: the newest published one older than VERSION)."),
         workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Exactly which devices each ring holds, strata coverage, exposure before the first gate, and
    (with --telemetry) whether each ring can ever get the power its gates need."""
    from otactl.app import rollout
    from otactl.app.context import Context

    ctx = Context.open(workspace)
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
    if powered is not None:
        table(f"power before PASS (baseline {powered.baseline}, last 72 h of telemetry)",
              ["ring", "gate", "events needed", "hours to collect", "feasible", "what to change"],
              [[g.ring, g.metric, f"{g.needed_events:.0f}", "-" if g.hours is None else f"{g.hours:.1f}",
                "yes" if g.feasible else "NO", g.advice or "-"] for g in powered.gates])
        for warning in powered.warnings:
            info(f"warning: {warning}")


@app.command("start")
def start(model: str, version: str, plan_file: Path = typer.Option(..., "--plan"),
          baseline: str = typer.Option(None, "--baseline", help="The release the fleet runs now."),
          key: str = KeyOpt, workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Start rolling out an approved, published release: its first ring gets it."""
    from otactl.app import rollout
    from otactl.app.context import Context

    _show(rollout.start(Context.open(workspace), model, version, plan_file, baseline=baseline, key=key), output)


@app.command("step")
def step(model: str, telemetry: str = TelemetryOpt, key: str = KeyOpt, workspace: Path = WorkspaceOpt,
         output: Output = OutputOpt) -> None:
    """One idempotent controller step. Exit 0 advanced/complete, 3 rolled back/paused, 4 waiting,
    1 the telemetry source cannot be read (nothing recorded)."""
    from otactl.app import rollout
    from otactl.app.context import Context

    with _source(telemetry, workspace) as source:
        result = rollout.step(Context.open(workspace), model, source, key=key)
    _show(result, output)
    _exit(result)


@app.command("watch")
def watch(model: str, telemetry: str = TelemetryOpt, interval: float = typer.Option(60.0, "--interval"),
          timeout: float = typer.Option(3600.0, "--timeout", help="Seconds before giving up (exit 4)."),
          key: str = KeyOpt, workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Step until complete (0), rolled back or paused (3), or timed out waiting (4). For CI.

    Stops at once (exit 1, nothing recorded by that step) when the telemetry source cannot be read."""
    from otactl.app import rollout
    from otactl.app.context import Context

    deadline = time.monotonic() + timeout
    with _source(telemetry, workspace) as source:
        while True:
            result = rollout.step(Context.open(workspace), model, source, key=key)  # raises: no retry loop
            if output is Output.table:
                _show(result, output)
            if result.status != "running" or not (result.waiting or result.action == "advance"):
                break
            if time.monotonic() + interval > deadline:
                info(f"timed out after {timeout:.0f} s, still {result.action} at ring {result.ring!r}")
                if output is Output.json:
                    _show(result, output)
                raise typer.Exit(4)
            time.sleep(interval)
    if output is Output.json:
        _show(result, output)
    _exit(result)


@app.command("status")
def status(model: str, workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Where the rollout stands and why."""
    from otactl.app import rollout
    from otactl.app.context import Context

    _show(rollout.status(Context.open(workspace), model), output)


def _operator(name: str, doc: str) -> None:
    def command(model: str, reason: str = typer.Option(..., "--reason"), key: str = KeyOpt,
                workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
        from otactl.app import rollout
        from otactl.app.context import Context

        fn = {"pause": rollout.pause, "resume": rollout.resume, "rollback": rollout.rollback,
              "abort": rollout.rollback}[name]
        _show(fn(Context.open(workspace), model, reason if name != "abort" else f"aborted: {reason}", key),
              output)

    command.__doc__ = doc
    app.command(name)(command)


_operator("pause", "Hold the rollout where it is (devices keep what they have).")
_operator("resume", "Resume a paused rollout.")
_operator("rollback", "Roll every ring back to the last known good release and mark this one bad.")
_operator("abort", "Stop the rollout and roll back (same as rollback, recorded as an abort).")


@app.command("approve")
def approve(model: str, key: str = typer.Option(..., "--key", help="Release-manager key named by the plan."),
            workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Sign the plan and the current ring's evidence (k-of-n, as the plan requires)."""
    from otactl.app import rollout
    from otactl.app.context import Context

    _show(rollout.approve(Context.open(workspace), model, key), output)


@app.command("report")
def report(model: str, fmt: str = typer.Option("md", "--format", help="md or html"),
           out: Path = typer.Option(None, "--out", help="Write here (default: stdout)."),
           workspace: Path = WorkspaceOpt) -> None:
    """A report of the model's rollouts: Markdown, or a self-contained HTML page with charts."""
    from otactl.app import rollout
    from otactl.app.context import Context
    from otactl.errors import UsageError

    if fmt not in ("md", "html"):
        raise UsageError(f"--format {fmt!r}: use md or html")
    text = rollout.report(Context.open(workspace), model, fmt)
    if out is None:
        sys.stdout.write(text)
    else:
        from otactl.fsutil import atomic_write

        atomic_write(out, text.encode())
        info(f"report written to {out}")
