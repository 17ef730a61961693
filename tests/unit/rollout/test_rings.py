"""Ring assignment: the formula of docs/formats.md, and properties of it (hypothesis)."""

from __future__ import annotations

import hashlib
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from otactl.rollout.plan import Plan, RingName, RingSpec, Selector
from otactl.rollout.rings import DeviceId, DeviceInfo, bucket, plan_report, ring_of


def _ring(name: str, *, tags: tuple[str, ...] = (), percent: float | None = None) -> RingSpec:
    return RingSpec(RingName(name), Selector(tags=tags, percent=percent), 0.0, 1, ())


def _plan(*percents: float, lab: bool = True) -> Plan:
    rings = [_ring("lab", tags=("lab",))] if lab else []
    rings += [_ring(f"r{p:g}", percent=p) for p in percents]
    return Plan("p", tuple(rings))


def _device(i: int, *, tags: frozenset[str] = frozenset(), variant: str = "hp-300",
            region: str = "eu") -> DeviceInfo:
    return DeviceInfo(DeviceId(f"dev-{i:05d}"), "t9", variant, region, tags)


def test_bucket_is_the_documented_formula() -> None:
    digest = hashlib.sha256(b"1a2b3c:trk-0001").digest()
    assert bucket("1a2b3c", "trk-0001") == int.from_bytes(digest[:8], "big") / 2**64
    assert 0.0 <= bucket("s", "d") < 1.0


def test_tag_ring_wins_over_percentage_and_no_ring_means_baseline() -> None:
    plan = _plan(2.0, 100.0)
    lab = _device(1, tags=frozenset({"lab", "x"}))
    assert ring_of(plan.rings, "salt", lab) == 0
    partial = Plan("p", (_ring("r1", percent=1.0), _ring("r2", percent=2.0)))
    outside = [d for d in map(_device, range(500)) if bucket("salt", d.id) >= 0.02]
    assert outside and all(ring_of(partial.rings, "salt", d) is None for d in outside)


@settings(deadline=None)
@given(st.text(max_size=20), st.text(min_size=1, max_size=30))
def test_assignment_is_deterministic(salt: str, device_id: str) -> None:
    plan = _plan(2.0, 10.0, 50.0, 100.0)
    d = DeviceInfo(DeviceId(device_id), "m", "v", "r")
    assert ring_of(plan.rings, salt, d) == ring_of(plan.rings, salt, d)
    assert bucket(salt, device_id) == bucket(salt, device_id)


@settings(deadline=None)
@given(st.lists(st.floats(min_value=0.01, max_value=99.0), min_size=1, max_size=5, unique=True),
       st.floats(min_value=1.0, max_value=3.0), st.text(max_size=8), st.integers(0, 10**6))
def test_growing_percentages_never_move_a_device_to_a_later_ring(
        percents: list[float], grow: float, salt: str, n: int) -> None:
    small = sorted(percents)
    large = [min(p * grow, 99.5) for p in small]
    if any(b <= a for a, b in itertools.pairwise(large)):
        return  # growth merged two rings: not a valid plan
    d = _device(n)
    before = ring_of(_plan(*small, 100.0, lab=False).rings, salt, d)
    after = ring_of(_plan(*large, 100.0, lab=False).rings, salt, d)
    assert before is not None and after is not None
    assert after <= before


@settings(max_examples=10, deadline=None)
@given(st.text(min_size=1, max_size=8))
def test_proportions_are_close_to_the_percentages(salt: str) -> None:
    plan = _plan(2.0, 10.0, 50.0, 100.0, lab=False)
    n = 20_000
    counts = [0, 0, 0, 0]
    for i in range(n):
        r = ring_of(plan.rings, salt, _device(i))
        assert r is not None
        counts[r] += 1
    expected = [0.02, 0.08, 0.40, 0.50]
    for got, want in zip(counts, expected, strict=True):
        sd = (want * (1 - want) / n) ** 0.5
        assert abs(got / n - want) < 5 * sd


def test_plan_report_counts_rings_strata_and_first_gate_exposure() -> None:
    devices = [_device(i, variant=v, region=r) for i, (v, r) in enumerate(
        [(v, r) for v in ("hp-300", "hp-400") for r in ("eu", "us")] * 500)]
    devices.append(_device(99_999, tags=frozenset({"lab"})))
    rings = (_ring("lab", tags=("lab",)), _ring("canary", percent=2.0),
             RingSpec(RingName("all"), Selector(percent=100.0), 0.0, 1, ()))
    plan = Plan("p", rings)
    report = plan_report(plan, "s", devices)
    assert report.fleet_devices == 2001 and report.unassigned == 0
    assert [r.name for r in report.rings] == ["lab", "canary", "all"]
    assert report.rings[0].devices == 1 and report.rings[0].strata_present == 1
    assert report.rings[-1].cumulative == 2001 and report.rings[-1].strata_missing == ()
    assert report.rings[1].strata_present == 4  # 40 devices over 4 strata: all covered
    # no ring has gates here: the whole fleet is exposed before a gate can decide
    assert report.exposed_before_first_gate == 2001
    assert report.to_json() == plan_report(plan, "s", list(reversed(devices))).to_json()


def test_plan_warnings_name_what_can_never_work() -> None:
    from otactl.rollout.plan import Approvals, KeyId
    from otactl.rollout.rings import plan_warnings

    rings = (
        RingSpec(RingName("lab"), Selector(tags=("lab",)), 0.0, 1, ()),  # no device has the tag
        RingSpec(RingName("canary"), Selector(percent=10.0), 0.0, 500, ()),  # 500 of ~10 devices
        RingSpec(RingName("early"), Selector(percent=50.0), 0.0, 1, (),
                 Approvals(2, (KeyId("rm-alice"), KeyId("rm-ghost")))),  # one key unknown: never 2
        RingSpec(RingName("all"), Selector(percent=100.0), 0.0, 1, (),
                 Approvals(1, (KeyId("rm-alice"), KeyId("rm-ghost")))),  # unknown, but 1 is enough
    )
    plan = Plan("p", rings)
    devices = [_device(i) for i in range(100)]
    report = plan_report(plan, "salt", devices)
    warnings = plan_warnings(plan, report, ["rm-alice", "online"])
    assert warnings[0] == "ring 'lab' holds no device of this fleet"
    assert "ring 'lab' holds 0 devices but needs 1 reporting: it can never pass" in warnings
    assert any(w.startswith("ring 'canary' holds ") and "needs 500 reporting: it can never pass" in w
               for w in warnings)
    assert ("ring 'early': approval keys rm-ghost are not in the trust configuration (1 of the 2 needed "
            "remain) so it can never be approved") in warnings
    assert ("ring 'all': approval keys rm-ghost are not in the trust configuration (1 of the 1 needed "
            "remain)") in warnings
    assert len(warnings) == 5
    fine = Plan("ok", (RingSpec(RingName("all"), Selector(percent=100.0), 0.0, 1, ()),))
    assert plan_warnings(fine, plan_report(fine, "salt", devices), []) == []
