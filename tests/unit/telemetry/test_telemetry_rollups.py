"""Rollups (schema 3): a window read from whole minute/hour buckets plus its partial minutes counts
exactly what a pass over every stored report counts, at any window, bucket boundaries included."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otactl.telemetry import counters
from otactl.telemetry.ledger import COUNTER_NAMES, Incoming, Ledger, column
from otactl.telemetry.report import Event
from otactl.telemetry.source import CohortQuery, StratumKey
from otactl.telemetry.store import ReportStore, SqliteSource, window_pieces

T0 = 1_800_000_000.0  # a whole hour (divisible by 3600)
STRATA = (("hp-300", "eu"), ("hp-500", "na"))
_WINDOW = [c.name for c in counters.COUNTERS if c.kind is counters.Kind.WINDOW]
_CUMULATIVE = [c.name for c in counters.COUNTERS if c.kind is counters.Kind.CUMULATIVE]

# offsets from T0 that sit on, just before and just after minute and hour boundaries
EDGES = [0.0, 0.25, 59.5, 60.0, 60.5, 3599.0, 3600.0, 3600.5, 7199.99, 7200.0, 7260.0, 10_800.0, 86_400.0]
offsets = st.one_of(st.sampled_from(EDGES), st.floats(min_value=0, max_value=30 * 3600, allow_nan=False))


def _piece_holds(piece: str, lo: float, hi: float, t: float) -> bool:
    if piece == "raw_lower":
        return lo < t < hi
    if piece == "raw_upper":
        return lo <= t <= hi
    if piece == "raw_open":
        return lo < t <= hi
    width = 3600 if piece == "hours" else 60
    bucket = math.floor(t / width) * width
    return lo <= bucket < hi


@given(since=st.one_of(st.none(), offsets), until=st.one_of(st.none(), offsets),
       times=st.lists(offsets, min_size=1, max_size=40))
@settings(max_examples=300, deadline=None)
def test_the_pieces_of_a_window_hold_each_of_its_reports_exactly_once(since: float | None, until: float | None,
                                                                       times: list[float]) -> None:
    lo = -math.inf if since is None else T0 + since
    hi = math.inf if until is None else T0 + until
    pieces = window_pieces(lo, hi)
    assert sum(1 for p in pieces if p[0].startswith("raw")) <= 2
    for piece, a, b in pieces:
        if piece in ("hours", "minutes"):  # whole buckets only, wholly inside the window
            width = 3600 if piece == "hours" else 60
            assert a == -math.inf or (a % width == 0 and a > lo)
            assert b == math.inf or (b % width == 0 and b <= hi)
        if piece.startswith("raw") and not math.isinf(lo) and not math.isinf(hi):
            assert b - a < 120  # partial minutes, never a long stretch of single reports
    for t in (T0 + x for x in times):
        holders = [p for p in pieces if _piece_holds(*p, t)]
        assert len(holders) == (1 if lo < t <= hi else 0), (t, lo, hi, holders)


def _report(i: int, at: float, stratum: tuple[str, str], event: Event | None, crashes: int) -> Incoming:
    variant, region = stratum
    kind, uptime = ("event", 0) if event is not None else ("health", 1800 + 600 * (i % 5))
    return Incoming(f"dev-{i % 7}", i, int(at), at, "t9-engine", "2.1.0", "canary" if i % 3 else "wide",
                    variant, region, kind, None if event is None else event.value, None, uptime,
                    0 if event is not None else crashes, 0, "{}", "sig")


def _store(tmp_path: Path, rows: list[Incoming], batches: int) -> Path:
    path = tmp_path / "t.db"
    store = ReportStore(path)  # schema 3, made by the production code
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    size = max(1, math.ceil(len(rows) / batches))
    for start in range(0, len(rows), size):  # several ingest transactions, as the ingest makes them
        conn.execute("BEGIN")
        book = Ledger(conn, (r.device_id for r in rows[start:start + size]))
        for r in rows[start:start + size]:
            book.add(r)
        book.flush()
        conn.execute("COMMIT")
    conn.close()
    return path


def _oracle(path: Path, query: CohortQuery) -> dict[StratumKey, object]:
    """Every stored report, one by one, against the window's definition."""
    since = -math.inf if query.since is None else query.since.timestamp()
    until = math.inf if query.until is None else query.until.timestamp()
    conn = sqlite3.connect(path)
    cols = ", ".join(column(n) for n in COUNTER_NAMES)
    window: dict[tuple[str, str], dict[str, float]] = {}
    cumulative: dict[tuple[str, str], dict[str, float]] = {}
    for variant, region, ring, received_at, event, *values in conn.execute(
            f"SELECT variant, region, ring, received_at, event, {cols} FROM reports"
            " WHERE model = ? AND release = ?", (query.model, query.release)):
        if (query.rings is not None and ring not in query.rings) or received_at > until:
            continue
        inc = dict(zip(COUNTER_NAMES, values, strict=True))
        c = cumulative.setdefault((variant, region), {})
        for n in _CUMULATIVE:
            c[n] = c.get(n, 0) + inc[n]
        if received_at > since:
            w = window.setdefault((variant, region), {})
            for n in _WINDOW:
                w[n] = w.get(n, 0) + inc[n]
            if event is not None:
                name = counters.EVENT_PREFIX + event
                w[name] = w.get(name, 0) + 1
    conn.close()
    out: dict[StratumKey, object] = {}
    for (variant, region), w in window.items():
        counts = counters.counts_from_totals(w, cumulative[(variant, region)])
        if counts.reports:
            out[StratumKey(query.model, variant, region)] = counts
    return out


@st.composite
def reports(draw: st.DrawFn) -> list[Incoming]:
    times = sorted(draw(st.lists(offsets, min_size=1, max_size=60)))
    events = st.one_of(st.none(), st.sampled_from(list(Event)))
    return [_report(i, T0 + t, draw(st.sampled_from(STRATA)), draw(events), draw(st.integers(0, 3)))
            for i, t in enumerate(times)]


def _at(offset: float | None) -> datetime | None:
    return None if offset is None else datetime.fromtimestamp(T0 + offset, UTC)


@given(rows=reports(), batches=st.integers(1, 4), since=st.one_of(st.none(), offsets),
       until=st.one_of(st.none(), offsets), rings=st.sampled_from([None, frozenset({"canary"}),
                                                                   frozenset({"canary", "wide"})]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_rollup_counts_equal_a_pass_over_every_report(
        tmp_path_factory: pytest.TempPathFactory, rows: list[Incoming], batches: int, since: float | None,
        until: float | None, rings: frozenset[str] | None) -> None:
    path = _store(tmp_path_factory.mktemp("rollups"), rows, batches)
    query = CohortQuery("t9-engine", "2.1.0", rings, _at(since), _at(until))
    assert SqliteSource(path).cohort_counts(query) == _oracle(path, query)


def test_a_schema_2_database_gets_its_rollups_when_the_ingest_opens_it(tmp_path: Path) -> None:
    rows = [_report(i, T0 + 97.5 * i, STRATA[i % 2], Event.COMMITTED if i % 4 == 0 else None, i % 2)
            for i in range(200)]
    path = _store(tmp_path, rows, 3)
    query = CohortQuery("t9-engine", "2.1.0", None, _at(1000.25), _at(15_000.0))
    expected = _oracle(path, query)
    assert expected and SqliteSource(path).cohort_counts(query) == expected
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE rollups")  # what schema 2 looked like
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    ReportStore(path).close()  # the ingest migrates it
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3
    assert SqliteSource(path).cohort_counts(query) == expected
