"""`otactl agent provision|run|status`: the device agent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from otactl.cli.common import OutputOpt
from otactl.cli.render import Output, emit_json, info, table

app = typer.Typer(no_args_is_help=True)

DeviceDirOpt = typer.Option("--device-dir", help="The device's state directory.")


@app.command("provision")
def provision(
    device_dir: Annotated[Path, DeviceDirOpt],
    device_id: Annotated[str, typer.Option("--device-id", help="The device's id in the fleet.")],
    model: Annotated[str, typer.Option("--model", help="Product model, e.g. t9-engine.")],
    hardware_revision: Annotated[str, typer.Option("--hardware-revision", help="Hardware revision, e.g. revB.")],
    root: Annotated[Path, typer.Option("--root", help="Trust anchor: the workspace's signing/root.json.")],
    output: Output = OutputOpt,
) -> None:
    """Create a factory-fresh device: identity, a new signing key (mode 0600), the trust anchor.

    \b
    Example:
      otactl agent provision --device-dir dev/t9-0001 --device-id t9-0001 --model t9-engine \\
        --hardware-revision revB --root signing/root.json
    """
    from otactl.agent.service import provision as run

    result = run(device_dir, device_id, model, hardware_revision, root)
    if output is Output.json:
        emit_json("agent-provision", {"device_dir": str(result.device_dir), "device_id": result.device_id,
                                      "public_key": result.public_key})
        return
    info(f"provisioned {result.device_id} in {result.device_dir}; add its public key to the fleet inventory:")
    print(result.public_key)


@app.command("run")
def run(
    device_dir: Annotated[Path, DeviceDirOpt],
    repo_url: Annotated[str, typer.Option("--repo-url", help="The TUF repository's base URL.")],
    ingest_url: Annotated[str | None, typer.Option("--ingest-url", help="The telemetry ingest's base URL.")] = None,
    once: Annotated[bool, typer.Option("--once", help="One check, health report and flush, then exit.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=1.0, help="Seconds between polls.")] = 3600.0,
    output: Output = OutputOpt,
) -> None:
    """Poll the repository, install what the device's ring asks for (A/B), report to the ingest.

    \b
    Example:
      otactl agent run --device-dir dev/t9-0001 --repo-url http://127.0.0.1:8080 --ingest-url http://127.0.0.1:8787
    """
    import logging

    from otactl.agent.agent import Agent, RunResult
    from otactl.agent.service import run_loop
    from otactl.app.context import utcnow

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    def show(result: RunResult) -> None:
        c = result.check
        flushed = "" if result.flush is None else (
            f"; reports: {result.flush.accepted} accepted, {result.flush.pending} pending")
        info(f"{c.outcome}: running {c.active or 'nothing'}, ring {c.ring or '-'}, target {c.target or '-'}: "
             f"{c.detail}{flushed}")

    agent = Agent(device_dir, repo_url, ingest_url)
    try:  # Ctrl-C ends it like any command: one line, exit 130 (otactl.cli.main)
        result = run_loop(agent, interval=interval, once=once, clock=utcnow, on_result=show)
    finally:
        agent.close()
    if output is Output.json:
        c = result.check
        emit_json("agent-check", {"outcome": c.outcome, "active": c.active, "target": c.target, "ring": c.ring,
                                  "detail": c.detail,
                                  "reports_pending": None if result.flush is None else result.flush.pending})
    if once and result.check.outcome in ("unreachable", "error"):
        raise typer.Exit(1)


@app.command("status")
def status(device_dir: Annotated[Path, DeviceDirOpt], output: Output = OutputOpt) -> None:
    """The device's slots, active pointer, security floor and report counters.

    \b
    Example:
      otactl agent status --device-dir dev/t9-0001
    """
    from otactl.agent.service import status as run

    doc = run(device_dir)
    if output is Output.json:
        emit_json("agent-status", doc)
        return
    rows = [[slot, "*" if doc["active_slot"] == slot else "", s and s["version"], s and s["variant"],
             s and s["security_version"], s and s["installed_at"]] for slot, s in doc["slots"].items()]
    table(f"{doc['device_id']} ({doc['model']} {doc['hardware_revision']}), security floor {doc['security_floor']}",
          ["slot", "active", "release", "variant", "security", "installed"], rows)
    r = doc["reports"]
    print(f"reports: next seq {r['next_seq']}, {r['pending']} pending, {r['accepted']} accepted, "
          f"{r['refused']} refused, {r['dropped']} dropped")
