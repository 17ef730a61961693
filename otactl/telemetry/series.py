"""Names of the Prometheus series the ingest exports; the PrometheusSource queries the same names.

One counter family per cohort counter of :data:`otactl.telemetry.counters.COUNTERS`, named
``otactl_cohort_<counter>`` (sample ``..._total``) with the counter's help, plus the events family
(extra label ``event``). Every cohort series carries the labels model, release, ring, variant and
region (ring ``""`` for a device in no ring): aggregates only, never one series per device. All are
counters that never reset, even across ingest restarts, because they are read from the store on
every scrape.
"""

from __future__ import annotations

from otactl.telemetry import counters

COHORT_LABELS = ("model", "release", "ring", "variant", "region")
COHORT_PREFIX = "otactl_cohort_"
EVENTS = "otactl_report_events"  # extra label: event; store counters event:<event>
EVENTS_HELP = "Accepted event reports, by event."
ACCEPTED = "otactl_reports_accepted"
REJECTED = "otactl_reports_rejected"  # label: reason
ENROLLED = "otactl_devices_enrolled"  # gauge; labels: model, variant, region
EVENT_PREFIX = counters.EVENT_PREFIX


def cohort_family(name: str) -> str:
    """The family (without ``_total``) of cohort counter ``name``; an unknown name is an error."""
    return COHORT_PREFIX + counters.counter(name).name


# store counter name -> (metric family name without _total, help)
COHORT_FAMILIES: dict[str, tuple[str, str]] = {c.name: (cohort_family(c.name), c.help) for c in counters.COUNTERS}


def total(family: str) -> str:
    """The sample name Prometheus stores for a counter family."""
    return family + "_total"
