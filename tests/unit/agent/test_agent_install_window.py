"""The agent's install gate (decision 1202), on the store fetcher: a ring's windows and preconditions
from the signed policy, download at once, install only when they allow; other rings unaffected."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent_fixtures import MODEL, Repo

from otactl.agent.conditions import CONDITIONS_FILE, ConditionVerdict
from otactl.app.policy import publish_policy
from otactl.rollout.windows import PreconditionSpec

NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # Berlin 13:00; the window is 02:00-04:00 Berlin
NIGHT = datetime(2026, 12, 2, 1, 30, tzinfo=UTC)  # Berlin 02:30: inside
RULES: dict[str, Any] = {"install_windows": [{"cron": "0 2 * * *", "duration_minutes": 120, "timezone": "device"}],
                         "preconditions": [{"battery_min": 40}]}


def publish(repo: Repo, release: str, **rules: Any) -> None:
    publish_policy(repo.ws._fresh(), {
        "model": MODEL, "rollout_id": "w", "salt": "s", "baseline": "2.0.0",
        "region_timezones": {"eu": "Europe/Berlin"},
        "rings": [{"name": "lab", "selector": {"tags": ["lab"]}, "release": release},
                  {"name": "all", "selector": {"percent": 100}, "release": release, **rules}]})


def battery(path: Path, percent: int) -> None:
    (path / CONDITIONS_FILE).write_text(json.dumps({"battery_percent": percent}))


def test_the_ring_waits_for_window_and_battery_the_lab_ring_does_not(repo: Repo) -> None:
    publish(repo, "2.0.0", **RULES)
    dev, lab = repo.agent("dev-300"), repo.agent("dev-lab")
    assert dev.check_and_update(NOON).outcome == "committed"  # factory-empty: installs at once
    assert lab.check_and_update(NOON).outcome == "committed"
    publish(repo, "2.1.0", **RULES)
    battery(dev.device.root, 23)
    first = dev.check_and_update(NOON)
    assert (first.outcome, first.active, first.detail) == (
        "waiting", "2.0.0", "2.1.0 downloaded, waiting: outside maintenance window until 2026-12-02 02:00 "
        "Europe/Berlin; precondition battery_min: 23% < 40%")
    assert lab.check_and_update(NOON).outcome == "committed"  # the lab ring has no rules
    assert dev.check_and_update(NIGHT).detail == "2.1.0 downloaded, waiting: precondition battery_min: 23% < 40%"
    assert dev.report_health(NIGHT)
    battery(dev.device.root, 41)
    assert (dev.check_and_update(NIGHT).outcome, dev.installed().version) == ("committed", "2.1.0")  # type: ignore[union-attr]
    events = [json.loads(e["payload"]) for e in dev.outbox.log.outbox]
    assert [e["event"] for e in events if e["release"] == "2.1.0" and e["kind"] == "event"] == [
        "offered", "downloaded", "installed", "booted", "committed"]  # downloaded once, installed once
    waiting = [(e["release"], e["waiting"]["release"]) for e in events if "waiting" in e]
    assert waiting == [("2.0.0", "2.1.0")]


def test_a_product_plugs_in_its_own_check(repo: Repo) -> None:
    class Docked:
        name = "battery_min"

        def __init__(self, spec: PreconditionSpec, device_dir: Path) -> None:
            self.spec = spec

        def check(self, now: datetime) -> ConditionVerdict:
            return ConditionVerdict(False, "precondition battery_min: robot not docked")

    publish(repo, "2.0.0", preconditions=[{"battery_min": 40}])
    dev = repo.agent("dev-400", preconditions={"battery_min": Docked})
    assert dev.check_and_update(NOON).outcome == "committed"
    publish(repo, "2.1.0", preconditions=[{"battery_min": 40}])
    assert dev.check_and_update(NOON).detail == "2.1.0 downloaded, waiting: precondition battery_min: robot not docked"
