"""Each device's reports about one release inside a window, read-only from the embedded store's
database (for `otactl report rollout`, beside ``last_seen.py`` for the fleet report).

Per device: the first report of each install event for the release received in the window, the
uptime and crashes its health reports on the release give in the window, and every change of the
release it runs (health reports and ``committed`` events, as ``last_seen`` reads "running";
decision 0303) up to the window's end, and whether its last health report in the window waits to
install the release (decision 1202). Times are the ingest's clock (``received_at``). Only the
SQLite store keeps reports per device; Prometheus holds cohort totals, never per device.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from otactl.report.rollout_report import DeviceHistory

_EVENTS = ("SELECT device_id, event, min(received_at) FROM reports WHERE model = :model AND release = :release"
           " AND kind = 'event' AND received_at >= :since AND received_at <= :until GROUP BY device_id, event")
_HEALTH = ("SELECT device_id, sum(uptime_s), sum(crashes) FROM reports WHERE model = :model AND release = :release"
           " AND kind = 'health' AND received_at >= :since AND received_at <= :until GROUP BY device_id")
# the reports that say what a device runs, kept where the release differs from the one before (by seq)
_RUNNING = ("SELECT device_id, received_at, release FROM (SELECT device_id, received_at, release, lag(release) OVER"
            " (PARTITION BY device_id ORDER BY seq) AS before FROM reports WHERE model = :model"
            " AND (kind = 'health' OR event = 'committed') AND received_at <= :until)"
            " WHERE before IS NULL OR before != release ORDER BY device_id, received_at")
# devices whose last health report in the window waits to install the release (decision 1202)
_WAITING = ("SELECT device_id FROM (SELECT device_id, payload, row_number() OVER (PARTITION BY device_id ORDER BY seq"
            " DESC) AS n FROM reports WHERE model = :model AND kind = 'health' AND received_at >= :since"
            " AND received_at <= :until) WHERE n = 1 AND json_extract(payload, '$.waiting.release') = :release")


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=0)


def release_histories(path: Path, model: str, release: str, since: datetime,
                      until: datetime) -> dict[str, DeviceHistory]:
    """Raises TelemetryUnavailable for a database that is missing, unreadable or of another schema."""
    from otactl.telemetry.store import reading

    args = {"model": model, "release": release, "since": since.timestamp(), "until": until.timestamp()}
    with reading(path) as conn:
        events: dict[str, dict[str, datetime]] = {}
        for device_id, event, at in conn.execute(_EVENTS, args):
            events.setdefault(device_id, {})[event] = _time(at)
        health = {d: (float(up or 0) / 3600, int(crashes or 0)) for d, up, crashes in conn.execute(_HEALTH, args)}
        running: dict[str, list[tuple[datetime, str]]] = {}
        for device_id, at, rel in conn.execute(_RUNNING, args):
            running.setdefault(device_id, []).append((_time(at), rel))
        waiting = {d for (d,) in conn.execute(_WAITING, args)}
    out = {}
    for device_id in sorted({*events, *health, *running, *waiting}):
        hours, crashes = health.get(device_id, (0.0, 0))
        out[device_id] = DeviceHistory(device_id, events.get(device_id, {}), hours, crashes,
                                       tuple(running.get(device_id, ())), device_id in waiting)
    return out
