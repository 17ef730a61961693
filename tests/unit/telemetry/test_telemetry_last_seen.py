"""Each device's last reports, as `otactl report fleet` reads them from the store's database."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from otactl.telemetry.checks import Verified
from otactl.telemetry.last_seen import last_reports
from otactl.telemetry.report import Event, parse_payload
from otactl.telemetry.source import TelemetryUnavailable
from otactl.telemetry.store import ReportStore

MINUTE = timedelta(minutes=1)


def test_last_report_running_release_and_last_event_per_device(fleet, store: ReportStore) -> None:
    t0 = fleet.now
    one, two, three = fleet.reporter("trk-0001"), fleet.reporter("trk-0003"), fleet.reporter("trk-0005")
    batches = [
        (t0, [one.health("2.0.0", None, t0, 3600), two.health("2.0.0", "canary", t0, 3600)]),
        (t0 + MINUTE, [one.event("2.1.0", "canary", Event.INSTALLED, t0 + MINUTE),
                       one.event("2.1.0", "canary", Event.COMMITTED, t0 + MINUTE),
                       two.event("2.1.0", "canary", Event.REVERTED, t0 + MINUTE, "boot check"),
                       three.event("2.1.0", None, Event.DOWNLOADED, t0 + MINUTE)]),
        (t0 + 2 * MINUTE, [two.health("2.0.0", "canary", t0 + 2 * MINUTE, 60)]),
    ]
    for at, envelopes in batches:
        assert store.ingest([Verified(parse_payload(e.payload), e) for e in envelopes], at) == [None] * len(envelopes)
    found = last_reports(store.path)
    assert set(found) == {"trk-0001", "trk-0003", "trk-0005"}
    a, b, c = found["trk-0001"], found["trk-0003"], found["trk-0005"]
    assert (a.running, a.last_event, a.last_event_release, a.last_seen) == ("2.1.0", "committed", "2.1.0", t0 + MINUTE)
    assert (b.running, b.last_event, b.last_seen) == ("2.0.0", "reverted", t0 + 2 * MINUTE)  # health after the revert
    assert (c.running, c.last_event, c.variant, c.region) == (None, "downloaded", "hp-500", "us")  # events only


def test_an_empty_database_has_no_device(store: ReportStore) -> None:
    assert last_reports(store.path) == {}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "telemetry database {p} does not exist"),
        (lambda p: p.write_bytes(b"not a database, " * 100), "telemetry database {p}: file is not a database"),
        (lambda p: sqlite3.connect(p).execute("PRAGMA user_version = 1").connection.commit(),
         "telemetry database {p} has schema 1"),
        (lambda p: sqlite3.connect(p).execute("CREATE TABLE t (x)").connection.commit(),
         "telemetry database {p} is not an otactl telemetry database (schema 0)"),
    ],
    ids=["missing", "not-sqlite", "schema-1", "schema-0"],
)
def test_a_database_that_cannot_be_read_is_unavailable_with_its_cause(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "telemetry.db"
    make(path)
    with pytest.raises(TelemetryUnavailable) as err:
        last_reports(path)
    assert message.format(p=path) in str(err.value)
