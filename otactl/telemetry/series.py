"""Names of the Prometheus series the ingest exports; the PrometheusSource queries the same names.

Every cohort series carries the labels model, release, ring, variant and region (ring ``""`` for a
device in no ring): aggregates only, never one series per device. All are counters that never reset,
even across ingest restarts, because they are read from the store on every scrape.
"""

from __future__ import annotations

COHORT_LABELS = ("model", "release", "ring", "variant", "region")

# store counter name (see store.py) -> (metric family name without _total, help)
EVENTS = "otactl_report_events"  # extra label: event
HEALTH_REPORTS = "otactl_health_reports"
CRASHES = "otactl_crashes"
ERRORS = "otactl_health_errors"
UPTIME = "otactl_uptime_seconds"
DEVICES = "otactl_cohort_devices"
CRASHING_DEVICES = "otactl_cohort_crashing_devices"
ACCEPTED = "otactl_reports_accepted"
REJECTED = "otactl_reports_rejected"  # label: reason
ENROLLED = "otactl_devices_enrolled"  # gauge; labels: model, variant, region

COHORT_FAMILIES: dict[str, tuple[str, str]] = {
    "health_reports": (HEALTH_REPORTS, "Accepted health reports."),
    "crashes": (CRASHES, "Crashes reported in health reports."),
    "errors": (ERRORS, "Errors reported in health reports."),
    "uptime_s": (UPTIME, "Uptime reported in health reports (exposure), in seconds."),
    "devices": (DEVICES, "Devices that have reported in the cohort (first report counts)."),
    "crashing_devices": (
        CRASHING_DEVICES,
        "Devices that have reported a crash in the cohort (first crash counts).",
    ),
}
EVENT_PREFIX = "event:"
EVENTS_HELP = "Accepted event reports, by event."


def total(family: str) -> str:
    """The sample name Prometheus stores for a counter family."""
    return family + "_total"
