"""`otactl release build|review|approve|publish|list|withdraw|reinstate`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from otactl.cli.common import OutputOpt, WorkspaceOpt, progress
from otactl.cli.render import Output, emit_json, info, table

app = typer.Typer(no_args_is_help=True)

ReleaseArg = typer.Argument(..., metavar="[MODEL/]VERSION",
                            help="The release: VERSION, or MODEL/VERSION when several models have it.")


def _show(rel: Any, output: Output, kind: str) -> None:
    if output is Output.json:
        emit_json(kind, rel.__dict__)
        return
    print(f"{rel.model}/{rel.version}: {rel.status} (security_version {rel.security_version}); "
          f"signed by {', '.join(rel.signed_by) or 'nobody'}"
          + (f"; needs {rel.needed} more of: {', '.join(rel.missing)} (threshold {rel.threshold})"
             if rel.needed else ""))


@app.command("build")
def build(
    manifest: Path = typer.Argument(..., help="Release manifest (manifests/*.yaml)."),
    ci_key: str = typer.Option(None, "--key", help="CI key name (default: the CI key available here)."),
    delta_from: list[str] = typer.Option(
        [], "--delta-from", metavar="VERSION",
        help="Also publish signed deltas from this published release's images (repeatable; decision 1201)."),
    workspace: Path = WorkspaceOpt,
    output: Output = OutputOpt,
) -> None:
    """Validate, hash and upload a release; stage it signed by the CI key (not yet visible to devices).

    \b
    Example:
      otactl release build manifests/t9-engine-2.1.0.yaml --key ci
      otactl release build manifests/t9-engine-2.1.0.yaml --delta-from 2.0.0
    """
    from otactl.app import release
    from otactl.app.context import Context
    from otactl.release.manifest import load_manifest

    parsed = load_manifest(manifest)
    ctx = Context.open(workspace)
    with progress(prompts=True):  # a key's passphrase may be asked (CI key, a pending bootstrap's online key)
        rel = release.build(ctx, parsed, ci_key=ci_key, delta_from=tuple(delta_from))
    _show(rel, output, "release")


@app.command("review")
def review(release_id: str = ReleaseArg, workspace: Path = WorkspaceOpt,
           output: Output = OutputOpt) -> None:
    """What will ship: targets, variant parameters and their changes, who signed and who is missing.

    \b
    Example:
      otactl release review t9-engine/2.1.0
    """
    from otactl.app import release
    from otactl.app.signer import open_context

    rel = release.review(open_context(workspace), release_id)
    if output is Output.json:
        emit_json("release-review", rel.__dict__)
        return
    _show(rel, output, "release")
    table("targets this release adds", ["path", "bytes", "sha256"],
          [[t["path"], t["length"], t["sha256"]] for t in rel.targets])
    table("firmware per hardware revision", ["revision", "image"], [[r, t] for r, t in rel.firmware.items()])
    rows = []
    for variant, params in sorted(rel.variants.items()):
        change = rel.variant_changes.get(variant, {})
        if "added" in change:
            what = "new"
        elif "changed" in change:
            what = "; ".join(f"{k}: {v['from']} -> {v['to']}" for k, v in change["changed"].items())
        else:
            what = "unchanged"
        rows.append([variant, ", ".join(f"{k}={v}" for k, v in params.items()), what])
    for variant, change in rel.variant_changes.items():
        if change.get("removed"):
            rows.append([variant, "", "removed"])
    table(f"variants (compared with {rel.previous or 'nothing: first release'})",
          ["variant", "parameters", "change"], rows)


@app.command("approve")
def approve(release_id: str = ReleaseArg,
            key: str = typer.Option(None, "--key", help="Release-manager key name."),
            workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Add one release manager's signature to a staged release (in CI's workspace in a lab, or in the
    release manager's own signer workspace: `otactl join`, docs/key-custody.md).

    \b
    Example:
      otactl release approve 2.1.0 --workspace ~/otactl-alice
      otactl release approve 2.1.0 --key alice
    """
    from otactl.app import release
    from otactl.app.signer import open_context

    _show(release.approve(open_context(workspace), release_id, key), output, "release")


@app.command("publish")
def publish(release_id: str = ReleaseArg, workspace: Path = WorkspaceOpt,
            output: Output = OutputOpt) -> None:
    """Publish a release once its signatures meet the threshold (refuses, naming the missing ones).

    \b
    Example:
      otactl release publish 2.1.0
    """
    from otactl.app import release
    from otactl.app.context import Context

    ctx = Context.open(workspace)
    with progress(f"publishing {release_id}", prompts=True):
        rel = release.publish(ctx, release_id)
    _show(rel, output, "release")


@app.command("withdraw")
def withdraw(release_id: str = ReleaseArg,
             reason: str = typer.Option(None, "--reason", help="Why (required to propose a withdrawal)."),
             key: str = typer.Option(None, "--key", help="Release-manager key that signs the withdrawal."),
             workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Sign a release's withdrawal; at the release managers' threshold it is published and devices refuse it.

    \b
    Example:
      otactl release withdraw 2.2.0 --reason "CVE-2027-0001 in the bootloader" --key alice
    """
    from otactl.app import withdraw as service
    from otactl.app.signer import open_context

    result = service.withdraw(open_context(workspace), release_id, reason, key)
    if output is Output.json:
        emit_json("release-withdrawal", result.to_json())
        return
    for note in result.notes:
        info(note)
    print(f"{result.model}/{result.version}: withdrawal {result.status} ({result.reason}); signed by "
          f"{', '.join(result.signed_by)}"
          + (f"; needs {result.threshold - len(result.signed_by)} more of: {', '.join(result.missing)} "
             f"(threshold {result.threshold})" if result.status == "pending" else
             f" (withdrawals v{result.withdrawals_version})"))


@app.command("list")
def list_cmd(workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Staged, approved, published and withdrawn releases.

    \b
    Example:
      otactl release list -o json
    """
    from otactl.app import release
    from otactl.app.signer import open_context

    rows = release.list_releases(open_context(workspace))
    if output is Output.json:
        emit_json("releases", {"releases": [r.__dict__ for r in rows]})
        return
    if not rows:
        info("no releases yet")
    table("releases", ["model", "version", "status", "security", "signed by", "needs", "variants"],
          [[r.model, r.version, r.status, r.security_version, ", ".join(r.signed_by),
            f"{r.needed} more of: {', '.join(r.missing)}" if r.needed else "", ", ".join(sorted(r.variants))]
           for r in rows])


@app.command("reinstate")
def reinstate(model: str = typer.Argument(..., metavar="MODEL", help="Product model."),
              version: str = typer.Argument(..., metavar="VERSION", help="The release marked bad."),
              reason: str = typer.Option(None, "--reason", help="Why (recorded in the audit log; required to "
                                         "sign, left out when CI takes a signed reinstatement in)."),
              key: str = typer.Option(None, "--key", help="Release-manager key that signs (in a signer workspace: "
                                      "your own, the default). Left out in CI: take in the reinstatement a "
                                      "release manager signed on their machine."),
              workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Clear a release's bad mark so a new rollout may target it (a release manager's signed, audited action).

    In a release manager's signer workspace (`otactl join`) the signed reinstatement goes to the store;
    CI then runs `release reinstate MODEL VERSION` without --key, which verifies and records it.

    \b
    Example:
      otactl release reinstate t9-engine 2.2.0 --reason "crash was a lab power cut" -w ~/otactl-alice
      otactl release reinstate t9-engine 2.2.0
      otactl release reinstate t9-engine 2.2.0 --reason "crash was a lab power cut" --key alice
    """
    from otactl.app import reinstate as service
    from otactl.app.signer import open_context

    result = service.reinstate(open_context(workspace), model, version, reason, key)
    if isinstance(result, service.ReinstateRequest):
        if output is Output.json:
            emit_json("release-reinstate-request", result.to_json())
            return
        print(f"{result.model}/{result.version}: reinstatement signed by {result.release_manager} ({result.reason}; "
              f"clears the mark of rollout policy v{result.clears_policy_version})")
        info(f"stored ({result.stored}); CI records it with `otactl release reinstate {result.model} "
             f"{result.version}`")
        return
    if output is Output.json:
        emit_json("release-reinstate", result.to_json())
        return
    print(f"{result.model}/{result.version}: reinstated by {result.actor} (rollout policy v{result.policy_version}; "
          f"marked bad now: {', '.join(result.bad_releases) or 'none'})")
