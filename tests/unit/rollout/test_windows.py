"""Install windows and preconditions (decision 1202): the pure window arithmetic, the install gate,
the plan's fields and their trip through the signed rollout policy to the agent's reader."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from otactl.agent import conditions
from otactl.agent.model import RolloutPolicy
from otactl.rollout.decide import ReleaseRef, RolloutState, next_policy
from otactl.rollout.plan import parse_plan
from otactl.rollout.windows import InstallRules, InstallWindow, PreconditionSpec, window_verdict

STATE = RolloutState("2.1.0", ring_index=1, ring_started=(datetime(2026, 12, 1, tzinfo=UTC),) * 2)
NIGHTLY = InstallWindow("0 2 * * *", 120, "device")
BERLIN = "Europe/Berlin"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("name", "now", "zone", "open_", "reason"), [
    # Berlin is UTC+1 in winter: the 02:00-04:00 local window is 01:00-03:00 UTC
    ("just before it opens", utc(2026, 12, 1, 0, 59, 59), BERLIN, False,
     "outside maintenance window until 02:00 Europe/Berlin"),
    ("the minute it opens", utc(2026, 12, 1, 1, 0, 0), BERLIN, True, "inside maintenance window '0 2 * * *' "
     "(Europe/Berlin)"),
    ("the last second inside", utc(2026, 12, 1, 2, 59, 59), BERLIN, True, "inside maintenance window "
     "'0 2 * * *' (Europe/Berlin)"),
    ("the second it closes", utc(2026, 12, 1, 3, 0, 0), BERLIN, False,
     "outside maintenance window until 2026-12-02 02:00 Europe/Berlin"),
    ("the same instant in UTC is outside", utc(2026, 12, 1, 1, 30), "UTC", False,
     "outside maintenance window until 02:00 UTC"),
    # summer: UTC+2, the window is 00:00-02:00 UTC
    ("summer time shifts it", utc(2026, 7, 1, 0, 30), BERLIN, True, "inside maintenance window '0 2 * * *' "
     "(Europe/Berlin)"),
    ("summer time, an hour later, still inside", utc(2026, 7, 1, 1, 59), BERLIN, True,
     "inside maintenance window '0 2 * * *' (Europe/Berlin)"),
    ("summer time, closed at 02:00 UTC", utc(2026, 7, 1, 2, 0), BERLIN, False,
     "outside maintenance window until 2026-07-02 02:00 Europe/Berlin"),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
def test_window_edges_in_the_device_zone(name: str, now: datetime, zone: str, open_: bool, reason: str) -> None:
    verdict = window_verdict([NIGHTLY], now, zone)
    assert (verdict.open, verdict.reason) == (open_, reason)


def test_a_window_at_a_local_time_that_dst_skips_opens_when_the_clocks_land() -> None:
    # 2026-03-29: Berlin jumps from 02:00 to 03:00; a 02:30 window opens at 03:00 local (01:00 UTC)
    w = InstallWindow("30 2 * * *", 60, BERLIN)
    assert not w.opened(utc(2026, 3, 29, 0, 59), "UTC")
    assert w.opened(utc(2026, 3, 29, 1, 0), "UTC") == utc(2026, 3, 29, 1, 0)
    assert w.opened(utc(2026, 3, 29, 1, 59), "UTC") is not None
    assert w.opened(utc(2026, 3, 29, 2, 0), "UTC") is None  # 60 real minutes, not "until 03:30 local"


def test_the_duration_is_real_time_across_the_autumn_change() -> None:
    # 2026-10-25: Berlin falls back at 03:00 CEST to 02:00 CET; a 01:00 window of 180 minutes opens at
    # 23:00 UTC and closes 3 real hours later (02:00 UTC), which is 03:00 CET, not 04:00
    w = InstallWindow("0 1 * * *", 180, BERLIN)
    assert w.opened(utc(2026, 10, 25, 1, 59), "UTC") == utc(2026, 10, 24, 23, 0)
    assert w.opened(utc(2026, 10, 25, 2, 0), "UTC") is None


def test_no_windows_is_always_open_and_any_open_window_is_enough() -> None:
    assert window_verdict([], utc(2026, 12, 1, 12), BERLIN).open
    lunch = InstallWindow("0 12 * * 1-5", 60, "UTC")
    now = utc(2026, 12, 1, 12, 30)  # a Tuesday
    assert window_verdict([NIGHTLY, lunch], now, BERLIN).open
    later = window_verdict([NIGHTLY, lunch], utc(2026, 12, 1, 14), BERLIN)
    assert later.reason == "outside maintenance window until 2026-12-02 02:00 Europe/Berlin"


def test_naive_times_and_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        window_verdict([NIGHTLY], datetime(2026, 12, 1), BERLIN)
    for bad in (("0 2 * *", 60, "UTC"), ("0 2 * * *", 0, "UTC"), ("0 2 * * *", 60, "Mars/Olympus")):
        with pytest.raises(ValueError):
            InstallWindow(*bad)


# ------------------------------------------------------------------------------ preconditions
def write(device_dir: Path, **readings: object) -> None:
    (device_dir / conditions.CONDITIONS_FILE).write_text(json.dumps(readings))


RULES = InstallRules((), (PreconditionSpec("engine_off"), PreconditionSpec("battery_min", 40),
                          PreconditionSpec("not_in_operation")))


@pytest.mark.parametrize(("name", "readings", "reason"), [
    ("all met", {"engine_running": False, "battery_percent": 40, "in_operation": False}, None),
    ("engine running", {"engine_running": True, "battery_percent": 80, "in_operation": False},
     "precondition engine_off: engine running"),
    ("battery low", {"engine_running": False, "battery_percent": 23, "in_operation": False},
     "precondition battery_min: 23% < 40%"),
    ("in operation and low", {"engine_running": False, "battery_percent": 10, "in_operation": True},
     "precondition battery_min: 10% < 40%; precondition not_in_operation: in operation"),
    ("a missing reading is not met", {"engine_running": False, "in_operation": False},
     "precondition battery_min: no battery_percent reading"),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
def test_the_install_gate_names_every_unmet_precondition(tmp_path: Path, name: str, readings: dict[str, object],
                                                         reason: str | None) -> None:
    write(tmp_path, **readings)
    checks = conditions.build(RULES.preconditions, tmp_path)
    assert conditions.install_gate(RULES, checks, utc(2026, 12, 1, 12), "UTC") == reason


def test_no_conditions_file_an_unknown_check_and_a_crashing_one_are_not_met(tmp_path: Path) -> None:
    rules = InstallRules((NIGHTLY,), (PreconditionSpec("engine_off"), PreconditionSpec("doors_closed")))
    checks = conditions.build(rules.preconditions, tmp_path)
    assert conditions.install_gate(rules, checks, utc(2026, 12, 1, 12), BERLIN) == (
        "outside maintenance window until 2026-12-02 02:00 Europe/Berlin; precondition engine_off: no readings "
        "(conditions.json missing); precondition doors_closed: this agent has no check for it")

    class Crashing:
        name = "doors_closed"

        def check(self, now: datetime) -> conditions.ConditionVerdict:
            raise RuntimeError("bus error")

    crashing = conditions.build(rules.preconditions[1:], tmp_path, {"doors_closed": lambda spec, d: Crashing()})
    assert conditions.install_gate(InstallRules(), crashing, utc(2026, 12, 1, 12), "UTC") == (
        "precondition doors_closed: check crashed (RuntimeError)")


# ------------------------------------------------------------------------------ plan -> policy -> agent
PLAN = """\
schema: otactl/canary-plan/1
name: windows
region_timezones: {eu: Europe/Berlin}
install_windows:
  - {cron: "0 2 * * *", duration_minutes: 120, timezone: device}
preconditions: [engine_off, battery_min: 40]
rings:
  - {name: lab, selector: {tags: [lab]}, soak_device_hours: 0, min_reporting_devices: 1, gates: [],
     install_windows: [], preconditions: []}
  - {name: all, selector: {percent: 100}, soak_device_hours: 0, min_reporting_devices: 1, gates: []}
"""


def test_plan_windows_reach_the_agent_through_the_signed_policy_document() -> None:
    plan = parse_plan(PLAN, "canary/windows.yaml")
    assert plan.install_rules(plan.rings[0]) == InstallRules()  # the lab ring installs at once
    assert plan.install_rules(plan.rings[1]) == InstallRules(
        (NIGHTLY,), (PreconditionSpec("engine_off"), PreconditionSpec("battery_min", 40)))
    doc = next_policy(plan, STATE, model="t9-engine", rollout_id="r1", salt="s",
                      release=ReleaseRef("2.1.0", 1), last_good=ReleaseRef("2.0.0", 1), previous=None)
    assert doc["rings"][1]["install_windows"] == [{"cron": "0 2 * * *", "duration_minutes": 120,
                                                   "timezone": "device"}]
    assert doc["rings"][1]["preconditions"] == ["engine_off", {"battery_min": 40}]
    assert "install_windows" not in doc["rings"][0] and doc["region_timezones"] == {"eu": BERLIN}
    policy = RolloutPolicy.from_bytes(json.dumps({**doc, "rings": [
        {**r, "selector": {k: str(v) if k == "percent" else v for k, v in r["selector"].items()}}
        for r in doc["rings"]]}).encode(), "rollouts/t9-engine.json")
    assert policy.rings[1].install == plan.install_rules(plan.rings[1])
    assert policy.rings[0].install == InstallRules()
    assert policy.device_zone("eu") == BERLIN and policy.device_zone("us") == "UTC"


def test_a_plan_without_windows_publishes_the_policy_it_did_before() -> None:
    plan = parse_plan(PLAN.split("region_timezones")[0] + "rings:" + PLAN.split("rings:")[1]
                      .replace("\n     install_windows: [], preconditions: []", ""), "p.yaml")
    doc = next_policy(plan, STATE, model="t9-engine", rollout_id="r1", salt="s",
                      release=ReleaseRef("2.1.0", 1), last_good=ReleaseRef("2.0.0", 1), previous=None)
    assert all(set(r) == {"name", "selector", "release"} for r in doc["rings"])
    assert "region_timezones" not in doc


def test_the_agent_reader_refuses_a_policy_with_a_bad_window() -> None:
    from otactl.errors import VerificationError

    doc = {"schema": "otactl/rollout-policy/1", "model": "t9-engine", "salt": "s", "policy_version": 1,
           "baseline": "2.0.0", "rings": [{"name": "all", "selector": {"percent": "100"}, "release": "2.1.0",
                                           "install_windows": [{"cron": "every night", "duration_minutes": 60}]}]}
    with pytest.raises(VerificationError, match="five fields"):
        RolloutPolicy.from_bytes(json.dumps(doc).encode(), "rollouts/t9-engine.json")


def test_times_step_minute_by_minute_through_a_window_open_exactly_duration() -> None:
    start = utc(2026, 12, 1, 0, 30)
    opened = [t for t in (start + timedelta(minutes=m) for m in range(200))
              if window_verdict([NIGHTLY], t, BERLIN).open]
    assert opened[0] == utc(2026, 12, 1, 1, 0) and len(opened) == 120
