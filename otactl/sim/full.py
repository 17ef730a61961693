"""Full-fidelity simulation: hundreds of real agents, each with its own state directory, polling a
repository served on 127.0.0.1 through python-tuf and reporting to the ingest over HTTP.

One round is one poll interval: the round's policy step (if any) is published first, then every
device that is online this round runs ``Agent.run_once`` (check and update, health report, flush),
concurrently on a bounded thread pool.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from otactl.agent.agent import Agent, RunResult
from otactl.agent.state import DeviceState, Identity
from otactl.app.context import utcnow
from otactl.errors import UsageError
from otactl.repo.client import HttpxFetcher
from otactl.sim.behaviour import SimulatedDevice
from otactl.sim.fleetgen import SimDevice, generate_fleet
from otactl.sim.scenario import Scenario
from otactl.sim.workspace import SimWorkspace

Progress = Callable[[str], None]


def outcome_text(outcomes: Mapping[str, int]) -> str:
    """``committed 3, none 9``: a round's check outcomes for a person, by name (``-``: none)."""
    return ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "-"


@dataclass
class RoundStats:
    round: int
    policy: str | None  # "release on rings" published before the round
    polled: int
    outcomes: dict[str, int]
    seconds: float
    cpu_seconds: float  # this process's CPU time in the round (agents, repository server, ingest)


@dataclass
class FullResult:
    scenario: str
    devices: int
    rounds: list[RoundStats]
    running: dict[str, dict[str, int]]  # release -> variant -> devices, at the end
    outcomes: dict[str, int]  # check outcomes over the run (committed, reverted, ...)
    reports: dict[str, int]  # the devices' side: accepted, refused, dropped, pending
    ingest: dict[str, Any] | None  # the in-process ingest's side: stored reports, counters by name
    seconds: float
    work_dir: str
    repo_url: str
    ingest_url: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def updates_per_minute(self) -> float:
        return 60 * self.outcomes.get("committed", 0) / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": "full", "scenario": self.scenario, "devices": self.devices,
            "rounds": [vars(r) for r in self.rounds], "running": self.running, "outcomes": self.outcomes,
            "reports": self.reports, "ingest": self.ingest, "seconds": round(self.seconds, 3),
            "updates_per_minute": round(self.updates_per_minute, 1), "work_dir": self.work_dir,
            "repo_url": self.repo_url, "ingest_url": self.ingest_url,
        }


class FullSimulation:
    """Set up (workspace, fleet, servers), run the rounds, keep the agents for inspection."""

    def __init__(self, scenario: Scenario, work_dir: Path, *, workspace: Path | None = None,
                 repo_url: str | None = None, ingest_url: str | None = None, workers: int | None = None,
                 progress: Progress | None = None) -> None:
        if repo_url is not None and workspace is None:
            raise UsageError("--repo-url needs --workspace: the repository the simulator publishes to")
        self.scenario = scenario
        self.work_dir = work_dir.resolve()
        self.workspace_dir = workspace
        self.repo_url = repo_url
        self.ingest_url = ingest_url
        self.workers = workers or scenario.workers
        self.progress = progress or (lambda _msg: None)
        self.devices: list[SimDevice] = []
        self.agents: dict[str, Agent] = {}
        self.sims: dict[str, SimulatedDevice] = {}
        b = scenario.behaviour  # whether devices get install-precondition readings each round (1202)
        self.conditions = bool(scenario.rollout.install.preconditions or b.engine_running or b.low_battery)
        self._polls = 0
        self.live_ingest_url = ""

    def device_dir(self, device_id: str) -> Path:
        return self.work_dir / "devices" / device_id

    # ------------------------------------------------------------------------------ setup
    def _setup(self) -> SimWorkspace:
        if (self.work_dir / "devices").exists():
            raise UsageError(f"{self.work_dir}: already holds a simulation; choose an empty directory")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        if self.workspace_dir is None:
            ws = SimWorkspace.create(self.work_dir / "workspace")
        else:
            ws = SimWorkspace.open(self.workspace_dir)
        built = ws.ensure_releases(self.scenario.releases)
        self.devices = generate_fleet(self.scenario)
        ws.import_fleet(self.devices, f"scenario {self.scenario.name}")
        enrolment = [json.loads(d.record.to_bytes()) for d in self.devices]
        (self.work_dir / "devices.json").write_text(json.dumps(enrolment, indent=1))
        anchor = ws.trust_anchor()
        for d in self.devices:
            r = d.record
            DeviceState.provision(self.device_dir(r.device_id), Identity(r.device_id, r.model, r.hardware_revision),
                                  anchor, d.signing_key())
        self.progress(f"setup: workspace {ws.path}, {len(built)} releases built, {len(self.devices)} devices "
                      f"({time.monotonic() - t0:.1f}s)")
        return ws

    @contextlib.contextmanager
    def _servers(self, ws: SimWorkspace) -> Iterator[tuple[str, str, Any]]:
        with contextlib.ExitStack() as stack:
            repo_url = self.repo_url
            if repo_url is None:
                from otactl.repo.serve import served

                repo_url = stack.enter_context(served(ws.ctx.store))
            ingest_url, store = self.ingest_url, None
            if ingest_url is None:
                from otactl.sim.ingest import running_ingest

                running = stack.enter_context(
                    running_ingest(self.work_dir / "telemetry.db", [d.record for d in self.devices]))
                ingest_url, store = running.url, running.store
            yield repo_url, ingest_url, store

    # ------------------------------------------------------------------------------ run
    def run(self) -> FullResult:
        ws = self._setup()
        limits = httpx.Limits(max_connections=2 * self.workers, max_keepalive_connections=2 * self.workers)
        with self._servers(ws) as (repo_url, ingest_url, store), \
                httpx.Client(timeout=30, limits=limits) as repo_http, \
                httpx.Client(timeout=30, limits=limits) as ingest_http:
            self.live_ingest_url = ingest_url  # what a telemetry source beside the run scrapes
            for d in self.devices:
                sim = SimulatedDevice(self.scenario, d.device_id, d.record.region)
                self.sims[d.device_id] = sim
                # one fetcher per device over the shared connection pool: its byte count is this device's
                # own (the transfer figures in its reports), never its neighbours'
                self.agents[d.device_id] = Agent(self.device_dir(d.device_id), repo_url, ingest_url,
                                                 fetcher=HttpxFetcher(repo_http),
                                                 ingest_client=ingest_http, boot_check=sim.boot_check,
                                                 health_probe=sim.health)
            started = time.monotonic()
            rounds = self._rounds(ws)
            seconds = time.monotonic() - started
            # a last flush, so nothing stays in an outbox because of a transient refusal
            for agent in self.agents.values():
                if agent.outbox.pending:
                    agent.flush()
            ingest = None if store is None else _ingest_summary(store)
            result = self._result(rounds, seconds, repo_url, ingest_url, ingest)
        return result

    def _rounds(self, ws: SimWorkspace) -> list[RoundStats]:
        import random

        schedule = {s.round: s for s in self.scenario.rollout.schedule}
        online = random.Random(f"{self.scenario.seed}:online")
        out = []
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sim-agent") as pool:
            for rnd in range(self.scenario.rounds):
                label = None
                if rnd in schedule:
                    step = schedule[rnd]
                    ws.publish_step(self.scenario, step)
                    label = f"{step.release} on {', '.join(step.rings) if step.rings is not None else 'all rings'}"
                t0, cpu0 = time.monotonic(), time.process_time()  # the devices' round, not the publishing
                polling = [a for a in self.agents.values() if online.random() < self.scenario.behaviour.online]
                self.write_conditions(polling)
                now = utcnow()
                results: list[RunResult] = list(pool.map(lambda a, at=now: a.run_once(at), polling))
                outcomes = Counter(r.check.outcome for r in results)
                stats = RoundStats(rnd, label, len(polling), dict(sorted(outcomes.items())), time.monotonic() - t0,
                                   time.process_time() - cpu0)
                out.append(stats)
                self.progress(f"round {rnd}: {label or '-'}; {stats.polled} polled; "
                              f"{outcome_text(stats.outcomes)} ({stats.seconds:.1f}s)")
        return out

    def write_conditions(self, polling: list[Agent]) -> None:
        """The polling devices' readings for this round's install preconditions (decision 1202)."""
        if self.conditions:
            for a in polling:
                self.sims[a.identity.device_id].write_conditions(a.device.root, self._polls)
        self._polls += 1

    def _result(self, rounds: list[RoundStats], seconds: float, repo_url: str, ingest_url: str,
                ingest: dict[str, Any] | None) -> FullResult:
        running: dict[str, Counter[str]] = {}
        reports: Counter[str] = Counter()
        for agent in self.agents.values():
            m = agent.installed()
            version = "none" if m is None else m.version
            variant = "none" if m is None else m.variant
            running.setdefault(version, Counter())[variant] += 1
            log = agent.outbox.log
            reports.update(accepted=log.accepted, refused=log.refused, dropped=log.dropped, pending=len(log.outbox),
                           signed=log.next_seq - 1)
        outcomes: Counter[str] = Counter()
        for r in rounds:
            outcomes.update(r.outcomes)
        by_release = {v: dict(sorted(c.items())) for v, c in sorted(running.items())}
        return FullResult(self.scenario.name, len(self.devices), rounds, by_release, dict(sorted(outcomes.items())),
                          dict(sorted(reports.items())), ingest, seconds, str(self.work_dir), repo_url, ingest_url)

    def close(self) -> None:
        for agent in self.agents.values():
            agent.close()


def _ingest_summary(store: Any) -> dict[str, Any]:
    counters: Counter[str] = Counter()
    for row in store.counter_rows():
        counters[row.name] += row.value
    return {"reports": store.report_count(), "counters": dict(sorted(counters.items())),
            "refused": {k.value: v for k, v in sorted(store.refusal_counts().items())}}


def run_full(scenario: Scenario, work_dir: Path, **options: Any) -> FullResult:
    sim = FullSimulation(scenario, work_dir, **options)
    try:
        return sim.run()
    finally:
        sim.close()
