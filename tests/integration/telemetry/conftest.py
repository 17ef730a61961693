"""Real parts on loopback: `otactl telemetry serve` (uvicorn) in a subprocess and a real Prometheus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.prometheus import PrometheusServer  # tests/ is on sys.path (see tests/conftest.py)
from telemetry_parts import Fleet, IngestProcess, make_fleet


@pytest.fixture
def fleet(request: pytest.FixtureRequest) -> Fleet:
    """Twelve devices; ``@pytest.mark.parametrize("fleet", [n], indirect=True)`` for n."""
    return make_fleet(getattr(request, "param", 12))


@pytest.fixture
def ingest(fleet: Fleet, tmp_path: Path) -> Iterator[IngestProcess]:
    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps(fleet.records()))
    process = IngestProcess(tmp_path, devices, tmp_path / "telemetry.db").start()
    yield process
    process.stop()


@pytest.fixture
def prometheus(ingest: IngestProcess, tmp_path: Path) -> Iterator[PrometheusServer]:
    with PrometheusServer(tmp_path / "prometheus", targets=[f"127.0.0.1:{ingest.port}"], scrape_interval="1s") as p:
        p.wait_until(lambda: p.value("up") == 1.0, "Prometheus has scraped the ingest")
        yield p
