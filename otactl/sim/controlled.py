"""Full-fidelity devices under the real rollout controller.

Each round every online agent polls the served repository, installs what its ring is offered and
reports to the embedded ingest (SQLite); then the controller steps once, reading that telemetry through
``SqliteSource``, and publishes the next rollout policy itself. Nothing is scheduled by hand: the
gates decide. Rollouts run one after another (e.g. a good release, then a bad one).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otactl.app import rollout as controller
from otactl.app.context import Context, utcnow
from otactl.rollout.plan import load_plan
from otactl.sim.full import FullSimulation, RoundStats, outcome_text
from otactl.sim.scenario import PolicyStep, Scenario
from otactl.sim.workspace import SimWorkspace
from otactl.telemetry.source import TelemetrySource

OPERATOR = "release-manager"  # the simulated operator's key (the sim workspace's release manager)


@dataclass
class Telemetry:
    """The source the controller reads, and how to wait until it holds every report sent so far
    (a Prometheus scrapes the ingest: the controller steps only once it has)."""

    source: TelemetrySource
    settle: Callable[[], None] = lambda: None


# Given the ingest's URL, a context that yields the Telemetry (e.g. starts a Prometheus scraping it).
TelemetryFactory = Callable[[str, Path], contextlib.AbstractContextManager[Telemetry]]


@dataclass(frozen=True)
class ControllerStep:
    """What the controller decided after one round of the devices."""

    round: int
    action: str
    status: str
    ring: str
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "action": self.action, "status": self.status, "ring": self.ring,
                "reasons": list(self.reasons)}


@dataclass
class RolloutRun:
    release: str
    baseline: str
    rollout_id: str = ""
    steps: list[ControllerStep] = field(default_factory=list)
    status: str = "running"
    final_ring: str = ""
    rounds: int = 0
    exposed: int = 0  # devices that ran the release at any point

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "baseline": self.baseline, "rollout_id": self.rollout_id,
                "status": self.status, "final_ring": self.final_ring, "rounds": self.rounds,
                "exposed": self.exposed, "steps": [s.to_json() for s in self.steps]}


@dataclass(frozen=True)
class Hooks:
    """Operator actions the story needs: approvals as they are asked for, a pause and its resume."""

    approve_with: tuple[str, ...] = ()
    pause_at_round: int | None = None
    resume_after_rounds: int = 1


class ControlledSimulation(FullSimulation):
    def __init__(self, scenario: Scenario, work_dir: Path, *, plan: Path, releases: list[str], baseline: str,
                 max_rounds: int = 40, hooks: Hooks = Hooks(), settle_rounds: int = 3, baseline_rounds: int = 1,
                 telemetry: TelemetryFactory | None = None, **options: Any) -> None:
        super().__init__(scenario, work_dir, **options)
        self.baseline_rounds = baseline_rounds  # the fleet's history on the baseline before any rollout
        self.telemetry = telemetry
        self.plan = plan.resolve()
        self.releases = releases
        self.baseline = baseline
        self.max_rounds = max_rounds
        self.settle_rounds = settle_rounds
        self.hooks = hooks
        self.rollouts: list[RolloutRun] = []
        self.workspace_path: Path | None = None
        self.ran: dict[str, set[str]] = {}  # release -> devices seen running it after some round

    def _ctx(self, ws: SimWorkspace) -> Context:
        ws.ctx.now = utcnow()
        return ws.ctx

    def _poll(self, pool: ThreadPoolExecutor, online: random.Random) -> Counter[str]:
        polling = [a for a in self.agents.values() if online.random() < self.scenario.behaviour.online]
        self.write_conditions(polling)
        now = utcnow()
        results = list(pool.map(lambda a: a.run_once(now), polling))
        for device_id, agent in self.agents.items():
            m = agent.installed()
            if m is not None:
                self.ran.setdefault(m.version, set()).add(device_id)
        return Counter(r.check.outcome for r in results)

    @contextlib.contextmanager
    def _telemetry(self) -> Iterator[Telemetry]:
        if self.telemetry is not None:
            with self.telemetry(self.live_ingest_url, self.work_dir) as t:
                yield t
            return
        from otactl.telemetry.store import SqliteSource

        yield Telemetry(SqliteSource(self.work_dir / "telemetry.db"))

    def _rounds(self, ws: SimWorkspace) -> list[RoundStats]:
        with self._telemetry() as telemetry:
            return self._controlled_rounds(ws, telemetry)

    def _controlled_rounds(self, ws: SimWorkspace, telemetry: Telemetry) -> list[RoundStats]:
        self.workspace_path = ws.path
        plan = load_plan(self.plan)  # the plan's install preconditions need the devices' readings (1202)
        self.conditions = self.conditions or any(plan.install_rules(r).preconditions for r in plan.rings)
        model = self.scenario.fleet.model
        source = telemetry.source
        online = random.Random(f"{self.scenario.seed}:online")
        stats: list[RoundStats] = []
        rnd = 0
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sim-agent") as pool:
            # the whole fleet on the baseline, as it is before any rollout (its history: reports with crashes)
            ws.publish_step(self.scenario, PolicyStep(0, self.baseline, self.baseline, None))
            for _ in range(self.baseline_rounds):
                t0 = time.monotonic()
                out = self._poll(pool, online)
                stats.append(RoundStats(rnd, f"baseline {self.baseline}", sum(out.values()), dict(out),
                                        time.monotonic() - t0, 0.0))
                self.progress(f"round {rnd}: fleet on baseline {self.baseline}: {outcome_text(out)}")
                rnd += 1
            rnd -= 1
            baseline = self.baseline
            for release in self.releases:
                run = RolloutRun(release, baseline)
                self.rollouts.append(run)
                started = controller.start(self._ctx(ws), model, release, self.plan, baseline=baseline)
                run.rollout_id = started.rollout_id
                self.progress(f"rollout {started.rollout_id}: {baseline} -> {release}, ring {started.ring!r}")
                paused_at: int | None = None
                for _ in range(self.max_rounds):
                    rnd += 1
                    run.rounds += 1
                    t0 = time.monotonic()
                    out = self._poll(pool, online)
                    stats.append(RoundStats(rnd, f"{release} rollout", sum(out.values()), dict(out),
                                            time.monotonic() - t0, 0.0))
                    if self.hooks.pause_at_round == run.rounds:
                        controller.pause(self._ctx(ws), model, "simulated operator: field report", key=OPERATOR)
                        paused_at = run.rounds
                    if paused_at is not None and run.rounds >= paused_at + self.hooks.resume_after_rounds:
                        controller.resume(self._ctx(ws), model, "simulated operator: cleared", key=OPERATOR)
                        paused_at = None
                    telemetry.settle()
                    result = controller.step(self._ctx(ws), model, source)
                    run.steps.append(ControllerStep(rnd, str(result.action), str(result.status), result.ring,
                                                    tuple(result.reasons)))
                    self.progress(f"round {rnd}: {outcome_text(out)}; controller: {result.action} -> {result.status} "
                                  f"at {result.ring!r}" + (f" ({result.reasons[0]})" if result.reasons else ""))
                    if result.action == "await_approval":
                        for key in self.hooks.approve_with:
                            controller.approve(self._ctx(ws), model, key)
                            self.progress(f"round {rnd}: approved by {key}")
                    if result.status in ("complete", "rolled_back") or (
                            result.status == "paused" and paused_at is None):
                        break
                run.status, run.final_ring = result.status, result.ring
                # let devices act on the final policy (roll back, or the last ring install); a few rounds,
                # so that devices offline in one round catch up
                for _ in range(self.settle_rounds):
                    rnd += 1
                    out = self._poll(pool, online)
                    stats.append(RoundStats(rnd, f"after {release} {run.status}", sum(out.values()), dict(out),
                                            0.0, 0.0))
                run.exposed = self._exposed(release)
                self.progress(f"rollout {run.rollout_id}: {run.status} at ring {run.final_ring!r}; "
                              f"{run.exposed} devices ever ran {release}")
                if run.status == "complete":
                    baseline = release
                else:
                    break
        return stats

    def _exposed(self, release: str) -> int:
        """Devices seen running ``release`` after any round."""
        return len(self.ran.get(release, ()))
