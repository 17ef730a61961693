"""Helpers for the telemetry integration tests: a fleet with deterministic keys, the ingest process."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nacl.signing

from otactl.telemetry.devices import DeviceRegistry, EnrolledDevice
from otactl.telemetry.report import Envelope, Event, parse_payload, sign_report
from otactl.telemetry.reporter import DeviceReporter
from otactl.telemetry.source import StratumKey

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
    """`otactl telemetry serve` in a subprocess; ``port=0`` picks a free port (read back from stderr).
    With ``shard`` ("I/N"), an ingest shard."""

    def __init__(self, workdir: Path, devices: Path, db: Path, shard: str | None = None) -> None:
        self.workdir, self.devices, self.db, self.shard = workdir, devices, db, shard
        self.url = ""
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def start(self, port: int = 0, workers: int = 1) -> IngestProcess:
        self._starts += 1
        log = self.workdir / f"ingest-{self.db.stem}-{self._starts}.log"
        shard = [] if self.shard is None else ["--shard", self.shard]
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "otactl.cli.main", "telemetry", "serve", "--db", str(self.db),
                 "--devices", str(self.devices), "--host", "127.0.0.1", "--port", str(port),
                 "--workers", str(workers), *shard],
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


class RouterProcess:
    """`otactl telemetry route` in a subprocess, in front of ``shards`` (base URLs in shard order)."""

    def __init__(self, workdir: Path, shards: list[str]) -> None:
        self.workdir, self.shards = workdir, shards
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RouterProcess:
        log = self.workdir / "router.log"
        args = [a for url in self.shards for a in ("--shard", url)]
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "otactl.cli.main", "telemetry", "route", *args, "--host", "127.0.0.1",
                 "--port", "0"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"},
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AssertionError(f"the router exited with {self._proc.returncode}:\n{log.read_text()}")
            for line in log.read_text().splitlines():
                if line.startswith("otactl telemetry router on http://"):
                    self.url = line.split(" on ", 1)[1].split(" ", 1)[0]
            if self.url and "Application startup complete." in log.read_text():
                return self
            time.sleep(0.05)
        raise AssertionError(f"the router did not start:\n{log.read_text()}")

    def log(self) -> str:
        return (self.workdir / "router.log").read_text()

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
        assert proc.returncode in (0, -signal.SIGTERM), f"the router exited with {proc.returncode}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def rollout_batch(fleet: Fleet, release: str, rings: dict[str, str | None], crash_every: int) -> list[Envelope]:
    """Each device: offered, installed, then committed/reverted/failed, then two health reports."""
    now = utc_now()
    out = []
    for i, (device_id, r) in enumerate(sorted(fleet.reporters.items())):
        ring = rings[device_id]
        finish = [Event.COMMITTED, Event.COMMITTED, Event.REVERTED, Event.FAILED][i % 4]
        out += [r.event(release, ring, Event.OFFERED, now), r.event(release, ring, Event.INSTALLED, now),
                r.event(release, ring, finish, now, reason=None if finish is Event.COMMITTED else "boot check"),
                r.health(release, ring, now, uptime_s=600 * (i + 1), crashes=int(i % crash_every == 0), errors=i,
                         metrics={"temp_c": "71.5", "rpm": 900}),
                r.health(release, ring, now, uptime_s=1200, crashes=2 if i == 3 else 0)]  # fmt: skip
    return out


def ring_of(fleet: Fleet) -> dict[str, str | None]:
    names = sorted(fleet.reporters)
    return {d: ("canary" if i < 4 else "early" if i < 8 else None) for i, d in enumerate(names)}


QUERIES = {
    "everything": dict(release="2.1.0"),
    "canary ring": dict(release="2.1.0", rings=frozenset({"canary"})),
    "two rings": dict(release="2.1.0", rings=frozenset({"canary", "early"})),
    "one stratum": dict(release="2.1.0", strata=frozenset({StratumKey("t9-engine", "hp-400", "eu")})),
    "old release": dict(release="2.0.0"),
    "nothing": dict(release="9.9.9"),
}


def bad_reports(fleet: Fleet, replay: Envelope) -> tuple[list[object], dict[str, int]]:
    """One report refused for each reason (all `booted` events, so none may show up in the store)."""
    r = fleet.reporters["trk-0001"]
    good = r.event("2.1.0", "canary", Event.BOOTED, utc_now())
    report = parse_payload(good.payload)
    stranger = sign_report(replace(report, device_id="trk-0999"), signing_key("trk-0999"))  # type: ignore[arg-type]
    mismatch = sign_report(replace(report, seq=report.seq + 1, variant="hp-500"), signing_key("trk-0001"))
    future = r.event("2.1.0", "canary", Event.BOOTED, utc_now() + timedelta(hours=1))
    reports: list[object] = [
        {"payload": "not json", "signature": "00" * 64},
        {"payload": good.payload},
        {"payload": good.payload.replace('"seq":', '"seq":1'), "signature": good.signature},
        stranger.to_json(),
        mismatch.to_json(),
        future.to_json(),
        replay.to_json(),
        {"payload": "x" * 5000, "signature": good.signature},
    ]
    expected = {"malformed": 1, "unsigned": 1, "bad_signature": 1, "unknown_key": 1, "mismatch": 1, "future": 1,
                "replayed": 1, "oversized": 1}  # fmt: skip
    return reports, expected
