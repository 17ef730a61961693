"""The rollout controller: the I/O around the pure core in ``otactl.rollout``.

A step reads state, reads telemetry, evaluates the ring's gates and decides (``core.decide``);
an operator's pause, resume, abort, rollback or approval is a transition of the same core
(``core.operate``). A decision that changes the rollout is recorded by ``journal.commit``: the
audit entry first, signed by the actor (the person's ``--key``, ``$OTACTL_ACTOR`` or the
workspace's ``actor``; the online rollouts key for the controller's own steps), then the state,
the policy and the archive. Of two concurrent writers one wins, the other gets a ConflictError
with nothing recorded; whatever a crash leaves is finished by the next command
(``journal.recover``), so every state change has exactly one audit entry.

Telemetry is read before anything is written: a source that cannot be read (a database that does
not exist, a Prometheus that does not answer) is a :class:`TelemetrySourceError` (exit 1) with the
source's own cause, and the step records, publishes and logs nothing. It is never a gate verdict;
missing data inside a readable source is WAIT by the gate's declared rule
(docs/decisions/0106-missing-data-and-reinstate.md).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from otactl.app import approvals, journal
from otactl.app import rollout_state as rs
from otactl.app.approvals import ApprovalRequest
from otactl.app.context import Context
from otactl.app.observe import observe as observe_ring
from otactl.app.policy import current_policy, publish_policy
from otactl.app.release import list_releases
from otactl.errors import (
    ExitCode,
    GateFailedError,
    NotFoundError,
    OtactlError,
    TelemetrySourceError,
    UsageError,
    VerificationError,
    WaitingError,
)
from otactl.rollout import decide as core
from otactl.rollout.gates import Observation, Phase, RingVerdict, evaluate_ring
from otactl.rollout.plan import Plan, load_plan
from otactl.rollout.rings import DeviceId, DeviceInfo, PlanReport, plan_report, plan_warnings
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
    dry_run: bool = False  # a decision shown, nothing written

    @property
    def waiting(self) -> bool:
        return self.action in (core.Action.HOLD, core.Action.AWAIT_APPROVAL)


def default_salt(model: str, version: str, plan: Plan) -> str:
    """Deterministic per (model, version): `plan` shows exactly the rings `start` will use."""
    return plan.salt or hashlib.sha256(f"otactl-rollout:{model}/{version}".encode()).hexdigest()[:16]


def fleet_devices(ctx: Context, model: str) -> Iterator[DeviceInfo]:
    """The model's devices as rings see them: from the fleet index in the director layout, shard by
    shard (no record opened, decision 0407; ``otactl fleet verify`` proves it consistent; a million
    devices are never all in memory), else from the records."""
    from otactl.app import director
    from otactl.app.fleet import bin_records

    repo = ctx.repository()
    if director.enabled(repo):
        return (DeviceInfo(DeviceId(d), m, v, r, t) for d, m, v, r, t in director.ring_attributes(ctx, model))
    return (DeviceInfo(DeviceId(r.device_id), r.model, r.variant, r.region, frozenset(r.tags))
            for r in bin_records(ctx, repo) if r.model == model)


def plan(ctx: Context, model: str, version: str, plan_file: Path) -> PlanReport:
    parsed = load_plan(plan_file)
    return _plan_report(ctx, model, version, parsed)


def _plan_report(ctx: Context, model: str, version: str, plan_: Plan) -> PlanReport:
    report = plan_report(plan_, default_salt(model, version, plan_), fleet_devices(ctx, model))
    return replace(report, warnings=tuple(plan_warnings(plan_, report, ctx.trust.keys)))


def newest_older(ctx: Context, model: str, version: str) -> str:
    """The newest published release of ``model`` older than ``version``: the default baseline."""
    from otactl.app.release import version_key

    older = [r for r in list_releases(ctx) if r.model == model and r.status == "published"
             and version_key(r.version) < version_key(version)]
    if not older:
        raise UsageError(f"no published release of {model} older than {version} to fall back to; "
                         "name the fleet's current release with --baseline")
    return max(older, key=lambda r: version_key(r.version)).version


def _refuse_withdrawn(ctx: Context, model: str, versions: dict[str, str]) -> None:
    """Refuse a release or baseline the release managers withdrew (the signed list, decision 0502):
    devices would refuse it anyway, whatever the policy says."""
    from otactl.app.withdraw import withdrawn_versions

    withdrawn = withdrawn_versions(ctx, model)
    for role, version in versions.items():
        if version in withdrawn:
            raise UsageError(f"{role} {model}/{version} is withdrawn by the release managers "
                             f"({withdrawn[version] or 'no reason given'}); devices refuse it")


def _release_ref(ctx: Context, model: str, version: str, *, must_be_published: bool = True) -> core.ReleaseRef:
    for rel in list_releases(ctx):
        if rel.model == model and rel.version == version:
            if must_be_published and rel.status != "published":
                raise UsageError(f"release {model}/{version} is {rel.status}, not published and approved; "
                                 "a rollout can only ship an approved, published release")
            return core.ReleaseRef(version, rel.security_version)
    raise NotFoundError(f"release {model}/{version}: no such release")


ACTOR_ENV = "OTACTL_ACTOR"


def resolve_actor(ctx: Context, key: str | None, *, person: bool) -> journal.Actor:
    """Who signs: ``--key``, else ``$OTACTL_ACTOR``, else the workspace's ``actor``; for the
    controller's own steps (``person=False``) the online rollouts key last. A person's action
    (pause, resume, abort, rollback) with none of these is refused: it must name the person."""
    import os

    name = key or os.environ.get(ACTOR_ENV) or ctx.workspace.actor
    if name is None:
        if person:
            raise UsageError("say who is acting: --key NAME (a key in trust.yaml; `otactl keys generate NAME` "
                             f"makes one), or set {ACTOR_ENV} or `actor:` in otactl.yaml; the audit entry is "
                             "signed with that key")
        name = ctx.trust.role("rollouts").keys[0]
    if name not in ctx.trust.keys:
        raise UsageError(f"key {name!r} is not in the trust configuration (keys: {', '.join(sorted(ctx.trust.keys))})")
    return journal.Actor(name, ctx.signers.get(name))  # unlock (or fail) before anything is written


def _next_policy(ctx: Context, record: rs.RolloutRecord) -> rs.RolloutRecord:
    """The record with the policy its state calls for (``core.next_policy`` sets the version)."""
    repo = ctx.repository()
    previous = current_policy(ctx, repo, record.model)
    doc = core.next_policy(record.plan, record.state, model=record.model, rollout_id=record.rollout_id,
                           salt=record.salt, release=record.release, last_good=record.baseline,
                           previous=previous)
    return replace(record, policy=doc, policy_version=int(doc["policy_version"]))


def _recovered(ctx: Context, model: str) -> rs.RolloutRecord | None:
    """The model's record after finishing whatever a crashed command left (journal.recover); a
    record from before revisions whose policy was not published gets it published here."""
    record = journal.recover(ctx, model)
    if record is not None and record.policy is None and not record.terminal \
            and record.policy_version > journal.published_version(ctx, model):
        doc = _next_policy(ctx, record).policy or {}
        publish_policy(ctx, {k: v for k, v in doc.items() if k != "policy_version"})
    return record


def _require(ctx: Context, model: str) -> rs.RolloutRecord:
    record = _recovered(ctx, model)
    if record is None:
        raise NotFoundError(f"model {model!r}: no rollout (start one with `otactl rollout start`)")
    return record


def start(ctx: Context, model: str, version: str, plan_file: Path, *, baseline: str | None = None,
          key: str | None = None) -> StepResult:
    plan_ = load_plan(plan_file)
    plan_text = Path(plan_file).read_text(encoding="utf-8")
    actor = resolve_actor(ctx, key, person=False)
    existing = _recovered(ctx, model)
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
    _refuse_withdrawn(ctx, model, {"release": version, "baseline": baseline})
    salt = default_salt(model, version, plan_)
    rollout_id = f"{model}-{version}-{secrets.token_hex(3)}"
    record = rs.RolloutRecord(model, rollout_id, salt, str(plan_file), plan_text, release, base_ref,
                              core.start(version, ctx.now), 0)
    record = _next_policy(ctx, record)  # a bad release or one below the floor is refused before anything is written
    plan_sha = hashlib.sha256(plan_text.encode()).hexdigest()
    record = journal.commit(ctx, existing, record, actor, core.Action.START.value,
                            {"release": version, "baseline": baseline, "plan": plan_.name, "plan_sha256": plan_sha})
    warnings = tuple(f"warning: {w}" for w in _plan_report(ctx, model, version, plan_).warnings)
    started = core.Decision(core.Action.START, 0, (f"started in ring {plan_.rings[0].name!r}", *warnings))
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
                        baseline=record.baseline.version, since=record.state.ring_started[i], now=now,
                        started=record.state.ring_started[0])


def _read_telemetry(record: rs.RolloutRecord, source: TelemetrySource, now: datetime) -> Observation:
    try:
        return observe(record, source, now)
    except TelemetryUnavailable as exc:
        raise TelemetrySourceError(
            f"telemetry source unavailable: {exc}; nothing was recorded, the rollout is unchanged",
            hint="check --telemetry (or OTACTL_TELEMETRY_SOURCE) and run the step again") from exc


_digest = approvals.evidence_digest


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
    """One controller step. A decision that changes the rollout is a transition (journal.commit);
    a hold only stores the latest verdict (same revision, no audit entry)."""
    actor = resolve_actor(ctx, key, person=False)
    record = _require(ctx, model)
    plan_ = record.plan
    intake = approvals.take_in(ctx, record, actor)  # approvals signed elsewhere, for the evidence they saw
    record, taken = intake.record, [f"took in {name}'s approval of ring {plan_.rings[record.state.ring_index].name!r}"
                                    for name in intake.taken] + intake.refused
    if record.terminal or record.state.status is core.Status.PAUSED:
        return _noted(_result(record, core.decide(plan_, record.state, None, ctx.now)), taken)
    observation = _read_telemetry(record, source, ctx.now)
    verdict = evaluate_ring(plan_, record.state.ring_index, observation, record.state.carry)
    decision = core.decide(plan_, record.state, verdict, ctx.now)
    new_state = core.apply(record.state, decision, ctx.now, verdict)
    new = record.with_state(new_state, last_verdict=verdict_json(verdict),
                            paused_by="gate" if decision.action is core.Action.PAUSE else record.paused_by)
    if new_state == record.state:
        return _noted(_result(rs.save(ctx.store, new), decision), taken)  # conditional: a concurrent writer wins
    if decision.changes_policy:
        new = _next_policy(ctx, new)
    new = journal.commit(ctx, record, new, actor, decision.action.value,
                         {"ring": plan_.rings[record.state.ring_index].name, "reasons": list(decision.reasons),
                          "verdict": verdict.phase.value, "evidence_sha256": _digest(new.last_verdict)})
    return _noted(_result(new, decision), taken)


def _noted(result: StepResult, notes: list[str]) -> StepResult:
    return replace(result, reasons=[*notes, *result.reasons]) if notes else result


def find(ctx: Context, name: str) -> rs.RolloutRecord:
    """The rollout ``name`` names: a model (its current rollout) or a rollout id (current or archived)."""
    record = rs.load(ctx.store, name)
    if record is not None:
        return record
    for key in ctx.store.list("rollouts-state/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == f"{name}.json":
            return rs.load_key(ctx.store, key)
        if len(parts) == 2 and key.endswith(".json"):
            current = rs.load(ctx.store, parts[1].removesuffix(".json"))
            if current is not None and current.rollout_id == name:
                return current
    raise NotFoundError(f"{name!r}: no such model with a rollout, and no rollout with that id "
                        "(`otactl rollout report MODEL` lists a model's rollouts)")


def _now_reasons(record: rs.RolloutRecord) -> tuple[core.Action, list[str]]:
    """What the rollout does now and why: the last change, then the last step's verdict and what it
    waits for (soak, data, power, approvals)."""
    last = record.state.history[-1] if record.state.history else None
    reasons = [f"last change: {last.action.value} at {last.time.isoformat()}: {last.reason}"] if last else []
    action = last.action if last else core.Action.START
    v = record.last_verdict
    if record.terminal or record.state.status is core.Status.PAUSED or v is None:
        if v is None and not record.terminal:
            reasons.append("no step has evaluated this ring yet (run `otactl rollout step`)")
        return (core.Action.PAUSE if record.state.status is core.Status.PAUSED else action), reasons
    ring = record.plan.rings[record.state.ring_index]
    if v.get("ring") != ring.name:
        return action, [*reasons, f"ring {ring.name!r} has not been evaluated yet"]
    phase = str(v.get("phase"))
    reasons += [f"{phase}: {r}" for r in v.get("reasons", [])]
    if phase == Phase.WAIT.value:
        return core.Action.HOLD, reasons
    if phase == Phase.PASS.value and ring.approvals is not None:
        keys = ring.approvals.keys
        have = sorted(a.key_id for a in record.state.approvals if a.ring == ring.name and a.key_id in keys)
        if len(have) < ring.approvals.required:
            reasons.append(f"waiting for {ring.approvals.required - len(have)} more approval(s) from "
                           f"{', '.join(k for k in ring.approvals.keys if k not in have)} "
                           f"(have: {', '.join(have) or 'none'})")
            return core.Action.AWAIT_APPROVAL, reasons
    return action, reasons


def status(ctx: Context, name: str) -> StepResult:
    """Where a rollout stands (reads only): ``name`` is a model or a rollout id. The reasons give the
    last change, the current verdict and what it waits for; when a crashed command left the audit log
    ahead of the state, or a policy unpublished, they say so and how to finish it."""
    record = find(ctx, name)
    action, reasons = _now_reasons(record)
    current = rs.load(ctx.store, record.model)
    if current is not None and current.rollout_id == record.rollout_id:
        try:
            journal.check(ctx, record.model)
        except VerificationError as exc:
            reasons.append(str(exc))
    return _result(record, core.Decision(action, record.state.ring_index, tuple(reasons)))


def dry_run(ctx: Context, model: str, source: TelemetrySource) -> StepResult:
    """What ``step`` would decide now, without writing anything (no recovery either)."""
    record = rs.require(ctx.store, model)
    if record.terminal or record.state.status is core.Status.PAUSED:
        return _result(record, core.decide(record.plan, record.state, None, ctx.now))
    verdict = evaluate_ring(record.plan, record.state.ring_index, _read_telemetry(record, source, ctx.now),
                            record.state.carry)
    decision = core.decide(record.plan, record.state, verdict, ctx.now)
    shown = record.with_state(record.state, last_verdict=verdict_json(verdict))
    return replace(_result(shown, decision), dry_run=True)


def recover(ctx: Context, model: str) -> StepResult:
    """Finish what a crashed command left (journal.recover) and check that state, policy and log agree."""
    record = _require(ctx, model)
    journal.check(ctx, model)
    return _result(record, core.Decision(core.Action.HOLD, record.state.ring_index,
                                         (f"state, policy v{record.policy_version} and audit log agree "
                                          f"at revision {record.revision}",)))


def _operate(ctx: Context, model: str, action: core.Action, reason: str, key: str | None) -> StepResult:
    reason = reason.strip()
    if not reason:
        raise UsageError(f"--reason: say why (it is recorded in the audit log with the {action.value})")
    actor = resolve_actor(ctx, key, person=True)
    record = _require(ctx, model)
    state, decision = core.operate(record.plan, record.state, action, ctx.now, reason)
    new = record.with_state(state, paused_by=actor.name if state.status is core.Status.PAUSED else None)
    if decision.changes_policy:
        new = _next_policy(ctx, new)
    new = journal.commit(ctx, record, new, actor, action.value,
                         {"ring": record.plan.rings[record.state.ring_index].name, "reason": reason})
    return _result(new, decision)


def pause(ctx: Context, model: str, reason: str, key: str | None = None) -> StepResult:
    return _operate(ctx, model, core.Action.PAUSE, reason, key)


def resume(ctx: Context, model: str, reason: str, key: str | None = None) -> StepResult:
    return _operate(ctx, model, core.Action.RESUME, reason, key)


def rollback(ctx: Context, model: str, reason: str, key: str | None = None) -> StepResult:
    return _operate(ctx, model, core.Action.ROLLBACK, reason, key)


def abort(ctx: Context, model: str, reason: str, key: str | None = None) -> StepResult:
    return _operate(ctx, model, core.Action.ABORT, reason, key)


def approve(ctx: Context, model: str, key: str | None) -> StepResult | ApprovalRequest:
    """A release manager's approval of the current ring (k-of-n per the plan; ``otactl.app.approvals``).

    In a signer workspace: sign it and store it for CI (an ApprovalRequest). In CI with ``--key`` (the
    key here): sign and record it. In CI without ``--key``: take in the approvals signed elsewhere."""
    from otactl.app.signer import SignerContext

    if isinstance(ctx, SignerContext):
        return approvals.request(ctx, model, key)
    if key is not None:
        if key not in ctx.trust.keys:
            raise UsageError(f"key {key!r} is not in the trust configuration")
        new, decision = approvals.approve_here(ctx, _require(ctx, model), key)
        return _result(new, decision)
    actor = resolve_actor(ctx, None, person=False)
    record = _require(ctx, model)
    ring = record.plan.rings[record.state.ring_index].name
    intake = approvals.take_in(ctx, record, actor)
    if not intake.taken:
        if intake.refused:
            more = f" (and {len(intake.refused) - 1} more refused)" if len(intake.refused) > 1 else ""
            raise VerificationError(intake.refused[0] + more,
                                    hint="the release manager approves again (`otactl rollout approve`)")
        raise UsageError(f"rollout {record.rollout_id}: no release manager's approval of ring {ring!r} is waiting "
                         f"in the store; a release manager runs `otactl rollout approve {model}` in their signer "
                         "workspace", hint="or, with the key here, `otactl rollout approve MODEL --key NAME`")
    reasons = [f"ring {ring!r} approved by {name} (signed on their machine)" for name in intake.taken]
    return _result(intake.record, core.Decision(core.Action.APPROVE, record.state.ring_index,
                                                (*reasons, *intake.refused)))


@dataclass(frozen=True)
class WatchOutcome:
    result: StepResult
    timed_out: bool


def watch(open_ctx: Callable[[], Context], model: str, source: TelemetrySource, *, interval: float,
          timeout: float, key: str | None = None, on_step: Callable[[StepResult], None] | None = None,
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> WatchOutcome:
    """Step until the rollout is complete, rolled back, aborted or paused, or ``timeout`` seconds pass
    waiting. A step's error (an unreadable source, a conflict) ends the watch: no retry loop."""
    deadline = clock() + timeout
    while True:
        result = step(open_ctx(), model, source, key=key)
        if on_step is not None:
            on_step(result)
        if result.status != core.Status.RUNNING.value or not (result.waiting or result.action == "advance"):
            return WatchOutcome(result, False)
        if clock() + interval > deadline:
            return WatchOutcome(result, True)
        sleep(interval)


def outcome_error(result: StepResult) -> OtactlError | None:
    """The error-model outcome of a step: GateFailedError (exit 3) when the rollout stopped on a gate
    or an operator (rolled back, aborted, paused), WaitingError (exit 4) while it waits, else None."""
    if result.status in (core.Status.ROLLED_BACK.value, core.Status.PAUSED.value, core.Status.ABORTED.value):
        return GateFailedError(f"rollout {result.rollout_id} is {result.status} at ring {result.ring!r}")
    if result.status == core.Status.RUNNING.value and result.waiting:
        return WaitingError(f"rollout {result.rollout_id} is waiting at ring {result.ring!r} ({result.action})")
    return None


def exit_code_for(result: StepResult) -> int:
    error = outcome_error(result)
    return int(ExitCode.OK if error is None else error.exit_code)


__all__ = ["Phase", "StepResult", "abort", "approve", "dry_run", "find", "pause", "plan", "recover", "resume",
           "rollback", "start", "status", "step", "watch"]


def report(ctx: Context, name: str, fmt: str, telemetry: str = "sqlite:telemetry.db") -> str:
    """Markdown or HTML report of a model's rollouts (archived ones and the current one, each in
    detail), or of the one rollout ``name`` is the id of: ``otactl.app.rollout_report``, the code
    behind ``otactl report rollout``."""
    from otactl.app.rollout_report import rollout_report
    from otactl.report import rollout_render

    found = rollout_report(ctx, name, telemetry, every=True)
    return rollout_render.markdown(found) if fmt == "md" else rollout_render.html_page(found)
