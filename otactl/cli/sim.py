"""`otactl sim run|rollout`: simulate a fleet from a scenario file; tables, or ``-o json``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from otactl.cli.common import OutputOpt
from otactl.cli.render import Output, emit_json, info, table

app = typer.Typer(no_args_is_help=True)


@app.command("run")
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (examples/scenarios/README.md).")],
    mode: Annotated[str | None, typer.Option("--mode", help="full or model (default: the scenario's).")] = None,
    devices: Annotated[int | None, typer.Option("--devices", help="Override the fleet size.")] = None,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", help="Empty directory for the workspace, device states and telemetry (default: a temp dir).")
    ] = None,
    workspace: Annotated[Path | None, typer.Option(
        "--workspace", help="Publish through this existing workspace instead of a new one.")] = None,
    repo_url: Annotated[str | None, typer.Option(
        "--repo-url", help="Where devices fetch the workspace's repository (default: served on 127.0.0.1).")] = None,
    ingest_url: Annotated[str | None, typer.Option(
        "--ingest-url", help="Ingest the devices report to (default: one in-process on 127.0.0.1).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, max=256,
                                                help="Agents run at once (default: the scenario's).")] = None,
    output: Output = OutputOpt,
) -> None:
    """Run a scenario: full fidelity (real agents over HTTP) or the statistical fleet model.

    \b
    Example:
      otactl sim run examples/scenarios/t9-fleet-model.yaml --devices 100000
    """
    from otactl.sim.run import run_scenario

    result = run_scenario(scenario, mode=mode, devices=devices, work_dir=work_dir, workspace=workspace,
                          repo_url=repo_url, ingest_url=ingest_url, workers=workers, progress=info)
    doc = result.to_json()
    if output is Output.json:
        emit_json("sim-result", doc)
        return
    _render(doc)


def _render(doc: dict[str, Any]) -> None:
    if doc["mode"] == "model":
        columns = ["round", "offered", "ring devices", "installs", "failures", "crashes", "control devices",
                   "control crashes"]
        rows = [[r["round"], r["offered"], r["ring"]["devices"], r["ring"]["installs"], r["ring"]["install_failures"],
                 r["ring"]["crashes"], r["control"]["devices"], r["control"]["crashes"]] for r in doc["rounds"]]
        table(f"{doc['scenario']}: {doc['new_release']} over {doc['old_release']}, {doc['devices']} devices (model)",
              columns, rows)
        return
    from otactl.sim.full import outcome_text

    rows = [[r["round"], r["policy"] or "", r["polled"], outcome_text(r["outcomes"]), f"{r['seconds']:.1f}"]
            for r in doc["rounds"]]
    table(f"{doc['scenario']}: {doc['devices']} devices (full fidelity)",
          ["round", "policy published", "polled", "outcomes", "seconds"], rows)
    running = [[release, variant, n] for release, by in doc["running"].items() for variant, n in by.items()]
    table("running at the end", ["release", "variant", "devices"], running)
    reports = doc["reports"]
    stored = "" if doc["ingest"] is None else f"; the ingest stored {doc['ingest']['reports']}"
    print(f"reports: {reports.get('signed', 0)} signed, {reports.get('accepted', 0)} accepted, "
          f"{reports.get('refused', 0)} refused, {reports.get('pending', 0)} pending{stored}")
    print(f"{doc['outcomes'].get('committed', 0)} updates in {doc['seconds']:.1f}s "
          f"({doc['updates_per_minute']:.0f} per minute); work dir {doc['work_dir']}")


@app.command("rollout")
def rollout_cmd(
    scenario: Annotated[Path, typer.Argument(help="Scenario file: fleet, behaviour, releases and their true effects.")],
    plan: Annotated[Path, typer.Option("--plan", help="Canary plan the controller follows (canary/*.yaml).")],
    release: Annotated[list[str], typer.Option("--release", help="Release to roll out (repeatable, in order).")],
    baseline: Annotated[str, typer.Option("--baseline", help="Release the fleet runs before the first rollout.")],
    work_dir: Annotated[Path, typer.Option("--work-dir", help="Empty directory for device states and telemetry.")],
    workspace: Annotated[Path | None, typer.Option(
        "--workspace", help="Publish through this existing workspace instead of a new one.")] = None,
    approve_with: Annotated[list[str] | None, typer.Option(
        "--approve-with", help="Release-manager key that approves rings as they ask (repeatable).")] = None,
    max_rounds: Annotated[int, typer.Option("--max-rounds", min=1, help="Controller steps per rollout.")] = 40,
    output: Output = OutputOpt,
) -> None:
    """Full-fidelity devices under the real rollout controller: the gates decide, nothing is scripted.

    Exit 0 when every rollout completed, 3 when a gate rolled one back or paused it, 4 when one was
    still waiting after --max-rounds.

    \b
    Example:
      otactl sim rollout examples/scenarios/t9-demo-rollouts.yaml --plan canary/demo.yaml \\
        --baseline 2.0.0 --release 2.1.0 --release 2.2.0 --work-dir /tmp/sim --approve-with release-manager
    """
    from otactl.sim.controlled import ControlledSimulation, Hooks
    from otactl.sim.scenario import load_scenario

    sim = ControlledSimulation(load_scenario(scenario), work_dir, plan=plan, releases=release, baseline=baseline,
                               max_rounds=max_rounds, workspace=workspace,
                               hooks=Hooks(approve_with=tuple(approve_with or ())),
                               progress=info if output is Output.table else (lambda _m: None))
    try:
        sim.run()
    finally:
        sim.close()
    if output is Output.json:
        emit_json("sim-rollout", {"workspace": str(sim.workspace_path),
                                  "rollouts": [r.to_json() for r in sim.rollouts]})
    else:
        render_rollouts(sim.rollouts)
    _exit(sim.rollouts)


def render_rollouts(rollouts: list[Any]) -> None:
    """Each rollout's outcome, then every decision the controller took (one row per step)."""
    table("rollouts", ["release", "from", "rollout", "status", "ring", "rounds", "devices that ran it"],
          [[r.release, r.baseline, r.rollout_id, r.status, r.final_ring, r.rounds, r.exposed] for r in rollouts])
    table("controller decisions", ["round", "release", "action", "status", "ring", "reasons"],
          [[s.round, r.release, s.action, s.status, s.ring, "; ".join(s.reasons) or "-"]
           for r in rollouts for s in r.steps])


def _exit(rollouts: list[Any]) -> None:
    """Exit 3 when a gate rolled a rollout back or paused it, 4 when one is still waiting (the error model)."""
    from otactl.errors import GateFailedError, WaitingError

    stopped = [r for r in rollouts if r.status in ("rolled_back", "paused")]
    if stopped:
        raise GateFailedError("; ".join(f"rollout of {r.release} {r.status.replace('_', ' ')} at ring "
                                        f"{r.final_ring!r}" for r in stopped))
    waiting = [r for r in rollouts if r.status != "complete"]
    if waiting:
        raise WaitingError("; ".join(f"rollout of {r.release} still {r.status} at ring {r.final_ring!r} after "
                                     f"{r.rounds} rounds" for r in waiting),
                           hint="raise --max-rounds, or approve the rings that wait (--approve-with)")
