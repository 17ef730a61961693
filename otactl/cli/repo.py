"""`otactl repo publish|verify|status|refresh|prune|migrate-releases|migrate-devices|serve|fetch`."""

from __future__ import annotations

from pathlib import Path

import typer

from otactl.cli.common import OutputOpt, WorkspaceOpt, progress
from otactl.cli.render import Output, emit_json, info, table
from otactl.errors import WaitingError

app = typer.Typer(no_args_is_help=True)


@app.command("publish")
def publish(workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Complete an interrupted publication (idempotent: safe to run again).

    \b
    Example:
      otactl repo publish
    """
    from otactl.app.context import Context
    from otactl.app.repo import publish_pending

    ctx = Context.open(workspace)
    with progress("completing a pending publication"):
        written = publish_pending(ctx)
    if output is Output.json:
        emit_json("repo-publish", {"written": written})
        return
    print(f"completed a pending publication: {len(written)} files" if written else "repository is up to date")


@app.command("verify")
def verify(workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Act as a TUF client against the store and check every target.

    \b
    Example:
      otactl repo verify
      otactl repo verify -o json
    """
    from otactl.app.context import Context
    from otactl.app.repo import verify as run

    ctx = Context.open(workspace)
    with progress(f"verifying {ctx.store.url} as a TUF client"):
        result = run(ctx)
    if output is Output.json:
        emit_json("repo-verify", result.__dict__)
        return
    print(f"ok: {result.store}: {result.roles} roles, {result.targets_checked} targets "
          f"({result.bytes_checked} bytes) verified by a TUF client")


@app.command("status")
def status(workspace: Path = WorkspaceOpt, bins: bool = typer.Option(False, "--bins", help="One row per bin."),
           output: Output = OutputOpt) -> None:
    """Roles, versions, signers and expiries.

    \b
    Example:
      otactl repo status --bins
    """
    from otactl.app.context import Context
    from otactl.app.repo import status as run

    rows = run(Context.open(workspace), include_bins=bins)
    if output is Output.json:
        emit_json("repo-status", {"roles": [r.__dict__ for r in rows]})
        return
    table("repository", ["role", "version", "expires", "days left", "signed by", "threshold", "targets"],
          [[r.role, r.version, r.expires, r.days_left, ", ".join(r.signers), r.threshold, r.targets]
           for r in rows])


@app.command("refresh")
def refresh(
    workspace: Path = WorkspaceOpt,
    warn_days: int = typer.Option(30, "--warn-days", help="Exit 4 if an offline role expires within this."),
    force: bool = typer.Option(False, "--force", help="Re-sign every online role now."),
    offline: bool = typer.Option(False, "--offline", help="Also re-sign offline roles expiring within "
                                 "--warn-days whose keys this workspace holds (root included)."),
    output: Output = OutputOpt,
) -> None:
    """Re-sign online roles before they lapse; exit 4 when an offline role is close to expiry (cron/CI).

    \b
    Example:
      otactl repo refresh --warn-days 45
      otactl repo refresh --offline --warn-days 60
    """
    from otactl.app.context import Context
    from otactl.app.repo import refresh as run

    result = run(Context.open(workspace), warn_days=warn_days, force=force, offline=offline)
    if output is Output.json:
        emit_json("repo-refresh", {"resigned": result.resigned,
                                   "expiring_offline": [r.__dict__ for r in result.expiring_offline]})
    else:
        print(f"re-signed: {', '.join(result.resigned) or 'nothing needed'}")
    if result.expiring_offline:
        names = ", ".join(f"{r.role} ({r.days_left} days)" for r in result.expiring_offline)
        raise WaitingError(f"offline roles close to expiry: {names}",
                           hint="re-sign them with their offline keys before they lapse")


@app.command("serve")
def serve(
    workspace: Path = WorkspaceOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="TCP port to listen on."),
) -> None:
    """Serve a directory store's metadata/ and targets/ as static files over HTTP (Ctrl-C stops it).

    With `init --device-layout director-served` it is also the director service: it holds the online
    keys and signs each device's chain when the device asks (decision 0408).

    \b
    Example:
      otactl repo serve --port 8080
    """
    from otactl.app import director_served
    from otactl.app.context import Context
    from otactl.repo.serve import serve_directory

    ctx = Context.open(workspace)
    # the director service: device chains signed on request (decision 0408); in a repository that is
    # not (yet) served, it starts when `repo migrate-devices --chains served` writes its configuration
    service = director_served.DirectorService(ctx)
    what = " (signing device chains on request)" if service.enabled() else ""
    serve_directory(ctx.store, host, port, dynamic=service.get,
                    ready=lambda url: info(f"serving {ctx.store.url}{what} on {url} (Ctrl-C to stop)"))


@app.command("fetch")
def fetch(
    target: str = typer.Argument(..., help="Target path, e.g. config/t9/2.0.0/hp-400.json."),
    url: str = typer.Option(..., "--url", help="Base URL of the served repository."),
    root: Path = typer.Option(Path("signing/root.json"), "--root", help="Trusted root (trust anchor)."),
    client_dir: Path = typer.Option(Path(".otactl/client"), "--client-dir", help="Client metadata cache."),
    out: Path = typer.Option(None, "--out", help="Write the target here (default: stdout)."),
) -> None:
    """Download one target as a device would: python-tuf ngclient over HTTP, fully verified.

    \b
    Example:
      otactl repo fetch devices/t9-0001.json --url http://127.0.0.1:8080
    """
    from otactl.repo.client import fetch_target

    with progress(f"fetching {target}"):
        data = fetch_target(root, url, client_dir, target)
    if out is None:
        import sys

        sys.stdout.buffer.write(data)
    else:
        out.write_bytes(data)
        info(f"{target}: {len(data)} bytes verified -> {out}")


@app.command("prune")
def prune(
    workspace: Path = WorkspaceOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; delete nothing."),
    keep_versions: int = typer.Option(3, "--keep-versions", min=0,
                                      help="Snapshot generations kept before the current one."),
    grace_days: float = typer.Option(7.0, "--grace-days", min=0.0,
                                     help="Also keep generations signed, and targets written, this recently."),
    output: Output = OutputOpt,
) -> None:
    """Delete old metadata versions and targets no kept generation lists; every N.root.json is kept.

    Kept: the current snapshot generation, the --keep-versions before it and every one signed
    within --grace-days (a device mid-update finishes it), staged releases' targets, and what a
    current policy and its stepping stones need. Exit 0: pruned (or listed, with --dry-run);
    1: a problem (one line each; nothing deleted), an unreachable store, or a publication pending
    or racing; 2: bad arguments.

    \b
    Example:
      otactl repo prune --dry-run
      otactl repo prune --keep-versions 5 -o json
    """
    import sys

    from otactl.app.context import Context
    from otactl.app.prune import prune as run
    from otactl.errors import VerificationError

    with progress("pruning" if not dry_run else "listing what a prune would delete"):
        result = run(Context.open(workspace), dry_run=dry_run, keep_versions=keep_versions, grace_days=grace_days)
    for problem in result.problems:
        print(f"otactl: problem: {problem}", file=sys.stderr)
    if result.problems:
        raise VerificationError(f"repo prune: {len(result.problems)} problem(s) found; nothing was deleted")
    if output is Output.json:
        emit_json("repo-prune", result.to_json())
        return
    verb = "would delete" if dry_run else "deleted"
    for removal in result.removals:
        print(f"{verb} {removal.key}  ({removal.why})")
    gone = "would go (dry run)" if dry_run else "deleted"
    print(f"prune: {len(result.removals)} files {gone}; kept {result.kept_metadata} metadata files "
          f"(generations {', '.join(map(str, result.generations))}) and {result.kept_targets} targets")


@app.command("migrate-devices")
def migrate_devices(
    chains: str = typer.Option("stored", "--chains",
                               help="stored: a chain of files per device (static hosting); served: signed on "
                                    "request by `otactl repo serve`, nothing stored per device (decision 0408)."),
    workspace: Path = WorkspaceOpt, output: Output = OutputOpt,
) -> None:
    """Move device records from hash bins to per-device director chains (root and targets keys).

    Every device's chain (or, served, its record and index row) is written first; one publication then
    lists the director's root (signed by the offline targets key) and drops the bins. Devices provisioned
    before switch to their own chain at their next poll and never lose trust
    (docs/decisions/0407-per-device-director-metadata.md). Safe to run again. Exit 0: migrated or
    already migrated; 1: a key is not here, or the store failed; 2: an unknown --chains.

    \b
    Example:
      otactl repo migrate-devices --chains served
    """
    from otactl.app.context import Context
    from otactl.app.migrate_devices import migrate_devices as run

    with progress("writing device chains"):
        result = run(Context.open(workspace), chains)
    if output is Output.json:
        emit_json("repo-migrate-devices", result.to_json())
        return
    if not result.migrated:
        print(f"{result.store}: device records are already in the director layout ({result.devices} devices)")
        return
    print(f"{result.store}: {result.devices} devices moved to their own signed chains; "
          f"{result.bins_dropped} hash bins dropped from the snapshot")


@app.command("migrate-releases")
def migrate_releases(workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Give a repository made before per-release roles its release index (offline targets key).

    Releases published before stay in the single `releases` role, where devices provisioned before
    find them; every later build is its own role, so releases staged at once no longer conflict
    (docs/decisions/1203-continuous-releases.md). Safe to run again. Exit 0: migrated or already
    migrated; 1: the targets key is not here, or the store failed.

    \b
    Example:
      otactl repo migrate-releases
    """
    from otactl.app.context import Context
    from otactl.app.migrate_releases import migrate_releases as run

    with progress("adding the release index"):
        result = run(Context.open(workspace))
    if output is Output.json:
        emit_json("repo-migrate-releases", result.to_json())
        return
    if not result.migrated:
        print(f"{result.store}: already has a release index; nothing to do")
        return
    print(f"{result.store}: release index added (signed by {', '.join(result.index_keys)}); "
          f"{result.releases_before} releases published before stay in `releases`")
