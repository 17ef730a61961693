"""`otactl keys generate|add|list|rotate`."""

from __future__ import annotations

from pathlib import Path

import typer

from otactl.cli.common import OutputOpt, WorkspaceOpt
from otactl.cli.render import Output, emit_json, info, table

app = typer.Typer(no_args_is_help=True)


@app.command("generate")
def generate(
    name: str = typer.Argument(..., help="Key name, e.g. alice."),
    release_manager: bool = typer.Option(False, "--release-manager",
                                         help="Add the key to the releases role as a release manager."),
    out: Path = typer.Option(None, "--out", help="Write NAME.key and NAME.pub into DIR instead (a release "
                                                 "manager's own machine; no workspace, nothing published).",
                             file_okay=False),
    workspace: Path = WorkspaceOpt,
    output: Output = OutputOpt,
) -> None:
    """Generate an encrypted ed25519 key: in the workspace (added to the trust configuration), or with
    --out as a key file and its public half on the machine of the person who will hold it.

    \b
    Example:
      OTACTL_KEY_PASSPHRASE_ALICE=... otactl keys generate alice --out ~/otactl-alice
      otactl keys generate timestamp-2
    """
    if out is not None:
        from otactl.app.keys import generate_key_files

        made = generate_key_files(out, name)
        if output is Output.json:
            emit_json("key-files", {"name": made.name, "keyid": made.keyid, "key_file": str(made.key_file),
                                    "public_file": str(made.public_file)})
            return
        info(f"key file    {made.key_file} (keep it here; never send it)")
        info(f"public key  {made.public_file} (send it to whoever runs `otactl init`)")
        print(f"{made.name} {made.keyid}")
        return
    from otactl.app.context import Context
    from otactl.app.keys import generate_key

    entry = generate_key(Context.open(workspace), name, release_manager=release_manager)
    if output is Output.json:
        emit_json("key", {"name": entry.name, "keyid": entry.keyid, "uri": entry.uri})
        return
    if release_manager:
        info(f"warning: release manager {name!r}: the key was made on this machine "
             f"({entry.uri.partition(':')[2]}); move its directory to {name}, who joins with `otactl join` "
             "(docs/key-custody.md)")
    print(f"{entry.name} {entry.keyid}")


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Key name, e.g. carol."),
    public: Path = typer.Option(..., "--public", help="The key's public half (NAME.pub from "
                                                      "`otactl keys generate NAME --out DIR`).", dir_okay=False),
    release_manager: bool = typer.Option(False, "--release-manager",
                                         help="Add the key to the releases and withdrawals roles."),
    workspace: Path = WorkspaceOpt,
    output: Output = OutputOpt,
) -> None:
    """Register someone's key by its public half only; its private key stays with its owner.

    \b
    Example:
      otactl keys add carol --public carol.pub --release-manager
    """
    from otactl.app.context import Context
    from otactl.app.keys import add_public_key

    entry = add_public_key(Context.open(workspace), name, public, release_manager=release_manager)
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
    role: str = typer.Argument(..., metavar="ROLE|NAME", help="Role whose key to replace (root, targets, snapshot, "
                               "timestamp, releases, rollouts, devices, withdrawals), or a release manager's key "
                               "name (replaced in releases and withdrawals)."),
    key: str = typer.Option(None, "--key", help="The key to replace (default: the role's only key)."),
    public: Path = typer.Option(None, "--public", dir_okay=False,
                                help="A release manager's new key by its public half (NAME.pub from `otactl keys "
                                     "generate NAME --out DIR` on their machine); required when their key is not "
                                     "here."),
    workspace: Path = WorkspaceOpt,
    output: Output = OutputOpt,
) -> None:
    """Replace a role's key and publish, so devices holding the old root still update. A release manager's
    key is replaced by the public half of a key made on their own machine; its name stays.

    \b
    Example:
      otactl keys rotate timestamp
      otactl keys rotate carol --public carol.pub
    """
    from otactl.app.context import Context
    from otactl.app.keys import rotate_key

    result = rotate_key(Context.open(workspace), role, key, public)
    if output is Output.json:
        emit_json("key-rotation", {"role": role, "old": result.old, "new": result.new,
                                   "new_keyid": result.new_keyid, "root_version": result.root_version})
        return
    print(f"rotated {role}: {result.old} -> {result.new} ({result.new_keyid}); "
          f"root version {result.root_version}")
