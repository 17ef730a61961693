"""Canary plans (``canary/<name>.yaml``): parsed once, at the edge, into frozen dataclasses.

The format is documented in ``canary/SCHEMA.md``. Every error names the file, line and field
(``InputFileError``); unknown keys are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NewType, TypeVar

from otactl.rollout.windows import (
    PRECONDITIONS,
    InstallRules,
    InstallWindow,
    PreconditionSpec,
    check_cron,
    check_zone,
)
from otactl.telemetry.counters import LATE_AGES as LATE_AGES_H  # the ages telemetry counts
from otactl.yamlio import FieldPath, YamlDoc, check_keys, load_yaml, parse_yaml

RingName = NewType("RingName", str)
KeyId = NewType("KeyId", str)

E = TypeVar("E", bound=StrEnum)

SCHEMA = "otactl/canary-plan/1"
STRATA_DIMENSIONS = ("model", "variant", "region")


class Metric(StrEnum):
    """The gated metrics; what each counts is one row of ``otactl.rollout.metrics.METRICS``."""

    INSTALL_FAILURE_RATE = "install_failure_rate"  # failed / finished installs
    CRASH_RATE = "crash_rate"  # crashes per device-hour
    CRASH_HOUR_RATE = "crash_hour_rate"  # share of device-hours with a crash (1 - crash-free hours)


# Metrics that plans used to name, and what replaced them (refused with this hint).
RETIRED_METRICS = {
    "crashing_device_rate": "crash_hour_rate (window-additive crash-hours replace cumulative "
                            "crashing devices, docs/decisions/0105-window-additive-counts.md)",
}


class Missing(StrEnum):
    """What a gate concludes when it has no data to judge (never PASS)."""

    WAIT = "wait"
    FAIL = "fail"


class OnFailure(StrEnum):
    ROLLBACK = "rollback"
    PAUSE = "pause"


@dataclass(frozen=True)
class Selector:
    """Exactly one of: device tags (a lab ring) or a cumulative percentage of the fleet."""

    tags: tuple[str, ...] = ()
    percent: float | None = None

    def __post_init__(self) -> None:
        if bool(self.tags) == (self.percent is not None):
            raise ValueError("a selector has either tags or a percent")
        if self.percent is not None and not 0.0 < self.percent <= 100.0:
            raise ValueError("percent must be in (0, 100]")

    def to_json(self) -> dict[str, Any]:
        return {"tags": list(self.tags)} if self.tags else {"percent": self.percent}


@dataclass(frozen=True)
class GateSpec:
    metric: Metric
    missing: Missing
    max_ratio: float | None = None  # non-inferiority margin vs the concurrent control
    limit: float | None = None  # absolute limit on the rate
    detect_ratio: float = 2.0  # the regression the sequential test is tuned to catch fastest
    stratified: bool = True  # also test each stratum (with alpha split across strata)
    harm_ratio: float | None = None  # the effect a PASS must rule out (default: detect_ratio)

    def __post_init__(self) -> None:
        if self.max_ratio is None and self.limit is None:
            raise ValueError("a gate needs max_ratio, limit or both")
        if self.max_ratio is not None and self.max_ratio < 1.0:
            raise ValueError("max_ratio must be >= 1")
        if self.max_ratio is not None and self.detect_ratio <= self.max_ratio:
            raise ValueError("detect_ratio must exceed max_ratio")
        if self.harm_ratio is not None and self.harm_ratio <= max(self.max_ratio or 1.0, 1.0):
            raise ValueError("harm_ratio must exceed max_ratio (and 1)")

    @property
    def harm(self) -> float:
        """The ratio (to control, or to the limit) that a PASS must rule out."""
        return self.harm_ratio if self.harm_ratio is not None else self.detect_ratio

    def test_keys(self) -> list[str]:
        out = []
        if self.max_ratio is not None:
            out.append(f"{self.metric.value}|control|{self.max_ratio:g}")
        if self.limit is not None:
            out.append(f"{self.metric.value}|limit|{self.limit:g}")
        return out


@dataclass(frozen=True)
class Approvals:
    required: int
    keys: tuple[KeyId, ...]

    def __post_init__(self) -> None:
        if not 1 <= self.required <= len(self.keys):
            raise ValueError("required must be between 1 and the number of keys")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("duplicate key ids")


@dataclass(frozen=True)
class LateSoak:
    """Per-device soak: hours run by devices that already had ``after_hours`` on the new image.

    The ring waits until its devices have run ``device_hours`` past that age (and, optionally,
    ``devices`` devices have passed it), and the crash gates also test those late hours alone,
    so a failure that starts after a day on the image is seen in the ring.
    """

    after_hours: int
    device_hours: float
    devices: int = 0

    def __post_init__(self) -> None:
        if self.after_hours not in LATE_AGES_H:
            raise ValueError(f"after_hours must be one of {LATE_AGES_H}")
        if self.device_hours < 0 or self.devices < 0:
            raise ValueError("late soak figures must not be negative")


@dataclass(frozen=True)
class RingSpec:
    name: RingName
    selector: Selector
    soak_device_hours: float
    min_reporting_devices: int
    gates: tuple[GateSpec, ...]
    approvals: Approvals | None = None
    on_failure: OnFailure = OnFailure.ROLLBACK
    late_soak: LateSoak | None = None
    install: InstallRules | None = None  # None: the plan-wide rules (decision 1202)


@dataclass(frozen=True)
class Plan:
    name: str
    rings: tuple[RingSpec, ...]
    strata: tuple[str, ...] = STRATA_DIMENSIONS
    salt: str | None = None
    false_rollback_budget: float = 0.01
    source: str = "<memory>"
    harm_confidence: float = 0.95  # a PASS rules out each gate's harm with this confidence
    install: InstallRules = field(default_factory=InstallRules)  # plan-wide install windows, preconditions
    region_timezones: tuple[tuple[str, str], ...] = ()  # region -> IANA zone, for `timezone: device`

    def __post_init__(self) -> None:
        if not self.rings:
            raise ValueError("a plan needs at least one ring")
        if not 0.0 < self.false_rollback_budget < 1.0:
            raise ValueError("false_rollback_budget must be in (0, 1)")
        if not 0.5 <= self.harm_confidence < 1.0:
            raise ValueError("harm_confidence must be in [0.5, 1)")

    def test_keys(self) -> list[str]:
        """The distinct tests of the plan: (metric, kind, margin). A test that recurs in several
        rings is one e-process whose evidence carries from ring to ring."""
        keys: list[str] = []
        for ring in self.rings:
            for g in ring.gates:
                for k in g.test_keys():
                    if k not in keys:
                        keys.append(k)
        return keys

    @property
    def test_alpha(self) -> float:
        """Alpha spending: the false-rollback budget split evenly over the plan's tests."""
        return self.false_rollback_budget / max(len(self.test_keys()), 1)

    def install_rules(self, ring: RingSpec) -> InstallRules:
        """The ring's own install windows and preconditions, else the plan-wide ones."""
        return self.install if ring.install is None else ring.install

    def ring_index(self, name: str) -> int:
        for i, ring in enumerate(self.rings):
            if ring.name == name:
                return i
        raise KeyError(name)


_INSTALL = {"install_windows", "preconditions"}
_TOP = {"schema", "name", "strata", "salt", "false_rollback_budget", "harm_confidence", "rings",
        "region_timezones", *_INSTALL}
_RING = {"name", "selector", "soak_device_hours", "min_reporting_devices", "gates", "approvals",
         "on_failure", "late_soak", *_INSTALL}
_GATE = {"metric", "max_ratio", "limit", "detect_ratio", "harm_ratio", "missing", "stratified"}


def load_plan(path: str | Path) -> Plan:
    return _plan(load_yaml(path))


def parse_plan(text: str, path: str = "<string>") -> Plan:
    return _plan(parse_yaml(text, path))


def _plan(doc: YamlDoc) -> Plan:
    top = check_keys(doc, (), doc.data, _TOP, {"schema", "name", "rings"})
    if top["schema"] != SCHEMA:
        raise doc.error(("schema",), f"unsupported schema {top['schema']!r} (expected {SCHEMA!r})")
    name = _string(doc, ("name",), top["name"])
    strata = _strata(doc, top.get("strata", list(STRATA_DIMENSIONS)))
    salt = None if top.get("salt") is None else _string(doc, ("salt",), top["salt"])
    budget = _number(doc, ("false_rollback_budget",), top.get("false_rollback_budget", 0.01))
    if not 0.0 < budget < 1.0:
        raise doc.error(("false_rollback_budget",), "must be between 0 and 1 (exclusive)")
    confidence = _number(doc, ("harm_confidence",), top.get("harm_confidence", 0.95))
    if not 0.5 <= confidence < 1.0:
        raise doc.error(("harm_confidence",), "must be at least 0.5 and below 1")
    raw_rings = top["rings"]
    if not isinstance(raw_rings, list) or not raw_rings:
        raise doc.error(("rings",), "must be a non-empty list of rings")
    rings = tuple(_ring(doc, ("rings", i), r) for i, r in enumerate(raw_rings))
    _check_order(doc, rings)
    install = parse_install_rules(doc, (), top) or InstallRules()
    zones = _region_timezones(doc, top.get("region_timezones", {}))
    return Plan(name=name, rings=rings, strata=strata, salt=salt, false_rollback_budget=budget,
                source=doc.path, harm_confidence=confidence, install=install, region_timezones=zones)


def parse_install_rules(doc: YamlDoc, where: FieldPath, raw: dict[str, Any]) -> InstallRules | None:
    """``install_windows`` and ``preconditions`` of the plan or a ring (None: neither key given)."""
    if not _INSTALL & set(raw):
        return None
    windows_raw = raw.get("install_windows", [])
    if not isinstance(windows_raw, list):
        raise doc.error((*where, "install_windows"), "must be a list of {cron, duration_minutes, timezone}")
    windows = []
    for i, w in enumerate(windows_raw):
        at: FieldPath = (*where, "install_windows", i)
        w = check_keys(doc, at, w, {"cron", "duration_minutes", "timezone"}, {"cron", "duration_minutes"})
        try:
            check_cron(w["cron"])
        except ValueError as exc:
            raise doc.error((*at, "cron"), str(exc)) from None
        minutes = w["duration_minutes"]
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 7 * 24 * 60:
            raise doc.error((*at, "duration_minutes"), "must be a whole number of minutes from 1 to 10080")
        try:
            zone = check_zone(w.get("timezone", "device"))
        except ValueError as exc:
            raise doc.error((*at, "timezone"), str(exc)) from None
        windows.append(InstallWindow(w["cron"], minutes, zone))
    pre_raw = raw.get("preconditions", [])
    if not isinstance(pre_raw, list):
        raise doc.error((*where, "preconditions"), "must be a list like [engine_off, battery_min: 40]")
    pre: list[PreconditionSpec] = []
    for i, p in enumerate(pre_raw):
        at = (*where, "preconditions", i)
        name, value = (p, None) if isinstance(p, str) else \
            next(iter(p.items())) if isinstance(p, dict) and len(p) == 1 else (None, None)
        if name not in PRECONDITIONS:
            raise doc.error(at, f"unknown precondition {name if name is not None else p!r} "
                            f"(known: engine_off, not_in_operation, battery_min: <percent>)")
        if name == "battery_min" and value is None:
            raise doc.error(at, "battery_min needs a percentage (battery_min: 40)")
        if name != "battery_min" and value is not None:
            raise doc.error(at, f"{name} takes no value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100):
            raise doc.error((*at, str(name)), "must be a whole percentage from 0 to 100")
        if any(q.name == name for q in pre):
            raise doc.error(at, f"precondition {name} given twice")
        pre.append(PreconditionSpec(str(name), value))
    return InstallRules(tuple(windows), tuple(pre))


def _region_timezones(doc: YamlDoc, raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        raise doc.error(("region_timezones",), "must map regions to IANA time zones (eu-west: Europe/Berlin)")
    out = []
    for region, zone in sorted(raw.items()):
        try:
            if zone == "device":
                raise ValueError("must be an IANA time zone name like Europe/Berlin")
            out.append((_string(doc, ("region_timezones",), region), check_zone(zone)))
        except ValueError as exc:
            raise doc.error(("region_timezones", region), str(exc)) from None
    return tuple(out)


def _check_order(doc: YamlDoc, rings: tuple[RingSpec, ...]) -> None:
    seen: set[str] = set()
    last_percent: float | None = None
    for i, ring in enumerate(rings):
        if ring.name in seen:
            raise doc.error(("rings", i, "name"), f"duplicate ring name {ring.name!r}")
        seen.add(ring.name)
        pct = ring.selector.percent
        if pct is None:
            if last_percent is not None:
                raise doc.error(("rings", i, "selector"),
                                "a tag ring must come before the percentage rings")
            continue
        if last_percent is not None and pct <= last_percent:
            raise doc.error(("rings", i, "selector", "percent"),
                            f"percentages are cumulative and must increase: {pct:g} after "
                            f"{last_percent:g}")
        last_percent = pct
    if last_percent != 100.0:
        raise doc.error(("rings", len(rings) - 1),
                        "the last ring must select 100 percent of the fleet")


def _ring(doc: YamlDoc, where: FieldPath, raw: Any) -> RingSpec:
    r = check_keys(doc, where, raw, _RING, {"name", "selector", "soak_device_hours",
                                            "min_reporting_devices", "gates"})
    name = RingName(_string(doc, (*where, "name"), r["name"]))
    soak = _number(doc, (*where, "soak_device_hours"), r["soak_device_hours"])
    if soak < 0:
        raise doc.error((*where, "soak_device_hours"), "must not be negative")
    min_dev = r["min_reporting_devices"]
    if isinstance(min_dev, bool) or not isinstance(min_dev, int) or min_dev < 1:
        raise doc.error((*where, "min_reporting_devices"), "must be a positive integer")
    raw_gates = r["gates"]
    if not isinstance(raw_gates, list):
        raise doc.error((*where, "gates"), "must be a list of gates")
    gates = tuple(_gate(doc, (*where, "gates", i), g) for i, g in enumerate(raw_gates))
    metrics = [g.metric for g in gates]
    for i, m in enumerate(metrics):
        if m in metrics[:i]:
            raise doc.error((*where, "gates", i, "metric"), f"metric {m.value!r} gated twice")
    approvals = None
    if r.get("approvals") is not None:
        approvals = _approvals(doc, (*where, "approvals"), r["approvals"])
    on_failure = _enum(doc, (*where, "on_failure"), r.get("on_failure", "rollback"), OnFailure)
    late = None
    if r.get("late_soak") is not None:
        late = _late_soak(doc, (*where, "late_soak"), r["late_soak"])
    return RingSpec(name, _selector(doc, (*where, "selector"), r["selector"]), soak, min_dev,
                    gates, approvals, on_failure, late, parse_install_rules(doc, where, r))


def _late_soak(doc: YamlDoc, where: FieldPath, raw: Any) -> LateSoak:
    s = check_keys(doc, where, raw, {"after_hours", "device_hours", "devices"},
                   {"after_hours", "device_hours"})
    after = s["after_hours"]
    if isinstance(after, bool) or after not in LATE_AGES_H:
        raise doc.error((*where, "after_hours"), "must be one of "
                        f"{', '.join(map(str, LATE_AGES_H))} (the ages telemetry counts)")
    hours = _number(doc, (*where, "device_hours"), s["device_hours"])
    if hours < 0:
        raise doc.error((*where, "device_hours"), "must not be negative")
    devices = s.get("devices", 0)
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 0:
        raise doc.error((*where, "devices"), "must be a non-negative integer")
    return LateSoak(int(after), hours, devices)


def _selector(doc: YamlDoc, where: FieldPath, raw: Any) -> Selector:
    s = check_keys(doc, where, raw, {"tags", "percent"})
    if len(s) != 1:
        raise doc.error(where, "needs exactly one of 'tags' or 'percent'")
    if "tags" in s:
        tags = s["tags"]
        if not isinstance(tags, list) or not tags:
            raise doc.error((*where, "tags"), "must be a non-empty list of tags")
        return Selector(tags=tuple(_string(doc, (*where, "tags", i), t)
                                   for i, t in enumerate(tags)))
    pct = _number(doc, (*where, "percent"), s["percent"])
    if not 0.0 < pct <= 100.0:
        raise doc.error((*where, "percent"), "must be greater than 0 and at most 100")
    return Selector(percent=pct)


def _gate(doc: YamlDoc, where: FieldPath, raw: Any) -> GateSpec:
    g = check_keys(doc, where, raw, _GATE, {"metric", "missing"})
    if isinstance(g["metric"], str) and g["metric"] in RETIRED_METRICS:
        raise doc.error((*where, "metric"), f"{g['metric']!r} was retired; use "
                        f"{RETIRED_METRICS[g['metric']]}")
    metric = _enum(doc, (*where, "metric"), g["metric"], Metric)
    missing = _enum(doc, (*where, "missing"), g["missing"], Missing)
    if "max_ratio" not in g and "limit" not in g:
        raise doc.error(where, "needs max_ratio (vs control), limit (absolute) or both")
    max_ratio = None
    if "max_ratio" in g:
        max_ratio = _number(doc, (*where, "max_ratio"), g["max_ratio"])
        if max_ratio < 1.0:
            raise doc.error((*where, "max_ratio"), "must be at least 1 (a ratio to control)")
    limit = None
    if "limit" in g:
        limit = _number(doc, (*where, "limit"), g["limit"])
        from otactl.rollout.metrics import Family, metric_def  # metrics imports this module

        top = 1.0 if metric_def(metric).family is Family.SHARE else None
        if limit <= 0 or (top is not None and limit >= top):
            raise doc.error((*where, "limit"), "must be a rate above 0" +
                            ("" if top is None else " and below 1"))
    detect = _number(doc, (*where, "detect_ratio"), g.get("detect_ratio", 2.0))
    if detect <= (max_ratio or 1.0):
        raise doc.error((*where, "detect_ratio"), "must be greater than max_ratio")
    stratified = g.get("stratified", True)
    if not isinstance(stratified, bool):
        raise doc.error((*where, "stratified"), "must be true or false")
    harm = None
    if "harm_ratio" in g:
        harm = _number(doc, (*where, "harm_ratio"), g["harm_ratio"])
        if harm <= max(max_ratio or 1.0, 1.0):
            raise doc.error((*where, "harm_ratio"), "must be greater than max_ratio and 1")
    return GateSpec(metric, missing, max_ratio, limit, detect, stratified, harm)


def _approvals(doc: YamlDoc, where: FieldPath, raw: Any) -> Approvals:
    a = check_keys(doc, where, raw, {"required", "keys"}, {"required", "keys"})
    keys = a["keys"]
    if not isinstance(keys, list) or not keys:
        raise doc.error((*where, "keys"), "must be a non-empty list of key ids")
    ids = tuple(KeyId(_string(doc, (*where, "keys", i), k)) for i, k in enumerate(keys))
    for i, k in enumerate(ids):
        if k in ids[:i]:
            raise doc.error((*where, "keys", i), f"duplicate key id {k!r}")
    req = a["required"]
    if isinstance(req, bool) or not isinstance(req, int) or not 1 <= req <= len(ids):
        raise doc.error((*where, "required"), f"must be an integer from 1 to {len(ids)}")
    return Approvals(req, ids)


def _strata(doc: YamlDoc, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise doc.error(("strata",), "must be a non-empty list of dimensions")
    out: list[str] = []
    for i, dim in enumerate(raw):
        if dim not in STRATA_DIMENSIONS:
            raise doc.error(("strata", i), f"unknown dimension {dim!r} "
                            f"(allowed: {', '.join(STRATA_DIMENSIONS)})")
        if dim in out:
            raise doc.error(("strata", i), f"duplicate dimension {dim!r}")
        out.append(dim)
    return tuple(out)


def _string(doc: YamlDoc, where: FieldPath, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise doc.error(where, "must be a non-empty string")
    return raw


def _number(doc: YamlDoc, where: FieldPath, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise doc.error(where, f"must be a number, got {raw!r}")
    return float(raw)


def _enum(doc: YamlDoc, where: FieldPath, raw: Any, kind: type[E]) -> E:
    try:
        return kind(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise doc.error(where, f"must be one of: {allowed} (got {raw!r})") from None

