"""The embedded telemetry store: accepted reports in SQLite, and the counts gates and /metrics read.

One write transaction per ingest request (WAL, ``executemany``) checks replays, stores the reports
with their counter increments and keeps the derived tables in step with them, so they can never
disagree (the schema and the accounting: ledger.py):

- ``device_seq``: each device's last accepted ``seq`` (replay protection; survives report pruning);
- ``device_state``, ``cohort_members``: what a report's increments depend on (ledger.py);
- ``counters``: running totals per cohort and counter, what ``/metrics`` exposes (never one series
  per device).

What a query's window (since, until] bounds, so that Prometheus can give the very same numbers
(docs/decisions/0201-telemetry-windows.md): window counters (:mod:`otactl.telemetry.counters`)
are sums over the reports the ingest accepted in the window (``received_at``, the clock Prometheus
sees too); cumulative counters (``devices``, ``aged_devices_<L>h``) are sums up to ``until``,
``since`` does not apply; a stratum is present when it has a report in the window.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from otactl.errors import StoreError
from otactl.telemetry import counters, ledger
from otactl.telemetry.checks import Refused, Verified
from otactl.telemetry.ledger import COHORT, IN_CHUNK, NO_RING, SCHEMA_VERSION, Incoming, Ledger
from otactl.telemetry.report import Refusal
from otactl.telemetry.source import (
    CohortCounts,
    CohortQuery,
    StratumKey,
    TelemetrySource,
    TelemetryUnavailable,
)

__all__ = ["NO_RING", "SCHEMA_VERSION", "CounterRow", "ReportStore", "SqliteSource", "cohort_counts"]

_SEQ = (
    "INSERT INTO device_seq (device_id, last_seq) VALUES (?, ?)"
    " ON CONFLICT DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)"
)


@dataclass(frozen=True)
class CounterRow:
    model: str
    release: str
    ring: str
    variant: str
    region: str
    name: str  # a counter of counters.COUNTERS, or event:<event>
    value: int


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            conn = sqlite3.connect(
                path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False,
                isolation_level=None,
            )  # fmt: skip
        else:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn
    except sqlite3.Error as exc:
        raise StoreError(f"telemetry database {path}: {exc}") from exc


class ReportStore:
    """Read-write access for the ingest. Thread-safe: writes serialise on a lock."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._write = _connect(self.path, readonly=False)
        self._lock = threading.Lock()
        try:
            self._open()
            self._read = _connect(self.path, readonly=False)
        except BaseException:
            self._write.close()
            raise
        self._read_lock = threading.Lock()

    def _open(self) -> None:
        """The current schema in a new database; migrate a schema-1 or -2 one; refuse any other."""
        try:
            version = self._version(self._write)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"telemetry database {self.path} has schema {version}; this otactl reads up to {SCHEMA_VERSION}"
                )
            self._write.execute("PRAGMA journal_mode = WAL")
            self._write.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"telemetry database {self.path}: {exc}") from exc
        with self._transaction() as conn:
            version = self._version(conn)  # again, under the write lock: another process may have migrated
            if version == 0:
                ledger.create(conn)
            elif version == 1:
                try:
                    ledger.migrate_from_1(conn)  # docs/decisions/0205-telemetry-schema-2.md
                except ValueError as exc:
                    raise StoreError(
                        f"telemetry database {self.path}: cannot migrate it from schema 1 to {SCHEMA_VERSION}: {exc}"
                    ) from exc
            elif version == 2:
                ledger.migrate_from_2(conn)  # docs/decisions/0206-telemetry-rollups.md
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"telemetry database {self.path} has schema {version}; this otactl reads up to {SCHEMA_VERSION}"
                )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Idempotent; checkpoints the WAL into the database file."""
        with self._lock, self._read_lock:
            self._read.close()
            self._write.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._write.execute("BEGIN IMMEDIATE")
                try:
                    yield self._write
                except BaseException:
                    self._write.execute("ROLLBACK")
                    raise
                self._write.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"telemetry database {self.path}: {exc}") from exc

    def ingest(
        self,
        verified: Sequence[Verified],
        received_at: datetime,
        refusals: Mapping[Refusal, int] | None = None,
    ) -> list[Refused | None]:
        """Store the reports whose ``seq`` is above their device's last, in one transaction.

        Returns, per report, None (stored) or why it was refused (replayed). ``refusals`` are the
        batch's other refusals, counted in the same transaction.
        """
        counts = dict(refusals or {})
        outcomes: list[Refused | None] = []
        at = received_at.timestamp()
        with self._transaction() as conn:
            devices: list[str] = sorted({v.report.device_id for v in verified})
            last = self._last_seqs(conn, devices)
            book = Ledger(conn, devices)
            stored: set[str] = set()
            for item in verified:
                r = item.report
                previous = last.get(r.device_id, -1)
                if r.seq <= previous:
                    outcomes.append(Refused(Refusal.REPLAYED, f"seq {r.seq} is not above the last, {previous}"))
                    counts[Refusal.REPLAYED] = counts.get(Refusal.REPLAYED, 0) + 1
                    continue
                last[r.device_id] = r.seq
                stored.add(r.device_id)
                outcomes.append(None)
                h = r.health
                book.add(Incoming(
                    r.device_id, r.seq, int(r.time.timestamp()), at, r.model, r.release, r.ring or NO_RING,
                    r.variant, r.region, r.kind.value, None if r.event is None else r.event.value, r.reason,
                    0 if h is None else h.uptime_s, 0 if h is None else h.crashes, 0 if h is None else h.errors,
                    item.envelope.payload, item.envelope.signature,
                ))  # fmt: skip
            book.flush()
            conn.executemany(_SEQ, [(d, last[d]) for d in sorted(stored)])
            self._add_refusals(conn, counts)
        return outcomes

    def count_refusals(self, refusals: Mapping[Refusal, int]) -> None:
        """Count refusals of whole requests (oversized or malformed bodies)."""
        with self._transaction() as conn:
            self._add_refusals(conn, refusals)

    @staticmethod
    def _add_refusals(conn: sqlite3.Connection, refusals: Mapping[Refusal, int]) -> None:
        conn.executemany(
            "INSERT INTO refusals (reason, count) VALUES (?, ?)"
            " ON CONFLICT DO UPDATE SET count = count + excluded.count",
            [(reason.value, n) for reason, n in refusals.items() if n],
        )

    @staticmethod
    def _last_seqs(conn: sqlite3.Connection, device_ids: list[str]) -> dict[str, int]:
        last: dict[str, int] = {}
        for i in range(0, len(device_ids), IN_CHUNK):
            chunk = device_ids[i : i + IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            last.update(
                conn.execute(
                    f"SELECT device_id, last_seq FROM device_seq WHERE device_id IN ({marks})",  # noqa: S608
                    chunk,
                ).fetchall()
            )
        return last

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            try:
                yield self._read
            except sqlite3.Error as exc:
                raise StoreError(f"telemetry database {self.path}: {exc}") from exc

    def counter_rows(self) -> list[CounterRow]:
        with self._reading() as conn:
            rows = conn.execute(f"SELECT {COHORT}, name, value FROM counters").fetchall()  # noqa: S608
        return [CounterRow(*row) for row in rows]

    def refusal_counts(self) -> dict[Refusal, int]:
        with self._reading() as conn:
            rows = conn.execute("SELECT reason, count FROM refusals").fetchall()
        return {Refusal(reason): n for reason, n in rows if reason in Refusal.__members__.values()}

    def report_count(self) -> int:
        with self._reading() as conn:
            return int(conn.execute("SELECT count(*) FROM reports").fetchone()[0])

    def claim_shard(self, shard: str | None) -> None:
        """Bind the database to one shard ("I/N") on its first sharded start; refuse another after.

        A device's replay state lives in its shard's database only (decision 0207), so a database
        started as another shard, or unsharded after being a shard, would admit reports whose last
        ``seq`` it does not hold. An unsharded database that was never a shard stays as it was. The
        ``ingest_shard`` table is additive: readers never look at it (the schema stays 3).
        """
        with self._transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS ingest_shard (spec TEXT NOT NULL)")
            row = conn.execute("SELECT spec FROM ingest_shard").fetchone()
            if row is None and shard is not None:
                conn.execute("INSERT INTO ingest_shard (spec) VALUES (?)", (shard,))
            elif row is not None and row[0] != shard:
                now = "unsharded" if shard is None else f"--shard {shard}"
                raise StoreError(
                    f"telemetry database {self.path} belongs to shard {row[0]}, not {now}: its devices' replay "
                    "state is there; changing shards moves it (docs/scaling.md, resharding)"
                )

    def ping(self) -> None:
        with self._reading() as conn:
            conn.execute("SELECT 1 FROM counters LIMIT 1").fetchall()

    def cohort_counts(self, query: CohortQuery) -> dict[StratumKey, CohortCounts]:
        with self._reading() as conn:
            return cohort_counts(conn, query)


_WINDOW = [c.name for c in counters.COUNTERS if c.kind is counters.Kind.WINDOW]
_CUMULATIVE = [c.name for c in counters.COUNTERS if c.kind is counters.Kind.CUMULATIVE]
_EVENTS = [counters.EVENT_PREFIX + e for e in ledger.EVENT_NAMES]
_MINUTE, _HOUR = ledger.ROLLUP_LEVELS
# a window's sums, from reports (the partial minutes at its edges) and from rollups (whole buckets)
_RAW_WINDOW = [f"sum({ledger.column(n)})" for n in _WINDOW] + [f"sum(event IS '{e}')" for e in ledger.EVENT_NAMES]
_RAW_CUMULATIVE = [f"sum({ledger.column(n)})" for n in _CUMULATIVE]
_ROLLED_WINDOW = [f"sum({ledger.column(n)})" for n in _WINDOW] + [f"sum({ledger.event_column(e)})"
                                                                  for e in ledger.EVENT_NAMES]
_ROLLED_CUMULATIVE = [f"sum({ledger.column(n)})" for n in _CUMULATIVE]


def _floor(t: float, width: int) -> float:
    return t if math.isinf(t) else math.floor(t / width) * width


def _after(t: float, width: int) -> float:
    """The first bucket boundary strictly after ``t``: buckets from it hold only reports after ``t``."""
    return t if math.isinf(t) else (math.floor(t / width) + 1) * width


def window_pieces(since: float, until: float) -> list[tuple[str, float, float]]:
    """How the window ``(since, until]`` of ``received_at`` is read: a list of ``(piece, lo, hi)``.

    ``("hours"|"minutes", lo, hi)``: the rollup buckets of that width starting in ``[lo, hi)``, each
    wholly inside the window; ``("raw_lower", lo, hi)``: the reports with ``lo < received_at < hi``;
    ``("raw_upper", lo, hi)``: ``lo <= received_at <= hi``; ``("raw_open", lo, hi)``: ``(lo, hi]``. The pieces do
    not overlap and together hold every report of the window exactly once; at most two minutes of
    reports are read one by one, whatever the window's length.
    """
    if not since < until:
        return []
    m_lo, m_hi = _after(since, _MINUTE), _floor(until, _MINUTE)
    if not m_lo < m_hi:  # no whole minute inside: every report is read
        return [("raw_open", since, until)]
    pieces: list[tuple[str, float, float]] = []
    if not math.isinf(since):
        pieces.append(("raw_lower", since, m_lo))
    h_lo, h_hi = _after(since, _HOUR), _floor(until, _HOUR)
    if h_lo < h_hi:
        pieces += [("minutes", m_lo, h_lo), ("hours", h_lo, h_hi), ("minutes", h_hi, m_hi)]
    else:
        pieces.append(("minutes", m_lo, m_hi))
    if not math.isinf(until):
        pieces.append(("raw_upper", m_hi, until))
    return [p for p in pieces if p[1] < p[2] or p[0] == "raw_upper"]


_RAW_BOUNDS = {
    "raw_lower": "received_at > :lo AND received_at < :hi",
    "raw_upper": "received_at >= :lo AND received_at <= :hi",
    "raw_open": "received_at > :lo AND received_at <= :hi",
}


def _window_sums(conn: sqlite3.Connection, cohort: str, params: dict[str, object], since: float, until: float,
                 raw_sums: list[str], rolled_sums: list[str]) -> dict[tuple[str, str], list[float]]:
    """Per (variant, region), the sums over the reports accepted in ``(since, until]``."""
    out: dict[tuple[str, str], list[float]] = {}
    for piece, lo, hi in window_pieces(since, until):
        bounds = {**params, "lo": lo, "hi": hi}
        if piece in _RAW_BOUNDS:
            sql = (f"SELECT variant, region, {', '.join(raw_sums)} FROM reports"  # noqa: S608 (constants)
                   f" WHERE {cohort} AND {_RAW_BOUNDS[piece]} GROUP BY variant, region")
        else:
            bounds["level"] = _HOUR if piece == "hours" else _MINUTE
            sql = (f"SELECT variant, region, {', '.join(rolled_sums)} FROM rollups"  # noqa: S608 (constants)
                   f" WHERE {cohort} AND level = :level AND bucket >= :lo AND bucket < :hi"
                   " GROUP BY variant, region")
        for variant, region, *sums in conn.execute(sql, bounds):
            acc = out.get((variant, region))
            out[(variant, region)] = [s or 0 for s in sums] if acc is None else \
                [a + (s or 0) for a, s in zip(acc, sums, strict=True)]
    return out


def cohort_counts(conn: sqlite3.Connection, query: CohortQuery) -> dict[StratumKey, CohortCounts]:
    """Counts per stratum; see the module docstring for what the window (since, until] bounds.

    Window counters sum the reports after ``since``, cumulative ones all of them up to ``until``;
    both read whole minute and hour buckets from ``rollups`` and only the reports of the window's
    partial minutes from ``reports`` (:func:`window_pieces`), so the cost does not grow with the
    reports stored.
    """
    if query.rings is not None and not query.rings:
        return {}
    since = -math.inf if query.since is None else query.since.timestamp()
    until = math.inf if query.until is None else query.until.timestamp()
    params: dict[str, object] = {"model": query.model, "release": query.release}
    cohort = "model = :model AND release = :release"
    if query.rings is not None:
        rings = {f"ring{i}": ring for i, ring in enumerate(sorted(query.rings))}
        cohort += f" AND ring IN ({', '.join(':' + k for k in rings)})"
        params.update(rings)
    window = _window_sums(conn, cohort, params, since, until, _RAW_WINDOW, _ROLLED_WINDOW)
    cumulative = _window_sums(conn, cohort, params, -math.inf, until, _RAW_CUMULATIVE, _ROLLED_CUMULATIVE)
    out: dict[StratumKey, CohortCounts] = {}
    for (variant, region), sums in window.items():
        key = StratumKey(query.model, variant, region)
        if query.strata is not None and key not in query.strata:
            continue
        counts = counters.counts_from_totals(
            dict(zip([*_WINDOW, *_EVENTS], sums, strict=True)),
            dict(zip(_CUMULATIVE, cumulative.get((variant, region), [0] * len(_CUMULATIVE)), strict=True)))
        if counts.reports:  # present when it has a report in the window
            out[key] = counts
    return out


@contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the ingest's database, for every reader (sources, reports).

    A database that is missing, unreadable or of another schema, and any SQLite error while it is
    read, is ``TelemetryUnavailable`` naming the file: an error for the caller, never "no data".
    """
    if not path.is_file():
        raise TelemetryUnavailable(f"telemetry database {path} does not exist")
    try:
        conn = _connect(path, readonly=True)
    except StoreError as exc:
        raise TelemetryUnavailable(str(exc)) from exc
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version != SCHEMA_VERSION:
            raise TelemetryUnavailable(_schema_problem(path, version))
        yield conn
    except sqlite3.Error as exc:
        raise TelemetryUnavailable(f"telemetry database {path}: {exc}") from exc
    finally:
        conn.close()


class SqliteSource(TelemetrySource):
    """The embedded source: reads the ingest's database read-only (WAL: beside a running ingest)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SqliteSource({str(self.path)!r})"

    def cohort_counts(self, query: CohortQuery) -> dict[StratumKey, CohortCounts]:
        with reading(self.path) as conn:
            return cohort_counts(conn, query)


def _schema_problem(path: Path, version: int) -> str:
    if version in (1, 2):
        return (f"telemetry database {path} has schema {version}; this otactl reads schema {SCHEMA_VERSION}: start "
                "`otactl telemetry serve` on it once to migrate it")  # fmt: skip
    if version == 0:
        return f"telemetry database {path} is not an otactl telemetry database (schema 0)"
    return f"telemetry database {path} has schema {version}; this otactl reads schema {SCHEMA_VERSION}"
