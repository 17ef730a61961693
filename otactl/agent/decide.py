"""The agent's decisions, as pure functions: no network, no disk, no clock.

1. ``choose_release``: the device's ring and the release it should run (docs/formats.md: tag rings
   first, then the first percentage ring the device's bucket falls in, else the baseline; a pin in
   the device's record wins).
2. ``next_step``: what to install next to get there, or why not: never a release in
   ``bad_releases``, never one below the security floor, only from a version its descriptor's
   ``compatible_from`` names, never one the release managers withdrew (signed ``withdrawals``
   metadata, whatever the policy says), and a required stepping stone always first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from otactl.agent.model import ReleaseDescriptor, Ring, RolloutPolicy, version_key

# the rollout controller's bucket function, so devices and `rollout plan` agree exactly
from otactl.rollout.rings import bucket


@dataclass(frozen=True)
class Installed:
    """The release a slot holds."""

    version: str
    variant: str
    security_version: int


@dataclass(frozen=True)
class Choice:
    ring: str | None  # None: the device is in no ring
    version: str | None  # None: no rollout policy, stay where it is
    why: str


def ring_for(policy: RolloutPolicy, device_id: str, tags: frozenset[str]) -> Ring | None:
    for ring in policy.rings:
        if ring.tags and tags.intersection(ring.tags):
            return ring
    share = bucket(policy.salt, device_id) * 100  # the same float arithmetic as otactl.rollout.rings
    for ring in policy.rings:
        if ring.percent is not None and share < float(ring.percent):
            return ring
    return None


def choose_release(policy: RolloutPolicy | None, device_id: str, tags: frozenset[str],
                   pin: str | None) -> Choice:
    ring = None if policy is None else ring_for(policy, device_id, tags)
    name = None if ring is None else ring.name
    if pin is not None:
        return Choice(name, pin, f"pinned to {pin} by the device record")
    if policy is None:
        return Choice(None, None, "no rollout policy for this model")
    if ring is None:
        return Choice(None, policy.baseline, f"in no ring: baseline {policy.baseline}")
    return Choice(name, ring.release, f"ring {ring.name}: {ring.release}")


# ------------------------------------------------------------------------------------ next step
@dataclass(frozen=True)
class Stay:
    reason: str


@dataclass(frozen=True)
class Install:
    descriptor: ReleaseDescriptor
    target: str  # the release the device is heading for (the descriptor may be its stepping stone)

    @property
    def is_stone(self) -> bool:
        return self.descriptor.version != self.target


@dataclass(frozen=True)
class Refuse:
    """The device cannot take ``version``; reported once as a ``failed`` event with the reason."""

    version: str
    reason: str


Step = Stay | Install | Refuse
Lookup = Callable[[str], ReleaseDescriptor | None]
Withdrawn = Callable[[str], str | None]  # version -> the signed withdrawal's reason, None: not withdrawn


def _never(version: str) -> str | None:
    return None


def next_step(
    target: str,
    *,
    model: str,
    hardware_revision: str,
    variant: str,
    active: Installed | None,
    previous: Installed | None,
    floor: int,
    bad: frozenset[str],
    failed_here: Mapping[str, str],
    lookup: Lookup,
    withdrawn: Withdrawn = _never,
) -> Step:
    """The next install towards ``target`` for a device running ``active`` (None: factory-empty).

    ``previous`` is what the inactive slot holds: going back to it is always compatible (the A/B
    fallback a rollback relies on), but still subject to the floor and ``bad``. ``failed_here``:
    releases that failed their boot check on this device (never retried). ``lookup`` returns a
    verified release descriptor, or None when the release is not published. ``withdrawn`` says
    whether the release managers' signed metadata withdraws a version (and why).

    A device already running a withdrawn release stays on it (it works; decision 0502) until a
    policy names another release; it never installs one.
    """
    if active is not None and active.version == target and active.variant == variant:
        why = withdrawn(target)
        if why is not None:
            return Stay(f"running {target}, which is withdrawn ({why}); waiting for a policy that names "
                        "another release")
        return Stay(f"already on {target}")
    if target in bad:
        return Stay(f"{target} is marked bad in the rollout policy; staying on {_name(active)}")
    if target in failed_here:
        return Stay(f"{target} failed its boot check here ({failed_here[target]}); staying on {_name(active)}")
    version, seen = target, [target]
    while True:
        via = "" if version == target else f" (stepping stone to {target})"
        why = withdrawn(version)
        if why is not None:
            return Refuse(version, f"release {model}/{version}{via} is withdrawn by the release managers "
                                   f"({why}); not installing it whatever the rollout policy says")
        desc = lookup(version)
        if desc is None:
            return Refuse(version, f"release {model}/{version}{via} is not published")
        if desc.model != model or desc.version != version:
            return Refuse(version, f"descriptor of {model}/{version} describes {desc.model}/{desc.version}")
        if version in bad:
            return Refuse(version, f"{version}{via} is marked bad in the rollout policy")
        if version in failed_here:
            return Refuse(version, f"{version}{via} failed its boot check here before")
        if desc.security_version < floor:
            return Refuse(version, f"{version}{via} has security_version {desc.security_version}, "
                                   f"below this device's floor {floor}")
        if hardware_revision not in desc.firmware:
            return Refuse(version, f"{version}{via} has no image for hardware revision {hardware_revision}")
        if variant not in desc.configs:
            return Refuse(version, f"{version}{via} has no configuration for variant {variant}")
        if active is None or active.version == version:
            return Install(desc, target)  # factory-empty device, or a configuration (variant) change
        if previous is not None and previous.version == version:
            return Install(desc, target)  # back to the release in the other slot
        stone = desc.stepping_stone
        if stone is not None and version_key(active.version) < version_key(stone):
            if stone in seen:
                return Refuse(target, f"stepping stones of {target} form a cycle ({' -> '.join([*seen, stone])})")
            seen.append(stone)
            version = stone
            continue
        if desc.compatible_with(active.version):
            return Install(desc, target)
        return Refuse(version, f"{version}{via} cannot be installed over {active.version} "
                               f"(compatible_from: {', '.join(desc.compatible_from)})")


def _name(installed: Installed | None) -> str:
    return "nothing installed" if installed is None else installed.version
