"""Signed reports over HTTP into `otactl telemetry serve`; a real Prometheus scrapes it.

The Prometheus path (PrometheusSource over the HTTP API) and the embedded path (SqliteSource over the
ingest's database) must give the same numbers for the same reports, for whole histories, ring and
stratum filters and windows, and across an ingest restart. Refused reports are counted, never stored.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from fixtures.prometheus import PrometheusServer
from telemetry_parts import Fleet, IngestProcess, signing_key, utc_now

from otactl.telemetry.prometheus import PrometheusSource
from otactl.telemetry.report import Envelope, Event, parse_payload, sign_report
from otactl.telemetry.reporter import batch_body, post_reports
from otactl.telemetry.source import CohortQuery, StratumKey
from otactl.telemetry.store import SqliteSource

pytestmark = pytest.mark.integration

ACCEPTED = "otactl_reports_accepted_total"


def rollout_batch(fleet: Fleet, release: str, rings: dict[str, str | None], crash_every: int) -> list[Envelope]:
    """Each device: offered, installed, then committed/reverted/failed, then two health reports."""
    now = utc_now()
    out = []
    for i, (device_id, r) in enumerate(sorted(fleet.reporters.items())):
        ring = rings[device_id]
        finish = [Event.COMMITTED, Event.COMMITTED, Event.REVERTED, Event.FAILED][i % 4]
        out += [r.event(release, ring, Event.OFFERED, now), r.event(release, ring, Event.INSTALLED, now),
                r.event(release, ring, finish, now, reason=None if finish is Event.COMMITTED else "boot check"),
                r.health(release, ring, now, uptime_s=600 * (i + 1), crashes=int(i % crash_every == 0), errors=i,
                         metrics={"temp_c": "71.5", "rpm": 900}),
                r.health(release, ring, now, uptime_s=1200, crashes=2 if i == 3 else 0)]  # fmt: skip
    return out


def bad_reports(fleet: Fleet, replay: Envelope) -> tuple[list[object], dict[str, int]]:
    """One report refused for each reason (all `booted` events, so none may show up in the store)."""
    r = fleet.reporters["trk-0001"]
    good = r.event("2.1.0", "canary", Event.BOOTED, utc_now())
    report = parse_payload(good.payload)
    stranger = sign_report(replace(report, device_id="trk-0999"), signing_key("trk-0999"))  # type: ignore[arg-type]
    mismatch = sign_report(replace(report, seq=report.seq + 1, variant="hp-500"), signing_key("trk-0001"))
    future = r.event("2.1.0", "canary", Event.BOOTED, utc_now() + timedelta(hours=1))
    reports: list[object] = [
        {"payload": "not json", "signature": "00" * 64},
        {"payload": good.payload},
        {"payload": good.payload.replace('"seq":', '"seq":1'), "signature": good.signature},
        stranger.to_json(),
        mismatch.to_json(),
        future.to_json(),
        replay.to_json(),
        {"payload": "x" * 5000, "signature": good.signature},
    ]
    expected = {"malformed": 1, "unsigned": 1, "bad_signature": 1, "unknown_key": 1, "mismatch": 1, "future": 1,
                "replayed": 1, "oversized": 1}  # fmt: skip
    return reports, expected


def ring_of(fleet: Fleet) -> dict[str, str | None]:
    names = sorted(fleet.reporters)
    return {d: ("canary" if i < 4 else "early" if i < 8 else None) for i, d in enumerate(names)}


QUERIES = {
    "everything": dict(release="2.1.0"),
    "canary ring": dict(release="2.1.0", rings=frozenset({"canary"})),
    "two rings": dict(release="2.1.0", rings=frozenset({"canary", "early"})),
    "one stratum": dict(release="2.1.0", strata=frozenset({StratumKey("t9-engine", "hp-400", "eu")})),
    "old release": dict(release="2.0.0"),
    "nothing": dict(release="9.9.9"),
}


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
    with sqlite3.connect(ingest.db) as conn:
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
