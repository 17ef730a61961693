"""The agent against a real published repository (read through ngclient's store fetcher): A/B
install, commit and revert, the security floor, bad releases, pins, stepping stones, recovery."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import Repo, device_key

from otactl.agent.agent import Agent
from otactl.agent.health import BootVerdict, HealthSample, integrity_check
from otactl.agent.model import SlotManifest
from otactl.agent.state import DeviceState

NOW = datetime(2026, 11, 27, 19, 0, 0, tzinfo=UTC)


def reports(agent: Agent) -> list[dict[str, Any]]:
    return [json.loads(e["payload"]) for e in agent.outbox.log.outbox]


def events(agent: Agent) -> list[tuple[str, str]]:
    return [(r["event"], r["release"]) for r in reports(agent) if r["kind"] == "event"]


def slot_summary(agent: Agent) -> dict[str, Any]:
    d = agent.device
    return {s: (m.version, m.variant) if (m := d.manifest(s)) else None for s in ("a", "b")} | {
        "active": d.active().slot, "floor": d.load_state().security_floor}


def fail_on(version: str):
    def check(slot_dir: Path, manifest: SlotManifest) -> BootVerdict:
        if manifest.version == version:
            return BootVerdict(False, "kernel panic in init")
        return integrity_check(slot_dir, manifest)
    return check


def test_factory_device_installs_the_baseline_then_updates_into_the_other_slot(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-400")
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active, result.ring) == ("committed", "2.0.0", "all")
    assert slot_summary(agent) == {"a": ("2.0.0", "hp-400"), "b": None, "active": "a", "floor": 1}
    assert events(agent) == [(e, "2.0.0") for e in ("offered", "downloaded", "installed", "booted", "committed")]
    assert [r["seq"] for r in reports(agent)] == [1, 2, 3, 4, 5]
    config = json.loads((agent.device.slot_dir("a") / "config.json").read_bytes())
    assert (config["variant"], config["version"], config["parameters"]["max_hp"]) == ("hp-400", "2.0.0", 400)

    repo.all_on("2.1.0")
    assert agent.check_and_update(NOW).outcome == "committed"
    assert slot_summary(agent) == {"a": ("2.0.0", "hp-400"), "b": ("2.1.0", "hp-400"), "active": "b", "floor": 2}
    assert agent.check_and_update(NOW).outcome == "stayed"
    assert len(events(agent)) == 10  # nothing more reported for a device that stays


def test_an_image_that_fails_its_boot_check_is_reverted_by_the_device(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-300", boot_check=fail_on("2.1.0"))
    agent.check_and_update(NOW)
    repo.all_on("2.1.0")
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active) == ("reverted", "2.0.0")
    assert slot_summary(agent) == {"a": ("2.0.0", "hp-300"), "b": None, "active": "a", "floor": 1}
    last = reports(agent)[-1]
    assert (last["event"], last["release"]) == ("reverted", "2.1.0")
    assert "kernel panic" in last["reason"]
    assert [e for e, _ in events(agent)[5:]] == ["offered", "downloaded", "installed", "reverted"]
    # it does not try the same image again (no boot loop) and reports nothing more about it
    again = agent.check_and_update(NOW)
    assert again.outcome == "stayed" and "failed its boot check here" in again.detail
    assert len(events(agent)) == 9


def test_a_device_that_dies_during_its_trial_boot_reverts_on_the_next_start(repo: Repo) -> None:
    repo.all_on("2.0.0")
    path = repo.provision("dev-300")
    Agent(path, "store://", None, fetcher=repo.agent("dev-300")._fetcher).check_and_update(NOW)
    repo.all_on("2.1.0")

    def power_cut(slot_dir: Path, manifest: SlotManifest) -> BootVerdict:
        raise KeyboardInterrupt  # the process dies; nothing after this line runs

    dying = repo.agent("dev-300", boot_check=power_cut)
    with pytest.raises(KeyboardInterrupt):
        dying.check_and_update(NOW)
    assert DeviceState(path).active().trial
    restarted = repo.agent("dev-300")
    result = restarted.check_and_update(NOW)
    assert result.active == "2.0.0" and not restarted.device.active().trial
    assert ("reverted", "2.1.0") in events(restarted)
    assert restarted.device.load_state().failed_here == {"2.1.0": "interrupted during its trial boot"}


def test_never_below_the_security_floor_even_back_to_the_other_slot(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-300")
    agent.check_and_update(NOW)
    repo.all_on("2.1.0")
    agent.check_and_update(NOW)
    repo.publish([("all", {"percent": 100}, "2.0.0")])  # an online key moving devices back down
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active) == ("refused", "2.1.0")
    assert "security_version 1, below this device's floor 2" in result.detail
    assert reports(agent)[-1]["event"] == "failed" and reports(agent)[-1]["release"] == "2.0.0"
    before = len(reports(agent))
    agent.check_and_update(NOW)
    assert len(reports(agent)) == before  # a refusal is reported once


def test_the_policy_floor_counts_too(repo: Repo) -> None:
    repo.all_on("2.0.0", min_sv=2)
    agent = repo.agent("dev-300")
    result = agent.check_and_update(NOW)
    assert result.outcome == "refused" and result.active is None


def test_a_release_marked_bad_is_never_installed(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-300")
    agent.check_and_update(NOW)
    repo.all_on("2.1.0", bad=["2.1.0"])
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active) == ("stayed", "2.0.0") and "marked bad" in result.detail


def test_back_to_the_previous_slot_when_the_policy_rolls_back(repo: Repo) -> None:
    # 2.1.0 -> 2.2.0 (same security version); the rollback to 2.1.0 is allowed although 2.1.0's
    # compatible_from (2.0.*) does not name 2.2.0: the device goes back to what its other slot holds
    repo.all_on("2.1.0")
    agent = repo.agent("dev-400")
    agent.check_and_update(NOW)
    repo.all_on("2.2.0")
    assert agent.check_and_update(NOW).active == "2.2.0"
    repo.all_on("2.1.0", bad=["2.2.0"])
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active) == ("committed", "2.1.0")


def test_the_stepping_stone_is_installed_first_and_never_skipped(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-400")
    agent.check_and_update(NOW)
    repo.all_on("2.2.0")
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active, result.target) == ("committed", "2.2.0", "2.2.0")
    committed = [rel for ev, rel in events(agent) if ev == "committed"]
    assert committed == ["2.0.0", "2.1.0", "2.2.0"]
    offered = [r for r in reports(agent) if r["event"] == "offered"]
    assert offered[1]["release"] == "2.1.0" and offered[1]["reason"] == "stepping stone to 2.2.0"


def test_a_stone_that_fails_stops_the_walk(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-400", boot_check=fail_on("2.1.0"))
    agent.check_and_update(NOW)
    repo.all_on("2.2.0")
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active) == ("reverted", "2.0.0")
    assert not any(rel == "2.2.0" for _, rel in events(agent))
    assert agent.check_and_update(NOW).outcome == "refused"  # 2.2.0 needs 2.1.0, which failed here


def test_a_pin_in_the_record_wins(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-300")
    agent.check_and_update(NOW)
    repo.set_record("dev-300", pin="2.0.0")
    repo.all_on("2.1.0")
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active) == ("stayed", "2.0.0")
    repo.set_record("dev-300", pin=None)
    assert agent.check_and_update(NOW).active == "2.1.0"


def test_the_lab_ring_by_tag(repo: Repo) -> None:
    repo.publish([("lab", {"tags": ["lab"]}, "2.1.0"), ("all", {"percent": 100}, "2.0.0")])
    lab, field_device = repo.agent("dev-lab"), repo.agent("dev-300")
    assert (lab.check_and_update(NOW).active, field_device.check_and_update(NOW).active) == ("2.1.0", "2.0.0")
    assert {r["ring"] for r in reports(lab)} == {"lab"}


def test_a_variant_change_installs_the_new_configuration(repo: Repo) -> None:
    repo.all_on("2.1.0")
    agent = repo.agent("dev-300")
    agent.check_and_update(NOW)
    repo.set_record("dev-300", variant="hp-500")
    result = agent.check_and_update(NOW)
    assert result.outcome == "committed"
    assert slot_summary(agent) == {"a": ("2.1.0", "hp-300"), "b": ("2.1.0", "hp-500"), "active": "b", "floor": 2}


def test_only_its_own_variant_and_hardware_revision_are_downloaded(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-400")
    agent.check_and_update(NOW)
    cached = sorted(p.name for p in (agent.device.tuf_dir / "targets").iterdir())
    assert cached == ["devices%2Fdev-400.json", "entitlements%2Fsigners.json", "releases%2Ft9-engine%2F2.0.0.json",
                      "rollouts%2Ft9-engine.json"]
    slot = agent.device.slot_dir("a")
    m = agent.device.manifest("a")
    assert m is not None and m.config.target == "config/t9-engine/2.0.0/hp-400.json"
    assert m.firmware.target == "firmware/t9-engine/2.0.0/t9-revB-2.0.0.bin"
    assert sorted(p.name for p in slot.iterdir()) == ["config.json", "firmware.bin", "manifest.json", "release.json"]


def test_without_a_policy_a_device_stays(repo: Repo) -> None:
    agent = repo.agent("dev-300")
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active, result.target) == ("stayed", None, None)


def test_a_record_for_another_key_is_not_this_device(repo: Repo) -> None:
    repo.all_on("2.0.0")
    repo.provision("dev-300", key=device_key("someone-else"))
    agent = repo.agent("dev-300")
    result = agent.check_and_update(NOW)
    assert result.outcome == "error" and "does not describe this device" in result.detail
    assert agent.installed() is None


def test_a_tampered_slot_fails_the_boot_check(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-300")
    agent.check_and_update(NOW)
    slot = agent.device.slot_dir("a")
    manifest = agent.device.manifest("a")
    assert manifest is not None and integrity_check(slot, manifest).ok
    (slot / "config.json").write_bytes(b'{"max_hp": 900}')
    verdict = integrity_check(slot, manifest)
    assert not verdict.ok and "config.json" in str(verdict.reason)


def test_the_device_key_is_private(repo: Repo) -> None:
    path = repo.provision("dev-300")
    assert (path / "device.key").stat().st_mode & 0o777 == 0o600
    (path / "device.key").chmod(0o644)
    from otactl.errors import KeyAccessError

    with pytest.raises(KeyAccessError, match="mode 0600"):
        DeviceState(path).signing_key()


def test_health_reports_carry_the_probe_and_the_agents_own_errors(repo: Repo) -> None:
    def probe(active: SlotManifest, since: datetime | None, now: datetime) -> HealthSample:
        return HealthSample(3600, crashes=2, errors=1, metrics={"coolant_temp_c": "88.5"})

    repo.all_on("2.0.0")
    agent = repo.agent("dev-300", health_probe=probe)
    agent.check_and_update(NOW)
    agent._errors = 3  # e.g. failed refreshes since the last report
    assert agent.report_health(NOW)
    health = reports(agent)[-1]
    assert (health["kind"], health["release"], health["ring"]) == ("health", "2.0.0", "all")
    assert health["health"] == {"uptime_s": 3600, "crashes": 2, "errors": 4, "metrics": {"coolant_temp_c": "88.5"}}


def test_a_probe_sample_the_report_cannot_carry_is_an_error_not_a_crash(repo: Repo) -> None:
    def probe(active: SlotManifest, since: datetime | None, now: datetime) -> HealthSample:
        return HealthSample(3600, metrics={"temp": 71.5})  # type: ignore[dict-item] - floats are not canonical

    repo.all_on("2.0.0")
    agent = repo.agent("dev-300", health_probe=probe)
    agent.check_and_update(NOW)
    assert not agent.report_health(NOW)
    assert all(r["kind"] == "event" for r in reports(agent))


def test_metadata_the_tuf_client_refuses_is_an_error_and_nothing_changes(repo: Repo) -> None:
    repo.all_on("2.0.0")
    agent = repo.agent("dev-300")
    agent.check_and_update(NOW)
    repo.all_on("2.1.0")
    timestamp = repo.ws.path / "repository" / "metadata" / "timestamp.json"
    doc = json.loads(timestamp.read_bytes())
    doc["signed"]["version"] += 1  # changed after signing: the signature no longer verifies
    timestamp.write_text(json.dumps(doc))
    result = agent.check_and_update(NOW)
    assert (result.outcome, result.active) == ("error", "2.0.0")
    assert "refused by the TUF client" in result.detail
    assert [e for e, _ in events(agent)] == ["offered", "downloaded", "installed", "booted", "committed"]


def test_an_unreachable_repository_is_reported_as_such(repo: Repo, tmp_path: Path) -> None:
    path = repo.provision("dev-300")
    agent = Agent(path, "http://127.0.0.1:9", None)
    result = agent.check_and_update(NOW)
    agent.close()
    assert (result.outcome, result.active) == ("unreachable", None)
