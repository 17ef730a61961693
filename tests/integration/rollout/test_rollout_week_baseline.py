"""End to end after a long history: 150 full-fidelity devices (python-tuf ngclient over HTTP on
127.0.0.1, signed reports to the embedded ingest) whose baseline ran 7 simulated days with crashes
before the first rollout, under the real controller reading SQLite or a real Prometheus that
scrapes the ingest. A good release completes; a bad one is rolled back.

With cumulative distinct-device counts (before decision 0105) a history like this decided the
comparison: the control's "devices that ever crashed" covered the whole week."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fixtures.prometheus import PrometheusServer

from otactl.sim.controlled import ControlledSimulation, Telemetry
from otactl.sim.scenario import load_scenario
from otactl.telemetry.prometheus import PrometheusSource
from otactl.telemetry.source import CohortCounts, CohortQuery
from otactl.telemetry.store import SqliteSource

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).parent / "scenarios" / "week-baseline.yaml"
WEEK_ROUNDS = 28  # 6-hour rounds: 7 days


def _accepted(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("otactl_reports_accepted_total "):
            return float(line.split()[1])
    raise AssertionError("the ingest exports no otactl_reports_accepted_total")


@contextlib.contextmanager
def prometheus(ingest_url: str, work_dir: Path) -> Iterator[Telemetry]:
    target = ingest_url.removeprefix("http://")
    with PrometheusServer(work_dir / "prometheus", targets=[target], scrape_interval="1s") as prom, \
            httpx.Client(timeout=10) as http:
        source = PrometheusSource(prom.url)

        def settle() -> None:
            """Wait until Prometheus has scraped every report the ingest accepted so far."""
            want = _accepted(http.get(f"{ingest_url}/metrics").text)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if prom.value("sum(otactl_reports_accepted_total)") == want:
                    time.sleep(0.05)
                    return
                time.sleep(0.2)
            raise AssertionError(f"Prometheus did not catch up with {want} accepted reports")

        try:
            yield Telemetry(source, settle)
        finally:
            source.close()


@pytest.fixture(autouse=True)
def passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", "e2e-test-passphrase")


@pytest.mark.parametrize("source", ["sqlite", "prometheus"])
def test_after_a_week_of_baseline_good_completes_and_bad_is_rolled_back(tmp_path: Path,
                                                                        source: str) -> None:
    sim = ControlledSimulation(load_scenario(SCENARIO), tmp_path / "sim", plan=ROOT / "canary/demo.yaml",
                               releases=["2.1.0", "2.2.0"], baseline="2.0.0", baseline_rounds=WEEK_ROUNDS,
                               max_rounds=30, telemetry=prometheus if source == "prometheus" else None)
    try:
        sim.run()
    finally:
        sim.close()
    good, bad = sim.rollouts
    assert (good.status, good.final_ring) == ("complete", "all"), good.steps
    assert bad.status == "rolled_back" and bad.final_ring in ("lab", "canary"), bad.steps
    assert bad.exposed < 0.25 * len(sim.agents)
    # the history was real: a week of health reports with crashes reached the ingest
    history = SqliteSource(tmp_path / "sim" / "telemetry.db").cohort_counts(
        CohortQuery("t9-engine", "2.0.0"))
    total = sum(history.values(), CohortCounts())
    assert total.device_hours >= 0.9 * len(sim.agents) * WEEK_ROUNDS * 6
    assert total.crashes > 500 and total.periods > 4 * len(sim.agents)
