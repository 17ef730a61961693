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
from otactl.telemetry.report import Event, Refusal
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
        """Schema 2 in a new database; migrate a schema-1 one; refuse any other."""
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

    def ping(self) -> None:
        with self._reading() as conn:
            conn.execute("SELECT 1 FROM counters LIMIT 1").fetchall()

    def cohort_counts(self, query: CohortQuery) -> dict[StratumKey, CohortCounts]:
        with self._reading() as conn:
            return cohort_counts(conn, query)


_WINDOW = [c.name for c in counters.COUNTERS if c.kind is counters.Kind.WINDOW]
_CUMULATIVE = [c.name for c in counters.COUNTERS if c.kind is counters.Kind.CUMULATIVE]
_EVENTS = [counters.EVENT_PREFIX + e.value for e in Event]
_SUMS = ", ".join(
    [f"sum(CASE WHEN received_at > :since THEN {ledger.column(n)} ELSE 0 END)" for n in _WINDOW]
    + [f"sum(CASE WHEN received_at > :since AND event = '{e.value}' THEN 1 ELSE 0 END)" for e in Event]
    + [f"sum({ledger.column(n)})" for n in _CUMULATIVE]
)  # fmt: skip


def cohort_counts(conn: sqlite3.Connection, query: CohortQuery) -> dict[StratumKey, CohortCounts]:
    """Counts per stratum; see the module docstring for what the window (since, until] bounds.

    One pass over the cohort's reports up to ``until``: window counters sum the reports after
    ``since``, cumulative ones all of them.
    """
    if query.rings is not None and not query.rings:
        return {}
    params: dict[str, object] = {
        "model": query.model, "release": query.release,
        "since": -math.inf if query.since is None else query.since.timestamp(),
        "until": math.inf if query.until is None else query.until.timestamp(),
    }  # fmt: skip
    where = "model = :model AND release = :release AND received_at <= :until"
    if query.rings is not None:
        rings = {f"ring{i}": ring for i, ring in enumerate(sorted(query.rings))}
        where += f" AND ring IN ({', '.join(':' + k for k in rings)})"
        params.update(rings)
    rows = conn.execute(
        f"SELECT variant, region, {_SUMS} FROM reports WHERE {where} GROUP BY variant, region",  # noqa: S608
        params,
    ).fetchall()
    out: dict[StratumKey, CohortCounts] = {}
    for variant, region, *sums in rows:
        key = StratumKey(query.model, variant, region)
        if query.strata is not None and key not in query.strata:
            continue
        window = dict(zip([*_WINDOW, *_EVENTS], sums[: len(_WINDOW) + len(_EVENTS)], strict=True))
        cumulative = dict(zip(_CUMULATIVE, sums[len(_WINDOW) + len(_EVENTS) :], strict=True))
        counts = counters.counts_from_totals(window, cumulative)
        if counts.reports:  # present when it has a report in the window
            out[key] = counts
    return out


class SqliteSource(TelemetrySource):
    """The embedded source: reads the ingest's database read-only (WAL: beside a running ingest)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SqliteSource({str(self.path)!r})"

    def cohort_counts(self, query: CohortQuery) -> dict[StratumKey, CohortCounts]:
        if not self.path.is_file():
            raise TelemetryUnavailable(f"telemetry database {self.path} does not exist")
        try:
            conn = _connect(self.path, readonly=True)
        except StoreError as exc:
            raise TelemetryUnavailable(str(exc)) from exc
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version != SCHEMA_VERSION:
                raise TelemetryUnavailable(_schema_problem(self.path, version))
            return cohort_counts(conn, query)
        except sqlite3.Error as exc:
            raise TelemetryUnavailable(f"telemetry database {self.path}: {exc}") from exc
        finally:
            conn.close()


def _schema_problem(path: Path, version: int) -> str:
    if version == 1:
        return (f"telemetry database {path} has schema 1; this otactl reads schema {SCHEMA_VERSION}: start "
                "`otactl telemetry serve` on it once to migrate it")  # fmt: skip
    if version == 0:
        return f"telemetry database {path} is not an otactl telemetry database (schema 0)"
    return f"telemetry database {path} has schema {version}; this otactl reads schema {SCHEMA_VERSION}"
