"""Each device's last reports, read-only from the embedded store's database (for `otactl report fleet`).

Per device: its last accepted report (the ingest clock ``received_at``, and the model, variant and
region it names), the release of its last health report or ``committed`` event (what it runs: events
name the release being installed, health reports the active one; decision 0303), its last event, and
the release its last health report waits to install (decision 1202).
Only the SQLite store keeps reports per device; Prometheus holds cohort totals, never per device.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from otactl.report.fleet import LastReports

# the last row per device among the rows a filter keeps, by seq (which strictly increases per device)
_LAST = ("SELECT device_id, {columns} FROM (SELECT *, row_number() OVER (PARTITION BY device_id ORDER BY seq DESC)"
         " AS n FROM reports WHERE {where}) WHERE n = 1")


def last_reports(path: Path) -> dict[str, LastReports]:
    """Raises TelemetryUnavailable for a database that is missing, unreadable or of another schema."""
    from otactl.telemetry.store import reading

    with reading(path) as conn:
        last = conn.execute(_LAST.format(columns="received_at, model, variant, region", where="1")).fetchall()
        running = dict(conn.execute(_LAST.format(
            columns="release", where="kind = 'health' OR event = 'committed'")).fetchall())
        events = {d: (e, r) for d, e, r in conn.execute(_LAST.format(columns="event, release",
                                                                       where="kind = 'event'")).fetchall()}
        waiting = dict(conn.execute(_LAST.format(  # the release its last health report waits for (1202)
            columns="json_extract(payload, '$.waiting.release')", where="kind = 'health'")).fetchall())
    out = {}
    for device_id, received_at, model, variant, region in last:
        event, event_release = events.get(device_id, (None, None))
        out[device_id] = LastReports(device_id, datetime.fromtimestamp(received_at, UTC).replace(microsecond=0),
                                     model, variant, region, running.get(device_id), event, event_release,
                                     waiting.get(device_id))
    return out
