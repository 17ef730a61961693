"""Scenario files (``otactl/scenario/1``, see examples/scenarios/README.md), parsed once, strictly.

Unknown keys are refused and every error names the file, line and field (``InputFileError``).
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from otactl.errors import OtactlError
from otactl.repo.layout import check_name
from otactl.rollout.plan import parse_install_rules
from otactl.rollout.windows import InstallRules
from otactl.yamlio import FieldPath, YamlDoc, check_keys, load_yaml

SCHEMA = "otactl/scenario/1"
MODES = ("full", "model")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?\Z")
_METRIC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


@dataclass(frozen=True)
class Fleet:
    model: str
    devices: int
    hardware_revisions: tuple[tuple[str, float], ...]  # name, weight
    variants: tuple[tuple[str, float], ...]
    regions: tuple[tuple[str, float], ...]
    lab_devices: int = 0
    id_prefix: str = "sim"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    mean: float
    sd: float = 0.0
    decimals: int = 1


@dataclass(frozen=True)
class StratumRates:
    """A stratum's own base rates, as factors on the behaviour's (1: the same)."""

    crash_rate: float = 1.0
    install_failure: float = 1.0


@dataclass(frozen=True)
class Behaviour:
    poll_interval_s: int = 3600  # simulated time one round stands for (a device's poll interval)
    online: float = 1.0  # chance that a device polls in a given round
    crash_rate: float = 0.01  # crashes per device-hour on a release without an effect
    error_rate: float = 0.1  # errors per device-hour
    install_failure: float = 0.0  # chance that a new image fails its boot check
    metrics: tuple[MetricSpec, ...] = ()
    strata: tuple[tuple[str, StratumRates], ...] = ()  # "variant/region" -> its base rates
    device_shape: float = 0.0  # per-device crash multiplier ~ Gamma(k, 1/k); 0: none
    daily_sigma: float = 0.0  # fleet-level noise: a lognormal factor per simulated day
    engine_running: float = 0.0  # chance, per device and round, that its engine runs (conditions.json)
    low_battery: float = 0.0  # chance, per device and round, that its battery is at 20% (else 90%)

    def stratum(self, variant: str, region: str) -> StratumRates:
        return dict(self.strata).get(f"{variant}/{region}", StratumRates())


@dataclass(frozen=True)
class Effect:
    """A release's true effect, relative to the behaviour's base rates (factors: 1 is no effect)."""

    crash_rate: float = 1.0
    error_rate: float = 1.0
    install_failure: float = 1.0
    bad_image: bool = False  # the image never passes its boot check
    metrics: tuple[tuple[str, float], ...] = ()  # metric name -> factor on its mean
    after_hours: float = 0.0  # the effect starts once a device has run this long on the image

    def metric_factor(self, name: str) -> float:
        return dict(self.metrics).get(name, 1.0)


@dataclass(frozen=True)
class ReleaseSpec:
    manifest: Path
    version: str  # read from the manifest
    effect: Effect = Effect()
    variant_effects: tuple[tuple[str, Effect], ...] = ()  # complete effects for some variants
    region_effects: tuple[tuple[str, Effect], ...] = ()  # ... for some regions
    stratum_effects: tuple[tuple[str, Effect], ...] = ()  # ... for "variant/region" strata

    def effect_for(self, variant: str, region: str | None = None) -> Effect:
        """The most specific effect: the stratum's, else the region's, else the variant's."""
        if region is not None:
            found = dict(self.stratum_effects).get(f"{variant}/{region}")
            if found is None:
                found = dict(self.region_effects).get(region)
            if found is not None:
                return found
        return dict(self.variant_effects).get(variant, self.effect)


@dataclass(frozen=True)
class RingSpec:
    name: str
    tags: tuple[str, ...] = ()
    percent: str | None = None  # decimal string, as in the rollout policy


@dataclass(frozen=True)
class PolicyStep:
    round: int
    baseline: str
    release: str
    rings: tuple[str, ...] | None  # rings on ``release``; None: all of them (others: baseline)
    bad_releases: tuple[str, ...] = ()
    min_security_version: int = 0


@dataclass(frozen=True)
class Skew:
    """One stratum is ``factor`` times as likely as its share in the early rings (model mode)."""

    stratum: str  # "variant/region"
    factor: float


@dataclass(frozen=True)
class Outage:
    """Telemetry lost from round ``start`` to ``end`` (model mode): a ring's or a region's reports
    held back until it ends (device outboxes), or, with neither, the whole source unreachable."""

    start: int
    end: int
    ring: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Rollout:
    salt: str
    rings: tuple[RingSpec, ...]
    schedule: tuple[PolicyStep, ...]
    skew: Skew | None = None
    install: InstallRules = field(default_factory=InstallRules)  # every ring's windows, preconditions (1202)


@dataclass(frozen=True)
class Scenario:
    path: str
    name: str
    seed: int
    mode: str
    rounds: int
    workers: int
    fleet: Fleet
    behaviour: Behaviour
    releases: tuple[ReleaseSpec, ...]
    rollout: Rollout
    outages: tuple[Outage, ...] = ()

    def release(self, version: str) -> ReleaseSpec | None:
        return next((r for r in self.releases if r.version == version), None)


# ------------------------------------------------------------------------------------ parsing
def _keys(value: Any) -> set[str]:
    """The keys a free-form mapping may have: its own (anything else is refused as "not a mapping")."""
    return {str(k) for k in value} if isinstance(value, dict) else set()


class _Parser:
    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc

    def mapping(self, where: FieldPath, value: Any, allowed: set[str], required: Set[str] = frozenset()
                ) -> dict[str, Any]:
        return check_keys(self.doc, where, value, allowed, required)

    def int_(self, where: FieldPath, value: Any, low: int = 0, high: int | None = None) -> int:
        if type(value) is not int or value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise self.doc.error(where, f"must be an integer {bound}")
        return value

    def number(self, where: FieldPath, value: Any, low: float = 0.0, high: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low or (
                high is not None and value > high):
            bound = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
            raise self.doc.error(where, f"must be a number {bound}")
        return float(value)

    def name(self, where: FieldPath, value: Any, kind: str) -> str:
        if not isinstance(value, str):
            raise self.doc.error(where, f"{kind} must be a string")
        try:
            return check_name(kind, value)
        except OtactlError as exc:
            raise self.doc.error(where, exc.message) from None

    def version(self, where: FieldPath, value: Any) -> str:
        if not isinstance(value, str) or not _VERSION.match(value):
            raise self.doc.error(where, f"{value!r} is not a version like 2.1.0 (quote it in YAML)")
        return value

    def weights(self, where: FieldPath, value: Any, kind: str) -> tuple[tuple[str, float], ...]:
        if isinstance(value, list):  # a list of names: equal weights
            value = {item: 1 for item in value} if all(isinstance(i, str) for i in value) else None
        if not isinstance(value, dict) or not value:
            raise self.doc.error(where, f"must map each {kind} to a weight (or list {kind}s)")
        return tuple((self.name((*where, k), k, kind), self.number((*where, k), v, 0.0)) for k, v in value.items())

    def effect(self, where: FieldPath, value: Any, base: Effect) -> Effect:
        raw = self.mapping(where, value, {f.name for f in fields(Effect)})
        changes: dict[str, Any] = {}
        for key in ("crash_rate", "error_rate", "install_failure"):
            if key in raw:
                changes[key] = self.number((*where, key), raw[key])
        if "after_hours" in raw:
            changes["after_hours"] = self.number((*where, "after_hours"), raw["after_hours"])
        if "bad_image" in raw:
            if not isinstance(raw["bad_image"], bool):
                raise self.doc.error((*where, "bad_image"), "must be true or false")
            changes["bad_image"] = raw["bad_image"]
        if "metrics" in raw:
            m = self.mapping((*where, "metrics"), raw["metrics"], _keys(raw["metrics"]))
            changes["metrics"] = tuple((k, self.number((*where, "metrics", k), v)) for k, v in m.items())
        return replace(base, **changes)


def parse_scenario(doc: YamlDoc) -> Scenario:
    p = _Parser(doc)
    top = p.mapping((), doc.data, {"schema", "name", "seed", "mode", "rounds", "workers", "fleet", "behaviour",
                                   "releases", "rollout", "outages"},
                    {"schema", "name", "fleet", "releases", "rollout"})
    if top["schema"] != SCHEMA:
        raise doc.error(("schema",), f"expected {SCHEMA!r}")
    name = p.name(("name",), top["name"], "scenario name")
    mode = top.get("mode", "full")
    if mode not in MODES:
        raise doc.error(("mode",), f"must be one of {', '.join(MODES)}")
    fleet = _fleet(p, top["fleet"])
    behaviour = _behaviour(p, top.get("behaviour", {}), fleet)
    releases = _releases(p, top["releases"], fleet)
    rollout = _rollout(p, top["rollout"], {r.version for r in releases}, fleet)
    outages = _outages(p, top.get("outages", []), rollout, fleet)
    if mode == "full":
        for key, present in (("outages", bool(outages)), ("rollout.skew", rollout.skew is not None)):
            if present:
                where: FieldPath = tuple(key.split("."))
                raise doc.error(where, "is model mode only (full mode runs real devices and servers)")
    last = max(s.round for s in rollout.schedule)
    rounds = p.int_(("rounds",), top.get("rounds", last + 3), 1)
    if rounds <= last:
        raise doc.error(("rounds",), f"must be more than the last scheduled round ({last})")
    for ver, eff in ((r.version, r) for r in releases):
        for variant, _ in eff.variant_effects:
            if variant not in dict(fleet.variants):
                raise doc.error(("releases",), f"release {ver}: effect for variant {variant!r}, which the fleet "
                                               "does not have")
    return Scenario(doc.path, name, p.int_(("seed",), top.get("seed", 1)), mode, rounds,
                    p.int_(("workers",), top.get("workers", 16), 1, 256), fleet, behaviour, releases, rollout,
                    outages)


def _stratum_name(p: _Parser, where: FieldPath, value: Any, fleet: Fleet) -> str:
    variants, regions = dict(fleet.variants), dict(fleet.regions)
    if not isinstance(value, str) or value.count("/") != 1:
        raise p.doc.error(where, f"{value!r} is not a stratum like hp-500/eu (variant/region)")
    variant, region = value.split("/")
    if variant not in variants or region not in regions:
        raise p.doc.error(where, f"the fleet has no stratum {value!r} (variants: {', '.join(variants)}; "
                                 f"regions: {', '.join(regions)})")
    return value


def _outages(p: _Parser, value: Any, rollout: Rollout, fleet: Fleet) -> tuple[Outage, ...]:
    if not isinstance(value, list):
        raise p.doc.error(("outages",), "must be a list of outages")
    out = []
    rings = [r.name for r in rollout.rings]
    for i, item in enumerate(value):
        at: FieldPath = ("outages", i)
        raw = p.mapping(at, item, {"from_round", "to_round", "ring", "region"}, {"from_round", "to_round"})
        start = p.int_((*at, "from_round"), raw["from_round"])
        end = p.int_((*at, "to_round"), raw["to_round"], start + 1)
        ring = raw.get("ring")
        if ring is not None and ring not in rings:
            raise p.doc.error((*at, "ring"), f"must be one of the rollout's rings ({', '.join(rings)})")
        region = raw.get("region")
        if region is not None and region not in dict(fleet.regions):
            raise p.doc.error((*at, "region"), f"the fleet has no region {region!r}")
        out.append(Outage(start, end, ring, region))
    return tuple(out)


def _fleet(p: _Parser, value: Any) -> Fleet:
    w: FieldPath = ("fleet",)
    raw = p.mapping(w, value, {"model", "devices", "hardware_revisions", "variants", "regions", "lab_devices",
                               "id_prefix"}, {"model", "devices", "hardware_revisions", "variants", "regions"})
    devices = p.int_((*w, "devices"), raw["devices"], 1, 1_000_000)
    lab = p.int_((*w, "lab_devices"), raw.get("lab_devices", 0), 0, devices)
    fleet = Fleet(p.name((*w, "model"), raw["model"], "model"), devices,
                  p.weights((*w, "hardware_revisions"), raw["hardware_revisions"], "hardware revision"),
                  p.weights((*w, "variants"), raw["variants"], "variant"),
                  p.weights((*w, "regions"), raw["regions"], "region"), lab,
                  p.name((*w, "id_prefix"), raw.get("id_prefix", "sim"), "id prefix"))
    for key in ("hardware_revisions", "variants", "regions"):
        if not sum(wt for _, wt in getattr(fleet, key)) > 0:
            raise p.doc.error((*w, key), "weights must not all be zero")
    return fleet


def _behaviour(p: _Parser, value: Any, fleet: Fleet) -> Behaviour:
    w: FieldPath = ("behaviour",)
    raw = p.mapping(w, value, {f.name for f in fields(Behaviour)})
    strata = []
    for name, rates in p.mapping((*w, "strata"), raw.get("strata", {}), _keys(raw.get("strata"))).items():
        at = (*w, "strata", name)
        key = _stratum_name(p, at, name, fleet)
        r = p.mapping(at, rates, {"crash_rate", "install_failure"})
        strata.append((key, StratumRates(p.number((*at, "crash_rate"), r.get("crash_rate", 1.0)),
                                         p.number((*at, "install_failure"), r.get("install_failure", 1.0)))))
    metrics = []
    for mname, spec in (p.mapping((*w, "metrics"), raw.get("metrics", {}), _keys(raw.get("metrics")))).items():
        at = (*w, "metrics", mname)
        if not _METRIC.match(mname):
            raise p.doc.error(at, "metric names are [A-Za-z_][A-Za-z0-9_]*")
        m = p.mapping(at, spec, {"mean", "sd", "decimals"}, {"mean"})
        metrics.append(MetricSpec(mname, p.number((*at, "mean"), m["mean"], -1e9),
                                  p.number((*at, "sd"), m.get("sd", 0.0)),
                                  p.int_((*at, "decimals"), m.get("decimals", 1), 0, 6)))
    return Behaviour(
        poll_interval_s=p.int_((*w, "poll_interval_s"), raw.get("poll_interval_s", 3600), 1),
        online=p.number((*w, "online"), raw.get("online", 1.0), 0.0, 1.0),
        crash_rate=p.number((*w, "crash_rate"), raw.get("crash_rate", 0.01)),
        error_rate=p.number((*w, "error_rate"), raw.get("error_rate", 0.1)),
        install_failure=p.number((*w, "install_failure"), raw.get("install_failure", 0.0), 0.0, 1.0),
        metrics=tuple(metrics),
        strata=tuple(strata),
        device_shape=p.number((*w, "device_shape"), raw.get("device_shape", 0.0), 0.0, 100.0),
        daily_sigma=p.number((*w, "daily_sigma"), raw.get("daily_sigma", 0.0), 0.0, 2.0),
        engine_running=p.number((*w, "engine_running"), raw.get("engine_running", 0.0), 0.0, 1.0),
        low_battery=p.number((*w, "low_battery"), raw.get("low_battery", 0.0), 0.0, 1.0),
    )


def _releases(p: _Parser, value: Any, fleet: Fleet) -> tuple[ReleaseSpec, ...]:
    from otactl.release.manifest import load_manifest

    if not isinstance(value, list) or not value:
        raise p.doc.error(("releases",), "must be a list of releases")
    out: list[ReleaseSpec] = []
    for i, item in enumerate(value):
        w: FieldPath = ("releases", i)
        raw = p.mapping(w, item, {"manifest", "effect", "variants", "regions", "strata"}, {"manifest"})
        if not isinstance(raw["manifest"], str):
            raise p.doc.error((*w, "manifest"), "must be a path to a release manifest")
        path = (Path(p.doc.path).parent / raw["manifest"]).resolve()
        if not path.is_file():
            raise p.doc.error((*w, "manifest"), f"{raw['manifest']}: no such manifest ({path})")
        manifest = load_manifest(path)
        effect = p.effect((*w, "effect"), raw.get("effect", {}), Effect())
        per = p.mapping((*w, "variants"), raw.get("variants", {}), _keys(raw.get("variants")))
        variant_effects = tuple((p.name((*w, "variants", v), v, "variant"), p.effect((*w, "variants", v), e, effect))
                                for v, e in per.items())
        for v, _ in variant_effects:
            if v not in manifest.variants:
                raise p.doc.error((*w, "variants", v), f"release {manifest.version} has no variant {v!r}")
        per_region = p.mapping((*w, "regions"), raw.get("regions", {}), _keys(raw.get("regions")))
        region_effects = []
        for r, e in per_region.items():
            if r not in dict(fleet.regions):
                raise p.doc.error((*w, "regions", r), f"the fleet has no region {r!r}")
            region_effects.append((r, p.effect((*w, "regions", r), e, effect)))
        per_stratum = p.mapping((*w, "strata"), raw.get("strata", {}), _keys(raw.get("strata")))
        stratum_effects = [(_stratum_name(p, (*w, "strata", k), k, fleet), p.effect((*w, "strata", k), e, effect))
                           for k, e in per_stratum.items()]
        if any(r.version == manifest.version for r in out):
            raise p.doc.error((*w, "manifest"), f"release {manifest.version} is listed twice")
        out.append(ReleaseSpec(path, manifest.version, effect, variant_effects, tuple(region_effects),
                               tuple(stratum_effects)))
    return tuple(out)


def _rollout(p: _Parser, value: Any, versions: set[str], fleet: Fleet) -> Rollout:
    w: FieldPath = ("rollout",)
    raw = p.mapping(w, value, {"salt", "rings", "schedule", "skew", "install_windows", "preconditions"},
                    {"schedule"})
    skew = None
    if raw.get("skew") is not None:
        sk = p.mapping((*w, "skew"), raw["skew"], {"stratum", "factor"}, {"stratum", "factor"})
        skew = Skew(_stratum_name(p, (*w, "skew", "stratum"), sk["stratum"], fleet),
                    p.number((*w, "skew", "factor"), sk["factor"], 1.0, 100.0))
    rings_raw = raw.get("rings", [{"name": "all", "percent": 100}])
    if not isinstance(rings_raw, list) or not rings_raw:
        raise p.doc.error((*w, "rings"), "must be a list of rings")
    rings = []
    for i, ring in enumerate(rings_raw):
        at = (*w, "rings", i)
        r = p.mapping(at, ring, {"name", "tags", "percent"}, {"name"})
        if ("tags" in r) == ("percent" in r):
            raise p.doc.error(at, "a ring has either tags or a percent")
        tags: tuple[str, ...] = ()
        pct = None
        if "tags" in r:
            if not isinstance(r["tags"], list) or not r["tags"]:
                raise p.doc.error((*at, "tags"), "must be a list of tags")
            tags = tuple(p.name((*at, "tags", j), t, "tag") for j, t in enumerate(r["tags"]))
        else:
            pct = f"{p.number((*at, 'percent'), r['percent'], 0.0, 100.0):g}"
            if float(pct) <= 0:
                raise p.doc.error((*at, "percent"), "must be more than 0")
        rings.append(RingSpec(p.name((*at, "name"), r["name"], "ring name"), tags, pct))
    names = [r.name for r in rings]
    if len(set(names)) != len(names):
        raise p.doc.error((*w, "rings"), "ring names must be unique")
    steps: list[PolicyStep] = []
    sched = raw["schedule"]
    if not isinstance(sched, list) or not sched:
        raise p.doc.error((*w, "schedule"), "must be a list of policy steps")
    for i, item in enumerate(sched):
        at = (*w, "schedule", i)
        s = p.mapping(at, item, {"round", "baseline", "release", "rings", "bad_releases", "min_security_version"},
                      {"round"})
        rnd = p.int_((*at, "round"), s["round"])
        if steps and rnd <= steps[-1].round:
            raise p.doc.error((*at, "round"), "rounds must increase")
        if not steps and "baseline" not in s:
            raise p.doc.error(at, "the first step needs a baseline")
        baseline = p.version((*at, "baseline"), s["baseline"]) if "baseline" in s else steps[-1].baseline
        release = p.version((*at, "release"), s["release"]) if "release" in s else baseline
        for key, ver in (("baseline", baseline), ("release", release)):
            if ver not in versions:
                raise p.doc.error((*at, key), f"release {ver} is not among the scenario's releases")
        on = None
        if "rings" in s:
            if not isinstance(s["rings"], list) or any(r not in names for r in s["rings"]):
                raise p.doc.error((*at, "rings"), f"must list ring names ({', '.join(names)})")
            on = tuple(s["rings"])
        bad = s.get("bad_releases", list(steps[-1].bad_releases) if steps else [])
        if not isinstance(bad, list):
            raise p.doc.error((*at, "bad_releases"), "must be a list of versions")
        steps.append(PolicyStep(rnd, baseline, release, on,
                                tuple(p.version((*at, "bad_releases", j), b) for j, b in enumerate(bad)),
                                p.int_((*at, "min_security_version"), s.get("min_security_version", 0))))
    salt = raw.get("salt", "sim")
    if not isinstance(salt, str) or not salt:
        raise p.doc.error((*w, "salt"), "must be a non-empty string")
    install = parse_install_rules(p.doc, w, raw) or InstallRules()
    return Rollout(salt, tuple(rings), tuple(steps), skew, install)


def load_scenario(path: str | Path) -> Scenario:
    return parse_scenario(load_yaml(path))
