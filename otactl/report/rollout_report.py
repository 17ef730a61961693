"""The rollout report: one rollout's rings, funnels, gate decisions, approvals and audit trail, or the
index of a model's rollouts. Pure: no disk, no network, no clock (``now`` is an argument).

``otactl/app/rollout_report.py`` reads the inputs (the rollout records, the verdict each transition
recorded, the audit log, the signed fleet, the release's signatures, each device's reports) and
:func:`build` turns them into a :class:`RolloutReport`; the renderers (``rollout_render.py``) show
what it holds and compute nothing (decision 1104).

A device's ring is :func:`otactl.rollout.rings.ring_of` on the rollout's recorded plan and salt: the
function the controller's ``plan`` and policy use, and the agent's ``ring_for`` mirrors. Its funnel
stage is the furthest install event it reported for the rollout's release inside the rollout's
window (a health report on the release counts as committed): offered < downloaded < installed <
booted < committed, then *healthy after soak*: still running the release at the window's end with at
least the ring's per-device soak hours on it and no crash reported on it. ``failed``,
``reverted`` and ``waiting`` (its last health report in the window says it holds the release
downloaded and waits for its maintenance window or preconditions, decision 1202) are counted beside
the funnel. Without telemetry every count is None (unknown).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from otactl.report.evidence import Decision, decisions_json
from otactl.report.fleet import Source
from otactl.rollout.decide import Action, RolloutState, Status
from otactl.rollout.plan import Plan, RingSpec
from otactl.rollout.rings import DeviceId, DeviceInfo, ring_of

SCHEMA_KIND = "rollout-report"  # emitted as otactl/rollout-report/1
DEFAULT_SOAK_HOURS = 24.0  # per-device soak of a ring without a late soak: one closed 24-hour period

STAGES = ("offered", "downloaded", "installed", "booted", "committed")
FUNNEL = (*STAGES, "healthy")  # the funnel's columns, in order
OUTCOMES = ("failed", "reverted", "waiting")
# how far an event shows the device got: a revert happens after the install (A/B trial boot)
_REACHED = {**{s: i for i, s in enumerate(STAGES)}, "reverted": STAGES.index("installed")}
ALL_VARIANTS = "all"


class RingState(StrEnum):
    PASSED = "passed"
    IN_PROGRESS = "in progress"
    PAUSED = "paused"
    ROLLED_BACK = "rolled back"
    ABORTED = "aborted"
    NOT_REACHED = "not reached"


def when(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class FleetDevice:
    """A device of the signed fleet as the report needs it (``DeviceRecord`` fits)."""

    device_id: str
    model: str
    variant: str
    region: str
    tags: tuple[str, ...] = ()
    pin: str | None = None


@dataclass(frozen=True)
class DeviceHistory:
    """One device's reports about one release inside a rollout's window (the telemetry store's rows)."""

    device_id: str
    events: Mapping[str, datetime]  # install event -> its first report in the window
    hours: float = 0.0  # uptime on the release its health reports give in the window
    crashes: int = 0  # crashes those reports give
    running: tuple[tuple[datetime, str], ...] = ()  # each change of the release it runs, up to the window's end
    waiting: bool = False  # its last health report in the window waits to install the release (decision 1202)

    def running_at(self, t: datetime) -> str | None:
        now = None
        for at, release in self.running:
            if at > t:
                break
            now = release
        return now


@dataclass(frozen=True)
class ReleaseApproval:
    """Who signed the release in the ``releases`` role (the approval rule: CI + k release managers)."""

    release: str
    status: str  # staged | approved | published | withdrawn, or "unknown"
    threshold: int
    ci: tuple[str, ...]
    release_managers: tuple[str, ...]
    detail: str = ""


@dataclass(frozen=True)
class AuditRow:
    seq: int
    time: str
    actor: str
    controller: bool  # signed by the online rollouts key (the controller's own step), not a person
    action: str
    ring: str | None
    reason: str
    revision: int | None


@dataclass(frozen=True)
class HistoryRow:
    """One change the rollout's record keeps (its start, then each transition of its state)."""

    time: datetime
    ring: str
    action: str
    reason: str


@dataclass(frozen=True)
class FunnelRow:
    variant: str  # a variant, or ALL_VARIANTS for the ring's total
    devices: int  # devices of the signed fleet in the ring
    pinned: int  # of which pinned to a release by their record (they follow the pin, not the ring)
    counts: Mapping[str, int] | None  # FUNNEL + OUTCOMES -> devices; None: the telemetry was not read


@dataclass(frozen=True)
class RingRow:
    index: int
    name: str
    selector: str
    state: RingState
    started: datetime | None
    passed: datetime | None
    hours: float | None  # started -> passed, or to the rollout's end (now while it runs)
    soak_device_hours: float
    soak_hours_per_device: float
    min_reporting_devices: int
    approvals_required: int
    approval_keys: tuple[str, ...]
    approved_by: tuple[str, ...]
    funnel: tuple[FunnelRow, ...]  # per variant, then ALL_VARIANTS
    adoption: tuple[tuple[datetime, int], ...] | None  # devices of the ring on the release over time


@dataclass(frozen=True)
class IndexRow:
    rollout_id: str
    release: str
    baseline: str
    status: str
    plan: str
    started: datetime
    ended: datetime | None
    ring: str
    ring_number: int  # 1-based
    rings: int
    current: bool  # the model's current record (the others are archived)


@dataclass(frozen=True)
class RolloutDetail:
    row: IndexRow
    salt: str
    policy_version: int
    paused_by: str | None
    rings: tuple[RingRow, ...]
    decisions: tuple[Decision, ...]
    release_approval: ReleaseApproval | None
    audit: tuple[AuditRow, ...]
    history: tuple[HistoryRow, ...]
    window: tuple[datetime, datetime]  # the reports the funnel reads (received in this window)
    telemetry_read: bool
    unassigned: int  # fleet devices in no ring (they stay on the baseline: the control)

    @property
    def actions(self) -> tuple[AuditRow, ...]:
        """Who acted: the audit rows a person signed (pause, resume, rollback, abort, approve, or a step
        run with their key), not the controller's own steps signed by the online rollouts key."""
        return tuple(a for a in self.audit if not a.controller)


@dataclass(frozen=True)
class RolloutReport:
    generated: datetime
    model: str
    query: str  # what was asked for: the model, or a rollout id
    sources: tuple[Source, ...]
    index: tuple[IndexRow, ...]
    rollouts: tuple[RolloutDetail, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The ``otactl/rollout-report/1`` document without its ``schema`` (docs/formats.md)."""
        return {
            "generated": when(self.generated), "model": self.model, "query": self.query,
            "sources": [{"name": s.name, "spec": s.spec, "ok": s.ok, "detail": s.detail} for s in self.sources],
            "index": [_row_json(r) for r in self.index],
            "rollouts": [_detail_json(d) for d in self.rollouts],
        }


def _row_json(r: IndexRow) -> dict[str, Any]:
    return {"rollout_id": r.rollout_id, "release": r.release, "baseline": r.baseline, "status": r.status,
            "plan": r.plan, "started": when(r.started), "ended": when(r.ended), "ring": r.ring,
            "ring_number": r.ring_number, "rings": r.rings, "current": r.current}


def _detail_json(d: RolloutDetail) -> dict[str, Any]:
    a = d.release_approval
    return {
        **_row_json(d.row), "salt": d.salt, "policy_version": d.policy_version, "paused_by": d.paused_by,
        "window": {"since": when(d.window[0]), "until": when(d.window[1])}, "telemetry_read": d.telemetry_read,
        "unassigned_devices": d.unassigned,
        "release_approval": None if a is None else {
            "release": a.release, "status": a.status, "threshold": a.threshold, "ci": list(a.ci),
            "release_managers": list(a.release_managers), "detail": a.detail},
        "rings": [{
            "index": r.index, "name": r.name, "selector": r.selector, "state": r.state.value,
            "started": when(r.started), "passed": when(r.passed),
            "hours": None if r.hours is None else round(r.hours, 2),
            "soak_device_hours": r.soak_device_hours, "soak_hours_per_device": r.soak_hours_per_device,
            "min_reporting_devices": r.min_reporting_devices,
            "approvals": {"required": r.approvals_required, "keys": list(r.approval_keys),
                          "approved_by": list(r.approved_by)},
            "funnel": [{"variant": f.variant, "devices": f.devices, "pinned": f.pinned,
                        **{k: (None if f.counts is None else f.counts[k]) for k in (*FUNNEL, *OUTCOMES)}}
                       for f in r.funnel],
            "adoption": None if r.adoption is None else [{"time": when(t), "devices": n} for t, n in r.adoption],
        } for r in d.rings],
        "decisions": decisions_json(d.decisions),
        "history": [{"time": when(h.time), "ring": h.ring, "action": h.action, "reason": h.reason}
                    for h in d.history],
        "audit": [{"seq": e.seq, "time": e.time, "actor": e.actor, "controller": e.controller, "action": e.action,
                   "ring": e.ring, "reason": e.reason, "revision": e.revision} for e in d.audit],
    }  # fmt: skip


# ------------------------------------------------------------------------------------ building
def index_row(rollout_id: str, release: str, baseline: str, plan: Plan, state: RolloutState,
              *, current: bool) -> IndexRow:
    return IndexRow(rollout_id, release, baseline, state.status.value, plan.name, state.ring_started[0],
                    ended(state), plan.rings[state.ring_index].name, state.ring_index + 1, len(plan.rings), current)


def ended(state: RolloutState) -> datetime | None:
    """When a finished rollout ended: its last history entry (complete, rollback or abort)."""
    if state.status not in (Status.COMPLETE, Status.ROLLED_BACK, Status.ABORTED) or not state.history:
        return None
    return state.history[-1].time


def _selector(ring: RingSpec) -> str:
    s = ring.selector
    return f"tags {', '.join(s.tags)}" if s.tags else f"{s.percent:g}% of the fleet (cumulative)"


def _ring_state(i: int, state: RolloutState, passed: datetime | None) -> RingState:
    if i > state.ring_index:
        return RingState.NOT_REACHED
    if passed is not None:
        return RingState.PASSED
    return {Status.ROLLED_BACK: RingState.ROLLED_BACK, Status.ABORTED: RingState.ABORTED,
            Status.PAUSED: RingState.PAUSED}.get(state.status, RingState.IN_PROGRESS)


def _passed(i: int, plan: Plan, state: RolloutState) -> datetime | None:
    if i + 1 < len(state.ring_started):
        return state.ring_started[i + 1]
    if i == len(plan.rings) - 1 and state.status is Status.COMPLETE:
        return next((h.time for h in reversed(state.history) if h.action is Action.COMPLETE), None)
    return None


def soak_hours(ring: RingSpec) -> float:
    """A device's soak before it counts as healthy: the ring's late-soak age, else one 24-hour period."""
    return float(ring.late_soak.after_hours) if ring.late_soak is not None else DEFAULT_SOAK_HOURS


def _stage(h: DeviceHistory | None, release: str, end: datetime, soak: float) -> tuple[int, set[str]]:
    """(furthest funnel column reached, -1 for none; the outcomes it reported)."""
    if h is None:
        return -1, set()
    reached = max((_REACHED[e] for e in h.events if e in _REACHED), default=-1)
    if h.hours > 0 or "committed" in h.events:
        reached = max(reached, STAGES.index("committed"))
    if reached == STAGES.index("committed") and h.running_at(end) == release and h.hours >= soak and not h.crashes:
        reached = len(STAGES)  # healthy
    return reached, {e for e in OUTCOMES if e in h.events} | ({"waiting"} if h.waiting else set())


def _funnel(devices: Sequence[FleetDevice], history: Mapping[str, DeviceHistory] | None, release: str,
            end: datetime, soak: float) -> tuple[FunnelRow, ...]:
    variants = sorted({d.variant for d in devices})
    rows = []
    for variant in [*variants, ALL_VARIANTS]:
        mine = [d for d in devices if variant in (ALL_VARIANTS, d.variant)]
        counts: dict[str, int] | None = None
        if history is not None:
            counts = dict.fromkeys((*FUNNEL, *OUTCOMES), 0)
            for d in mine:
                reached, outcomes = _stage(history.get(d.device_id), release, end, soak)
                for k in FUNNEL[: reached + 1]:
                    counts[k] += 1
                for k in outcomes:
                    counts[k] += 1
        rows.append(FunnelRow(variant, len(mine), sum(1 for d in mine if d.pin is not None), counts))
    return tuple(rows)


def _adoption(devices: Sequence[FleetDevice], history: Mapping[str, DeviceHistory], release: str,
              start: datetime, end: datetime) -> tuple[tuple[datetime, int], ...]:
    """Devices of the ring running ``release`` over the window: a step series, one point per change."""
    on = 0
    changes: list[tuple[datetime, int]] = []
    for d in devices:
        h = history.get(d.device_id)
        if h is None:
            continue
        was = h.running_at(start) == release
        on += was
        for at, running in h.running:
            if start < at <= end and (running == release) != was:
                was = running == release
                changes.append((at, 1 if was else -1))
    points = [(start, on)]
    for at, delta in sorted(changes):
        on += delta
        if points[-1][0] == at:
            points[-1] = (at, on)
        else:
            points.append((at, on))
    if points[-1][0] < end:
        points.append((end, on))
    return tuple(points)


def _audit_rows(entries: Iterable[Any], rollout_id: str, controller_keys: frozenset[str]) -> tuple[AuditRow, ...]:
    rows = []
    for e in entries:
        d = e.details
        if d.get("rollout_id") != rollout_id:
            continue
        reasons = d.get("reasons")
        reason = d.get("reason") if isinstance(d.get("reason"), str) else \
            "; ".join(str(r) for r in reasons) if isinstance(reasons, list) else ""
        if e.action == Action.START.value:
            reason = f"release {d.get('release')} over baseline {d.get('baseline')}, plan {d.get('plan')}"
        ring = d.get("ring") if isinstance(d.get("ring"), str) else None
        revision = d.get("revision") if isinstance(d.get("revision"), int) else None
        rows.append(AuditRow(e.seq, e.time.replace("+00:00", "Z"), e.actor, e.actor in controller_keys, e.action,
                             ring, str(reason), revision))
    return tuple(rows)


def build_detail(
    row: IndexRow,
    *,
    plan: Plan,
    state: RolloutState,
    salt: str,
    policy_version: int,
    paused_by: str | None,
    devices: Sequence[FleetDevice],
    history: Mapping[str, DeviceHistory] | None,
    decisions: Sequence[Decision],
    audit_entries: Iterable[Any],
    controller_keys: frozenset[str],
    release_approval: ReleaseApproval | None,
    now: datetime,
) -> RolloutDetail:
    """One rollout in detail. ``history``: each device's reports about the release inside the window
    (None: the telemetry was not read, every funnel count unknown); ``audit_entries``: the model's
    audit log (``AuditEntry`` values; this rollout's are picked out)."""
    start, end = row.started, row.ended or now
    by_ring: list[list[FleetDevice]] = [[] for _ in plan.rings]
    unassigned = 0
    for d in devices:
        i = ring_of(plan.rings, salt, DeviceInfo(DeviceId(d.device_id), d.model, d.variant, d.region,
                                                 frozenset(d.tags)))
        if i is None:
            unassigned += 1
        else:
            by_ring[i].append(d)
    audit = _audit_rows(audit_entries, row.rollout_id, controller_keys)
    rings = []
    for i, spec in enumerate(plan.rings):
        passed = _passed(i, plan, state)
        started = state.ring_started[i] if i < len(state.ring_started) else None
        hours = None if started is None else ((passed or end) - started).total_seconds() / 3600
        keys = tuple(spec.approvals.keys) if spec.approvals else ()
        approved = tuple(sorted(a.key_id for a in state.approvals if a.ring == spec.name))
        adoption = None if history is None or started is None else _adoption(by_ring[i], history, row.release,
                                                                              start, end)
        rings.append(RingRow(i, spec.name, _selector(spec), _ring_state(i, state, passed), started, passed, hours,
                             spec.soak_device_hours, soak_hours(spec), spec.min_reporting_devices,
                             spec.approvals.required if spec.approvals else 0, keys, approved,
                             _funnel(by_ring[i], history, row.release, end, soak_hours(spec)), adoption))
    def ring_name(i: int) -> str:
        return plan.rings[i].name if 0 <= i < len(plan.rings) else f"#{i} (not in the plan)"

    changes = (HistoryRow(start, plan.rings[0].name, Action.START.value, f"rollout started in ring "
                          f"{plan.rings[0].name!r}"),
               *(HistoryRow(h.time, ring_name(h.ring_index), h.action.value, h.reason) for h in state.history))
    return RolloutDetail(row, salt, policy_version, paused_by, tuple(rings), tuple(decisions), release_approval,
                         audit, changes, (start, end), history is not None, unassigned)
