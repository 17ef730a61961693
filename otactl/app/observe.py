"""What the controller reads from a telemetry source for one ring: one function, shared by
``rollout step`` and the gate-quality benchmark, so the benchmark runs the production path.

A source that cannot be read raises ``TelemetryUnavailable``: the caller turns it into an error,
never into a verdict.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from otactl.rollout.gates import Observation
from otactl.rollout.plan import Plan
from otactl.telemetry.counters import DISPERSION_LOOKBACK_H
from otactl.telemetry.source import CohortQuery, TelemetrySource


def observe(source: TelemetrySource, plan: Plan, ring_index: int, *, model: str, release: str,
            baseline: str, since: datetime, now: datetime,
            started: datetime | None = None) -> Observation:
    """The ring cohort (rings up to ``ring_index`` on ``release``), the concurrent control (every
    device still on ``baseline``, in any ring: a stratum that a skewed ring took whole from the
    waiting rings keeps its late installers and reverted devices as control), the baseline's
    install record, and for dispersion the baseline's counts from ``DISPERSION_LOOKBACK_H`` hours
    before the rollout ``started`` (default: ``since``) until now: every device's closed periods
    on the baseline, the ring's own devices' last ones before they installed among them, so a
    ring that drew frail devices is judged with the fleet's spread, not with that of the quieter
    devices left behind (docs/decisions/0110)."""
    exposed = frozenset(r.name for r in plan.rings[: ring_index + 1])
    ring = source.cohort_counts(CohortQuery(model, release, exposed, since, now))
    control = source.cohort_counts(CohortQuery(model, baseline, None, since, now))
    install_control = source.cohort_counts(CohortQuery(model, baseline, None, None, now))
    start = min(started or since, since, now) - timedelta(hours=DISPERSION_LOOKBACK_H)
    dispersion = source.cohort_counts(CohortQuery(model, baseline, None, start, now))
    return Observation(ring, control, since, now, install_control or None, dispersion)
