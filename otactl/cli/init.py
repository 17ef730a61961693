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
        release_manager: list[str] = typer.Option(["release-manager"], "--release-manager",
                                                  help="Release manager key name (repeatable)."),
        approvals: int = typer.Option(1, "--approvals", help="Release-manager signatures needed beside CI."),
        bin_bits: int = typer.Option(4, "--bin-bits", help="Device record hash bins: 2**bits bins."),
        output: Output = OutputOpt,
    ) -> None:
        """Scaffold a release workspace, generate keys, create and publish the TUF repository.

        \b
        Example:
          otactl init fleet-repo --store s3://acme-updates/t9 --release-manager alice --release-manager bob
        """
        from otactl.app.context import utcnow
        from otactl.app.init import init_workspace

        result = init_workspace(directory, store_url=store, endpoint_url=s3_endpoint_url,
                                release_managers=release_manager, approvals=approvals,
                                bin_bit_length=bin_bits, now=utcnow())
        if output is Output.json:
            emit_json("init", {"workspace": str(result.workspace), "store": result.store_url,
                               "keys": result.keys, "published": result.published})
            return
        info(f"workspace  {result.workspace}")
        info(f"store      {result.store_url}")
        for name, keyid in result.keys.items():
            info(f"key        {name:<16} {keyid[:16]}")
        print(f"initialised {result.workspace}: {len(result.published)} metadata files published")
