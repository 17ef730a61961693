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
    """Check the audit log's sequence, hash chain and every actor's signature, and that the rollout
    state and the published policy are the ones the log's last transition records.

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

    report = log.verify(ctx.store, model, key_for)
    agreed = journal.check(ctx, model)
    if output is Output.json:
        emit_json("audit-verify", {**report.__dict__, "state": agreed.__dict__})
        return
    at = "no rollout" if agreed.rollout_id is None else f"{agreed.rollout_id} revision {agreed.state_revision}"
    print(f"ok: audit log {model}: {report.entries} entries, chain intact, signed by {', '.join(report.actors)}; "
          f"state and policy v{agreed.published_version} agree with it ({at})")


@app.command("show")
def show(model: str = ModelArg, workspace: Path = WorkspaceOpt, output: Output = OutputOpt) -> None:
    """The audit log's entries.

    \b
    Example:
      otactl audit show t9-engine -o json
    """
    from otactl.app.context import Context
    from otactl.audit import log

    items = log.entries(Context.open(workspace).store, model)
    if output is Output.json:
        emit_json("audit", {"entries": [e.__dict__ for e in items]})
        return
    table(f"audit {model}", ["seq", "time", "actor", "action", "details"],
          [[e.seq, e.time, e.actor, e.action, ", ".join(f"{k}={v}" for k, v in e.details.items()
                                                       if k not in ("verdict", "signature"))]
           for e in items])
