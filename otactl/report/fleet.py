"""The fleet report's aggregation: signed device records + each device's last reports -> counts. Pure.

No disk, no network, no clock: ``now`` is an argument, and the targets and published releases come
in as values (``otactl/app/fleet_report.py`` reads them). The renderers
(``otactl/report/fleet_render.py``) show what :class:`FleetReport` holds and compute nothing.

A device's compliance is one :class:`Compliance` phase, decided in this order (decision 1103):

1. ``unknown``: the telemetry could not be read (no data is never success);
2. ``never_seen``: no report from the device; ``not_seen``: none in the last N days;
3. ``no_target``: its model has neither a rollout policy nor a published release;
4. ``on_target``: it runs its target (the release its rollout policy gives its ring, or its pin;
   without a policy, the model's newest published release);
   ``waiting``: its last health report says it holds its target downloaded and waits for its
   maintenance window or install preconditions (decision 1202);
5. its last install event: ``updating`` (offered, downloaded, installed, booted), ``failed``, ``reverted``;
6. ``behind`` (it runs an older release) or ``off_target`` (a newer one, or one that is not a version).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from otactl.agent.model import version_key

SCHEMA_KIND = "fleet-report"  # emitted as otactl/fleet-report/1
UNKNOWN_RELEASE = "unknown"


class Compliance(StrEnum):
    ON_TARGET = "on_target"
    BEHIND = "behind"
    UPDATING = "updating"
    WAITING = "waiting"
    FAILED = "failed"
    REVERTED = "reverted"
    OFF_TARGET = "off_target"
    NO_TARGET = "no_target"
    NOT_SEEN = "not_seen"
    NEVER_SEEN = "never_seen"
    UNKNOWN = "unknown"


LABELS: dict[Compliance, str] = {
    Compliance.ON_TARGET: "on target",
    Compliance.BEHIND: "behind",
    Compliance.UPDATING: "updating (install in progress)",
    Compliance.WAITING: "waiting for window (downloaded)",
    Compliance.FAILED: "failed",
    Compliance.REVERTED: "reverted",
    Compliance.OFF_TARGET: "off target (newer or not a version)",
    Compliance.NO_TARGET: "no target (nothing published)",
    Compliance.NOT_SEEN: "not seen for {days} days",
    Compliance.NEVER_SEEN: "never seen",
    Compliance.UNKNOWN: "unknown (telemetry not read)",
}

IN_PROGRESS = frozenset({"offered", "downloaded", "installed", "booted"})
_EVENT_PHASE = {"failed": Compliance.FAILED, "reverted": Compliance.REVERTED,
                **{e: Compliance.UPDATING for e in IN_PROGRESS}}


def label(phase: Compliance, not_seen_days: int) -> str:
    return LABELS[phase].format(days=not_seen_days)


class TargetSource(StrEnum):
    POLICY = "rollout-policy"  # what the model's signed rollout policy gives the device's ring (or its pin)
    NEWEST = "newest-published"  # no policy: the model's newest published release (or the device's pin)
    NONE = "none"  # nothing published for the model


@dataclass(frozen=True)
class SignedDevice:
    """What the report needs from a signed device record (``otactl.fleet.records.DeviceRecord`` fits)."""

    device_id: str
    model: str
    hardware_revision: str
    variant: str
    region: str


@dataclass(frozen=True)
class LastReports:
    """One device's last accepted reports, as the telemetry store holds them."""

    device_id: str
    last_seen: datetime  # ingest clock of its last accepted report (any kind)
    model: str  # as its last report names them
    variant: str
    region: str
    running: str | None  # release of its last health report or committed event; None: never reported one
    last_event: str | None = None  # its last event report's event (report.Event value)
    last_event_release: str | None = None
    waiting: str | None = None  # the release its last health report waits to install (decision 1202)

    def __post_init__(self) -> None:
        if self.last_seen.tzinfo is None:
            raise ValueError("last_seen must be timezone-aware")


@dataclass(frozen=True)
class ModelTarget:
    """How a model's devices get their target; ``release`` is the model-wide one (None: per ring)."""

    source: TargetSource
    release: str | None = None  # newest published (NEWEST), the policy's baseline is in `detail`
    detail: str = ""  # e.g. "policy 4 of rollout t9-engine-2.1.0-1a2b: lab 2.1.0, ..., baseline 2.0.0"


@dataclass(frozen=True)
class Source:
    name: str  # "signed fleet", "telemetry"
    spec: str
    ok: bool
    detail: str  # what was read, or the error


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    model: str
    hardware_revision: str
    variant: str
    region: str
    release: str  # running, or UNKNOWN_RELEASE
    target: str | None
    status: Compliance
    last_seen: datetime | None


@dataclass(frozen=True)
class Disagreement:
    device_id: str
    field: str  # model, variant, region, release, device
    signed: str | None  # None: not in the signed record (a device the fleet does not have)
    reported: str | None


@dataclass(frozen=True)
class GroupRow:
    model: str
    hardware_revision: str
    variant: str
    release: str
    devices: int


@dataclass(frozen=True)
class ModelSummary:
    model: str
    devices: int
    target: ModelTarget
    compliance: dict[Compliance, int]  # every phase, zeros included, in Compliance order
    releases: dict[str, int]  # running release (or "unknown") -> devices, newest first


@dataclass(frozen=True)
class FleetReport:
    generated: datetime
    not_seen_days: int
    model_filter: str | None
    sources: tuple[Source, ...]
    models: tuple[ModelSummary, ...]
    groups: tuple[GroupRow, ...]
    disagreements: tuple[Disagreement, ...]
    devices: tuple[DeviceRow, ...]

    @property
    def telemetry_read(self) -> bool:
        return all(s.ok for s in self.sources)

    def to_json(self) -> dict[str, Any]:
        """The ``otactl/fleet-report/1`` document without its ``schema`` (docs/formats.md)."""
        def when(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat().replace("+00:00", "Z")

        return {
            "generated": when(self.generated), "not_seen_days": self.not_seen_days, "model": self.model_filter,
            "sources": [{"name": s.name, "spec": s.spec, "ok": s.ok, "detail": s.detail} for s in self.sources],
            "models": [{"model": m.model, "devices": m.devices,
                        "target": {"source": m.target.source.value, "release": m.target.release,
                                   "detail": m.target.detail},
                        "compliance": {p.value: n for p, n in m.compliance.items()},
                        "releases": [{"release": r, "devices": n} for r, n in m.releases.items()]}
                       for m in self.models],
            "groups": [{"model": g.model, "hardware_revision": g.hardware_revision, "variant": g.variant,
                        "release": g.release, "devices": g.devices} for g in self.groups],
            "disagreements": [{"device_id": d.device_id, "field": d.field, "signed": d.signed,
                               "reported": d.reported} for d in self.disagreements],
            "devices": [{"device_id": d.device_id, "model": d.model, "hardware_revision": d.hardware_revision,
                         "variant": d.variant, "region": d.region, "release": d.release, "target": d.target,
                         "status": d.status.value, "last_seen": when(d.last_seen)} for d in self.devices],
        }  # fmt: skip


def version_order(version: str) -> tuple[Any, ...] | None:
    """The order devices use (otactl.agent.model.version_key); None for a release that is not a version."""
    try:
        return version_key(version)
    except ValueError:
        return None


def _phase(last: LastReports | None, target: str | None, since: datetime) -> Compliance:
    if last is None:
        return Compliance.NEVER_SEEN
    if last.last_seen <= since:
        return Compliance.NOT_SEEN
    if target is None:
        return Compliance.NO_TARGET
    if last.running == target:
        return Compliance.ON_TARGET
    if last.waiting == target:
        return Compliance.WAITING
    if last.last_event in _EVENT_PHASE:
        return _EVENT_PHASE[last.last_event]
    running, wanted = (None if last.running is None else version_order(last.running)), version_order(target)
    if running is not None and wanted is not None and running < wanted:
        return Compliance.BEHIND
    return Compliance.OFF_TARGET


def _newest_first(releases: Iterable[str]) -> list[str]:
    """Versions newest first, then releases that are not versions, then ``unknown``."""
    names = set(releases)
    versions = {r: version_order(r) for r in names if r != UNKNOWN_RELEASE}
    ordered = sorted((r for r, o in versions.items() if o is not None), key=lambda r: versions[r] or (), reverse=True)
    return ordered + sorted(r for r, o in versions.items() if o is None) + \
        ([UNKNOWN_RELEASE] if UNKNOWN_RELEASE in names else [])


def build(
    records: Sequence[SignedDevice],
    last: Mapping[str, LastReports] | None,
    *,
    targets: Mapping[str, ModelTarget],
    device_targets: Mapping[str, str | None],
    published: Mapping[str, frozenset[str]],
    now: datetime,
    not_seen_days: int,
    sources: Sequence[Source],
    model_filter: str | None = None,
) -> FleetReport:
    """The fleet report. ``last`` is None when the telemetry could not be read (every device ``unknown``);
    ``device_targets``: each device's target release (None: no target); ``published``: versions per model."""
    if not_seen_days < 1:
        raise ValueError("not_seen_days must be at least 1")
    since = now - timedelta(days=not_seen_days)
    wanted = [r for r in records if model_filter is None or r.model == model_filter]
    rows: list[DeviceRow] = []
    disagreements: list[Disagreement] = []
    for r in sorted(wanted, key=lambda r: r.device_id):
        seen = None if last is None else last.get(r.device_id)
        target = device_targets.get(r.device_id)
        status = Compliance.UNKNOWN if last is None else _phase(seen, target, since)
        release = UNKNOWN_RELEASE if seen is None or seen.running is None else seen.running
        rows.append(DeviceRow(r.device_id, r.model, r.hardware_revision, r.variant, r.region, release, target,
                              status, None if seen is None else seen.last_seen))
        if seen is not None:
            for field in ("model", "variant", "region"):
                if getattr(seen, field) != getattr(r, field):
                    disagreements.append(Disagreement(r.device_id, field, getattr(r, field), getattr(seen, field)))
            if seen.running is not None and seen.running not in published.get(r.model, frozenset()):
                disagreements.append(Disagreement(r.device_id, "release", None, seen.running))
    known = {r.device_id for r in records}
    for device_id, seen in sorted((last or {}).items()):
        if device_id not in known and (model_filter is None or seen.model == model_filter):
            disagreements.append(Disagreement(device_id, "device", None, device_id))
    models = []
    for model in sorted({r.model for r in rows}):
        mine = [r for r in rows if r.model == model]
        counted = Counter(r.status for r in mine)
        releases = Counter(r.release for r in mine)
        models.append(ModelSummary(model, len(mine), targets.get(model, ModelTarget(TargetSource.NONE)),
                                   {p: counted.get(p, 0) for p in Compliance},
                                   {rel: releases[rel] for rel in _newest_first(releases)}))
    groups = Counter((r.model, r.hardware_revision, r.variant, r.release) for r in rows)
    return FleetReport(now, not_seen_days, model_filter, tuple(sources), tuple(models),
                       tuple(GroupRow(*k, n) for k, n in sorted(groups.items())), tuple(disagreements), tuple(rows))
