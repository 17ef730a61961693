"""The SQLite store: replay protection, counters per stratum, windows, persistence, schema 1 migration."""

from __future__ import annotations

import re
import sqlite3
import tempfile
from collections import defaultdict
from dataclasses import astuple, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otactl.errors import StoreError
from otactl.telemetry import counters
from otactl.telemetry.checks import Verified
from otactl.telemetry.counters import HOUR_S, LATE_AGES, counts_from_totals
from otactl.telemetry.devices import DeviceRegistry
from otactl.telemetry.report import Envelope, Event, Kind, Refusal, parse_payload
from otactl.telemetry.source import CohortCounts, CohortQuery, StratumKey, TelemetryUnavailable
from otactl.telemetry.store import ReportStore, SqliteSource

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HP300_EU = StratumKey("t9-engine", "hp-300", "eu")
HP400_EU = StratumKey("t9-engine", "hp-400", "eu")
HP400_US = StratumKey("t9-engine", "hp-400", "us")
SCHEMA_1 = Path(__file__).parent / "data" / "telemetry-schema-1.sql"
ZERO = counts_from_totals({}, {})  # every field 0, the late tuples as long as LATE_AGES


def counts(**fields: object) -> CohortCounts:
    return replace(ZERO, **fields)  # type: ignore[arg-type]


def late(*values: float) -> tuple[float, ...]:
    """A late_* or aged_devices tuple: the values given for the first ages, zeros after."""
    return (*values, *[type(values[0])(0)] * (len(LATE_AGES) - len(values)))


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
    assert store.cohort_counts(CohortQuery("t9-engine", "2.1.0")) == {
        HP300_EU: counts(reports=5, devices=2, installs=2, install_failures=1, crashes=3, device_hours=1.5,
                         crash_hours=1.5),
        HP400_EU: counts(reports=2, devices=1, installs=1, install_failures=1, device_hours=0.25),
        HP400_US: counts(reports=2, devices=1, installs=1, crashes=1, device_hours=1.0, crash_hours=1.0),
    }  # fmt: skip
    assert store.cohort_counts(CohortQuery("t9-engine", "2.0.0")) == {
        HP300_EU: counts(reports=1, devices=1, device_hours=2.0)
    }


def test_ring_and_strata_filters(fleet, store: ReportStore) -> None:  # type: ignore[no-untyped-def]
    ingest(store, scenario(fleet))
    canary = store.cohort_counts(CohortQuery("t9-engine", "2.1.0", rings=frozenset({"canary"})))
    assert set(canary) == {HP300_EU, HP400_EU}
    early = store.cohort_counts(CohortQuery("t9-engine", "2.1.0", rings=frozenset({"early", "all"})))
    assert early == {HP400_US: counts(reports=2, devices=1, installs=1, crashes=1, device_hours=1.0, crash_hours=1.0)}
    assert store.cohort_counts(CohortQuery("t9-engine", "2.1.0", rings=frozenset())) == {}
    only = store.cohort_counts(CohortQuery("t9-engine", "2.1.0", strata=frozenset({HP400_EU})))
    assert set(only) == {HP400_EU}
    assert store.cohort_counts(CohortQuery("t9-engine", "2.1.0", rings=frozenset({""}))) == {}  # no ring
    assert store.cohort_counts(CohortQuery("other-model", "2.1.0")) == {}


def test_windows_bound_reports_by_ingest_time_and_devices_are_cumulative(fleet, store: ReportStore) -> None:  # type: ignore[no-untyped-def]
    r1, r2 = fleet.reporter("trk-0001"), fleet.reporter("trk-0002")
    old = fleet.now - timedelta(days=30)  # device clocks do not decide the window
    ingest(store, [r1.health("2.1.0", "canary", old, 3600)], at=T0)
    ingest(store, [r1.health("2.1.0", "canary", old, 3600, crashes=1),
                   r2.health("2.1.0", "canary", old, 3600)], at=T0 + timedelta(hours=1))  # fmt: skip
    ingest(store, [r2.health("2.1.0", "canary", old, 3600, crashes=4)], at=T0 + timedelta(hours=2))

    def window(since: datetime | None, until: datetime | None) -> CohortCounts:
        return store.cohort_counts(CohortQuery("t9-engine", "2.1.0", since=since, until=until))[HP300_EU]

    assert window(None, None) == counts(reports=4, devices=2, crashes=5, device_hours=4.0, crash_hours=2.0)
    assert window(None, T0) == counts(reports=1, devices=1, device_hours=1.0)
    # (since, until] bounds the reports; devices are those seen up to `until`
    assert window(T0, T0 + timedelta(hours=1)) == counts(reports=2, devices=2, crashes=1, device_hours=2.0,
                                                        crash_hours=1.0)  # fmt: skip
    assert window(T0 + timedelta(hours=1), None) == counts(reports=1, devices=2, crashes=4, device_hours=1.0,
                                                          crash_hours=1.0)  # fmt: skip
    assert store.cohort_counts(CohortQuery("t9-engine", "2.1.0", since=T0 + timedelta(hours=2))) == {}


def window_part(c: CohortCounts) -> CohortCounts:
    """The window fields only (cumulative ones zeroed): what adds over adjacent windows."""
    return replace(c, devices=0, aged_devices=ZERO.aged_devices)


def test_counts_are_the_increments_summed_and_windows_add(fleet, store: ReportStore) -> None:  # type: ignore[no-untyped-def]
    """Hand-computed counts: two reports of one device in one batch chain their state, a 24-hour
    period closes, the device crosses 12 h and 24 h on the image, and its age (keyed by device and
    release) survives a move to another ring."""
    r1, r2 = fleet.reporter("trk-0001"), fleet.reporter("trk-0002")
    now, h = fleet.now, HOUR_S
    t1, t2, t3 = T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    # batch 1: 20 h (crosses 12 h), then 3 h that are late for 12 h; the period holds 23 h, 3 crashes
    ingest(store, [r1.health("2.1.0", "canary", now, 20 * h, crashes=1),
                   r1.health("2.1.0", "canary", now, 3 * h, crashes=2)], at=t1)  # fmt: skip
    # batch 2: 2 h more cross 24 h and close the period (25 h, 3 crashes); trk-0002 joins
    ingest(store, [r1.health("2.1.0", "canary", now, 2 * h), r2.event("2.1.0", "canary", Event.COMMITTED, now),
                   r2.health("2.1.0", "canary", now, h)], at=t2)  # fmt: skip
    # batch 3: trk-0001 moved to ring early: its hour is late for 12 h and 24 h (25 h on the image)
    ingest(store, [r1.health("2.1.0", "early", now, h, crashes=1)], at=t3)

    def window(since: datetime | None, until: datetime | None, rings: frozenset[str] | None = None) -> CohortCounts:
        got = store.cohort_counts(CohortQuery("t9-engine", "2.1.0", rings=rings, since=since, until=until))
        return got.get(HP300_EU, ZERO)

    first = counts(
        reports=2,
        crashes=3,
        device_hours=23.0,
        crash_hours=3.0,  # one hour per crash at most: 1 of the 20 h report, 2 of the 3 h one
        late_device_hours=late(3.0),
        late_crashes=late(2),
        late_crash_hours=late(2.0),
        devices=1,
        aged_devices=late(1),
    )
    second = counts(
        reports=3,
        installs=1,
        device_hours=3.0,
        periods=1,
        period_crashes=3,
        period_crash_sq=9,
        late_device_hours=late(2.0),
        late_crashes=late(0),
        late_crash_hours=late(0.0),
        devices=2,
        aged_devices=late(1, 1),
    )
    third = counts(
        reports=1,
        crashes=1,
        device_hours=1.0,
        crash_hours=1.0,
        late_device_hours=late(1.0, 1.0),
        late_crashes=late(1, 1),
        late_crash_hours=late(1.0, 1.0),
        devices=3,
        aged_devices=late(1, 1),
    )
    assert window(None, t1) == first
    assert window(t1, t2) == second
    assert window(t2, t3) == third
    assert window(t2, t3, frozenset({"early"})) == replace(third, devices=1, aged_devices=late(0))  # aged in canary
    assert window(None, t3) == replace(window_part(first) + window_part(second) + window_part(third),
                                       devices=3, aged_devices=late(1, 1))  # fmt: skip
    assert window_part(window(None, t2)) + window_part(window(t2, None)) == window_part(window(None, None))
    # the running totals behind /metrics are the same increments
    assert counts_from_counter_rows(store)[HP300_EU] == window(None, None)


def counts_from_counter_rows(store: ReportStore, release: str = "2.1.0") -> dict[StratumKey, CohortCounts]:
    """counts_from_totals of the store's running totals (what /metrics exports) of one release,
    summed over rings; strata without reports absent."""
    window: dict[StratumKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    cumulative: dict[StratumKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in store.counter_rows():
        if row.release == release:
            key = StratumKey(row.model, row.variant, row.region)
            (cumulative if counters.is_cumulative(row.name) else window)[key][row.name] += row.value
    out = {k: counts_from_totals(window[k], cumulative[k]) for k in window.keys() | cumulative.keys()}
    return {k: c for k, c in out.items() if c.reports}


def test_counter_rows_are_one_per_cohort_and_counter_never_per_device(fleet, store: ReportStore) -> None:  # type: ignore[no-untyped-def]
    ingest(store, scenario(fleet))
    rows = store.counter_rows()
    names: dict[tuple[str, ...], list[str]] = defaultdict(list)  # cohort -> its counter names
    for r in rows:
        names[(r.model, r.release, r.ring, r.variant, r.region)].append(r.name)
    assert all(len(n) == len(set(n)) for n in names.values())
    everything = {n for ns in names.values() for n in ns}
    assert everything - {f"event:{e.value}" for e in Event} == {c.name for c in counters.COUNTERS}
    assert "crashing_devices" not in everything
    health = [set(n) for n in names.values() if "health_reports" in n]
    assert len(health) == 4 and all(n >= set(counters.HEALTH_COUNTERS) for n in health)  # zeros too
    assert not any("trk-" in str(r) for r in rows)


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
    sqlite3.connect(tmp_path / "other.db").close()
    with pytest.raises(TelemetryUnavailable, match="not an otactl telemetry database"):
        SqliteSource(tmp_path / "other.db").cohort_counts(CohortQuery("m", "1"))
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    junk = re.escape(f"telemetry database {tmp_path / 'junk.db'}: file is not a database")
    with pytest.raises(TelemetryUnavailable, match=junk):
        SqliteSource(tmp_path / "junk.db").cohort_counts(CohortQuery("m", "1"))


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match=re.escape(f"telemetry database {tmp_path / 't.db'} has schema 99")):
        ReportStore(tmp_path / "t.db")
    with pytest.raises(TelemetryUnavailable, match="has schema 99; this otactl reads schema 3"):
        SqliteSource(tmp_path / "t.db").cohort_counts(CohortQuery("m", "1"))


# --- schema 1 (distinct-device counters) is migrated by replaying its reports --------------------


def schema_1_db(path: Path) -> Path:
    """A real schema-1 database: tests/unit/telemetry/data/telemetry-schema-1.sql, dumped from
    the schema-1 store after three batches (and a replay and a refusal)."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_1.read_text())
    conn.close()
    return path


def test_schema_1_is_migrated_by_replaying_its_reports(tmp_path: Path) -> None:
    old = schema_1_db(tmp_path / "old.db")
    with pytest.raises(TelemetryUnavailable, match=r"has schema 1; .* start `otactl telemetry serve` on it once"):
        SqliteSource(old).cohort_counts(CohortQuery("t9-engine", "2.1.0"))
    conn = sqlite3.connect(old)
    batches = defaultdict(list)
    for received_at, payload, signature in conn.execute(
        "SELECT received_at, payload, signature FROM reports ORDER BY id"
    ):
        batches[received_at].append(Envelope(payload, signature))
    conn.close()
    assert len(batches) == 3
    fresh = ReportStore(tmp_path / "fresh.db")  # the same reports, ingested by this otactl
    for received_at, envelopes in sorted(batches.items()):
        assert ingest(fresh, envelopes, datetime.fromtimestamp(received_at, UTC)) == [None] * len(envelopes)
    migrated = ReportStore(old)
    edges = [None, *(datetime.fromtimestamp(t, UTC) for t in sorted(batches))]
    for release in ("2.0.0", "2.1.0"):
        for since in edges:
            for until in edges:
                query = CohortQuery("t9-engine", release, since=since, until=until)
                assert migrated.cohort_counts(query) == fresh.cohort_counts(query), (release, since, until)
    key = lambda r: (r.model, r.release, r.ring, r.variant, r.region, r.name)  # noqa: E731
    assert sorted(migrated.counter_rows(), key=key) == sorted(fresh.counter_rows(), key=key)
    assert migrated.cohort_counts(CohortQuery("t9-engine", "2.1.0"))[HP300_EU].periods == 1  # not vacuous
    assert migrated.refusal_counts() == {Refusal.FUTURE: 1, Refusal.REPLAYED: 1}  # kept
    first = next(iter(batches.values()))[0]
    assert ingest(migrated, [first]) == ["replayed"]  # last seqs kept
    assert migrated.report_count() == sum(map(len, batches.values()))
    migrated.close()
    fresh.close()
    again = ReportStore(old)  # schema 3 now: opened as is
    assert again.report_count() == sum(map(len, batches.values()))
    again.close()
    assert SqliteSource(old).cohort_counts(CohortQuery("t9-engine", "2.1.0"))


def test_a_failed_migration_leaves_schema_1_untouched(tmp_path: Path) -> None:
    old = schema_1_db(tmp_path / "old.db")
    conn = sqlite3.connect(old)
    conn.execute("UPDATE reports SET kind = 'event', event = 'bogus' WHERE id = 5")  # not a report otactl stores
    conn.commit()
    conn.close()
    message = f"telemetry database {old}: cannot migrate it from schema 1 to 3: report 5 of table reports"
    with pytest.raises(StoreError, match=re.escape(message)):
        ReportStore(old)
    conn = sqlite3.connect(old)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {
        "reports", "device_seq", "cohort_members", "counters", "refusals"}  # fmt: skip
    conn.close()


# --- the counts against a plain-Python reference, for random report streams ----------------------

EVENTS = list(Event)
MAX_UPTIME = 30 * HOUR_S  # reports long enough to cross every late age within a few


@st.composite
def streams(draw: st.DrawFn) -> list[list[tuple[str, str, str, str, object]]]:
    """Batches of (device, release, ring, kind, event-or-(uptime, crashes))."""
    head = st.tuples(  # few devices, mostly the queried release: their ages and periods get long
        st.sampled_from(["trk-0001", "trk-0002", "trk-0004"]),
        st.sampled_from(["2.0.0", "2.1.0", "2.1.0"]),
        st.sampled_from(["canary", "early", ""]),
    )
    event = st.tuples(head, st.just("event"), st.sampled_from(EVENTS))
    uptime = st.one_of(st.integers(0, MAX_UPTIME), st.sampled_from([3600, 12 * HOUR_S, 24 * HOUR_S]))
    health = st.tuples(head, st.just("health"), st.tuples(uptime, st.integers(0, 3)))
    item = st.one_of(event, health, health).map(lambda t: (*t[0], t[1], t[2]))
    return draw(st.lists(st.lists(item, max_size=10), min_size=1, max_size=5))


def reference(registry: DeviceRegistry, batches, query: CohortQuery, times) -> dict[StratumKey, CohortCounts]:  # type: ignore[no-untyped-def]
    """counts.health_increments summed by hand: state per (device, release) in report order, a
    device counted in `devices` at its first report in a cohort (ring included); window counters
    over (since, until], cumulative ones up to until."""
    state: dict[tuple[str, str], tuple[int, int, int]] = {}
    members: set[tuple[str, ...]] = set()
    window: dict[StratumKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    cumulative: dict[StratumKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for at, batch in zip(times, batches, strict=True):
        for device_id, release, ring, kind, detail in batch:
            device = registry.get(device_id)
            assert device is not None
            values: dict[str, int] = {"devices": int((device_id, release, ring) not in members)}
            members.add((device_id, release, ring))
            if kind == "event":
                values[f"event:{detail.value}"] = 1  # type: ignore[attr-defined]
            else:
                uptime, crashes = detail  # type: ignore[misc]
                inc = counters.health_increments(*state.get((device_id, release), (0, 0, 0)), uptime, crashes)
                state[(device_id, release)] = (inc.age_s, inc.period_s, inc.period_crashes)
                values.update(inc.values)
            wanted = release == query.release and (query.rings is None or ring in query.rings)
            if not wanted or (query.until is not None and at > query.until):
                continue
            for name, n in values.items():
                if not name.startswith("event:") and counters.is_cumulative(name):
                    cumulative[device.stratum][name] += n
                elif query.since is None or at > query.since:
                    window[device.stratum][name] += n
    out = {k: counts_from_totals(window[k], cumulative[k]) for k in cumulative}
    return {k: c for k, c in out.items() if c.reports and (query.strata is None or k in query.strata)}


def flat(c: CohortCounts) -> list[float]:
    return [x for v in astuple(c) for x in (v if isinstance(v, tuple) else (v,))]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    streams(),
    st.none() | st.integers(0, 5),
    st.none() | st.integers(0, 5),
    st.none() | st.sets(st.sampled_from(["canary", "early", ""])).map(frozenset),
    st.integers(0, 5),
)
def test_counts_match_a_reference_and_windows_add(fleet, batches, since_i, until_i, rings, split_i) -> None:  # type: ignore[no-untyped-def]
    reporters = {d.device_id: fleet.reporter(d.device_id) for d in fleet.registry}
    times = [T0 + timedelta(minutes=i) for i in range(len(batches))]
    with tempfile.TemporaryDirectory() as tmp:
        store = ReportStore(Path(tmp) / "t.db")
        for at, batch in zip(times, batches, strict=True):
            envelopes = []
            for device_id, release, ring, kind, detail in batch:
                r = reporters[device_id]
                if kind == Kind.EVENT.value:
                    envelopes.append(r.event(release, ring or None, detail, fleet.now))
                else:
                    uptime, crashes = detail
                    envelopes.append(r.health(release, ring or None, fleet.now, uptime, crashes))
            assert all(o is None for o in ingest(store, envelopes, at))

        def at(i: int | None) -> datetime | None:
            return None if i is None else T0 + timedelta(minutes=i)

        query = CohortQuery("t9-engine", "2.1.0", rings=rings, since=at(since_i), until=at(until_i))
        assert store.cohort_counts(query) == reference(fleet.registry, batches, query, times)
        # windows add: (a, b] + (b, c] == (a, c] for every window field
        a, c = since_i, until_i
        if a is not None and c is not None and a > c:
            a, c = c, a
        b = min(max(split_i, a or 0), 5 if c is None else c)
        parts = [store.cohort_counts(replace(query, since=at(x), until=at(y))) for x, y in ((a, b), (b, c), (a, c))]
        for key in parts[2]:
            left, right = (window_part(p.get(key, ZERO)) for p in parts[:2])
            assert flat(left + right) == pytest.approx(flat(window_part(parts[2][key])))
        assert set(parts[0]) | set(parts[1]) == set(parts[2])
        # /metrics' running totals are the same increments, summed over every report
        everything = store.cohort_counts(CohortQuery("t9-engine", "2.1.0"))
        assert counts_from_counter_rows(store) == everything
        store.close()
