"""Canary plans: every bad input is a file here with the exact message it must produce."""

from __future__ import annotations

from pathlib import Path

import pytest

from otactl.errors import ExitCode, InputFileError
from otactl.rollout.plan import Metric, Missing, OnFailure, load_plan, parse_plan

HERE = Path(__file__).parent
ROOT = HERE.parents[2]

BAD = [
    ("approvals_duplicate_key", "{path}:9: rings.0.approvals.keys.1: duplicate key id 'rm-a'"),
    ("approvals_too_many", "{path}:9: rings.0.approvals.required: must be an integer from 1 to 2"),
    ("bad_budget", "{path}:3: false_rollback_budget: must be between 0 and 1 (exclusive)"),
    ("bad_on_failure",
     "{path}:9: rings.0.on_failure: must be one of: rollback, pause (got 'ignore')"),
    ("bad_strata",
     "{path}:3: strata.1: unknown dimension 'colour' (allowed: model, variant, region)"),
    ("both_selectors", "{path}:5: rings.0.selector: needs exactly one of 'tags' or 'percent'"),
    ("decreasing_percent", "{path}:11: rings.1.selector.percent: percentages are cumulative and "
                           "must increase: 5 after 10"),
    ("detect_below_margin",
     "{path}:9: rings.0.gates.0.detect_ratio: must be greater than max_ratio"),
    ("duplicate_metric", "{path}:10: rings.0.gates.1.metric: metric 'crash_rate' gated twice"),
    ("duplicate_ring_name", "{path}:5: rings.1.name: duplicate ring name 'a'"),
    ("empty_tags", "{path}:4: rings.0.selector.tags: must be a non-empty list of tags"),
    ("equal_percent", "{path}:5: rings.1.selector.percent: percentages are cumulative and must "
                      "increase: 100 after 100"),
    ("gate_bad_missing",
     "{path}:9: rings.0.gates.0.missing: must be one of: wait, fail (got 'ignore')"),
    ("gate_without_comparison",
     "{path}:9: rings.0.gates.0: needs max_ratio (vs control), limit (absolute) or both"),
    ("gate_without_missing", "{path}:9: rings.0.gates.0: missing required key 'missing'"),
    ("last_not_100", "{path}:5: rings.1: the last ring must select 100 percent of the fleet"),
    ("limit_above_one", "{path}:9: rings.0.gates.0.limit: must be a rate above 0 and below 1"),
    ("missing_ring_key", "{path}:4: rings.0: missing required key 'min_reporting_devices'"),
    ("negative_soak", "{path}:4: rings.0.soak_device_hours: must not be negative"),
    ("no_rings", "{path}:3: rings: must be a non-empty list of rings"),
    ("not_yaml", "{path}:3: not valid YAML: expected ',' or ']', but got '<stream end>'"),
    ("ratio_below_one",
     "{path}:9: rings.0.gates.0.max_ratio: must be at least 1 (a ratio to control)"),
    ("string_soak", "{path}:4: rings.0.soak_device_hours: must be a number, got '2 days'"),
    ("tag_ring_after_percent",
     "{path}:5: rings.1.selector: a tag ring must come before the percentage rings"),
    ("unknown_metric", "{path}:9: rings.0.gates.0.metric: must be one of: install_failure_rate, "
                       "crash_rate, crash_hour_rate (got 'reboot_rate')"),
    ("unknown_ring_key", "{path}:6: rings.0.soak_hours: unknown key (allowed: approvals, gates, "
                         "install_windows, late_soak, min_reporting_devices, name, on_failure, "
                         "preconditions, selector, soak_device_hours)"),
    ("unknown_top_key", "{path}:3: colour: unknown key (allowed: false_rollback_budget, "
                        "harm_confidence, install_windows, name, preconditions, region_timezones, "
                        "rings, salt, schema, strata)"),
    ("window_bad_cron", "{path}:4: install_windows.0.cron: '0 25 * * *' is not a valid cron expression"),
    ("window_six_fields", "{path}:4: install_windows.0.cron: must be a cron expression of five fields "
                          "(minute hour day month weekday), got '0 0 2 * * *'"),
    ("window_bad_timezone", "{path}:8: rings.0.install_windows.0.timezone: unknown time zone "
                            "'Europe/Atlantis' (an IANA name like Europe/Berlin)"),
    ("window_zero_duration", "{path}:4: install_windows.0.duration_minutes: must be a whole number of "
                             "minutes from 1 to 10080"),
    ("precondition_unknown", "{path}:3: preconditions.1: unknown precondition 'doors_closed' (known: "
                             "engine_off, not_in_operation, battery_min: <percent>)"),
    ("precondition_battery_range", "{path}:3: preconditions.0.battery_min: must be a whole percentage "
                                   "from 0 to 100"),
    ("region_timezone_bad", "{path}:3: region_timezones.eu-west: unknown time zone 'Berlin' (an IANA "
                            "name like Europe/Berlin)"),
    ("wrong_schema", "{path}:1: schema: unsupported schema 'otactl/canary-plan/2' (expected "
                     "'otactl/canary-plan/1')"),
    ("zero_min_devices", "{path}:4: rings.0.min_reporting_devices: must be a positive integer"),
    ("zero_percent",
     "{path}:4: rings.0.selector.percent: must be greater than 0 and at most 100"),
    ("retired_metric", "{path}:9: rings.0.gates.0.metric: 'crashing_device_rate' was retired; "
     "use crash_hour_rate (window-additive crash-hours replace cumulative crashing devices, "
     "docs/decisions/0105-window-additive-counts.md)"),
    ("late_soak_bad_age", "{path}:8: rings.0.late_soak.after_hours: must be one of 12, 24, 48, "
     "72 (the ages telemetry counts)"),
    ("late_soak_unknown_key", "{path}:8: rings.0.late_soak.hours: unknown key (allowed: "
     "after_hours, device_hours, devices)"),
    ("harm_below_margin", "{path}:9: rings.0.gates.0.harm_ratio: must be greater than "
     "max_ratio and 1"),
    ("bad_harm_confidence", "{path}:3: harm_confidence: must be at least 0.5 and below 1"),
]


@pytest.mark.parametrize(("name", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_plan_is_refused_with_file_line_and_field(name: str, message: str) -> None:
    path = HERE / "bad_plans" / f"{name}.yaml"
    with pytest.raises(InputFileError) as err:
        load_plan(path)
    assert str(err.value) == message.format(path=path)
    assert err.value.exit_code is ExitCode.USAGE


def test_every_bad_plan_file_has_a_case() -> None:
    files = {p.stem for p in (HERE / "bad_plans").glob("*.yaml")}
    assert files == {name for name, _ in BAD}


@pytest.mark.parametrize("path", sorted((ROOT / "canary").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_plan_loads(path: Path) -> None:
    plan = load_plan(path)
    assert plan.rings[-1].selector.percent == 100.0
    assert all(g.missing in (Missing.WAIT, Missing.FAIL) for r in plan.rings for g in r.gates)


def test_default_plan_reads_into_typed_values() -> None:
    plan = load_plan(ROOT / "canary" / "default.yaml")
    assert [r.name for r in plan.rings] == ["lab", "canary", "early", "half", "all"]
    assert plan.rings[0].selector.tags == ("lab",)
    assert [r.selector.percent for r in plan.rings[1:]] == [3.0, 20.0, 50.0, 100.0]
    assert plan.strata == ("model", "variant", "region")
    canary = plan.rings[1]
    assert {g.metric for g in canary.gates} == set(Metric)
    assert canary.on_failure is OnFailure.ROLLBACK
    early = plan.rings[2]
    assert early.approvals is not None and early.approvals.required == 1
    assert early.late_soak is not None and early.late_soak.after_hours == 24
    assert plan.harm_confidence == 0.95 and canary.gates[1].harm == canary.gates[1].detect_ratio
    # one e-process per distinct test, however many rings repeat it
    assert plan.test_keys() == ["install_failure_rate|limit|0.2", "install_failure_rate|control|1.3",
                                "crash_rate|control|1.3", "crash_hour_rate|control|1.3"]
    assert plan.test_alpha == pytest.approx(0.01 / 4)


def test_missing_file_is_an_input_error() -> None:
    with pytest.raises(InputFileError, match="file not found"):
        load_plan(HERE / "bad_plans" / "does-not-exist.yaml")


def test_defaults_when_optional_keys_are_absent() -> None:
    plan = parse_plan("schema: otactl/canary-plan/1\nname: p\nrings:\n"
                      "  - {name: all, selector: {percent: 100}, soak_device_hours: 0,"
                      " min_reporting_devices: 1, gates: []}\n")
    assert plan.salt is None and plan.false_rollback_budget == 0.01
    assert plan.rings[0].on_failure is OnFailure.ROLLBACK and plan.rings[0].approvals is None
