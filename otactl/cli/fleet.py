"""`otactl fleet import|set|list|entitle`."""

from __future__ import annotations

from pathlib import Path

import typer

from otactl.cli.common import OutputOpt, WorkspaceOpt, progress
from otactl.cli.render import Output, emit_json, info, table
from otactl.errors import UsageError

app = typer.Typer(no_args_is_help=True)
EntitlementKeyOpt = typer.Option(
    None, "--entitlement-key",
    help="Entitlement signer: a key name or URI of signing/trust.yaml (repeatable; default: its entitlements.keys).")


@app.command("import")
def import_cmd(inventory: Path = typer.Argument(..., help="CSV or YAML inventory."),
               entitlement_key: list[str] = EntitlementKeyOpt,
               batch_size: int = typer.Option(1024, "--batch-size", min=1, max=65536,
                                              help="Entitlement statements per signed batch."),
               workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Write each device's signed record into the devices hash bins.

    New or changed entitlements (variant, features, device key) are signed by the entitlement keys in
    batches; tags, region and pin changes need no entitlement key.

    \b
    Example:
      otactl fleet import examples/fleet/inventory.csv
    """
    from otactl.app.context import Context
    from otactl.app.fleet import import_devices
    from otactl.bulk import collector_paused
    from otactl.fleet.records import read_inventory

    with progress(f"reading {inventory}", prompts=True) as status, collector_paused():
        inv = read_inventory(inventory)
        ctx = Context.open(workspace)
        status(f"signing and publishing {len(inv.records)} device records")
        change = import_devices(ctx, inv.records, inv.path, inv.lines, entitlement_keys=entitlement_key or (),
                                batch_size=batch_size)
    if output is Output.json:
        emit_json("fleet-import", change.__dict__)
        return
    where = f"{change.bins_changed} bins" if change.layout == "bins" else "their own signed chains"
    print(f"imported {change.devices} devices: {change.devices - change.unchanged} written into "
          f"{where}, {change.unchanged} unchanged"
          + (f"; {change.entitlements_signed} entitlements signed in {change.entitlement_batches} batches"
             if change.entitlements_signed else ""))


@app.command("set")
def set_cmd(device: str = typer.Argument(..., help="Device id, e.g. t9-0004."),
            variant: str = typer.Option(None, "--variant", help="Entitlement, e.g. hp-400 (needs an entitlement key)."),
            feature: list[str] = typer.Option(None, "--feature",
                                              help="Replace the device's paid features (repeatable; needs an "
                                                   "entitlement key)."),
            no_features: bool = typer.Option(False, "--no-features", help="Remove every paid feature."),
            tag: list[str] = typer.Option(None, "--tag", help="Replace the device's tags (repeatable)."),
            region: str = typer.Option(None, "--region", help="Move the device to another region."),
            pin: str = typer.Option(None, "--pin", help="Keep the device on this release version."),
            unpin: bool = typer.Option(False, "--unpin", help="Let the device follow its rollout ring again."),
            entitlement_key: list[str] = EntitlementKeyOpt,
            workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Change one device's variant, features, tags, region or pin (re-signs only its bin, snapshot and
    timestamp; a new variant or features also one entitlement batch).

    \b
    Example:
      otactl fleet set t9-0004 --variant hp-500 --tag lab
    """
    from otactl.app.context import Context
    from otactl.app.fleet import set_device

    if feature and no_features:
        raise UsageError("give --feature or --no-features, not both")
    features = [] if no_features else (feature or None)
    record, change = set_device(Context.open(workspace), device, variant=variant, tags=tag or None,
                                pin=pin, clear_pin=unpin, region=region, features=features,
                                entitlement_keys=entitlement_key or ())
    if output is Output.json:
        emit_json("fleet-set", {"device": record.to_json(), **change.__dict__})
        return
    print(f"{record.device_id}: variant {record.variant}, features {','.join(record.features) or '-'}, "
          f"region {record.region}, tags {','.join(record.tags) or '-'}, pin {record.pin or '-'}"
          + ("" if change.files_published else " (unchanged)"))


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
        emit_json("fleet", {"devices": [r.to_json() for r in rows]})
        return
    table("fleet", ["device", "model", "hw", "variant", "region", "tags", "pin"],
          [[r.device_id, r.model, r.hardware_revision, r.variant, r.region, ",".join(r.tags), r.pin]
           for r in rows])


@app.command("verify")
def verify_cmd(workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Prove the fleet index consistent with the signed device chains (director layout).

    Every row's record must be the one its device's chain (verified under the director's root) lists,
    with the same model, variant, region, tags and pin; every chain must have a row. Exit 0:
    consistent; 1: a problem, each device named (run `otactl fleet import` again to repair an index
    left behind by a crash).

    \b
    Example:
      otactl fleet verify
    """
    from otactl.app import director
    from otactl.app.context import Context
    from otactl.errors import UsageError, VerificationError

    ctx = Context.open(workspace)
    with progress("verifying the fleet index"):
        if not director.enabled(ctx.repository()):
            raise UsageError("this repository keeps device records in hash bins, which have no index to verify",
                             hint="`otactl repo verify` checks them; `otactl repo migrate-devices` moves them")
        checked, problems = director.verify(ctx)
    if output is Output.json:
        emit_json("fleet-verify", {"devices": checked, "problems": [p.__dict__ for p in problems]})
    elif not problems:
        print(f"fleet index: {checked} devices, consistent with their signed chains")
    if problems:
        first = problems[0]
        raise VerificationError(f"fleet index: {len(problems)} of {checked} devices inconsistent; "
                                f"first: device {first.device_id}: {first.problem}")


@app.command("entitle")
def entitle_cmd(entitlement_key: list[str] = EntitlementKeyOpt,
                threshold: int = typer.Option(None, "--threshold", min=1,
                                              help="Entitlement signatures a batch needs (default: the trust file's)."),
                batch_size: int = typer.Option(1024, "--batch-size", min=1, max=65536,
                                               help="Entitlement statements per signed batch."),
                workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Migrate to offline-signed entitlements (decision 0406), or publish rotated entitlement signers.

    Publishes entitlements/signers.json in the top-level targets role (needs the targets key) and signs
    an entitlement for every device whose record has none that verifies. With no entitlement key in
    signing/trust.yaml, makes the file key entitlement-1 (passphrase: OTACTL_KEY_PASSPHRASE_ENTITLEMENT_1).
    Idempotent.

    \b
    Example:
      otactl fleet entitle
    """
    from otactl.app.context import Context
    from otactl.app.migrate_entitlements import migrate_entitlements

    with progress("migrating the fleet to offline-signed entitlements", prompts=True):
        result = migrate_entitlements(Context.open(workspace), entitlement_keys=entitlement_key or (),
                                      threshold=threshold, batch_size=batch_size)
    if output is Output.json:
        emit_json("fleet-entitle", result.__dict__)
        return
    if result.key_created:
        info(f"made entitlement key {result.key_created!r} (.otactl/keys/{result.key_created}.key) and added it to "
             "signing/trust.yaml")
    print(f"entitlement signers {', '.join(result.signers)} (threshold {result.threshold})"
          + ("" if result.signers_published else ", already published")
          + f"; {result.devices} devices, {result.entitlements_signed} entitlements signed in "
            f"{result.entitlement_batches} batches; {result.files_published} metadata files published")
