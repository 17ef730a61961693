"""`otactl keys generate|list|rotate`."""

from __future__ import annotations

from pathlib import Path

import typer

from otactl.cli.common import OutputOpt, WorkspaceOpt
from otactl.cli.render import Output, emit_json, table

app = typer.Typer(no_args_is_help=True)


@app.command("generate")
def generate(
    name: str = typer.Argument(..., help="Key name, e.g. alice."),
    release_manager: bool = typer.Option(False, "--release-manager",
                                         help="Add the key to the releases role as a release manager."),
    workspace: Path = WorkspaceOpt,
    output: Output = OutputOpt,
) -> None:
    """Generate an encrypted ed25519 key in the workspace and add it to the trust configuration.

    \b
    Example:
      OTACTL_KEY_PASSPHRASE_ALICE=... otactl keys generate alice --release-manager
    """
    from otactl.app.context import Context
    from otactl.app.keys import generate_key

    entry = generate_key(Context.open(workspace), name, release_manager=release_manager)
    if output is Output.json:
        emit_json("key", {"name": entry.name, "keyid": entry.keyid, "uri": entry.uri})
        return
    print(f"{entry.name} {entry.keyid}")


@app.command("list")
def list_keys(workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """List keys, the roles they sign for, and whether the private key is here.

    \b
    Example:
      otactl keys list
      otactl keys list -o json
    """
    from otactl.app.context import Context
    from otactl.app.keys import list_keys as run

    rows = run(Context.open(workspace))
    if output is Output.json:
        emit_json("keys", {"keys": [r.__dict__ for r in rows]})
        return
    table("keys", ["name", "keyid", "roles", "private key here", "uri"],
          [[r.name, r.keyid, ", ".join(r.roles), "yes" if r.private_available else "no", r.uri]
           for r in rows])


@app.command("rotate")
def rotate(
    role: str = typer.Argument(..., help="Role whose key to replace (root, targets, snapshot, timestamp, "
                                         "releases, rollouts, devices)."),
    key: str = typer.Option(None, "--key", help="The key to replace (default: the role's only key)."),
    workspace: Path = WorkspaceOpt,
    output: Output = OutputOpt,
) -> None:
    """Replace a role's key and publish, so devices holding the old root still update.

    \b
    Example:
      otactl keys rotate timestamp
      otactl keys rotate releases --key alice
    """
    from otactl.app.context import Context
    from otactl.app.keys import rotate_key

    result = rotate_key(Context.open(workspace), role, key)
    if output is Output.json:
        emit_json("key-rotation", {"role": role, "old": result.old, "new": result.new,
                                   "new_keyid": result.new_keyid, "root_version": result.root_version})
        return
    print(f"rotated {role}: {result.old} -> {result.new} ({result.new_keyid}); "
          f"root version {result.root_version}")
