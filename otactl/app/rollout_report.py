"""`otactl report rollout` (and `otactl rollout report`): read a model's rollout records, the verdict each
transition journaled, the audit log, the signed fleet, the release's signatures and the devices'
reports, then hand them to the pure report (otactl/report/rollout_report.py). Reads only.

A telemetry source that cannot be read is not an error: the report says so in its sources and every
funnel count is unknown (decision 1104, as the fleet report does, decision 1103). An audit log whose
chain or signatures do not verify is stated the same way. A record, journal object or audit entry
that does not parse is an error naming the object (exit 1): without it there is no report.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from otactl.app import rollout_state as rs
from otactl.app.context import Context
from otactl.audit import log as audit
from otactl.errors import NotFoundError, OtactlError, StoreError, UsageError, VerificationError
from otactl.report import evidence
from otactl.report import rollout_report as core
from otactl.report.fleet import Source
from otactl.rollout.plan import Plan

GATE_ACTIONS = frozenset({"advance", "complete", "rollback", "pause"})  # a step's transitions carry a verdict


def _plan(record: rs.RolloutRecord, where: str) -> Plan:
    try:
        return record.plan
    except OtactlError as exc:
        raise StoreError(f"{where}: corrupt rollout state: field 'plan_text': the recorded plan does not parse "
                         f"({exc})") from None


def _records(ctx: Context, name: str) -> tuple[str, list[rs.RolloutRecord], rs.RolloutRecord | None]:
    """(model, its records oldest first, the one ``name`` is the id of, or None for a model)."""
    from otactl.app.rollout import find

    current = rs.load(ctx.store, name)
    archived = rs.archived(ctx.store, name)
    single = None
    if current is None and not archived:
        single = find(ctx, name)  # a rollout id, current or archived (NotFoundError names it)
        current, archived = rs.load(ctx.store, single.model), rs.archived(ctx.store, single.model)
    model = name if single is None else single.model
    records = {r.rollout_id: r for r in archived}
    if current is not None:
        records[current.rollout_id] = current  # the live record wins over an archive copy
    ordered = sorted(records.values(), key=lambda r: (r.state.ring_started[0], r.rollout_id))
    if single is not None:
        single = records.get(single.rollout_id, single)
    return model, ordered, single


def telemetry_path(spec: str, workspace: Path) -> Path | Source:
    """The SQLite database a ``--telemetry`` spec names, or the Source that says why it is not read."""
    from otactl.app.fleet_report import PROMETHEUS_GAP
    from otactl.telemetry.query import redact

    scheme, sep, rest = spec.partition(":")
    if scheme == "prometheus" and rest:
        return Source("telemetry", redact(spec), False, PROMETHEUS_GAP)
    if scheme != "sqlite" or not sep or not rest:
        raise UsageError(f"--telemetry {redact(spec)!r}: expected sqlite:PATH (the embedded ingest's database)")
    return Path(rest) if Path(rest).is_absolute() else (workspace / rest).resolve()


def _decisions(ctx: Context, record: rs.RolloutRecord, entries: list[audit.AuditEntry]) -> list[evidence.Decision]:
    """Every gate-driven transition with the verdict its journaled state holds, then the latest hold."""
    from datetime import datetime

    out = []
    last_verdict: Any = None
    for e in entries:
        t = audit.transition_of(e)
        if t is None or t[0].rollout_id != record.rollout_id or e.action not in GATE_ACTIONS \
                or "verdict" not in e.details:
            continue
        rev, sha = t
        key = rs.journal_key(record.model, rev.rollout_id, rev.revision, sha)
        data = ctx.store.get_optional(key)
        verdict = None
        if data is not None:
            if hashlib.sha256(data).hexdigest() != sha:
                raise StoreError(f"{ctx.store.url}{key}: does not match the digest its audit entry signs")
            verdict = rs.parse(data, None, f"{ctx.store.url}{key}").last_verdict
        try:
            at = datetime.fromisoformat(e.time)
        except ValueError:
            raise StoreError(f"audit log {record.model}, entry {e.seq}: time {e.time!r:.40} is not a time") from None
        reasons = e.details.get("reasons")
        out.append(evidence.decision(at, str(e.details.get("ring", "")), e.action, e.actor, verdict,
                                     [str(r) for r in reasons] if isinstance(reasons, list) else ()))
        last_verdict = verdict
    logged = any((t := audit.transition_of(e)) is not None and t[0].rollout_id == record.rollout_id for e in entries)
    if not logged:  # a record from before revisions (no transition in the log names it): read its history
        plan = record.plan
        steps = [h for h in record.state.history if h.action.value in ("advance", "complete")
                 or (h.action.value in GATE_ACTIONS and " failed after " in h.reason)]  # decide's words for a FAIL
        for h in steps:
            ring = plan.rings[h.ring_index].name if 0 <= h.ring_index < len(plan.rings) else f"#{h.ring_index}"
            if h.action.value == "advance" and 0 < h.ring_index <= len(plan.rings):
                ring = plan.rings[h.ring_index - 1].name  # an advance is recorded at the ring it entered
            mine = record.last_verdict if h is steps[-1] and (record.last_verdict or {}).get("ring") == ring else None
            out.append(evidence.decision(h.time, ring, h.action.value, None, mine, [h.reason], recorded=True))
            last_verdict = mine if mine is not None else last_verdict
    v = record.last_verdict
    if v is not None and v != last_verdict and not record.terminal:
        until = evidence.text(v.get("until"))
        try:
            at = datetime.fromisoformat(until)
        except ValueError:
            at = ctx.now
        out.append(evidence.decision(at, evidence.text(v.get("ring")), "hold", None, v))
    return out


def _approval(ctx: Context, model: str, version: str) -> core.ReleaseApproval:
    from otactl.app.release import ReleaseRef, info

    threshold = ctx.trust.role("releases").threshold
    try:
        rel = info(ctx, ReleaseRef(model, version))
    except NotFoundError as exc:
        return core.ReleaseApproval(version, "unknown", threshold, (), (), str(exc))
    ci = tuple(k for k in rel.signed_by if k in ctx.trust.ci_keys)
    managers = tuple(k for k in rel.signed_by if k in ctx.trust.release_managers)
    detail = "" if rel.signed_by else "no valid signature found on the staged release metadata"
    return core.ReleaseApproval(version, rel.status, rel.threshold, ci, managers, detail)


def _verify_audit(ctx: Context, model: str) -> Source:
    from otactl.keys.keyfile import public_key

    def key_for(keyid: str) -> Any:
        entry = ctx.trust.key_by_id(keyid)
        return None if entry is None else public_key(entry.public)

    try:
        found = audit.verify(ctx.store, model, key_for)
    except VerificationError as exc:
        return Source("audit log", f"audit/{model}/", False, f"NOT verified: {exc}")
    return Source("audit log", f"audit/{model}/", True,
                  f"{found.entries} entries, hash chain and every signature verified")


def rollout_report(ctx: Context, name: str, telemetry: str, *, every: bool = False) -> core.RolloutReport:
    """``name``: a model (the index of its rollouts; with ``every``, each of them in detail too) or a
    rollout id (that one in detail)."""
    model, records, single = _records(ctx, name)
    if not records:
        raise NotFoundError(f"model {model!r}: no rollouts to report")
    current = rs.load(ctx.store, model)
    current_id = None if current is None else current.rollout_id
    def where(r: rs.RolloutRecord) -> str:
        key = rs.state_key(model) if r.rollout_id == current_id else rs.archive_key(model, r.rollout_id)
        return f"{ctx.store.url}{key}"

    plans = {r.rollout_id: _plan(r, where(r)) for r in (records if single is None else [single])}
    shown = records if single is None else [single]  # a rollout id: that one only
    index = tuple(core.index_row(r.rollout_id, r.release.version, r.baseline.version, plans[r.rollout_id], r.state,
                                 current=r.rollout_id == current_id) for r in shown)
    entries = audit.entries(ctx.store, model)
    sources = [Source("rollout state", f"{ctx.store.url}rollouts-state/", True,
                      f"{len(records)} rollouts of {model} ({sum(r.rollout_id != current_id for r in records)} "
                      "archived)"),
               _verify_audit(ctx, model)]
    wanted = [single] if single is not None else (records if every else [])
    details = []
    if wanted:
        from otactl.app import director
        from otactl.app.fleet import list_devices

        rows = director.Index(ctx).rows() if director.enabled(ctx.repository()) else list_devices(ctx)
        fleet = [core.FleetDevice(d.device_id, d.model, d.variant, d.region, tuple(d.tags), d.pin)
                 for d in rows if d.model == model]
        sources.append(Source("signed fleet", "repository", True,
                              f"{len(fleet)} device records of {model}, verified against the signed metadata"))
        db = telemetry_path(telemetry, ctx.workspace.root)
        read: list[Source] = []
        for record in wanted:
            details.append(_detail(ctx, record, plans[record.rollout_id], next(
                r for r in index if r.rollout_id == record.rollout_id), fleet, db, entries, read))
        bad = [s for s in read if not s.ok]
        sources.append(bad[0] if bad else read[0] if len(read) == 1 else
                       Source("telemetry", read[0].spec, True, f"read for each of {len(read)} rollouts"))
    return core.RolloutReport(ctx.now, model, name, tuple(sources), index, tuple(details))


def _detail(ctx: Context, record: rs.RolloutRecord, plan: Plan, row: core.IndexRow, fleet: list[core.FleetDevice],
            db: Path | Source, entries: list[audit.AuditEntry], read: list[Source]) -> core.RolloutDetail:
    from otactl.telemetry.device_history import release_histories
    from otactl.telemetry.source import TelemetryUnavailable

    history = None
    if isinstance(db, Source):
        read.append(db)
    else:
        try:
            history = release_histories(db, record.model, record.release.version, row.started, row.ended or ctx.now)
            read.append(Source("telemetry", f"sqlite:{db}", True,
                               f"reports of {len(history)} devices about {record.release.version}"))
        except TelemetryUnavailable as exc:
            read.append(Source("telemetry", f"sqlite:{db}", False, str(exc)))
    return core.build_detail(
        row, plan=plan, state=record.state, salt=record.salt, policy_version=record.policy_version,
        paused_by=record.paused_by, devices=fleet, history=history, decisions=_decisions(ctx, record, entries),
        audit_entries=entries, controller_keys=frozenset(ctx.trust.role("rollouts").keys),
        release_approval=_approval(ctx, record.model, record.release.version), now=ctx.now)
