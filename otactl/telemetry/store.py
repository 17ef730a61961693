"""The embedded telemetry store: accepted reports in SQLite, and the aggregates gates and
/metrics read.

One write transaction per ingest request (WAL, ``executemany``) writes the reports and keeps three
derived tables in step with them, so they can never disagree:

- ``device_seq``: each device's last accepted ``seq`` (replay protection; survives report pruning);
- ``cohort_members``: when each device first reported, and first reported a crash, per cohort
  (model, release, ring, variant, region), which gives distinct-device counts as monotonic counters;
- ``counters``: running totals per cohort, what ``/metrics`` exposes (never one series per device).

What a query's window (since, until] bounds, so that Prometheus can give the very same numbers:

- installs, install_failures, crashes, device_hours: reports the ingest accepted in the window
  (``received_at``, the clock Prometheus sees too), docs/decisions/0201-telemetry-windows.md;
- devices, crashing_devices: distinct devices that have reported (a crash) in the cohort up to
  ``until``; ``since`` does not apply, because distinct counts over an arbitrary window cannot be
  derived from aggregate counters, docs/decisions/0202-telemetry-distinct-devices.md;
- a stratum is present when it has a report in the window.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from otactl.errors import StoreError
from otactl.telemetry.checks import Refused, Verified
from otactl.telemetry.report import FAILED_EVENTS, FINISHED_EVENTS, Kind, Refusal
from otactl.telemetry.source import (
    CohortCounts,
    CohortQuery,
    StratumKey,
    TelemetrySource,
    TelemetryUnavailable,
)

SCHEMA_VERSION = 1
NO_RING = ""  # stored (and exported as a label) for a device in no ring

_COHORT = "model, release, ring, variant, region"
_NEW_COHORT = "NEW.model, NEW.release, NEW.ring, NEW.variant, NEW.region"


def _bump(name: str, amount: str, when: str = "1") -> str:
    return (
        f"INSERT INTO counters({_COHORT}, name, value) SELECT {_NEW_COHORT}, {name}, {amount} "
        f"WHERE {when} ON CONFLICT DO UPDATE SET value = value + excluded.value;"
    )


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL, seq INTEGER NOT NULL,
    time INTEGER NOT NULL,          -- device clock, unix seconds
    received_at REAL NOT NULL,      -- ingest clock, unix seconds
    model TEXT NOT NULL, release TEXT NOT NULL, ring TEXT NOT NULL,
    variant TEXT NOT NULL, region TEXT NOT NULL,
    kind TEXT NOT NULL, event TEXT, reason TEXT,
    uptime_s INTEGER NOT NULL, crashes INTEGER NOT NULL, errors INTEGER NOT NULL,
    payload TEXT NOT NULL, signature TEXT NOT NULL,
    UNIQUE (device_id, seq)
);
CREATE INDEX IF NOT EXISTS reports_by_cohort ON reports (model, release, received_at);
CREATE TABLE IF NOT EXISTS device_seq (
    device_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cohort_members (
    model TEXT NOT NULL, release TEXT NOT NULL, ring TEXT NOT NULL,
    variant TEXT NOT NULL, region TEXT NOT NULL, device_id TEXT NOT NULL,
    first_at REAL NOT NULL, first_crash_at REAL,
    PRIMARY KEY ({_COHORT}, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    model TEXT NOT NULL, release TEXT NOT NULL, ring TEXT NOT NULL,
    variant TEXT NOT NULL, region TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY ({_COHORT}, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refusals (
    reason TEXT PRIMARY KEY, count INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS cohort_member_joined AFTER INSERT ON cohort_members BEGIN
    {_bump("'devices'", "1")}
    {_bump("'crashing_devices'", "1", "NEW.first_crash_at IS NOT NULL")}
END;
CREATE TRIGGER IF NOT EXISTS cohort_member_crashed AFTER UPDATE OF first_crash_at ON cohort_members
WHEN OLD.first_crash_at IS NULL AND NEW.first_crash_at IS NOT NULL BEGIN
    {_bump("'crashing_devices'", "1")}
END;
"""

_INSERT = (
    "INSERT INTO reports (device_id, seq, time, received_at, model, release, ring, variant, region,"
    " kind, event, reason, uptime_s, crashes, errors, payload, signature)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SEQ = (
    "INSERT INTO device_seq (device_id, last_seq) VALUES (?, ?)"
    " ON CONFLICT DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)"
)
_MEMBER = (  # the cohort_member_* triggers count joins and first crashes
    "INSERT INTO cohort_members (model, release, ring, variant, region, device_id, first_at, first_crash_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO UPDATE SET first_crash_at = excluded.first_crash_at"
    " WHERE first_crash_at IS NULL AND excluded.first_crash_at IS NOT NULL"
)
_COUNT = (
    "INSERT INTO counters (model, release, ring, variant, region, name, value) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO UPDATE SET value = value + excluded.value"
)
_IN_CHUNK = 500  # host parameters per IN (...) lookup


@dataclass(frozen=True)
class CounterRow:
    model: str
    release: str
    ring: str
    variant: str
    region: str
    name: str  # event:<event>, health_reports, crashes, errors, uptime_s, devices, crashing_devices
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
            version = self._write.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"telemetry database {self.path} has schema {version}; this otactl reads up to {SCHEMA_VERSION}"
                )
            self._write.execute("PRAGMA journal_mode = WAL")
            self._write.execute("PRAGMA synchronous = NORMAL")
            self._write.executescript(_SCHEMA)
            self._write.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"telemetry database {self.path}: {exc}") from exc
        self._read = _connect(self.path, readonly=False)
        self._read_lock = threading.Lock()

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
            last = self._last_seqs(conn, sorted({v.report.device_id for v in verified}))
            rows = []
            members: dict[tuple[str, ...], bool] = {}  # (cohort..., device) -> crashed in this batch
            totals: Counter[tuple[str, ...]] = Counter()  # (cohort..., counter name) -> increment
            for item in verified:
                r = item.report
                previous = last.get(r.device_id, -1)
                if r.seq <= previous:
                    outcomes.append(Refused(Refusal.REPLAYED, f"seq {r.seq} is not above the last, {previous}"))
                    counts[Refusal.REPLAYED] = counts.get(Refusal.REPLAYED, 0) + 1
                    continue
                last[r.device_id] = r.seq
                outcomes.append(None)
                cohort = (r.model, r.release, r.ring or NO_RING, r.variant, r.region)
                h = r.health
                rows.append((
                    r.device_id, r.seq, int(r.time.timestamp()), at, *cohort, r.kind.value,
                    None if r.event is None else r.event.value, r.reason,
                    0 if h is None else h.uptime_s, 0 if h is None else h.crashes,
                    0 if h is None else h.errors, item.envelope.payload, item.envelope.signature,
                ))  # fmt: skip
                member = (*cohort, r.device_id)
                members[member] = members.get(member, False) or (h is not None and h.crashes > 0)
                if h is None:
                    totals[(*cohort, f"event:{r.event.value}")] += 1  # type: ignore[union-attr]
                else:
                    totals[(*cohort, "health_reports")] += 1
                    totals[(*cohort, "crashes")] += h.crashes
                    totals[(*cohort, "errors")] += h.errors
                    totals[(*cohort, "uptime_s")] += h.uptime_s
            conn.executemany(_INSERT, rows)
            conn.executemany(_SEQ, [(d, last[d]) for d in {row[0] for row in rows}])
            conn.executemany(_MEMBER, [(*m, at, at if crashed else None) for m, crashed in members.items()])
            conn.executemany(_COUNT, [(*key, n) for key, n in totals.items()])
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
        for i in range(0, len(device_ids), _IN_CHUNK):
            chunk = device_ids[i : i + _IN_CHUNK]
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
            rows = conn.execute(f"SELECT {_COHORT}, name, value FROM counters").fetchall()  # noqa: S608
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


def cohort_counts(conn: sqlite3.Connection, query: CohortQuery) -> dict[StratumKey, CohortCounts]:
    """Counts per stratum; see the module docstring for what the window (since, until] bounds."""
    if query.rings is not None and not query.rings:
        return {}
    since = -math.inf if query.since is None else query.since.timestamp()
    until = math.inf if query.until is None else query.until.timestamp()
    where = "model = ? AND release = ?"
    params: list[object] = [query.model, query.release]
    if query.rings is not None:
        where += f" AND ring IN ({','.join('?' * len(query.rings))})"
        params += sorted(query.rings)
    finished = ",".join(f"'{e.value}'" for e in sorted(FINISHED_EVENTS))
    failed = ",".join(f"'{e.value}'" for e in sorted(FAILED_EVENTS))
    reports = conn.execute(
        f"SELECT variant, region, count(*),"  # noqa: S608 (placeholders and constants only)
        f" coalesce(sum(kind = '{Kind.EVENT.value}' AND event IN ({finished})), 0),"
        f" coalesce(sum(kind = '{Kind.EVENT.value}' AND event IN ({failed})), 0),"
        f" sum(crashes), sum(uptime_s)"
        f" FROM reports WHERE {where} AND received_at > ? AND received_at <= ?"
        f" GROUP BY variant, region",
        [*params, since, until],
    ).fetchall()
    members = {  # devices and crashing devices are cumulative up to `until`: since does not apply
        (variant, region): (joined, crashed)
        for variant, region, joined, crashed in conn.execute(
            "SELECT variant, region,"  # noqa: S608 (placeholders and constants only)
            " coalesce(sum(first_at <= ?), 0), coalesce(sum(first_crash_at <= ?), 0)"
            f" FROM cohort_members WHERE {where} GROUP BY variant, region",
            [until, until, *params],
        ).fetchall()
    }
    out: dict[StratumKey, CohortCounts] = {}
    for variant, region, n, installs, failures, crashes, uptime in reports:
        key = StratumKey(query.model, variant, region)
        if not n or (query.strata is not None and key not in query.strata):
            continue
        joined, crashed = members.get((variant, region), (0, 0))
        out[key] = CohortCounts(
            devices=joined,
            installs=installs,
            install_failures=failures,
            crashes=crashes,
            crashing_devices=crashed,
            device_hours=uptime / 3600,
        )
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
            return cohort_counts(conn, query)
        except sqlite3.Error as exc:
            raise TelemetryUnavailable(f"telemetry database {self.path}: {exc}") from exc
        finally:
            conn.close()
