"""Fixtures for telemetry unit tests: a small enrolled fleet with deterministic keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nacl.signing
import pytest

from otactl.telemetry.devices import DeviceRegistry, EnrolledDevice
from otactl.telemetry.reporter import DeviceReporter
from otactl.telemetry.store import ReportStore

NOW = datetime(2026, 11, 27, 19, 0, 0, tzinfo=UTC)
MODEL = "t9-engine"
# device id -> (variant, region)
DEVICES = {
    "trk-0001": ("hp-300", "eu"),
    "trk-0002": ("hp-300", "eu"),
    "trk-0003": ("hp-400", "eu"),
    "trk-0004": ("hp-400", "us"),
    "trk-0005": ("hp-500", "us"),
}


def signing_key(device_id: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(device_id.encode()).digest())


def enrolled(device_id: str, variant: str, region: str, model: str = MODEL) -> EnrolledDevice:
    public = bytes(signing_key(device_id).verify_key).hex()
    return EnrolledDevice(device_id, model, variant, region, public)  # type: ignore[arg-type]


@dataclass
class Fleet:
    """Five enrolled devices of MODEL; ``fleet.now`` is the tests' clock."""

    registry: DeviceRegistry
    now: datetime = NOW
    model: str = MODEL

    @staticmethod
    def key(device_id: str) -> nacl.signing.SigningKey:
        return signing_key(device_id)

    @staticmethod
    def enrol(device_id: str, variant: str, region: str, model: str = MODEL) -> EnrolledDevice:
        return enrolled(device_id, variant, region, model)

    def reporter(self, device_id: str, next_seq: int = 1) -> DeviceReporter:
        device = self.registry.get(device_id)
        assert device is not None
        return DeviceReporter(device, signing_key(device_id), next_seq=next_seq)


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(DeviceRegistry(enrolled(d, v, r) for d, (v, r) in DEVICES.items()))


@pytest.fixture
def store(tmp_path: Path):
    s = ReportStore(tmp_path / "telemetry.db")
    yield s
    s.close()
