"""How accepted reports become rows of the telemetry database: schema 2, and each report's counts.

Every stored report carries its own increment of every cohort counter of
:data:`otactl.telemetry.counters.COUNTERS`, one integer column ``n_<counter>`` each, computed once,
when the report is accepted, by :func:`counters.health_increments` from its device's state. So a
window's count is an exact sum over the reports with ``received_at`` in ``(since, until]``, a
cumulative one a sum up to ``until``, and ``counters`` (what ``/metrics`` exposes) is the sum of
the same increments per cohort. The tables:

- ``reports``: the signed reports as received, with their increments;
- ``device_state``: per (device, release), the device's uptime on the release (its age on the
  image) and its open 24-hour period, after its last accepted health report (not per ring: a ring
  relabelling does not reset an age);
- ``cohort_members``: which devices have reported in which cohort (model, release, ring, variant,
  region); a device's first report in a cohort counts it in ``devices``;
- ``counters``: running totals per cohort and counter name (``event:<event>`` for events), never
  per device;
- ``rollups``: the same increments summed per cohort and per minute and per hour of ``received_at``
  (schema 3), so that a window's sums read whole buckets and only the reports of its two partial
  minutes: a query's cost does not grow with the reports stored (docs/decisions/0206-telemetry-rollups.md);
- ``device_seq`` and ``refusals``: replay protection and refusal counts (see store.py).

A :class:`Ledger` accounts for the reports of one write transaction in order (a device's reports
in one batch chain their state in ``seq`` order). :func:`migrate_from_1` rebuilds a schema-1
database by replaying its stored reports through a Ledger (docs/decisions/0205-telemetry-schema-2.md).
"""

from __future__ import annotations

import operator
import re
import sqlite3
from collections.abc import Iterable
from typing import NamedTuple

from otactl.telemetry import counters
from otactl.telemetry.report import Event, Kind

SCHEMA_VERSION = 3  # 3: rollups; 2: per-report increments (0205); 1: cumulative distinct devices
ROLLUP_LEVELS = (60, 3600)  # bucket widths in seconds: minutes for a window's edges, hours between
NO_RING = ""  # stored (and exported as a label) for a device in no ring
IN_CHUNK = 500  # host parameters per IN (...) lookup
_MIGRATE_CHUNK = 5000  # schema-1 reports replayed per step

_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")


def column(name: str) -> str:
    """The ``reports`` column holding counter ``name``'s increment; unknown names are an error."""
    counters.counter(name)
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"cohort counter {name!r} is not a valid column name")
    return f"n_{name}"


COUNTER_NAMES = tuple(c.name for c in counters.COUNTERS)
_PICK = operator.itemgetter(*COUNTER_NAMES)  # a report's increments, in COUNTER_NAMES order
_DEVICES = COUNTER_NAMES.index("devices")
COHORT = "model, release, ring, variant, region"
_FIELDS = (
    "device_id, seq, time, received_at, model, release, ring, variant, region, kind, event, reason,"
    " uptime_s, crashes, errors, payload, signature"
)
_COLUMNS = ", ".join(column(n) for n in COUNTER_NAMES)
EVENT_NAMES = tuple(e.value for e in Event)


def event_column(event: str) -> str:
    """The ``rollups`` column counting event reports of ``event``; unknown events are an error."""
    return f"e_{Event(event).value}"


_ROLLUP_SUMS = [column(n) for n in COUNTER_NAMES] + [event_column(e) for e in EVENT_NAMES]
ROLLUP_SCHEMA = f"""CREATE TABLE rollups (
    model TEXT NOT NULL, release TEXT NOT NULL, level INTEGER NOT NULL, bucket INTEGER NOT NULL,
    ring TEXT NOT NULL, variant TEXT NOT NULL, region TEXT NOT NULL,
    {", ".join(f"{c} INTEGER NOT NULL" for c in _ROLLUP_SUMS)},
    PRIMARY KEY (model, release, level, bucket, ring, variant, region)
) WITHOUT ROWID"""


def _rollup_insert(level: int, where: str) -> str:
    """Adds the ``reports`` rows that ``where`` selects to their ``level``-second buckets.

    Built from constants only: the counter columns, the Event enum's values, an integer width.
    """
    width = int(level)
    sums = ", ".join([f"sum({column(n)})" for n in COUNTER_NAMES] + [f"sum(event IS '{e}')" for e in EVENT_NAMES])
    update = ", ".join(f"{c} = {c} + excluded.{c}" for c in _ROLLUP_SUMS)
    into = f"rollups (model, release, level, bucket, ring, variant, region, {', '.join(_ROLLUP_SUMS)})"
    bucket = f"CAST(received_at / {width} AS INTEGER) * {width}"
    select = f"SELECT model, release, {width}, {bucket}, ring, variant, region, {sums} FROM reports"  # noqa: S608
    return f"INSERT INTO {into} {select} WHERE {where} GROUP BY 1, 2, 3, 4, 5, 6, 7 ON CONFLICT DO UPDATE SET {update}"


SCHEMA = (
    f"""CREATE TABLE reports (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL, seq INTEGER NOT NULL,
    time INTEGER NOT NULL,          -- device clock, unix seconds
    received_at REAL NOT NULL,      -- ingest clock, unix seconds
    model TEXT NOT NULL, release TEXT NOT NULL, ring TEXT NOT NULL,
    variant TEXT NOT NULL, region TEXT NOT NULL,
    kind TEXT NOT NULL, event TEXT, reason TEXT,
    uptime_s INTEGER NOT NULL, crashes INTEGER NOT NULL, errors INTEGER NOT NULL,
    payload TEXT NOT NULL, signature TEXT NOT NULL,
    {", ".join(f"{column(n)} INTEGER NOT NULL" for n in COUNTER_NAMES)},
    UNIQUE (device_id, seq)
)""",
    "CREATE INDEX reports_by_cohort ON reports (model, release, received_at)",
    "CREATE TABLE IF NOT EXISTS device_seq (device_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID",
    """CREATE TABLE device_state (
    device_id TEXT NOT NULL, release TEXT NOT NULL,
    age_s INTEGER NOT NULL, period_s INTEGER NOT NULL, period_crashes INTEGER NOT NULL,
    PRIMARY KEY (device_id, release)
) WITHOUT ROWID""",
    f"""CREATE TABLE cohort_members (
    device_id TEXT NOT NULL, model TEXT NOT NULL, release TEXT NOT NULL, ring TEXT NOT NULL,
    variant TEXT NOT NULL, region TEXT NOT NULL,
    PRIMARY KEY (device_id, {COHORT})
) WITHOUT ROWID""",
    f"""CREATE TABLE counters (
    model TEXT NOT NULL, release TEXT NOT NULL, ring TEXT NOT NULL,
    variant TEXT NOT NULL, region TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY ({COHORT}, name)
) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS refusals (reason TEXT PRIMARY KEY, count INTEGER NOT NULL) WITHOUT ROWID",
)

_INSERT = (
    f"INSERT INTO reports ({_FIELDS}, {_COLUMNS})"  # noqa: S608 (constants only)
    f" VALUES ({', '.join('?' * (17 + len(COUNTER_NAMES)))})"
)
_STATE = (
    "INSERT INTO device_state (device_id, release, age_s, period_s, period_crashes) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT DO UPDATE SET age_s = excluded.age_s, period_s = excluded.period_s,"
    " period_crashes = excluded.period_crashes"
)
_MEMBER = (
    "INSERT INTO cohort_members (device_id, model, release, ring, variant, region) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
_COUNT = (
    "INSERT INTO counters (model, release, ring, variant, region, name, value) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO UPDATE SET value = value + excluded.value"
)


class Incoming(NamedTuple):
    """One accepted report, in the order of the ``reports`` columns before the increments."""

    device_id: str
    seq: int
    time: int  # device clock, unix seconds
    received_at: float  # ingest clock, unix seconds
    model: str
    release: str
    ring: str  # NO_RING for a device in no ring
    variant: str
    region: str
    kind: str  # report.Kind value
    event: str | None  # report.Event value, for an event report
    reason: str | None
    uptime_s: int
    crashes: int
    errors: int
    payload: str
    signature: str


class Ledger:
    """Accounts for one write transaction's reports: loads device states once, writes once.

    Call :meth:`add` for each accepted report in the order they were accepted, then :meth:`flush`.
    """

    def __init__(self, conn: sqlite3.Connection, device_ids: Iterable[str]) -> None:
        self.conn = conn
        self._states: dict[tuple[str, str], tuple[int, int, int]] = {}
        self._changed: set[tuple[str, str]] = set()
        self._members: set[tuple[str, ...]] = set()  # known to be in cohort_members
        self._rows: list[tuple[object, ...]] = []
        self._sums: dict[tuple[str, ...], list[int]] = {}  # cohort -> increments, aligned with COUNTER_NAMES
        self._events: dict[tuple[str, ...], int] = {}  # (cohort..., event:<event>) -> increment
        self._health: set[tuple[str, ...]] = set()  # cohorts with a health report
        ids = sorted(set(device_ids))
        for i in range(0, len(ids), IN_CHUNK):
            chunk = ids[i : i + IN_CHUNK]
            for device_id, release, *state in conn.execute(
                "SELECT device_id, release, age_s, period_s, period_crashes FROM device_state"  # noqa: S608
                f" WHERE device_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                self._states[(device_id, release)] = (state[0], state[1], state[2])

    def _joined(self, item: Incoming) -> int:
        """1 when this is the device's first report in its cohort, else 0."""
        member = (item.device_id, item.model, item.release, item.ring, item.variant, item.region)
        if member in self._members:
            return 0
        self._members.add(member)
        return self.conn.execute(_MEMBER, member).rowcount

    def add(self, item: Incoming) -> None:
        cohort = (item.model, item.release, item.ring, item.variant, item.region)
        joined = self._joined(item)
        if Kind(item.kind) is Kind.EVENT:  # an unknown kind or event is a ValueError, never a new counter
            event = (*cohort, counters.EVENT_PREFIX + Event(str(item.event)).value)
            self._events[event] = self._events.get(event, 0) + 1
            values = [0] * len(COUNTER_NAMES)
            values[_DEVICES] = joined
        else:
            key = (item.device_id, item.release)
            inc = counters.health_increments(*self._states.get(key, (0, 0, 0)), item.uptime_s,
                                             item.crashes, item.errors)  # fmt: skip
            self._states[key] = (inc.age_s, inc.period_s, inc.period_crashes)
            self._changed.add(key)
            values = list(_PICK({**inc.values, "devices": joined}))
            self._health.add(cohort)
        self._rows.append((*item, *values))
        sums = self._sums.get(cohort)
        self._sums[cohort] = values if sums is None else list(map(operator.add, sums, values))

    def flush(self) -> None:
        totals: list[tuple[object, ...]] = [(*key, n) for key, n in self._events.items()]
        for cohort, sums in self._sums.items():
            health = cohort in self._health  # its health counters exist from its first health report, zeros too
            totals += [(*cohort, name, n) for name, n in zip(COUNTER_NAMES, sums, strict=True)
                       if n or (health and name != "devices")]  # fmt: skip
        first = self.conn.execute("SELECT coalesce(max(id), 0) FROM reports").fetchone()[0]
        self.conn.executemany(_INSERT, self._rows)
        if self._rows:
            for level in ROLLUP_LEVELS:  # ids only grow: the rows just inserted are those after `first`
                self.conn.execute(_rollup_insert(level, "id > ?"), (first,))
        self.conn.executemany(_STATE, [(*key, *self._states[key]) for key in sorted(self._changed)])
        self.conn.executemany(_COUNT, totals)
        self._rows, self._changed, self._sums, self._events, self._health = [], set(), {}, {}, set()


def create(conn: sqlite3.Connection) -> None:
    """The current schema in an empty database, inside the caller's transaction."""
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute(ROLLUP_SCHEMA)


def migrate_from_2(conn: sqlite3.Connection) -> None:
    """Schema 2 to 3 inside the caller's transaction: the rollups of every stored report."""
    conn.execute("DROP TABLE IF EXISTS rollups")
    conn.execute(ROLLUP_SCHEMA)
    for level in ROLLUP_LEVELS:
        conn.execute(_rollup_insert(level, "true"))


def migrate_from_1(conn: sqlite3.Connection) -> int:
    """Schema 1 to 2 inside the caller's transaction; returns the number of reports replayed.

    Raises ValueError for a stored report this otactl would not have accepted.

    Keeps ``device_seq`` and ``refusals``; rebuilds everything else by replaying the stored reports
    in the order they were stored (their ``id``), which is the order the ingest accepted them.
    """
    for statement in (
        "DROP TRIGGER IF EXISTS cohort_member_joined",
        "DROP TRIGGER IF EXISTS cohort_member_crashed",
        "DROP TABLE IF EXISTS cohort_members",
        "DROP TABLE IF EXISTS counters",
        "DROP INDEX IF EXISTS reports_by_cohort",
        "ALTER TABLE reports RENAME TO reports_v1",
    ):
        conn.execute(statement)
    create(conn)
    last, replayed = 0, 0
    while True:
        rows = conn.execute(
            f"SELECT id, {_FIELDS} FROM reports_v1 WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608
            (last, _MIGRATE_CHUNK),
        ).fetchall()
        if not rows:
            break
        ledger = Ledger(conn, (row[1] for row in rows))
        for row in rows:
            try:
                ledger.add(Incoming(*row[1:]))
            except ValueError as exc:
                raise ValueError(f"report {row[0]} of table reports: {exc}") from None
        ledger.flush()
        last, replayed = rows[-1][0], replayed + len(rows)
    conn.execute("DROP TABLE reports_v1")
    return replayed
