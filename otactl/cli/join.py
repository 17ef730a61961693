"""`otactl join`: a release manager's signer workspace on their own machine."""

from __future__ import annotations

from pathlib import Path

import typer

from otactl.cli.common import OutputOpt
from otactl.cli.render import Output, emit_json, info


def register(app: typer.Typer) -> None:
    @app.command("join")
    def join(
        directory: Path = typer.Argument(..., help="Signer workspace to create (it may already hold your key file)."),
        store: str = typer.Option(..., "--store", help="The repository's store: file://PATH or s3://BUCKET/PREFIX."),
        s3_endpoint_url: str = typer.Option(None, "--s3-endpoint-url", envvar="OTACTL_S3_ENDPOINT_URL",
                                            help="Endpoint of an S3-compatible server."),
        root: Path = typer.Option(..., "--root", dir_okay=False,
                                  help="The root to pin (signing/root.json of the release repository, got "
                                       "out of band); compare the printed sha256 with its owners'."),
        key: Path = typer.Option(None, "--key", dir_okay=False, help="Your otactl key file (NAME.key)."),
        key_uri: str = typer.Option(None, "--key-uri", help="Or a KMS/HSM signer URI (awskms:, gcpkms:, hsm:)..."),
        public: Path = typer.Option(None, "--public", dir_okay=False, help="... with its public half (NAME.pub)."),
        output: Output = OutputOpt,
    ) -> None:
        """Make a signer workspace: your key and a pinned root, nothing else. Review, approve and withdraw
        releases there (`otactl release approve 2.1.0 --workspace ~/otactl-alice`); every signature is
        checked against the repository's verified metadata first.

        \b
        Example:
          otactl join ~/otactl-alice --store s3://acme-updates/t9 --root root.json --key ~/otactl-alice/alice.key
        """
        from otactl.app.signer import join as run

        result = run(directory, store_url=store, endpoint_url=s3_endpoint_url, root_file=root, key_file=key,
                     key_uri=key_uri, public_file=public)
        if output is Output.json:
            emit_json("join", {"workspace": str(result.workspace), "store": result.store_url, "name": result.name,
                               "keyid": result.keyid, "root_sha256": result.root_sha256,
                               "root_version": result.root_version, "signed": result.signed})
            return
        info(f"pinned root  sha256 {result.root_sha256} (now trusting root v{result.root_version})")
        info(f"store        {result.store_url}")
        if result.signed:
            info(f"signed       the first {' and '.join(result.signed)} metadata (CI publishes them)")
        print(f"joined as {result.name} ({result.keyid[:16]}): {result.workspace}")
