"""Three ingest shards behind `otactl telemetry route`, against one ingest given the same reports.

Real processes on loopback: three `otactl telemetry serve --shard I/3` (each its own database),
the router in front of them, one unsharded `otactl telemetry serve`, and two real Prometheus
servers (one scraping the three shards, one the single ingest). The shards must count as the one
ingest: the PrometheusSource over the shards gives the very CohortCounts the single ingest gives
(through Prometheus and through its database), for every query and window; refusals sum the same.
A report replayed to another shard is refused there (wrong_shard) and to its own as replayed; a
shard that is down makes the router answer 503, and the agent's retry is counted once.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

import httpx
import pytest
from fixtures.prometheus import PrometheusServer
from telemetry_parts import (
    QUERIES,
    Fleet,
    IngestProcess,
    RouterProcess,
    bad_reports,
    make_fleet,
    ring_of,
    rollout_batch,
    signing_key,
    utc_now,
)

from otactl.agent.outbox import Outbox
from otactl.agent.state import DeviceState, Identity
from otactl.telemetry.prometheus import PrometheusSource
from otactl.telemetry.report import Envelope, Event
from otactl.telemetry.reporter import batch_body
from otactl.telemetry.shards import shard_of
from otactl.telemetry.source import CohortCounts, CohortQuery, StratumKey
from otactl.telemetry.store import SqliteSource

pytestmark = pytest.mark.integration

SHARDS = 3
ACCEPTED = "sum(otactl_reports_accepted_total)"  # over every target of that Prometheus


class Setup:
    def __init__(self, tmp_path: Path, fleet: Fleet) -> None:
        devices = tmp_path / "devices.json"
        devices.write_text(json.dumps(fleet.records()))
        self.fleet = fleet
        self.single = IngestProcess(tmp_path, devices, tmp_path / "single.db")
        self.shards = [IngestProcess(tmp_path, devices, tmp_path / f"shard{i}.db", shard=f"{i}/{SHARDS}")
                       for i in range(SHARDS)]  # fmt: skip
        self.router: RouterProcess | None = None
        self.proms: list[PrometheusServer] = []
        self.client = httpx.Client(timeout=30)

    def start(self, tmp_path: Path) -> Setup:
        for ingest in [self.single, *self.shards]:
            ingest.start()
        self.router = RouterProcess(tmp_path, [s.url for s in self.shards]).start()
        targets = [[f"127.0.0.1:{s.port}" for s in self.shards], [f"127.0.0.1:{self.single.port}"]]
        for name, t in zip(("prom-shards", "prom-single"), targets, strict=True):
            prom = PrometheusServer(tmp_path / name, targets=t, scrape_interval="1s").start()
            self.proms.append(prom)
            prom.wait_until(lambda p=prom, n=len(t): p.value("sum(up)") == n, f"{name} scrapes its targets")
        return self

    def stop(self) -> None:
        self.client.close()
        for prom in self.proms:
            prom.close()
        if self.router is not None:
            self.router.stop()
        for ingest in [*self.shards, self.single]:
            ingest.stop()

    @property
    def route(self) -> str:
        assert self.router is not None
        return f"{self.router.url}/v1/reports"

    def post_both(self, reports: list[object]) -> tuple[dict[str, object], dict[str, object]]:
        """The same reports through the router and to the single ingest: both results documents."""
        routed = self.client.post(self.route, json={"reports": reports})
        single = self.client.post(f"{self.single.url}/v1/reports", json={"reports": reports})
        assert (routed.status_code, single.status_code) == (200, 200), routed.text
        return routed.json(), single.json()

    def scraped(self, accepted: int) -> None:
        for prom in self.proms:
            prom.wait_until(lambda p=prom: p.value(ACCEPTED) == accepted, f"{accepted} reports scraped")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path, make_fleet(24))
    try:
        yield s.start(tmp_path)
    finally:
        s.stop()


def devices_in(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT device_id FROM reports")}


def summed(sources: list[SqliteSource], query: CohortQuery) -> dict[StratumKey, list[float]]:
    """The shards' counts added per stratum, flattened: hours are floats, added in another order
    than one database adds them (Prometheus adds the integer totals, so its sums are exact)."""
    out: dict[StratumKey, CohortCounts] = {}
    for source in sources:
        for key, counts in source.cohort_counts(query).items():
            out[key] = out.get(key, CohortCounts()) + counts
    return {key: flat(c) for key, c in out.items()}


def flat(counts: CohortCounts) -> list[float]:
    return [x for v in astuple(counts) for x in (v if isinstance(v, tuple) else (v,))]


def outcomes(doc: dict[str, object]) -> list[tuple[object, ...]]:
    results = doc["results"]
    assert isinstance(results, list)
    return [(r["index"], r["status"], r.get("reason")) for r in results]


def rejected(prom: PrometheusServer) -> dict[str, float]:
    return {s["metric"]["reason"]: float(s["value"][1])
            for s in prom.query("sum by (reason) (otactl_reports_rejected_total)")}  # fmt: skip


def test_shards_behind_one_router_count_as_one_ingest(setup: Setup, tmp_path: Path) -> None:
    fleet = setup.fleet
    sharded, single = (PrometheusSource(p.url) for p in setup.proms)
    single_db = SqliteSource(setup.single.db)
    shard_dbs = [SqliteSource(s.db) for s in setup.shards]
    rings = ring_of(fleet)
    home = {d: shard_of(d, SHARDS) for d in fleet.reporters}
    assert set(home.values()) == set(range(SHARDS))  # every shard holds devices

    def parity(**window: object) -> None:
        for name, q in QUERIES.items():
            query = CohortQuery("t9-engine", **{**q, **window})  # type: ignore[arg-type]
            expected = single_db.cohort_counts(query)
            assert sharded.cohort_counts(query) == expected, (name, window, "Prometheus over the shards")
            assert single.cohort_counts(query) == expected, (name, window, "Prometheus over the single ingest")
            approx = {key: pytest.approx(flat(c), rel=1e-12) for key, c in expected.items()}
            assert summed(shard_dbs, query) == approx, (name, window, "the shards' databases summed")

    # batch A through the one address: every device's reports land on its shard, and only there
    a = rollout_batch(fleet, "2.0.0", rings, crash_every=5) + rollout_batch(fleet, "2.1.0", rings, crash_every=3)
    routed, direct = setup.post_both(batch_body(a)["reports"])
    assert routed == direct and routed["accepted"] == len(a)
    for i, s in enumerate(setup.shards):
        assert devices_in(s.db) == {d for d, h in home.items() if h == i}
    setup.scraped(len(a))
    parity()
    between = utc_now()

    # batch B with every kind of bad report: the same results, the same refusal counts, summed
    b = rollout_batch(fleet, "2.1.0", rings, crash_every=2)
    bad, expected_refusals = bad_reports(fleet, replay=a[0])
    routed, direct = setup.post_both([*batch_body(b)["reports"], *bad])
    assert outcomes(routed) == outcomes(direct) and routed["accepted"] == len(b)  # details hold the ingest's now
    setup.scraped(len(a) + len(b))
    parity()
    parity(until=between)
    parity(since=between)
    assert {r: n for r, n in rejected(setup.proms[0]).items() if n} == expected_refusals == \
        {r: n for r, n in rejected(setup.proms[1]).items() if n}  # fmt: skip
    assert sum(c.devices for c in single_db.cohort_counts(CohortQuery("t9-engine", "2.1.0")).values()) == 24

    # a report replayed to another shard is refused there (never counted), to its own as a replay
    device = "trk-0007"
    mine, other = setup.shards[home[device]], setup.shards[(home[device] + 1) % SHARDS]
    seen = next(e for e in a if json.loads(e.payload)["device_id"] == device)
    fresh = fleet.reporters[device].event("2.1.0", rings[device], Event.BOOTED, utc_now())
    for envelope, there, reason in ((seen, other, "wrong_shard"), (fresh, other, "wrong_shard"),
                                    (seen, mine, "replayed")):  # fmt: skip
        doc = setup.client.post(f"{there.url}/v1/reports", json=batch_body([envelope])).json()
        assert doc["results"][0]["reason"] == reason
    assert device not in devices_in(other.db)
    routed, direct = setup.post_both(batch_body([fresh])["reports"])  # its own shard never saw it: accepted
    assert routed["accepted"] == direct["accepted"] == 1
    shards_prom = setup.proms[0]
    shards_prom.wait_until(lambda: rejected(shards_prom).get("wrong_shard") == 2, "the wrong_shard refusals scraped")

    # a shard down: the router answers 503, the agent keeps what it did not take and sends it later
    down = next(i for i in range(SHARDS) if i != home[device])
    victim = next(d for d, h in sorted(home.items()) if h == down)
    outboxes = {d: agent_outbox(tmp_path, fleet, d) for d in (device, victim)}
    sent: list[Envelope] = []
    for d, outbox in outboxes.items():
        enrolled = fleet.registry.get(d)
        assert enrolled is not None
        for _ in range(3):
            outbox.health(enrolled, "2.1.0", rings[d], utc_now(), uptime_s=3600, crashes=1, errors=0, metrics={})
        sent += [Envelope(**e) for e in outbox.log.outbox]
    port = setup.shards[down].port
    setup.shards[down].stop()
    assert setup.router is not None
    health = setup.client.get(f"{setup.router.url}/healthz")
    assert health.status_code == 503 and health.json()["shards"][down]["status"] == "unavailable"
    for d, outbox in outboxes.items():
        result = outbox.flush(setup.client, setup.router.url)
        expected = (0, 3, f"{setup.route}: HTTP 503") if d == victim else (3, 0, None)
        assert (result.accepted, result.pending, result.error) == expected, d
    setup.shards[down].start(port=port)
    result = outboxes[victim].flush(setup.client, setup.router.url)
    assert (result.accepted, result.refused, result.pending) == (3, 0, 0)
    assert setup.client.get(f"{setup.router.url}/healthz").json()["status"] == "ok"
    assert setup.client.post(f"{setup.single.url}/v1/reports", json=batch_body(sent)).json()["accepted"] == 6
    # a device that sends the whole batch again (an older agent): every report refused as a replay
    again = setup.client.post(setup.route, json=batch_body(sent)).json()
    assert {r["reason"] for r in again["results"]} == {"replayed"}

    total = len(a) + len(b) + 1 + len(sent)
    setup.scraped(total)
    parity()
    parity(since=between)
    late = single_db.cohort_counts(CohortQuery("t9-engine", "2.1.0", since=between))
    assert sum(c.crashes for c in late.values()) >= 6  # the agents' reports are in (not vacuous)
    sharded.close()
    single.close()


def agent_outbox(tmp_path: Path, fleet: Fleet, device_id: str) -> Outbox:
    """The real device agent's outbox for ``device_id``, continuing its reporter's seq."""
    key = signing_key(device_id)
    state = DeviceState.provision(tmp_path / "agents" / device_id, Identity(device_id, "t9-engine", "revB"), b"{}",
                                  key)  # fmt: skip
    outbox = Outbox(state, key)
    outbox.log.next_seq = fleet.reporters[device_id].next_seq
    return outbox
