"""The agent's pure decisions: ring choice, pins, bad releases, the security floor, compatibility,
stepping stones (docs/formats.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otactl.agent.decide import Install, Installed, Refuse, Stay, choose_release, next_step, ring_for
from otactl.agent.model import FileRef, ReleaseDescriptor, Ring, RolloutPolicy
from otactl.rollout.plan import RingName, RingSpec, Selector
from otactl.rollout.rings import DeviceId, DeviceInfo, bucket, ring_of

SHA = "0" * 64


def policy(*rings: Ring, baseline: str = "2.0.0", salt: str = "s1", bad: frozenset[str] = frozenset(),
           min_sv: int = 0) -> RolloutPolicy:
    return RolloutPolicy("t9-engine", "r1", salt, 1, baseline, rings, bad, min_sv)


def pct(name: str, percent: str, release: str) -> Ring:
    return Ring(name, release, percent=Decimal(percent))


def tagged(name: str, tags: tuple[str, ...], release: str) -> Ring:
    return Ring(name, release, tags=tags)


# ------------------------------------------------------------------------------------ rings
def test_a_tag_ring_comes_before_any_percentage_ring() -> None:
    p = policy(pct("all", "100", "2.1.0"), tagged("lab", ("lab",), "2.2.0"))
    assert ring_for(p, "d1", frozenset({"lab"})).name == "lab"
    assert ring_for(p, "d1", frozenset({"field"})).name == "all"


def test_a_device_in_no_ring_installs_the_baseline() -> None:
    p = policy(pct("canary", "0.0001", "2.1.0"), baseline="2.0.0")
    outside = next(d for d in (f"d{i}" for i in range(100)) if bucket("s1", d) * 100 >= 0.0001)
    choice = choose_release(p, outside, frozenset(), None)
    assert (choice.ring, choice.version) == (None, "2.0.0")


def test_percentages_are_cumulative_first_matching_ring_wins() -> None:
    p = policy(pct("canary", "10", "2.1.0"), pct("early", "50", "2.0.5"), pct("all", "100", "2.0.0"))
    seen = {"canary": 0, "early": 0, "all": 0}
    for i in range(4000):
        device = f"trk-{i:04d}"
        b = bucket("s1", device) * 100
        expected = "canary" if b < 10 else "early" if b < 50 else "all"
        ring = ring_for(p, device, frozenset())
        assert ring is not None and ring.name == expected
        seen[expected] += 1
    assert 300 < seen["canary"] < 500 and 1400 < seen["early"] < 1800  # 10% and 40% of 4000


@given(salt=st.text(min_size=1, max_size=8), device=st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True),
       percents=st.lists(st.sampled_from(["0.5", "2", "2.5", "10", "33.3", "50", "100"]), min_size=1, max_size=4),
       lab=st.booleans())
def test_the_agent_and_the_rollout_planner_put_a_device_in_the_same_ring(
        salt: str, device: str, percents: list[str], lab: bool) -> None:
    percents = sorted(set(percents), key=float)
    rings = [tagged("lab", ("lab",), "2.1.0"), *(pct(f"r{i}", p, "2.1.0") for i, p in enumerate(percents))]
    specs = [RingSpec(RingName(r.name), Selector(tags=r.tags) if r.tags else Selector(percent=float(r.percent or 0)),
                      0.0, 0, ()) for r in rings]
    tags = frozenset({"lab"} if lab else set())
    mine = ring_for(policy(*rings, salt=salt), device, tags)
    theirs = ring_of(specs, salt, DeviceInfo(DeviceId(device), "t9-engine", "hp-300", "eu", tags))
    assert (None if mine is None else rings.index(mine)) == theirs


def test_a_pin_in_the_record_wins_over_the_ring() -> None:
    p = policy(tagged("lab", ("lab",), "2.1.0"))
    choice = choose_release(p, "d1", frozenset({"lab"}), "2.0.3")
    assert (choice.ring, choice.version) == ("lab", "2.0.3")
    assert "pinned" in choice.why


def test_without_a_policy_the_device_stays() -> None:
    assert choose_release(None, "d1", frozenset(), None).version is None
    assert choose_release(None, "d1", frozenset(), "2.0.0").version == "2.0.0"  # a pin needs no policy


# ------------------------------------------------------------------------------------ next step
def desc(version: str, sv: int = 1, compat: tuple[str, ...] = ("*",), stone: str | None = None,
         revs: tuple[str, ...] = ("revA", "revB"), variants: tuple[str, ...] = ("hp-300", "hp-400")
         ) -> ReleaseDescriptor:
    return ReleaseDescriptor(
        "t9-engine", version, sv,
        {r: FileRef(f"firmware/t9-engine/{version}/{r}.bin", 1, SHA) for r in revs},
        {v: FileRef(f"config/t9-engine/{version}/{v}.json", 1, SHA) for v in variants},
        compat, stone)


RUNNING = Installed("2.0.0", "hp-300", 1)


@dataclass
class Case:
    target: str
    releases: list[ReleaseDescriptor]
    active: Installed | None = RUNNING
    expect: str = "install"  # install | stay | refuse
    installs: str | None = None  # the version installed next
    reason: str = ""  # part of the stay/refuse reason
    floor: int = 1
    bad: frozenset[str] = frozenset()
    failed_here: dict[str, str] = field(default_factory=dict)
    previous: Installed | None = None
    variant: str = "hp-300"
    hw: str = "revA"


CASES = {
    "already there": Case("2.0.0", [desc("2.0.0")], expect="stay", reason="already on 2.0.0"),
    "plain update": Case("2.1.0", [desc("2.0.0"), desc("2.1.0", 2, ("2.0.*",))], installs="2.1.0"),
    "factory-empty device takes the target": Case("2.1.0", [desc("2.1.0", 2, ("2.0.*",), stone="2.0.5")],
                                                  active=None, floor=0, installs="2.1.0"),
    "not compatible from the running version": Case(
        "2.1.0", [desc("2.1.0", 2, ("2.0.5", "1.*"))], expect="refuse", reason="compatible_from: 2.0.5, 1.*"),
    "pattern with a star per segment": Case("2.1.0", [desc("2.1.0", 2, ("2.*",))], installs="2.1.0"),
    "a bad release is never installed": Case("2.1.0", [desc("2.1.0", 2)], bad=frozenset({"2.1.0"}),
                                             expect="stay", reason="marked bad"),
    "a bad stepping stone blocks the way": Case(
        "2.2.0", [desc("2.1.0", 2), desc("2.2.0", 3, ("2.1.*",), stone="2.1.0")], bad=frozenset({"2.1.0"}),
        expect="refuse", reason="2.1.0 (stepping stone to 2.2.0) is marked bad"),
    "below the floor": Case("1.9.0", [desc("1.9.0", 0)], floor=1, expect="refuse",
                            reason="security_version 0, below this device's floor 1"),
    "downgrade at the same security version is allowed when compatible": Case(
        "1.9.9", [desc("1.9.9", 1, ("2.0.*",))], installs="1.9.9"),
    "the stepping stone comes first": Case(
        "2.2.0", [desc("2.1.0", 2, ("2.0.*",)), desc("2.2.0", 3, ("2.1.*",), stone="2.1.0")], installs="2.1.0"),
    "a chain of stones starts at the oldest": Case(
        "3.0.0", [desc("2.1.0", 2, ("2.0.*",)), desc("2.5.0", 2, ("2.1.*",), stone="2.1.0"),
                  desc("3.0.0", 3, ("2.5.*",), stone="2.5.0")], installs="2.1.0"),
    "a stone already passed is not installed again": Case(
        "2.2.0", [desc("2.1.0", 2), desc("2.2.0", 3, ("2.1.*",), stone="2.1.0")],
        active=Installed("2.1.3", "hp-300", 2), floor=2, installs="2.2.0"),
    "compatible_from does not excuse skipping the stone": Case(
        "2.2.0", [desc("2.1.0", 2, ("2.0.*",)), desc("2.2.0", 3, ("*",), stone="2.1.0")], installs="2.1.0"),
    "an unpublished stone": Case("2.2.0", [desc("2.2.0", 3, stone="2.1.0")], expect="refuse",
                                 reason="2.1.0 (stepping stone to 2.2.0) is not published"),
    "stones in a cycle": Case("2.2.0", [desc("2.1.0", 2, stone="2.2.0"), desc("2.2.0", 3, stone="2.1.0")],
                              expect="refuse", reason="cycle"),
    "not published": Case("9.9.9", [desc("2.0.0")], expect="refuse", reason="not published"),
    "no image for this hardware revision": Case("2.1.0", [desc("2.1.0", 2, revs=("revB",))], expect="refuse",
                                                reason="no image for hardware revision revA"),
    "no configuration for this variant": Case("2.1.0", [desc("2.1.0", 2, variants=("hp-400",))],
                                              expect="refuse", reason="no configuration for variant hp-300"),
    "a variant change reinstalls the same release": Case("2.0.0", [desc("2.0.0")], variant="hp-400",
                                                         installs="2.0.0"),
    "back to the release in the other slot": Case(
        "2.0.0", [desc("2.0.0", 2, ("1.*",))], active=Installed("2.1.0", "hp-300", 2), floor=2,
        previous=Installed("2.0.0", "hp-300", 2), installs="2.0.0"),
    "not back below the floor, even from the other slot": Case(
        "2.0.0", [desc("2.0.0", 1, ("1.*",))], active=Installed("2.1.0", "hp-300", 2), floor=2,
        previous=Installed("2.0.0", "hp-300", 1), expect="refuse", reason="below this device's floor 2"),
    "a release that failed its boot check here is not retried": Case(
        "2.1.0", [desc("2.1.0", 2)], failed_here={"2.1.0": "watchdog"}, expect="stay",
        reason="failed its boot check here"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_next_step(case: Case) -> None:
    releases = {d.version: d for d in case.releases}
    step = next_step(case.target, model="t9-engine", hardware_revision=case.hw, variant=case.variant,
                     active=case.active, previous=case.previous, floor=case.floor, bad=case.bad,
                     failed_here=case.failed_here, lookup=releases.get)
    if case.expect == "install":
        assert isinstance(step, Install), step
        assert step.descriptor.version == case.installs
        assert step.target == case.target
    elif case.expect == "stay":
        assert isinstance(step, Stay), step
        assert case.reason in step.reason
    else:
        assert isinstance(step, Refuse), step
        assert case.reason in step.reason


def test_descriptor_model_mismatch_is_refused() -> None:
    other = ReleaseDescriptor("x9-pump", "2.1.0", 2, {"revA": FileRef("f", 1, SHA)}, {"hp-300": FileRef("c", 1, SHA)},
                              ("*",), None)
    step = next_step("2.1.0", model="t9-engine", hardware_revision="revA", variant="hp-300",
                     active=Installed("2.0.0", "hp-300", 1), previous=None, floor=1, bad=frozenset(),
                     failed_here={}, lookup={"2.1.0": other}.get)
    assert isinstance(step, Refuse) and "describes x9-pump/2.1.0" in step.reason


# ------------------------------------------------------------------------------------ documents
def test_policy_as_published_by_the_controller_parses() -> None:
    doc = {"schema": "otactl/rollout-policy/1", "model": "t9-engine", "rollout_id": "r", "salt": "1a2b",
           "policy_version": 4, "baseline": "2.0.0",
           "rings": [{"name": "lab", "selector": {"tags": ["lab"]}, "release": "2.1.0"},
                     {"name": "canary", "selector": {"percent": "2.5"}, "release": "2.1.0"}],
           "bad_releases": ["1.9.9"], "min_security_version": 2}
    p = RolloutPolicy.from_bytes(json.dumps(doc).encode(), "rollouts/t9-engine.json")
    assert p.rings[1].percent == Decimal("2.5") and p.bad_releases == {"1.9.9"} and p.min_security_version == 2


@pytest.mark.parametrize(("change", "message"), [
    ({"schema": "otactl/rollout-policy/2"}, "is not supported"),
    ({"schema": "otactl/release/1"}, "not a otactl/rollout-policy/1 document"),
    ({"baseline": "latest"}, "is not a version"),
    ({"rings": [{"name": "x", "selector": {"percent": "lots"}, "release": "2.1.0"}]}, "decimal string"),
    ({"rings": [{"name": "x", "selector": {"percent": "0"}, "release": "2.1.0"}]}, "percent must be in (0, 100]"),
    ({"rings": [{"name": "x", "selector": {}, "release": "2.1.0"}]}, "either tags or a percent"),
    ({"rings": [{"name": "early ring", "selector": {"percent": "5"}, "release": "2.1.0"}]}, "is not a ring name"),
])
def test_malformed_policies_are_refused_with_the_field(change: dict[str, object], message: str) -> None:
    from otactl.errors import VerificationError

    doc = {"schema": "otactl/rollout-policy/1", "model": "t9-engine", "salt": "s", "baseline": "2.0.0", "rings": []}
    doc.update(change)
    with pytest.raises(VerificationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RolloutPolicy.from_bytes(json.dumps(doc).encode(), "rollouts/t9-engine.json")
