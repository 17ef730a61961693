"""The SQLite store: replay protection, aggregates per stratum, windows, persistence."""

from __future__ import annotations

import sqlite3
import tempfile
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otactl.errors import StoreError
from otactl.telemetry.checks import Verified
from otactl.telemetry.devices import DeviceRegistry
from otactl.telemetry.report import Envelope, Event, Refusal, parse_payload
from otactl.telemetry.source import CohortCounts, CohortQuery, StratumKey, TelemetryUnavailable
from otactl.telemetry.store import ReportStore, SqliteSource

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HP300_EU = StratumKey("t9-engine", "hp-300", "eu")
HP400_EU = StratumKey("t9-engine", "hp-400", "eu")
HP400_US = StratumKey("t9-engine", "hp-400", "us")


def verified(envelopes: list[Envelope]) -> list[Verified]:
    return [Verified(parse_payload(e.payload), e) for e in envelopes]


def ingest(store: ReportStore, envelopes: list[Envelope], at: datetime = T0) -> list[str | None]:
    return [None if o is None else o.reason.value for o in store.ingest(verified(envelopes), at)]


def scenario(fleet) -> list[Envelope]:  # type: ignore[no-untyped-def]
    """trk-0001/2 (hp-300/eu) and trk-0003 (hp-400/eu) in canary on 2.1.0; trk-0004 (hp-400/us) in early."""
    now = fleet.now
    r1, r2, r3, r4 = (fleet.reporter(d) for d in ("trk-0001", "trk-0002", "trk-0003", "trk-0004"))
    return [
        r1.event("2.1.0", "canary", Event.INSTALLED, now),  # not a finished install
        r1.event("2.1.0", "canary", Event.COMMITTED, now),
        r1.health("2.1.0", "canary", now, uptime_s=3600, crashes=2, errors=5),
        r1.health("2.1.0", "canary", now, uptime_s=1800, crashes=1),
        r2.event("2.1.0", "canary", Event.REVERTED, now, reason="boot check failed"),
        r2.health("2.0.0", "canary", now, uptime_s=7200),  # reverted: reports on the old release
        r3.event("2.1.0", "canary", Event.FAILED, now),
        r3.health("2.1.0", "canary", now, uptime_s=900),
        r4.event("2.1.0", "early", Event.COMMITTED, now),
        r4.health("2.1.0", "early", now, uptime_s=3600, crashes=1),
    ]


def test_counts_per_stratum(fleet, store: ReportStore) -> None:  # type: ignore[no-untyped-def]
    assert ingest(store, scenario(fleet)) == [None] * 10
    counts = store.cohort_counts(CohortQuery("t9-engine", "2.1.0"))
    assert counts == {
        HP300_EU: CohortCounts(devices=2, installs=2, install_failures=1, crashes=3, crashing_devices=1,
                               device_hours=1.5),
        HP400_EU: CohortCounts(devices=1, installs=1, install_failures=1, crashes=0, crashing_devices=0,
                               device_hours=0.25),
        HP400_US: CohortCounts(devices=1, installs=1, install_failures=0, crashes=1, crashing_devices=1,
                               device_hours=1.0),
    }  # fmt: skip
    assert store.cohort_counts(CohortQuery("t9-engine", "2.0.0")) == {
        HP300_EU: CohortCounts(devices=1, device_hours=2.0)
    }


def test_ring_and_strata_filters(fleet, store: ReportStore) -> None:  # type: ignore[no-untyped-def]
    ingest(store, scenario(fleet))
    canary = store.cohort_counts(CohortQuery("t9-engine", "2.1.0", rings=frozenset({"canary"})))
    assert set(canary) == {HP300_EU, HP400_EU}
    early = store.cohort_counts(CohortQuery("t9-engine", "2.1.0", rings=frozenset({"early", "all"})))
    assert early == {HP400_US: CohortCounts(1, 1, 0, 1, 1, 1.0)}
    assert store.cohort_counts(CohortQuery("t9-engine", "2.1.0", rings=frozenset())) == {}
    only = store.cohort_counts(CohortQuery("t9-engine", "2.1.0", strata=frozenset({HP400_EU})))
    assert set(only) == {HP400_EU}
    assert store.cohort_counts(CohortQuery("other-model", "2.1.0")) == {}


def test_windows_bound_events_by_ingest_time_and_devices_are_cumulative(fleet, store: ReportStore) -> None:  # type: ignore[no-untyped-def]
    r1, r2 = fleet.reporter("trk-0001"), fleet.reporter("trk-0002")
    old = fleet.now - timedelta(days=30)  # device clocks do not decide the window
    ingest(store, [r1.health("2.1.0", "canary", old, 3600)], at=T0)
    ingest(store, [r1.health("2.1.0", "canary", old, 3600, crashes=1),
                   r2.health("2.1.0", "canary", old, 3600)], at=T0 + timedelta(hours=1))  # fmt: skip
    ingest(store, [r2.health("2.1.0", "canary", old, 3600, crashes=4)], at=T0 + timedelta(hours=2))

    def window(since: datetime | None, until: datetime | None) -> CohortCounts:
        return store.cohort_counts(CohortQuery("t9-engine", "2.1.0", since=since, until=until))[HP300_EU]

    assert window(None, None) == CohortCounts(devices=2, crashes=5, crashing_devices=2, device_hours=4.0)
    assert window(None, T0) == CohortCounts(devices=1, device_hours=1.0)
    # (since, until] bounds the reports; devices (and crashing devices) are those seen up to `until`
    assert window(T0, T0 + timedelta(hours=1)) == CohortCounts(
        devices=2, crashes=1, crashing_devices=1, device_hours=2.0
    )
    assert window(T0 + timedelta(hours=1), None) == CohortCounts(
        devices=2, crashes=4, crashing_devices=2, device_hours=1.0
    )
    assert store.cohort_counts(CohortQuery("t9-engine", "2.1.0", since=T0 + timedelta(hours=2))) == {}


def test_a_crash_counts_its_device_whatever_follows_in_the_batch(fleet, store: ReportStore) -> None:  # type: ignore[no-untyped-def]
    r = fleet.reporter("trk-0001")
    ingest(store, [r.health("2.1.0", "canary", fleet.now, 60, crashes=1), r.health("2.1.0", "canary", fleet.now, 60)])
    counts = store.cohort_counts(CohortQuery("t9-engine", "2.1.0"))[HP300_EU]
    assert (counts.devices, counts.crashes, counts.crashing_devices) == (1, 1, 1)
    assert {(row.name, row.value) for row in store.counter_rows()} >= {("devices", 1), ("crashing_devices", 1)}


def test_replays_are_refused_across_batches_and_restarts(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = fleet.reporter("trk-0001")
    e1, e2, e3 = (r.event("2.1.0", "canary", Event.OFFERED, fleet.now) for _ in range(3))
    store = ReportStore(tmp_path / "t.db")
    assert ingest(store, [e2, e1, e2]) == [None, "replayed", "replayed"]
    store.close()
    store = ReportStore(tmp_path / "t.db")
    assert ingest(store, [e1, e2, e3]) == ["replayed", "replayed", None]
    assert store.report_count() == 2
    assert store.refusal_counts() == {Refusal.REPLAYED: 4}
    store.close()


def test_aggregates_survive_restart(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = ReportStore(tmp_path / "t.db")
    ingest(store, scenario(fleet))
    store.count_refusals({Refusal.FUTURE: 2, Refusal.MALFORMED: 1})
    rows, refusals = store.counter_rows(), store.refusal_counts()
    store.close()
    again = ReportStore(tmp_path / "t.db")
    assert again.counter_rows() == rows
    assert again.refusal_counts() == refusals == {Refusal.FUTURE: 2, Refusal.MALFORMED: 1}
    again.close()


def test_sqlite_source_reads_beside_a_writing_store(fleet, store: ReportStore) -> None:  # type: ignore[no-untyped-def]
    ingest(store, scenario(fleet))
    source = SqliteSource(store.path)
    query = CohortQuery("t9-engine", "2.1.0", rings=frozenset({"canary"}))
    assert source.cohort_counts(query) == store.cohort_counts(query)


def test_sqlite_source_unavailable(tmp_path: Path) -> None:
    with pytest.raises(TelemetryUnavailable, match="does not exist"):
        SqliteSource(tmp_path / "absent.db").cohort_counts(CohortQuery("m", "1"))
    (tmp_path / "other.db").write_bytes(b"")
    sqlite3.connect(tmp_path / "other.db").close()
    with pytest.raises(TelemetryUnavailable, match="no such table"):
        SqliteSource(tmp_path / "other.db").cohort_counts(CohortQuery("m", "1"))


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema 99"):
        ReportStore(tmp_path / "t.db")


# --- the aggregates against a plain-Python reference, for random report streams ---------------

EVENTS = list(Event)


@st.composite
def streams(draw: st.DrawFn) -> list[list[tuple[str, str, str, str, object]]]:
    """Batches of (device, release, ring, kind, event-or-(uptime, crashes))."""
    head = st.tuples(
        st.sampled_from(["trk-0001", "trk-0002", "trk-0003", "trk-0004", "trk-0005"]),
        st.sampled_from(["2.0.0", "2.1.0"]),
        st.sampled_from(["canary", "early", ""]),
    )
    event = st.tuples(head, st.just("event"), st.sampled_from(EVENTS))
    health = st.tuples(head, st.just("health"), st.tuples(st.integers(0, 10_000), st.integers(0, 3)))
    item = st.one_of(event, health).map(lambda t: (*t[0], t[1], t[2]))
    return draw(st.lists(st.lists(item, max_size=8), min_size=1, max_size=5))


def reference(registry: DeviceRegistry, batches, query: CohortQuery, times) -> dict[StratumKey, CohortCounts]:  # type: ignore[no-untyped-def]
    """Events in (since, until]; distinct (device, ring) members and crashers up to until."""
    seen: dict[StratumKey, set[tuple[str, str]]] = defaultdict(set)
    crashed: dict[StratumKey, set[tuple[str, str]]] = defaultdict(set)
    acc: dict[StratumKey, list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0, 0])
    for at, batch in zip(times, batches, strict=True):
        if query.until is not None and at > query.until:
            break
        inside = query.since is None or at > query.since
        for device_id, release, ring, kind, detail in batch:
            if release != query.release or (query.rings is not None and ring not in query.rings):
                continue
            device = registry.get(device_id)
            assert device is not None
            seen[device.stratum].add((device_id, ring))
            a = acc[device.stratum] if inside else [0] * 7
            a[6] += 1
            if kind == "event" and detail in (Event.COMMITTED, Event.REVERTED, Event.FAILED):
                a[1] += 1
                a[2] += detail in (Event.REVERTED, Event.FAILED)
            if kind == "health":
                uptime, crashes = detail  # type: ignore[misc]
                a[3] += crashes
                a[5] += uptime
                if crashes:
                    crashed[device.stratum].add((device_id, ring))
    for key, a in acc.items():
        a[0], a[4] = len(seen[key]), len(crashed[key])
    return {
        k: CohortCounts(int(a[0]), int(a[1]), int(a[2]), int(a[3]), int(a[4]), a[5] / 3600)
        for k, a in acc.items()
        if a[6]
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    streams(),
    st.none() | st.integers(0, 5),
    st.none() | st.integers(0, 5),
    st.none() | st.sets(st.sampled_from(["canary", "early", ""])).map(frozenset),
)
def test_aggregates_match_a_reference(fleet, batches, since_i, until_i, rings) -> None:  # type: ignore[no-untyped-def]
    reporters = {d.device_id: fleet.reporter(d.device_id) for d in fleet.registry}
    times = [T0 + timedelta(minutes=i) for i in range(len(batches))]
    with tempfile.TemporaryDirectory() as tmp:
        store = ReportStore(Path(tmp) / "t.db")
        for at, batch in zip(times, batches, strict=True):
            envelopes = []
            for device_id, release, ring, kind, detail in batch:
                r = reporters[device_id]
                if kind == "event":
                    envelopes.append(r.event(release, ring or None, detail, fleet.now))
                else:
                    uptime, crashes = detail
                    envelopes.append(r.health(release, ring or None, fleet.now, uptime, crashes))
            assert all(o is None for o in ingest(store, envelopes, at))
        since = None if since_i is None else T0 + timedelta(minutes=since_i)
        until = None if until_i is None else T0 + timedelta(minutes=until_i)
        query = CohortQuery("t9-engine", "2.1.0", rings=rings, since=since, until=until)
        assert store.cohort_counts(query) == reference(fleet.registry, batches, query, times)
        store.close()
