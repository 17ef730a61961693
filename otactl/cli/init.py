"""`otactl init`."""

from __future__ import annotations

from pathlib import Path

import typer

from otactl.cli.common import OutputOpt
from otactl.cli.render import Output, emit_json, info


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        directory: Path = typer.Argument(Path(), help="Workspace directory to create."),
        store: str = typer.Option(None, "--store", help="file://PATH (default: DIR/repository) or s3://BUCKET/PREFIX."),
        s3_endpoint_url: str = typer.Option(None, "--s3-endpoint-url", envvar="OTACTL_S3_ENDPOINT_URL",
                                            help="Endpoint of an S3-compatible server."),
        release_manager: list[str] = typer.Option(
            ["release-manager"], "--release-manager",
            help="A release manager (repeatable): NAME=FILE.pub registers their public key only (their own "
                 "`otactl keys generate NAME --out DIR`); NAME alone makes the key here, in its own directory "
                 "under .otactl/handover/ to hand over (a demo or lab)."),
        approvals: int = typer.Option(1, "--approvals", help="Release-manager signatures needed beside CI."),
        bin_bits: int = typer.Option(4, "--bin-bits", help="Device record hash bins: 2**bits bins."),
        device_layout: str = typer.Option(
            "bins", "--device-layout",
            help="Where device records live: 'bins' (hash bins in the repository), 'director' (one small signed "
                 "chain per device, stored: docs/decisions/0407-per-device-director-metadata.md) or "
                 "'director-served' (the same chains signed on request by `otactl repo serve`, nothing stored "
                 "per device: docs/decisions/0408-director-chains-on-request.md)."),
        shared_passphrase: bool = typer.Option(
            False, "--shared-passphrase",
            help="Encrypt every key under OTACTL_KEY_PASSPHRASE (a demo or lab). Default: root, targets and "
                 "each release manager's key have their own (OTACTL_KEY_PASSPHRASE_<NAME>)."),
        output: Output = OutputOpt,
    ) -> None:
        """Scaffold a release workspace, generate keys, create and publish the TUF repository.

        \b
        Example:
          otactl init fleet-repo --store s3://acme-updates/t9 --approvals 2 \\
            --release-manager=alice=alice.pub --release-manager=bob=bob.pub --release-manager=carol=carol.pub
          otactl init lab --shared-passphrase
        """
        from otactl.app.context import utcnow
        from otactl.app.init import init_workspace

        result = init_workspace(directory, store_url=store, endpoint_url=s3_endpoint_url,
                                release_managers=release_manager, approvals=approvals,
                                bin_bit_length=bin_bits, now=utcnow(), shared_passphrase=shared_passphrase,
                                device_layout=device_layout)
        for warning in result.warnings:
            info(f"warning: {warning}")
        if output is Output.json:
            emit_json("init", {"workspace": str(result.workspace), "store": result.store_url,
                               "keys": result.keys, "published": result.published,
                               "handover": {n: str(p) for n, p in result.handover.items()},
                               "awaiting_signatures": result.awaiting})
            return
        info(f"workspace  {result.workspace}")
        info(f"store      {result.store_url}")
        for name, keyid in result.keys.items():
            info(f"key        {name:<16} {keyid[:16]}")
        if result.awaiting:
            info(f"awaiting   {', '.join(result.awaiting)}: first versions staged for the release managers, "
                 "who sign them with `otactl join` (docs/key-custody.md)")
        print(f"initialised {result.workspace}: {len(result.published)} metadata files published")
