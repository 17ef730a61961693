"""Helpers for the telemetry integration tests: a fleet with deterministic keys, the ingest process."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nacl.signing

from otactl.telemetry.devices import DeviceRegistry, EnrolledDevice
from otactl.telemetry.reporter import DeviceReporter

MODEL = "t9-engine"
STRATA = [("hp-300", "eu"), ("hp-400", "eu"), ("hp-400", "us"), ("hp-500", "us")]


def signing_key(device_id: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"integration:" + device_id.encode()).digest())


@dataclass
class Fleet:
    """Devices spread evenly over STRATA (twelve by default); each reporter keeps its device's seq."""

    registry: DeviceRegistry
    reporters: dict[str, DeviceReporter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for device in self.registry:
            self.reporters[device.device_id] = DeviceReporter(device, signing_key(device.device_id))

    def records(self) -> list[dict[str, object]]:
        return [
            {"schema": "otactl/device/1", "device_id": d.device_id, "model": d.model, "hardware_revision": "revB",
             "variant": d.variant, "region": d.region, "tags": [], "pin": None, "public_key": d.public_key}
            for d in self.registry
        ]  # fmt: skip


def make_fleet(size: int = 12) -> Fleet:
    devices = []
    for i in range(size):
        device_id = f"trk-{i + 1:04d}"
        variant, region = STRATA[i % len(STRATA)]
        public = bytes(signing_key(device_id).verify_key).hex()
        devices.append(EnrolledDevice(device_id, MODEL, variant, region, public))  # type: ignore[arg-type]
    return Fleet(DeviceRegistry(devices))


class IngestProcess:
    """`otactl telemetry serve` in a subprocess; ``port=0`` picks a free port (read back from stderr)."""

    def __init__(self, workdir: Path, devices: Path, db: Path) -> None:
        self.workdir, self.devices, self.db = workdir, devices, db
        self.url = ""
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def start(self, port: int = 0, workers: int = 1) -> IngestProcess:
        self._starts += 1
        log = self.workdir / f"ingest-{self._starts}.log"
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "otactl.cli.main", "telemetry", "serve", "--db", str(self.db),
                 "--devices", str(self.devices), "--host", "127.0.0.1", "--port", str(port),
                 "--workers", str(workers)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"},
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AssertionError(f"the ingest exited with {self._proc.returncode}:\n{log.read_text()}")
            for line in log.read_text().splitlines():
                if line.startswith("otactl telemetry ingest on http://"):
                    self.url = line.split(" on ", 1)[1].split(" ", 1)[0]
                    self.port = int(self.url.rsplit(":", 1)[1])
            started = log.read_text().count("Application startup complete.")
            if self.url and started >= workers and self._healthy():
                return self
            time.sleep(0.05)
        raise AssertionError(f"the ingest did not start:\n{log.read_text()}")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        # uvicorn re-raises SIGTERM after its graceful shutdown (lifespan shutdown closed the store)
        assert proc.returncode in (0, -signal.SIGTERM), f"the ingest exited with {proc.returncode}"


def utc_now() -> datetime:
    return datetime.now(UTC)
