"""End to end: full-fidelity device agents (python-tuf ngclient over HTTP on 127.0.0.1, signed
reports to the embedded ingest) under the real rollout controller reading SQLite telemetry."""

from __future__ import annotations

from pathlib import Path

import pytest

from otactl.app.context import Context
from otactl.audit import log as audit
from otactl.keys.keyfile import public_key
from otactl.sim.controlled import ControlledSimulation, Hooks
from otactl.sim.scenario import load_scenario

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).parent
APPROVAL_PLAN = (ROOT / "canary" / "demo.yaml").read_text().replace(
    "  - name: half\n", "    approvals: {required: 1, keys: [release-manager]}\n  - name: half\n", 1)


@pytest.fixture(autouse=True)
def passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", "e2e-test-passphrase")


def simulate(tmp_path: Path, scenario: Path, plan: Path, releases: list[str], baseline: str = "2.0.0",
             **kw) -> ControlledSimulation:
    sim = ControlledSimulation(load_scenario(scenario), tmp_path / "sim", plan=plan, releases=releases,
                               baseline=baseline, **kw)
    try:
        sim.run()
    finally:
        sim.close()
    return sim


def audit_report(sim: ControlledSimulation) -> audit.VerifyReport:
    assert sim.workspace_path is not None
    ctx = Context.open(sim.workspace_path)

    def key_for(keyid: str):
        entry = ctx.trust.key_by_id(keyid)
        return None if entry is None else public_key(entry.public)

    return audit.verify(ctx.store, "t9-engine", key_for)


def installed(sim: ControlledSimulation) -> dict[str, int]:
    out: dict[str, int] = {}
    for agent in sim.agents.values():
        m = agent.installed()
        key = "none" if m is None else m.version
        out[key] = out.get(key, 0) + 1
    return out


def test_good_release_completes_and_bad_release_is_rolled_back_at_canary(tmp_path: Path) -> None:
    sim = simulate(tmp_path, ROOT / "examples/scenarios/t9-demo-rollouts.yaml", ROOT / "canary/demo.yaml",
                   ["2.1.0", "2.2.0"])
    good, bad = sim.rollouts
    assert (good.status, good.final_ring) == ("complete", "all")
    assert [s.ring for s in good.steps if s.action == "advance"] == ["canary", "half", "all"]
    assert (bad.status, bad.final_ring) == ("rolled_back", "canary")
    assert bad.exposed < 0.25 * len(sim.agents)  # stopped before the half ring
    # every device ends on the last known good release, none on the bad one
    versions = installed(sim)
    assert versions.get("2.2.0", 0) <= 0.02 * len(sim.agents)  # a device whose way back fails its boot stays
    assert versions.get("2.1.0", 0) >= 0.9 * len(sim.agents)
    report = audit_report(sim)
    assert report.entries >= 6 and "online" in report.actors


def test_regression_in_one_variant_is_rolled_back(tmp_path: Path) -> None:
    sim = simulate(tmp_path, HERE / "scenarios/variant-regression.yaml", ROOT / "canary/demo.yaml", ["2.2.0"],
                   baseline="2.1.0")
    (run,) = sim.rollouts
    assert run.status == "rolled_back" and run.final_ring != "all", run.steps
    reasons = " ".join(r for s in run.steps for r in s.reasons)
    assert "hp-500" in reasons  # the stratum at fault is named in the evidence
    # every device went back to 2.1.0, except one whose simulated first boot of 2.1.0 fails (the
    # scenario's install_failure): it stays on the slot that boots
    assert installed(sim).get("2.2.0", 0) <= 0.02 * len(sim.agents)


def test_ring_waits_for_approval_and_a_paused_rollout_resumes(tmp_path: Path) -> None:
    plan = tmp_path / "approval.yaml"
    plan.write_text(APPROVAL_PLAN)
    sim = simulate(tmp_path, ROOT / "examples/scenarios/t9-demo-rollouts.yaml", plan, ["2.1.0"],
                   hooks=Hooks(approve_with=("release-manager",), pause_at_round=2, resume_after_rounds=2))
    (run,) = sim.rollouts
    actions = [(s.action, s.status) for s in run.steps]
    assert ("pause", "paused") in actions  # a paused rollout holds ...
    assert run.status == "complete"  # ... and finishes once resumed
    assert any(a == "await_approval" for a, _ in actions)
    entries = audit.entries(Context.open(sim.workspace_path).store, "t9-engine")
    assert [e.actor for e in entries if e.action == "approve"] == ["release-manager"]
    assert {"pause", "advance", "complete"} <= {e.action for e in entries}
    audit_report(sim)
