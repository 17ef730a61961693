"""The rollout controller: the I/O around the pure core in ``otactl.rollout``.

A step reads state, reads telemetry, evaluates the ring's gates, decides, and then — in this
order — records the new state (a conditional write: the first of two concurrent steps wins, the
other gets a ConflictError before anything is published), publishes the new rollout policy when it
changed, and appends a signed audit entry. If a crash interrupts between the state and the policy,
the next step sees ``policy_version`` ahead of the published policy and publishes it again.

Telemetry is read before anything is written: a source that cannot be read (a database that does
not exist, a Prometheus that does not answer) is a :class:`TelemetrySourceError` (exit 1) with the
source's own cause, and the step records, publishes and logs nothing. It is never a gate verdict;
missing data inside a readable source is WAIT by the gate's declared rule
(docs/decisions/0106-missing-data-and-reinstate.md).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from otactl.app import rollout_state as rs
from otactl.app.context import Context
from otactl.app.observe import observe as observe_ring
from otactl.app.policy import current_policy, publish_policy
from otactl.app.release import list_releases
from otactl.audit import log as audit
from otactl.errors import NotFoundError, TelemetrySourceError, UsageError
from otactl.release.bundle import canonical
from otactl.rollout import decide as core
from otactl.rollout.gates import Observation, Phase, RingVerdict, evaluate_ring
from otactl.rollout.plan import KeyId, Plan, load_plan
from otactl.rollout.rings import DeviceId, DeviceInfo, PlanReport, plan_report
from otactl.telemetry.source import TelemetrySource, TelemetryUnavailable


@dataclass(frozen=True)
class StepResult:
    model: str
    rollout_id: str
    action: str
    status: str
    ring: str
    ring_index: int
    reasons: list[str]
    policy_version: int
    verdict: dict[str, Any] | None

    @property
    def waiting(self) -> bool:
        return self.action in (core.Action.HOLD, core.Action.AWAIT_APPROVAL)


def default_salt(model: str, version: str, plan: Plan) -> str:
    """Deterministic per (model, version): `plan` shows exactly the rings `start` will use."""
    return plan.salt or hashlib.sha256(f"otactl-rollout:{model}/{version}".encode()).hexdigest()[:16]


def fleet_devices(ctx: Context, model: str) -> list[DeviceInfo]:
    from otactl.app.fleet import list_devices

    return [DeviceInfo(DeviceId(r.device_id), r.model, r.variant, r.region, frozenset(r.tags))
            for r in list_devices(ctx) if r.model == model]


def plan(ctx: Context, model: str, version: str, plan_file: Path) -> PlanReport:
    parsed = load_plan(plan_file)
    return plan_report(parsed, default_salt(model, version, parsed), fleet_devices(ctx, model))


def newest_older(ctx: Context, model: str, version: str) -> str:
    """The newest published release of ``model`` older than ``version``: the default baseline."""
    from otactl.app.release import version_key

    older = [r for r in list_releases(ctx) if r.model == model and r.status == "published"
             and version_key(r.version) < version_key(version)]
    if not older:
        raise UsageError(f"no published release of {model} older than {version} to fall back to; "
                         "name the fleet's current release with --baseline")
    return max(older, key=lambda r: version_key(r.version)).version


def _release_ref(ctx: Context, model: str, version: str, *, must_be_published: bool = True) -> core.ReleaseRef:
    for rel in list_releases(ctx):
        if rel.model == model and rel.version == version:
            if must_be_published and rel.status != "published":
                raise UsageError(f"release {model}/{version} is {rel.status}, not published and approved; "
                                 "a rollout can only ship an approved, published release")
            return core.ReleaseRef(version, rel.security_version)
    raise NotFoundError(f"release {model}/{version}: no such release")


def _actor(ctx: Context, key: str | None) -> tuple[str, Any]:
    name = key or ctx.trust.role("rollouts").keys[0]
    return name, ctx.signers.get(name)


def _audit(ctx: Context, model: str, key: str | None, action: str, details: dict[str, Any]) -> None:
    name, signer = _actor(ctx, key)
    audit.append(ctx.store, model, signer, name, action, details, ctx.now)


def _policy(ctx: Context, record: rs.RolloutRecord, plan_: Plan) -> dict[str, Any]:
    repo = ctx.repository()
    previous = current_policy(ctx, repo, record.model)
    return core.next_policy(plan_, record.state, model=record.model, rollout_id=record.rollout_id,
                            salt=record.salt, release=record.release, last_good=record.baseline,
                            previous=previous)


def _publish(ctx: Context, record: rs.RolloutRecord) -> int:
    doc = _policy(ctx, record, record.plan)
    doc.pop("policy_version", None)
    return publish_policy(ctx, doc)


def _published_version(ctx: Context, model: str) -> int:
    doc = current_policy(ctx, ctx.repository(), model)
    return 0 if doc is None else int(doc.get("policy_version", 0))


def start(ctx: Context, model: str, version: str, plan_file: Path, *, baseline: str | None = None,
          key: str | None = None) -> StepResult:
    plan_ = load_plan(plan_file)
    plan_text = Path(plan_file).read_text(encoding="utf-8")
    existing = rs.load(ctx.store, model)
    if existing is not None and not existing.terminal:
        raise UsageError(f"model {model!r} already has an active rollout ({existing.rollout_id}, "
                         f"{existing.state.status.value}); finish, roll back or abort it first")
    release = _release_ref(ctx, model, version)
    if baseline is None:
        if existing is not None and existing.state.status is core.Status.COMPLETE:
            baseline = existing.release.version
        else:
            baseline = newest_older(ctx, model, version)
    base_ref = _release_ref(ctx, model, baseline)
    if base_ref.version == release.version:
        raise UsageError("the baseline and the new release are the same")
    salt = default_salt(model, version, plan_)
    rollout_id = f"{model}-{version}-{secrets.token_hex(3)}"
    record = rs.RolloutRecord(model, rollout_id, salt, str(plan_file), plan_text, release, base_ref,
                              core.start(version, ctx.now), _published_version(ctx, model) + 1,
                              etag=existing.etag if existing else None)
    _policy(ctx, record, plan_)  # a bad release or one below the floor is refused before anything is written
    record = rs.save(ctx.store, record, create=existing is None)
    _publish(ctx, record)
    plan_sha = hashlib.sha256(plan_text.encode()).hexdigest()
    _audit(ctx, model, key, "start", {"rollout_id": rollout_id, "release": version, "baseline": baseline,
                                      "plan": plan_.name, "plan_sha256": plan_sha})
    started = core.Decision(core.Action.ADVANCE, 0, (f"started in ring {plan_.rings[0].name!r}",))
    return _result(record, started)


def _result(record: rs.RolloutRecord, decision: core.Decision) -> StepResult:
    plan_ = record.plan
    return StepResult(record.model, record.rollout_id, decision.action.value, record.state.status.value,
                      plan_.rings[record.state.ring_index].name, record.state.ring_index, list(decision.reasons),
                      record.policy_version, record.last_verdict)


def observe(record: rs.RolloutRecord, source: TelemetrySource, now: datetime) -> Observation:
    """What the source reports for the record's current ring (``otactl.app.observe``: the same
    queries the gate-quality benchmark runs). A source that cannot be read raises
    ``TelemetryUnavailable``, never an empty observation: that would be a verdict by accident."""
    i = record.state.ring_index
    return observe_ring(source, record.plan, i, model=record.model, release=record.release.version,
                        baseline=record.baseline.version, since=record.state.ring_started[i], now=now)


def _read_telemetry(record: rs.RolloutRecord, source: TelemetrySource, now: datetime) -> Observation:
    try:
        return observe(record, source, now)
    except TelemetryUnavailable as exc:
        raise TelemetrySourceError(
            f"telemetry source unavailable: {exc}; nothing was recorded, the rollout is unchanged",
            hint="check --telemetry (or OTACTL_TELEMETRY_SOURCE) and run the step again") from exc


def _digest(evidence: dict[str, Any] | None) -> str:
    """SHA-256 of the evidence as sorted JSON (it holds floats, which canonical JSON forbids)."""
    import json

    return hashlib.sha256(json.dumps(evidence or {}, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verdict_json(v: RingVerdict) -> dict[str, Any]:
    def conv(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: conv(val) for k, val in x.items()}
        if isinstance(x, (list, tuple)):
            return [conv(val) for val in x]
        if isinstance(x, datetime):
            return x.isoformat()
        if hasattr(x, "value"):
            return x.value
        if isinstance(x, float):
            if x != x:
                return None
            return float(x) if abs(x) != float("inf") else ("inf" if x > 0 else "-inf")
        return x

    return {k: conv(val) for k, val in asdict(v).items()}


def step(ctx: Context, model: str, source: TelemetrySource, *, key: str | None = None) -> StepResult:
    record = rs.require(ctx.store, model)
    plan_ = record.plan
    running = not record.terminal and record.state.status is not core.Status.PAUSED
    # read first: a source that cannot be read stops the step before anything is written
    observation = _read_telemetry(record, source, ctx.now) if running else None
    if record.policy_version > _published_version(ctx, model) and not record.terminal:
        _publish(ctx, record)  # a previous step crashed after recording its decision
    if observation is None:
        return _result(record, core.decide(plan_, record.state, None, ctx.now))
    verdict = evaluate_ring(plan_, record.state.ring_index, observation, record.state.carry)
    decision = core.decide(plan_, record.state, verdict, ctx.now)
    new_state = core.apply(record.state, decision, ctx.now, verdict)
    changed = decision.changes_policy or new_state.status is not record.state.status
    new = record.with_state(new_state, last_verdict=verdict_json(verdict),
                            policy_version=record.policy_version + (1 if decision.changes_policy else 0),
                            paused_by="gate" if decision.action is core.Action.PAUSE else record.paused_by)
    new = rs.save(ctx.store, new)  # the conditional write: one of two concurrent steps wins here
    if decision.changes_policy:
        _publish(ctx, new)
    if changed:
        _audit(ctx, model, key, decision.action.value,
               {"rollout_id": record.rollout_id, "ring": plan_.rings[record.state.ring_index].name,
                "reasons": list(decision.reasons), "verdict": verdict.phase.value,
                "evidence_sha256": _digest(new.last_verdict)})
    return _result(new, decision)


def status(ctx: Context, model: str) -> StepResult:
    record = rs.require(ctx.store, model)
    last = record.state.history[-1] if record.state.history else None
    action = last.action if last else core.Action.ADVANCE
    reasons = (last.reason,) if last else ()
    return _result(record, core.Decision(action, record.state.ring_index, reasons))


def _set_status(ctx: Context, model: str, status: core.Status, action: core.Action, reason: str,
                key: str | None, *, allowed: tuple[core.Status, ...]) -> StepResult:
    record = rs.require(ctx.store, model)
    if record.state.status not in allowed:
        raise UsageError(f"rollout {record.rollout_id} is {record.state.status.value}; cannot {action.value}")
    entry = core.HistoryEntry(ctx.now, record.state.ring_index, action, reason)
    state = replace(record.state, status=status, history=(*record.state.history, entry))
    changes_policy = status is core.Status.ROLLED_BACK
    new = record.with_state(state, policy_version=record.policy_version + (1 if changes_policy else 0),
                            paused_by=(key or "operator") if status is core.Status.PAUSED else None)
    new = rs.save(ctx.store, new)
    if changes_policy:
        _publish(ctx, new)
    _audit(ctx, model, key, action.value, {"rollout_id": record.rollout_id, "reason": reason})
    return _result(new, core.Decision(action, new.state.ring_index, (reason,)))


def pause(ctx: Context, model: str, reason: str, key: str | None = None) -> StepResult:
    return _set_status(ctx, model, core.Status.PAUSED, core.Action.PAUSE, reason, key,
                       allowed=(core.Status.RUNNING,))


def resume(ctx: Context, model: str, reason: str, key: str | None = None) -> StepResult:
    return _set_status(ctx, model, core.Status.RUNNING, core.Action.ADVANCE, f"resumed: {reason}", key,
                       allowed=(core.Status.PAUSED,))


def rollback(ctx: Context, model: str, reason: str, key: str | None = None) -> StepResult:
    return _set_status(ctx, model, core.Status.ROLLED_BACK, core.Action.ROLLBACK, reason, key,
                       allowed=(core.Status.RUNNING, core.Status.PAUSED))


def approve(ctx: Context, model: str, key: str) -> StepResult:
    """A release manager signs the plan and the current ring's evidence (k-of-n per the plan)."""
    record = rs.require(ctx.store, model)
    ring = record.plan.rings[record.state.ring_index]
    if ring.approvals is None:
        raise UsageError(f"ring {ring.name!r} of rollout {record.rollout_id} needs no approval")
    if key not in ring.approvals.keys:
        raise UsageError(f"key {key!r} may not approve ring {ring.name!r} (the plan names: "
                         f"{', '.join(ring.approvals.keys)})")
    if key not in ctx.trust.keys:
        raise UsageError(f"key {key!r} is named by the plan but not in the trust configuration")
    approval = core.Approval(ring.name, KeyId(key))
    if approval in record.state.approvals:
        raise UsageError(f"ring {ring.name!r} is already approved with key {key!r}")
    signer = ctx.signers.get(key)
    payload = {"rollout_id": record.rollout_id, "ring": ring.name,
               "plan_sha256": hashlib.sha256(record.plan_text.encode()).hexdigest(),
               "evidence_sha256": _digest(record.last_verdict)}
    signature = signer.sign(canonical(payload)).signature
    state = replace(record.state, approvals=record.state.approvals | {approval})
    new = rs.save(ctx.store, record.with_state(state))
    audit.append(ctx.store, model, signer, key, "approve", {**payload, "signature": signature}, ctx.now)
    return _result(new, core.Decision(core.Action.AWAIT_APPROVAL, new.state.ring_index,
                                      (f"ring {ring.name!r} approved by {key}",)))


def exit_code_for(result: StepResult) -> int:
    from otactl.errors import ExitCode

    if result.status == core.Status.COMPLETE.value:
        return int(ExitCode.OK)
    if result.status in (core.Status.ROLLED_BACK.value, core.Status.PAUSED.value):
        return int(ExitCode.GATE_FAILED)
    if result.waiting:
        return int(ExitCode.WAITING)
    return int(ExitCode.OK)


__all__ = ["Phase", "StepResult", "approve", "pause", "plan", "resume", "rollback", "start", "status", "step"]


def report(ctx: Context, model: str, fmt: str) -> str:
    """Markdown or HTML report of the model's rollouts: archived ones and the current one."""

    from otactl.report import rollouts as rep

    records = {r.rollout_id: r for r in rs.archived(ctx.store, model)}  # each checked field by field
    current = rs.load(ctx.store, model)
    if current is not None:
        records[current.rollout_id] = current
    if not records:
        raise NotFoundError(f"model {model!r}: no rollouts to report")
    entries = audit.entries(ctx.store, model)
    summaries = []
    for record in sorted(records.values(), key=lambda r: r.state.ring_started[0]):
        n = sum(1 for e in entries if e.details.get("rollout_id") == record.rollout_id)
        summaries.append(rep.summarise(record, n))
    return rep.markdown(summaries, ctx.now) if fmt == "md" else rep.html_page(summaries, ctx.now)
