"""Ring assignment, exactly as docs/formats.md specifies it, and the plan report.

A device's ring: the first ring (in order) whose tag selector matches one of its tags, else the
first percentage ring with ``bucket(salt, device_id) * 100 < percent``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NewType

from otactl.rollout.plan import Plan, RingName, RingSpec
from otactl.telemetry.source import StratumKey

DeviceId = NewType("DeviceId", str)


@dataclass(frozen=True, slots=True)  # a million of them in `rollout plan`
class DeviceInfo:
    id: DeviceId
    model: str
    variant: str
    region: str
    tags: frozenset[str] = frozenset()

    @property
    def stratum(self) -> StratumKey:
        return StratumKey(self.model, self.variant, self.region)


def bucket(salt: str, device_id: str) -> float:
    """A number in [0, 1), uniform over devices, fixed for a (salt, device) pair."""
    digest = hashlib.sha256(f"{salt}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def ring_of(rings: Sequence[RingSpec], salt: str, device: DeviceInfo) -> int | None:
    """Index of the device's ring, or None (the device stays on the baseline)."""
    for i, ring in enumerate(rings):
        if ring.selector.tags and device.tags.intersection(ring.selector.tags):
            return i
    b = bucket(salt, device.id) * 100
    for i, ring in enumerate(rings):
        pct = ring.selector.percent
        if pct is not None and b < pct:
            return i
    return None


@functools.lru_cache(maxsize=4096)
def project(key: StratumKey, dimensions: tuple[str, ...]) -> StratumKey:
    """The stratum a plan tests: dimensions not in the plan's ``strata`` collapse to ``*``."""
    return StratumKey(key.model if "model" in dimensions else "*",
                      key.variant if "variant" in dimensions else "*",
                      key.region if "region" in dimensions else "*")


def assign(plan: Plan, salt: str, devices: Iterable[DeviceInfo]) -> dict[DeviceId, int | None]:
    return {d.id: ring_of(plan.rings, salt, d) for d in devices}


@dataclass(frozen=True)
class RingReport:
    name: RingName
    devices: int  # devices in this ring alone
    cumulative: int  # devices on the release once this ring is reached
    strata_present: int
    strata_missing: tuple[str, ...]  # fleet strata with no device in the cumulative cohort
    per_stratum: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class PlanReport:
    plan: str
    salt: str
    fleet_devices: int
    fleet_strata: int
    rings: tuple[RingReport, ...]
    unassigned: int
    exposed_before_first_gate: int  # devices on the release before any gate can fail it
    warnings: tuple[str, ...] = ()  # plan_warnings: what can never work on this fleet

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "otactl/plan-report/1", "plan": self.plan, "salt": self.salt,
            "fleet_devices": self.fleet_devices, "fleet_strata": self.fleet_strata,
            "unassigned": self.unassigned,
            "exposed_before_first_gate": self.exposed_before_first_gate,
            "rings": [{"name": r.name, "devices": r.devices, "cumulative": r.cumulative,
                       "strata_present": r.strata_present,
                       "strata_missing": list(r.strata_missing),
                       "per_stratum": dict(r.per_stratum)} for r in self.rings],
            "warnings": list(self.warnings),
        }


def plan_report(plan: Plan, salt: str, devices: Iterable[DeviceInfo]) -> PlanReport:
    """Devices per ring, strata coverage per ring, and the exposure before the first gate; ``devices``
    are read once (a stream: a million-device fleet is not held in memory).

    Deterministic: the same plan, salt and devices give the same report (strata sorted).
    """
    dims = plan.strata
    names: dict[tuple[str, str, str], str] = {}  # a million devices fall in a handful of strata
    seen: set[str] = set()
    counts: list[dict[str, int]] = [{} for _ in plan.rings]
    unassigned = total = 0
    for d in devices:
        total += 1
        key = names.get((d.model, d.variant, d.region))
        if key is None:
            key = names[(d.model, d.variant, d.region)] = str(project(d.stratum, dims))
        seen.add(key)
        i = ring_of(plan.rings, salt, d)
        if i is None:
            unassigned += 1
            continue
        counts[i][key] = counts[i].get(key, 0) + 1
    fleet_strata = sorted(seen)
    reports: list[RingReport] = []
    cumulative: dict[str, int] = {}
    for ring, per in zip(plan.rings, counts, strict=True):
        for key, n in per.items():
            cumulative[key] = cumulative.get(key, 0) + n
        missing = tuple(s for s in fleet_strata if s not in cumulative)
        reports.append(RingReport(ring.name, sum(per.values()), sum(cumulative.values()),
                                  len(fleet_strata) - len(missing), missing,
                                  tuple(sorted(per.items()))))
    first_gated = next((i for i, r in enumerate(plan.rings) if r.gates), len(plan.rings) - 1)
    exposed = reports[first_gated].cumulative if reports else 0
    return PlanReport(plan.name, salt, total, len(fleet_strata), tuple(reports),
                      unassigned, exposed)


def plan_warnings(plan: Plan, report: PlanReport, known_keys: Iterable[str]) -> list[str]:
    """What in a plan can never work on this fleet: an empty ring, a ring that can never have its
    minimum of reporting devices, approvals from keys the trust configuration does not hold."""
    known = set(known_keys)
    out = []
    for ring, r in zip(plan.rings, report.rings, strict=True):
        if r.devices == 0:
            out.append(f"ring {ring.name!r} holds no device of this fleet")
        if r.cumulative < ring.min_reporting_devices:
            out.append(f"ring {ring.name!r} holds {r.cumulative} devices but needs {ring.min_reporting_devices} "
                       "reporting: it can never pass")
        if ring.approvals is not None:
            unknown = [k for k in ring.approvals.keys if k not in known]
            if unknown:
                usable = len(ring.approvals.keys) - len(unknown)
                never = " so it can never be approved" if usable < ring.approvals.required else ""
                out.append(f"ring {ring.name!r}: approval keys {', '.join(unknown)} are not in the trust "
                           f"configuration ({usable} of the {ring.approvals.required} needed remain){never}")
    return out
