"""Scenario files: every example loads; malformed ones are refused with file, line and field; the
CLI runs both modes and its JSON is what the devices and the ingest did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.repo import cli_env, ok, run_otactl
from sim_fixtures import PASSPHRASE, SCENARIOS

from otactl.errors import InputFileError
from otactl.sim.fleetgen import allocate, generate_fleet
from otactl.sim.scenario import load_scenario

BAD = Path(__file__).parent / "bad_scenarios"
EXAMPLES = sorted(SCENARIOS.glob("*.yaml"))
BAD_FILES = sorted(BAD.glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_scenario_loads(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.rollout.schedule and scenario.releases
    assert path.name in (SCENARIOS / "README.md").read_text()


def test_the_examples_cover_both_modes_and_a_variant_only_regression() -> None:
    scenarios = [load_scenario(p) for p in EXAMPLES]
    assert {s.mode for s in scenarios} == {"full", "model"}
    assert any(r.variant_effects for s in scenarios for r in s.releases)


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.name for p in BAD_FILES])
def test_malformed_scenarios_name_file_line_and_field(path: Path) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(InputFileError) as info:
        load_scenario(path)
    assert expected in str(info.value), str(info.value)


def test_composition_is_exact_and_the_fleet_is_reproducible() -> None:
    assert sorted(allocate(7, (("a", 1), ("b", 1), ("c", 1)))) == ["a", "a", "a", "b", "b", "c", "c"]
    scenario = load_scenario(SCENARIOS / "t9-canary-regression.yaml")
    fleet = generate_fleet(scenario)
    assert [d.record for d in fleet] == [d.record for d in generate_fleet(scenario)]
    variants = [d.record.variant for d in fleet]
    assert (variants.count("hp-300"), variants.count("hp-400"), variants.count("hp-500")) == (60, 36, 24)
    assert sum("lab" in d.record.tags for d in fleet) == 6
    assert all(bytes(d.signing_key().verify_key).hex() == d.record.public_key for d in fleet)


@pytest.mark.integration
def test_sim_run_cli_full_mode_json(published: Path, tmp_path: Path) -> None:
    env = cli_env(PASSPHRASE)
    result = ok(run_otactl("sim", "run", str(SCENARIOS / "t9-canary-regression.yaml"), "--devices", "12",
                           "--work-dir", str(tmp_path / "sim"), "--workspace", str(published), "--output", "json",
                           cwd=tmp_path, env=env, timeout=300))
    doc = json.loads(result.stdout)
    assert doc["schema"] == "otactl/sim-result/1" and doc["mode"] == "full" and doc["devices"] == 12
    assert len(doc["rounds"]) == 6 and doc["rounds"][1]["policy"] == "2.1.0 on lab"
    reports = doc["reports"]
    assert reports["signed"] == reports["accepted"] == doc["ingest"]["reports"] > 0
    assert reports["pending"] == reports["refused"] == 0
    assert sum(n for by in doc["running"].values() for n in by.values()) == 12
    assert (tmp_path / "sim" / "telemetry.db").is_file() and (tmp_path / "sim" / "devices.json").is_file()
    assert "round 0" in result.stderr  # progress goes to stderr, the result to stdout


def test_sim_run_cli_model_mode_catches_the_variant_only_regression(tmp_path: Path) -> None:
    result = ok(run_otactl("sim", "run", str(SCENARIOS / "t9-fleet-model.yaml"), "--devices", "30000",
                           "--output", "json", cwd=tmp_path, timeout=300))
    doc = json.loads(result.stdout)
    assert (doc["mode"], doc["new_release"], doc["old_release"]) == ("model", "2.1.0", "2.0.0")
    assert doc["rounds"][-1]["offered"] > doc["rounds"][1]["offered"] > 0

    def ratio(variant: str) -> float:
        ring = [s["ring"] for k, s in doc["strata"].items() if f"/{variant}/" in k]
        control = [s["control"] for k, s in doc["strata"].items() if f"/{variant}/" in k]
        r = sum(c["crashes"] for c in ring) / sum(c["device_hours"] for c in ring)
        c = sum(c["crashes"] for c in control) / sum(c["device_hours"] for c in control)
        return r / c

    assert ratio("hp-500") > 2 * ratio("hp-300")  # true effect: 3x on hp-500 only


def test_sim_run_refuses_a_malformed_scenario_with_one_line(tmp_path: Path) -> None:
    result = run_otactl("sim", "run", str(BAD / "unknown-key.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "fleet.colour: unknown key" in result.stderr and "Traceback" not in result.stderr


def test_model_mode_refuses_what_the_model_cannot_follow() -> None:
    import dataclasses

    from otactl.errors import UsageError
    from otactl.sim.model import run_model
    from otactl.sim.scenario import PolicyStep

    scenario = load_scenario(SCENARIOS / "t9-fleet-model.yaml")
    rollback = PolicyStep(8, "2.0.0", "2.0.0", None, ("2.1.0",))
    moved_back = dataclasses.replace(scenario, rollout=dataclasses.replace(
        scenario.rollout, schedule=(*scenario.rollout.schedule, rollback)))
    with pytest.raises(UsageError, match="cannot move rings back"):
        run_model(moved_back)
    nothing_new = dataclasses.replace(scenario, rollout=dataclasses.replace(
        scenario.rollout, schedule=scenario.rollout.schedule[:1]))
    with pytest.raises(UsageError, match="needs a step that moves rings to a new release"):
        run_model(nothing_new)
