"""What one `rollout step` costs the embedded telemetry store as stored reports grow (issue 10).

Builds SQLite telemetry databases with the production ingest accounting (``ReportStore`` schema,
``Ledger``: the same rows, increments and rollups the ingest writes; signatures are not checked
here, they are not part of a query's cost), one per size: DEVICES devices reporting hourly on the
baseline for as many hours as the size needs (each device at its own minute of the hour, as a fleet
polling on its own clocks does), then a 10% ring on the new release for the last 48 hours. Then it
times the controller's reads for one step (``otactl.app.observe.observe``, the function
``rollout step`` calls, four cohort queries) on each database, side by side with the same four
queries done the schema-2 way (one pass over every stored report of the cohort), and prints a
Markdown table.

    python benchmarks/telemetry_step_bench.py --sizes 100000 1000000 3000000 --devices 10000
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from otactl.app.observe import observe
from otactl.rollout.plan import load_plan
from otactl.telemetry import counters, ledger
from otactl.telemetry.ledger import Incoming, Ledger
from otactl.telemetry.source import CohortQuery
from otactl.telemetry.store import ReportStore, SqliteSource

MODEL, BASE, NEW = "t9-engine", "2.0.0", "2.1.0"
START = datetime(2027, 1, 1, tzinfo=UTC)
STRATA = [("hp-300", "eu"), ("hp-400", "eu"), ("hp-500", "na"), ("hp-300", "na")]
PLAN = Path(__file__).resolve().parent.parent / "canary" / "default.yaml"  # rings lab, canary, ...


def build(path: Path, devices: int, reports: int, end: datetime | None = None) -> tuple[datetime, int]:
    """A database holding ``reports`` reports, the last hour ending at ``end`` (default: START plus the
    hours it needs); returns (now, reports stored)."""
    hours = max(49, math.ceil(reports / devices))
    start = START if end is None else end - timedelta(hours=hours)
    ReportStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    stored, seq = 0, [0] * devices
    for h in range(hours):
        at = start + timedelta(hours=h)
        rows = []
        for d in range(devices):
            if stored >= reports:
                break
            on_new = d % 10 == 0 and h >= hours - 48
            variant, region = STRATA[d % len(STRATA)]
            seq[d] += 1
            crashes = 1 if (d * 7 + h) % 97 == 0 else 0
            rows.append(Incoming(f"dev-{d:07d}", seq[d], int(at.timestamp()), at.timestamp() + (d * 7919) % 3600,
                                 MODEL, NEW if on_new else BASE, "canary" if d % 10 == 0 else "all", variant,
                                 region, "health", None, None, 3600, crashes, 0, "{}", "-"))
            stored += 1
        if not rows:
            break
        conn.execute("BEGIN")
        book = Ledger(conn, (r.device_id for r in rows))
        for r in rows:
            book.add(r)
        book.flush()
        conn.execute("COMMIT")
    conn.close()
    return start + timedelta(hours=hours), stored


def schema_2_counts(conn: sqlite3.Connection, query: CohortQuery) -> int:
    """The schema-2 read of one cohort query: one pass over its reports up to ``until``."""
    window = [c.name for c in counters.COUNTERS if c.kind is counters.Kind.WINDOW]
    cumulative = [c.name for c in counters.COUNTERS if c.kind is counters.Kind.CUMULATIVE]
    sums = ", ".join([f"sum(CASE WHEN received_at > :since THEN {ledger.column(n)} ELSE 0 END)" for n in window]
                     + [f"sum({ledger.column(n)})" for n in cumulative])
    where = "model = :model AND release = :release AND received_at <= :until"
    params: dict[str, object] = {"model": query.model, "release": query.release,
                                 "since": -math.inf if query.since is None else query.since.timestamp(),
                                 "until": math.inf if query.until is None else query.until.timestamp()}
    if query.rings is not None:
        where += " AND ring IN ('" + "', '".join(sorted(query.rings)) + "')"
    return len(conn.execute(f"SELECT variant, region, {sums} FROM reports WHERE {where}"
                            " GROUP BY variant, region", params).fetchall())


def time_step(path: Path, now: datetime, repeats: int) -> tuple[float, float]:
    plan = load_plan(PLAN)
    since = now - timedelta(hours=48)
    source = SqliteSource(path)
    production, old = [], []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    queries = [CohortQuery(MODEL, NEW, frozenset({"lab", "canary"}), since, now),
               CohortQuery(MODEL, BASE, None, since, now), CohortQuery(MODEL, BASE, None, None, now),
               CohortQuery(MODEL, BASE, None, now - timedelta(hours=counters.DISPERSION_LOOKBACK_H), now)]
    for _ in range(repeats):  # side by side, alternating
        t0 = time.perf_counter()
        obs = observe(source, plan, 1, model=MODEL, release=NEW, baseline=BASE, since=since, now=now)
        production.append(time.perf_counter() - t0)
        assert obs.ring, "the ring cohort must have reports"
        t0 = time.perf_counter()
        for q in queries:
            schema_2_counts(conn, q)
        old.append(time.perf_counter() - t0)
    conn.close()
    return statistics.median(production), statistics.median(old)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=None, help="directory for the databases (default: a temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="otactl-step-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print("| stored reports | build (s) | DB size (MB) | step reads, rollups (ms) | "
          "step reads, one pass (ms) | ratio |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        path = work / f"t-{size}.db"
        path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        now, stored = build(path, args.devices, size)
        built = time.perf_counter() - t0
        production, old = time_step(path, now, args.repeats)
        mb = path.stat().st_size / 1e6
        print(f"| {stored:,} | {built:.0f} | {mb:.0f} | {production * 1e3:.1f} | {old * 1e3:.0f} | "
              f"{old / production:.0f}x |", flush=True)
        path.unlink()


if __name__ == "__main__":
    main()
