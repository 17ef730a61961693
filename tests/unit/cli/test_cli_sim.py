"""`otactl sim`'s output: tables and explicit JSON, never a Python dict's repr (issue 11)."""

from __future__ import annotations

import json

import pytest

from otactl.cli import sim as sim_cli
from otactl.errors import ExitCode, GateFailedError, WaitingError
from otactl.sim.controlled import ControllerStep, RolloutRun
from otactl.sim.full import outcome_text


def runs() -> list[RolloutRun]:
    good = RolloutRun("2.1.0", "2.0.0", "t9-engine-2.1.0-aa", status="complete", final_ring="all", rounds=2,
                      exposed=12)
    good.steps += [ControllerStep(1, "hold", "running", "canary", ("soak 24 of 30 device-hours",)),
                   ControllerStep(2, "complete", "complete", "all", ("last ring 'all' passed", "second"))]
    bad = RolloutRun("2.2.0", "2.1.0", "t9-engine-2.2.0-bb", status="rolled_back", final_ring="canary", rounds=1,
                     exposed=3)
    bad.steps.append(ControllerStep(5, "rollback", "rolled_back", "canary", ()))
    return [good, bad]


def test_outcomes_read_as_words_not_a_dict() -> None:
    assert outcome_text({"stayed": 9, "committed": 3}) == "committed 3, stayed 9"
    assert outcome_text({}) == "-"


def test_rollouts_render_as_two_tables_one_row_per_decision(capsys: pytest.CaptureFixture[str]) -> None:
    sim_cli.render_rollouts(runs())
    out, err = capsys.readouterr()
    first, second = out.split("\n\n")
    assert first.splitlines() == [
        "release\tfrom\trollout\tstatus\tring\trounds\tdevices that ran it",
        "2.1.0\t2.0.0\tt9-engine-2.1.0-aa\tcomplete\tall\t2\t12",
        "2.2.0\t2.1.0\tt9-engine-2.2.0-bb\trolled_back\tcanary\t1\t3"]
    assert second.splitlines() == [
        "round\trelease\taction\tstatus\tring\treasons",
        "1\t2.1.0\thold\trunning\tcanary\tsoak 24 of 30 device-hours",
        "2\t2.1.0\tcomplete\tcomplete\tall\tlast ring 'all' passed; second",
        "5\t2.2.0\trollback\trolled_back\tcanary\t-"]
    assert err.splitlines() == ["rollouts", "controller decisions"]  # the titles, on stderr


def test_rollout_json_is_an_explicit_document() -> None:
    doc = json.loads(json.dumps(runs()[0].to_json()))
    assert doc == {
        "release": "2.1.0", "baseline": "2.0.0", "rollout_id": "t9-engine-2.1.0-aa", "status": "complete",
        "final_ring": "all", "rounds": 2, "exposed": 12,
        "steps": [{"round": 1, "action": "hold", "status": "running", "ring": "canary",
                   "reasons": ["soak 24 of 30 device-hours"]},
                  {"round": 2, "action": "complete", "status": "complete", "ring": "all",
                   "reasons": ["last ring 'all' passed", "second"]}]}


CASES = {
    "all complete": (["complete"], None, None),
    "rolled back": (["complete", "rolled_back"], GateFailedError, "rollout of 2.2.0 rolled back at ring 'canary'"),
    "still waiting": (["running"], WaitingError, "rollout of 2.1.0 still running at ring 'all' after 2 rounds"),
}


@pytest.mark.parametrize("statuses, error, message", CASES.values(), ids=CASES.keys())
def test_exit_codes_come_from_the_error_model(statuses: list[str], error: type | None, message: str | None) -> None:
    rollouts = runs()[:len(statuses)]
    for run, status in zip(rollouts, statuses, strict=True):
        run.status = status
    if error is None:
        sim_cli._exit(rollouts)
        return
    with pytest.raises(error) as raised:
        sim_cli._exit(rollouts)
    assert message in str(raised.value)
    assert raised.value.exit_code == (ExitCode.GATE_FAILED if error is GateFailedError else ExitCode.WAITING)
