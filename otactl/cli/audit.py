"""`otactl audit verify|show`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from otactl.cli.common import ModelArg, OutputOpt, WorkspaceOpt
from otactl.cli.render import Output, emit_json, table

if TYPE_CHECKING:
    from securesystemslib.signer import Key

app = typer.Typer(no_args_is_help=True)


@app.command("verify")
def verify(model: str = ModelArg, workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """Check the audit log's sequence, hash chain and every actor's signature, every ring approval's and
    reinstatement's release-manager signature, and that the rollout state and the published policy are
    the ones the log's last transition records.

    \b
    Example:
      otactl audit verify t9-engine
    """
    from otactl.app import journal
    from otactl.app.context import Context
    from otactl.audit import log
    from otactl.keys.keyfile import public_key

    ctx = Context.open(workspace)

    def key_for(keyid: str) -> Key | None:
        entry = ctx.trust.key_by_id(keyid)
        return None if entry is None else public_key(entry.public)

    def is_release_manager(keyid: str) -> bool:
        entry = ctx.trust.key_by_id(keyid)
        return entry is not None and entry.name in ctx.trust.release_managers

    report = log.verify(ctx.store, model, key_for, is_release_manager)
    agreed = journal.check(ctx, model)
    if output is Output.json:
        emit_json("audit-verify", {**report.__dict__, "state": agreed.__dict__})
        return
    at = "no rollout" if agreed.rollout_id is None else f"{agreed.rollout_id} revision {agreed.state_revision}"
    print(f"ok: audit log {model}: {report.entries} entries, chain intact, signed by {', '.join(report.actors)}; "
          f"state and policy v{agreed.published_version} agree with it ({at})")


@app.command("show")
def show(model: str = typer.Argument(..., metavar="MODEL|ROLLOUT_ID",
                                     help="A model (its whole log) or a rollout id (that rollout's entries)."),
         workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """The audit log's entries: who did what, when, signed by whom.

    \b
    Example:
      otactl audit show t9-engine -o json
      otactl audit show t9-engine-2.1.0-3f9a1c
    """
    from otactl.app.context import Context
    from otactl.app.rollout import find
    from otactl.app.rollout_state import load
    from otactl.audit import log

    ctx = Context.open(workspace)
    rollout_id = None
    stream = model
    if load(ctx.store, model) is None and not list(ctx.store.list(f"audit/{model}/")):
        record = find(ctx, model)  # a rollout id, or a clear "no such model or rollout"
        stream, rollout_id = record.model, record.rollout_id
    items = [e for e in log.entries(ctx.store, stream)
             if rollout_id is None or e.details.get("rollout_id") == rollout_id]
    if output is Output.json:
        emit_json("audit", {"entries": [e.__dict__ for e in items]})
        return
    table(f"audit {model}", ["seq", "time", "actor", "action", "details"],
          [[e.seq, e.time, e.actor, e.action, ", ".join(f"{k}={v}" for k, v in e.details.items()
                                                       if k not in ("verdict", "signature"))]
           for e in items])
