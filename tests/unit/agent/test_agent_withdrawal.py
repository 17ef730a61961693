"""The agent refuses a release the release managers withdrew (signed ``withdrawals`` metadata),
whatever the rollout policy says; one withdrawn while the device tries it is not committed."""

from __future__ import annotations

from pathlib import Path

from agent_fixtures import MODEL, Repo
from test_agent_update import NOW, events, reports, slot_summary

from otactl.agent import decide
from otactl.agent.health import BootVerdict, integrity_check
from otactl.agent.model import ReleaseDescriptor, SlotManifest
from otactl.app import withdraw


def _withdraw(repo: Repo, version: str, reason: str = "bricks units on cold boot") -> None:
    assert withdraw.withdraw(repo.ws._fresh(), version, reason, "release-manager").status == "withdrawn"


def test_a_policy_pointing_at_a_withdrawn_release_is_refused_and_reported(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-400")
    assert agent.check_and_update(NOW).outcome == "committed"
    _withdraw(repo, "2.1.0")
    repo.all_on("2.1.0")  # signed by the online key, as the controller (or whoever holds it) would
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active, result.target) == ("refused", "2.0.0", "2.1.0")
    assert "withdrawn by the release managers (bricks units on cold boot)" in result.detail
    failed = [r for r in reports(agent) if r.get("event") == "failed"]
    assert [(r["release"], "withdrawn" in r["reason"]) for r in failed] == [("2.1.0", True)]
    assert agent.device.manifest("b") is None  # nothing downloaded into the other slot
    assert agent.check_and_update(NOW).outcome == "refused"
    assert len([r for r in reports(agent) if r.get("event") == "failed"]) == 1  # reported once


def test_a_device_running_a_release_when_it_is_withdrawn_keeps_it_until_a_policy_moves_it(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-400")
    agent.check_and_update(NOW)
    repo.all_on("2.1.0")
    assert agent.check_and_update(NOW).outcome == "committed"
    _withdraw(repo, "2.1.0")
    stay = agent.check_and_update(NOW)
    assert (stay.outcome, stay.active) == ("stayed", "2.1.0")
    assert "running 2.1.0, which is withdrawn" in stay.detail
    repo.all_on("2.0.0")  # back is below the security floor 2.1.0 raised: still refused (anti-rollback)
    assert "below this device's floor 2" in agent.check_and_update(NOW).detail
    repo.all_on("2.2.0")  # the way off a withdrawn release is forward
    assert agent.check_and_update(NOW).outcome == "committed"
    assert agent.installed().version == "2.2.0"  # type: ignore[union-attr]


def test_a_release_withdrawn_while_the_device_tries_it_is_not_committed(repo: Repo) -> None:
    def withdrawn_during_boot(slot_dir: Path, manifest: SlotManifest) -> BootVerdict:
        if manifest.version == "2.1.0":
            _withdraw(repo, "2.1.0", "withdrawn mid-rollout")
        return integrity_check(slot_dir, manifest)

    repo.all_on("2.0.0")
    agent = repo.agent("dev-400", boot_check=withdrawn_during_boot)
    agent.check_and_update(NOW)
    repo.all_on("2.1.0")
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active) == ("reverted", "2.0.0")
    assert "not committed: 2.1.0 was withdrawn while this device tried it (withdrawn mid-rollout)" in result.detail
    assert events(agent)[-2:] == [("booted", "2.1.0"), ("reverted", "2.1.0")]
    assert slot_summary(agent) == {"a": ("2.0.0", "hp-400"), "b": None, "active": "a", "floor": 1}
    assert agent.device.load_state().failed_here == {}  # it did not fail its boot check
    assert agent.check_and_update(NOW).outcome == "refused"


def test_a_withdrawn_stepping_stone_blocks_the_path_through_it(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-400")
    agent.check_and_update(NOW)
    _withdraw(repo, "2.1.0")
    repo.all_on("2.2.0")  # 2.2.0 requires 2.1.0 first
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active) == ("refused", "2.0.0")
    assert "2.1.0 (stepping stone to 2.2.0) is withdrawn" in result.detail


def test_next_step_asks_about_withdrawal_before_anything_else() -> None:
    desc = ReleaseDescriptor(MODEL, "2.1.0", 2, {}, {}, ("*",), None)  # no image: would refuse otherwise
    step = decide.next_step("2.1.0", model=MODEL, hardware_revision="revB", variant="hp-400", active=None,
                            previous=None, floor=0, bad=frozenset(), failed_here={}, lookup=lambda v: desc,
                            withdrawn=lambda v: "recalled" if v == "2.1.0" else None)
    assert isinstance(step, decide.Refuse) and "withdrawn by the release managers (recalled)" in step.reason
