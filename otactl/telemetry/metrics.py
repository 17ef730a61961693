"""``/metrics``: a prometheus_client Collector that reads the store's aggregates on every scrape.

Nothing is counted in process memory, so the numbers survive ingest restarts and agree with the
store by construction. Series are per cohort (model, release, ring, variant, region), never per
device: one family per counter of ``counters.COUNTERS`` (names in series.py), and the events.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from otactl.errors import StoreError
from otactl.telemetry import series
from otactl.telemetry.devices import DeviceRegistry
from otactl.telemetry.report import Event, Refusal
from otactl.telemetry.store import ReportStore


class StoreCollector(Collector):
    def __init__(self, store: ReportStore, devices: DeviceRegistry | None = None) -> None:
        self.store = store
        self.devices = devices

    def describe(self) -> Iterable[Metric]:
        return []  # series are dynamic; do not collect at registration

    def collect(self) -> Iterable[Metric]:
        labels = list(series.COHORT_LABELS)
        events = CounterMetricFamily(series.EVENTS, series.EVENTS_HELP, labels=[*labels, "event"])
        families = {
            name: CounterMetricFamily(family, help_text, labels=labels)
            for name, (family, help_text) in series.COHORT_FAMILIES.items()
        }
        accepted = 0
        for row in self.store.counter_rows():
            cohort = [row.model, row.release, row.ring, row.variant, row.region]
            event = row.name.removeprefix(series.EVENT_PREFIX)
            if row.name.startswith(series.EVENT_PREFIX) and event in Event.__members__.values():
                events.add_metric([*cohort, event], row.value)
                accepted += row.value
            elif row.name in families:
                families[row.name].add_metric(cohort, row.value)
                if row.name == "health_reports":
                    accepted += row.value
            else:  # never written by this otactl (ledger.py): refuse rather than drop it silently
                raise StoreError(f"telemetry database {self.store.path}: unknown counter {row.name!r}")
        yield events
        yield from families.values()
        yield CounterMetricFamily(series.ACCEPTED, "Reports accepted and stored.", value=accepted)
        rejected = CounterMetricFamily(series.REJECTED, "Reports refused by the ingest, by reason.", labels=["reason"])
        refusals = self.store.refusal_counts()
        for reason in Refusal:
            rejected.add_metric([reason.value], refusals.get(reason, 0))
        yield rejected
        if self.devices is not None:
            enrolled = GaugeMetricFamily(series.ENROLLED, "Enrolled devices.", labels=["model", "variant", "region"])
            for key, n in sorted(self.devices.enrolled_by_stratum().items()):
                enrolled.add_metric([key.model, key.variant, key.region], n)
            yield enrolled


def exposition(store: ReportStore, devices: DeviceRegistry | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, devices))
    return generate_latest(registry)
