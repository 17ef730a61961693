"""Signed reports over HTTP into `otactl telemetry serve`; a real Prometheus scrapes it.

The Prometheus path (PrometheusSource over the HTTP API) and the embedded path (SqliteSource over the
ingest's database) must give the same CohortCounts, every field of every counter of
``counters.COUNTERS``, for the same reports: for whole histories, ring and stratum filters and
windows, across an ingest restart, and for a week of hourly baseline followed by a rollout in rings
(late hours, aged devices, closed periods). Refused reports are counted, never stored.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
from dataclasses import astuple, replace
from datetime import datetime

import httpx
import pytest
from fixtures.prometheus import PrometheusServer
from telemetry_parts import (
    QUERIES,
    Fleet,
    IngestProcess,
    bad_reports,
    ring_of,
    rollout_batch,
    signing_key,
    utc_now,
)

from otactl.telemetry.counters import LATE_AGES, counts_from_totals
from otactl.telemetry.prometheus import PrometheusSource
from otactl.telemetry.report import Envelope, Event, parse_payload, sign_report
from otactl.telemetry.reporter import batch_body, post_reports
from otactl.telemetry.source import CohortCounts, CohortQuery, StratumKey
from otactl.telemetry.store import SqliteSource

pytestmark = pytest.mark.integration

ACCEPTED = "otactl_reports_accepted_total"


def assert_parity(prom: PrometheusSource, embedded: SqliteSource, **window: object) -> None:
    for name, q in QUERIES.items():
        query = CohortQuery("t9-engine", **{**q, **window})  # type: ignore[arg-type]
        assert prom.cohort_counts(query) == embedded.cohort_counts(query), (name, window)


def test_prometheus_and_embedded_sources_agree(
    fleet: Fleet, ingest: IngestProcess, prometheus: PrometheusServer
) -> None:
    url = f"{ingest.url}/v1/reports"
    rings = ring_of(fleet)
    client = httpx.Client(timeout=10)
    prom = PrometheusSource(prometheus.url)
    embedded = SqliteSource(ingest.db)

    # batch A: the old release everywhere, the new one in canary and early
    a = rollout_batch(fleet, "2.0.0", rings, crash_every=5) + rollout_batch(fleet, "2.1.0", rings, crash_every=3)
    first = post_reports(client, url, a)
    assert (first["accepted"], first["refused"]) == (len(a), 0)
    prometheus.wait_until(lambda: prometheus.value(ACCEPTED) == len(a), "Prometheus has scraped batch A")
    assert_parity(prom, embedded)
    assert embedded.cohort_counts(CohortQuery("t9-engine", "2.1.0"))  # not vacuous
    between = utc_now()  # every report of A was scraped before this instant, none of B

    # batch B, with every kind of bad report mixed in
    b = rollout_batch(fleet, "2.1.0", rings, crash_every=2)
    bad, expected_refusals = bad_reports(fleet, replay=a[0])
    doc = client.post(url, json={"reports": [*batch_body(b)["reports"], *bad]}).json()
    assert doc["accepted"] == len(b)
    refused = {}
    for result in doc["results"][len(b) :]:
        refused[result["reason"]] = refused.get(result["reason"], 0) + 1
    assert refused == expected_refusals
    prometheus.wait_until(lambda: prometheus.value(ACCEPTED) == len(a) + len(b), "Prometheus has scraped batch B")
    until = utc_now()

    assert_parity(prom, embedded)
    assert_parity(prom, embedded, until=between)  # A only
    assert_parity(prom, embedded, since=between)  # B only
    assert_parity(prom, embedded, since=between, until=until)
    window_b = embedded.cohort_counts(CohortQuery("t9-engine", "2.1.0", since=between))
    assert sum(c.installs for c in window_b.values()) == 12 and sum(c.devices for c in window_b.values()) == 12

    # refused reports are counted (in Prometheus too) and never stored
    for reason, n in expected_refusals.items():
        assert prometheus.value(f'otactl_reports_rejected_total{{reason="{reason}"}}') == n, reason
    with contextlib.closing(sqlite3.connect(ingest.db)) as conn:
        assert conn.execute("SELECT count(*) FROM reports").fetchone()[0] == len(a) + len(b)
        assert conn.execute("SELECT count(*) FROM reports WHERE device_id = 'trk-0999'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM reports WHERE event = 'booted'").fetchone()[0] == 0

    # an ingest restart neither resets the counters nor forgets the last seqs
    before = prometheus.query('{__name__=~"otactl_.*_total"}')
    ingest.stop()
    ingest.start(port=ingest.port)
    restarted_at = utc_now()
    prometheus.wait_until(
        lambda: (prometheus.value(f"timestamp({ACCEPTED})") or 0) > restarted_at.timestamp(),  # stale: None
        "a scrape after the restart",
    )
    after = prometheus.query('{__name__=~"otactl_.*_total"}')
    assert {json.dumps(s["metric"], sort_keys=True): s["value"][1] for s in before} == {
        json.dumps(s["metric"], sort_keys=True): s["value"][1] for s in after
    }
    again = client.post(url, json=batch_body([a[1]])).json()
    assert again["results"][0]["reason"] == "replayed"
    assert_parity(prom, embedded)
    assert_parity(prom, embedded, since=between, until=until)

    # the CLI gives the same JSON from both sources
    def cli(source: str) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "otactl.cli.main", "telemetry", "query", "t9-engine", "2.1.0", "--ring", "canary",
             "--source", source, "--output", "json"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "OTACTL_TELEMETRY_SOURCE": ""},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return {k: v for k, v in json.loads(done.stdout).items() if k != "source"}

    assert cli(f"prometheus:{prometheus.url}") == cli(f"sqlite:{ingest.db}")
    client.close()
    prom.close()


def test_signatures_from_other_keys_never_count(fleet: Fleet, ingest: IngestProcess) -> None:
    """A forged failure report (right device id, wrong key) cannot push a rollback."""
    real = fleet.reporters["trk-0002"].event("2.1.0", "canary", Event.FAILED, utc_now())
    forged = sign_report(parse_payload(real.payload), signing_key("attacker"))
    doc = httpx.post(f"{ingest.url}/v1/reports", json=batch_body([forged]), timeout=10).json()
    assert doc["results"][0]["reason"] == "bad_signature"
    assert SqliteSource(ingest.db).cohort_counts(CohortQuery("t9-engine", "2.1.0")) == {}


# --- a week of hourly baseline on release A, then a rollout of B in rings ------------------------

A, B = "2.0.0", "2.1.0"
BASELINE_H = 168  # simulated hours of baseline (7 days)
ROLLOUT_H = 30  # simulated hours of rollout: past 12 and 24 h on B, one closed period
HOURS_PER_BATCH = 20  # 48 devices x 20 hourly reports: under the ingest's 1000 reports per request
MAX_REPORTS = 1000


def poisson(rng: random.Random, rate: float) -> int:
    """Knuth's method (bounded): crashes in one hour."""
    limit, k, p = math.exp(-rate), 0, rng.random()
    while p > limit and k < 20:
        k, p = k + 1, p * rng.random()
    return k


WEEK_QUERIES = {
    "A everywhere": dict(release=A),
    "A, waiting ring (control)": dict(release=A, rings=frozenset({"late"})),
    "A, no ring (baseline)": dict(release=A, rings=frozenset({""})),
    "A, rolled-back devices": dict(release=A, rings=frozenset({"canary", "early"})),
    "B everywhere": dict(release=B),
    "B canary": dict(release=B, rings=frozenset({"canary"})),
    "B one stratum": dict(release=B, strata=frozenset({StratumKey("t9-engine", "hp-400", "us")})),
}


def window_part(c: CohortCounts) -> list[float]:
    """The window fields, flattened (cumulative ones zeroed): what adds over adjacent windows."""
    zero = replace(c, devices=0, aged_devices=(0,) * len(LATE_AGES))
    return [x for v in astuple(zero) for x in (v if isinstance(v, tuple) else (v,))]


def total(strata: dict[StratumKey, CohortCounts]) -> CohortCounts:
    return sum(strata.values(), counts_from_totals({}, {}))


@pytest.mark.parametrize("fleet", [48], indirect=True, ids=["48 devices"])
def test_sources_agree_on_every_counter_over_a_week_of_baseline_and_a_rollout(
    fleet: Fleet, ingest: IngestProcess, prometheus: PrometheusServer
) -> None:
    rng = random.Random(20261127)
    client = httpx.Client(timeout=30)
    url = f"{ingest.url}/v1/reports"
    prom = PrometheusSource(prometheus.url)
    embedded = SqliteSource(ingest.db)
    names = sorted(fleet.reporters)
    ring = {d: "canary" if i < 6 else "early" if i < 18 else "late" for i, d in enumerate(names)}
    posted = 0
    edges: dict[str, datetime] = {}

    def post(envelopes: list[Envelope]) -> None:
        nonlocal posted
        for i in range(0, len(envelopes), MAX_REPORTS):
            chunk = envelopes[i : i + MAX_REPORTS]
            doc = post_reports(client, url, chunk)
            assert (doc["accepted"], doc["refused"]) == (len(chunk), 0)
            posted += len(chunk)

    def edge(name: str) -> None:
        """An instant between scrapes: every report posted so far is in a scrape at or before it, and
        Prometheus has scraped again after it, so whatever is posted next lands in a later scrape."""
        prometheus.wait_until(lambda: prometheus.value(ACCEPTED) == posted, f"Prometheus has scraped {name}")
        at = utc_now()
        prometheus.wait_until(
            lambda: (prometheus.value(f"timestamp({ACCEPTED})") or 0) > at.timestamp(), f"a scrape after {name}"
        )
        edges[name] = at

    def hours(release_of: dict[str, tuple[str, str | None]], first: int, count: int, rate: dict[str, float]) -> None:
        """``count`` hourly health reports of every device (some hours offline), device by device, so
        one request holds consecutive reports of each device; then posted."""
        batch = []
        for d in names:
            release, ring_label = release_of[d]
            for _hour in range(first, first + count):
                if rng.random() < 0.03:
                    continue  # offline this hour: ages and period closings drift apart between devices
                batch.append(fleet.reporters[d].health(release, ring_label, utc_now(), uptime_s=3600,
                                                       crashes=poisson(rng, rate[release])))  # fmt: skip
        post(batch)

    edges["start"] = utc_now()
    baseline = {d: (A, None) for d in names}
    for first in range(0, BASELINE_H, HOURS_PER_BATCH):
        hours(baseline, first, min(HOURS_PER_BATCH, BASELINE_H - first), {A: 0.02})
        if first + HOURS_PER_BATCH in (60, 120):
            edge(f"hour {first + HOURS_PER_BATCH}")
    edge("baseline")

    # the rollout: canary and early install B (one of each rolls back to A in its ring), late waits on A
    finish = {d: Event.COMMITTED for d in names if ring[d] != "late"}
    finish[names[0]], finish[names[6]] = Event.REVERTED, Event.FAILED
    events = []
    for d, end in finish.items():
        r = fleet.reporters[d]
        reason = None if end is Event.COMMITTED else "boot check"
        events += [r.event(B, ring[d], e, utc_now(), reason=reason if e is end else None)
                   for e in (Event.OFFERED, Event.INSTALLED, end)]  # fmt: skip
    post(events)
    rollout = {d: (B if finish.get(d) is Event.COMMITTED else A, ring[d]) for d in names}
    hours(rollout, 0, HOURS_PER_BATCH, {A: 0.02, B: 0.08})
    edge("rollout hour 20")
    hours(rollout, HOURS_PER_BATCH, ROLLOUT_H - HOURS_PER_BATCH, {A: 0.02, B: 0.08})
    edge("end")

    windows = {
        "everything": (None, None),
        "the baseline": (edges["start"], edges["baseline"]),
        "up to hour 60": (None, edges["hour 60"]),
        "up to hour 120": (None, edges["hour 120"]),
        "hours 60-120": (edges["hour 60"], edges["hour 120"]),
        "hour 120 into the rollout": (edges["hour 120"], edges["rollout hour 20"]),
        "the rollout": (edges["baseline"], edges["end"]),
        "rollout, first 20 h": (edges["baseline"], edges["rollout hour 20"]),
        "rollout, last 10 h": (edges["rollout hour 20"], edges["end"]),
    }
    got: dict[tuple[str, str], dict[StratumKey, CohortCounts]] = {}
    for w, (since, until) in windows.items():
        for q, fields in WEEK_QUERIES.items():
            query = CohortQuery("t9-engine", since=since, until=until, **fields)  # type: ignore[arg-type]
            got[(w, q)] = embedded.cohort_counts(query)
            assert prom.cohort_counts(query) == got[(w, q)], (w, q)

    # not vacuous: the baseline has crashes, closed periods and late hours, every device aged past 72 h
    week = total(got[("the baseline", "A everywhere")])
    assert week.crashes > 0 and week.periods >= 5 * 48 and week.period_crash_sq >= week.period_crashes > 0
    assert min(week.late_crashes) > 0 and week.late_device_hours[-1] > 0
    assert week.devices == 48 and week.aged_devices == (48,) * len(LATE_AGES)
    new = total(got[("the rollout", "B everywhere")])
    assert (new.installs, new.install_failures, new.devices) == (18, 2, 18)  # 2 rolled back: events on B only
    assert new.aged_devices[:2] == (16, 16) and new.periods > 0
    assert new.crashes > 0 and new.late_crashes[0] > 0
    assert total(got[("the rollout", "A, waiting ring (control)")]).late_device_hours[-1] > 0  # age kept across rings
    assert total(got[("the rollout", "A, rolled-back devices")]).devices == 2
    assert total(got[("the baseline", "B everywhere")]).reports == 0
    assert total(got[("everything", "B everywhere")]).installs == 18
    # windows add (both sources gave these very counts)
    for q in WEEK_QUERIES:
        for first, second, whole in (("up to hour 60", "hours 60-120", "up to hour 120"),
                                     ("rollout, first 20 h", "rollout, last 10 h", "the rollout")):  # fmt: skip
            parts = [window_part(total(got[(w, q)])) for w in (first, second)]
            assert [x + y for x, y in zip(*parts, strict=True)] == pytest.approx(window_part(total(got[(whole, q)])))
    client.close()
    prom.close()
