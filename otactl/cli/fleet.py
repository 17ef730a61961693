"""`otactl fleet import|set|list`."""

from __future__ import annotations

from pathlib import Path

import typer

from otactl.cli.common import OutputOpt, WorkspaceOpt, progress
from otactl.cli.render import Output, emit_json, table

app = typer.Typer(no_args_is_help=True)


@app.command("import")
def import_cmd(inventory: Path = typer.Argument(..., help="CSV or YAML inventory."),
               workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Write each device's signed record into the devices hash bins.

    \b
    Example:
      otactl fleet import examples/fleet/inventory.csv
    """
    from otactl.app.context import Context
    from otactl.app.fleet import import_devices
    from otactl.fleet.records import read_inventory

    with progress(f"reading {inventory}", prompts=True) as status:
        inv = read_inventory(inventory)
        ctx = Context.open(workspace)
        status(f"signing and publishing {len(inv.records)} device records")
        change = import_devices(ctx, inv.records, inv.path, inv.lines)
    if output is Output.json:
        emit_json("fleet-import", change.__dict__)
        return
    print(f"imported {change.devices} devices: {change.devices - change.unchanged} written into "
          f"{change.bins_changed} bins, {change.unchanged} unchanged")


@app.command("set")
def set_cmd(device: str = typer.Argument(..., help="Device id, e.g. t9-0004."),
            variant: str = typer.Option(None, "--variant", help="Entitlement, e.g. hp-400."),
            tag: list[str] = typer.Option(None, "--tag", help="Replace the device's tags (repeatable)."),
            pin: str = typer.Option(None, "--pin", help="Keep the device on this release version."),
            unpin: bool = typer.Option(False, "--unpin", help="Let the device follow its rollout ring again."),
            workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Change one device's variant, tags or pin (re-signs only its bin, snapshot and timestamp).

    \b
    Example:
      otactl fleet set t9-0004 --variant hp-500 --tag lab
    """
    from otactl.app.context import Context
    from otactl.app.fleet import set_device

    record, change = set_device(Context.open(workspace), device, variant=variant, tags=tag or None,
                                pin=pin, clear_pin=unpin)
    if output is Output.json:
        emit_json("fleet-set", {"device": record.__dict__, **change.__dict__})
        return
    print(f"{record.device_id}: variant {record.variant}, tags {','.join(record.tags) or '-'}, "
          f"pin {record.pin or '-'}" + ("" if change.files_published else " (unchanged)"))


@app.command("list")
def list_cmd(workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Every device record, as published.

    \b
    Example:
      otactl fleet list -o json > fleet.json
    """
    from otactl.app.context import Context
    from otactl.app.fleet import list_devices

    with progress():
        rows = list_devices(Context.open(workspace))
    if output is Output.json:
        emit_json("fleet", {"devices": [r.__dict__ for r in rows]})
        return
    table("fleet", ["device", "model", "hw", "variant", "region", "tags", "pin"],
          [[r.device_id, r.model, r.hardware_revision, r.variant, r.region, ",".join(r.tags), r.pin]
           for r in rows])
