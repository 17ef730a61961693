"""What the agent asks the device: did the new slot boot healthy, and how is the device doing.

Both are small callables passed to the agent, so a product plugs in its own (a watchdog, a
service check, crash counters from its supervisor) and the simulator plugs in one driven by a
scenario. The defaults here are what an agent can tell by itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from otactl.agent.model import SlotManifest, check_config
from otactl.agent.state import CONFIG_FILE, FIRMWARE_FILE
from otactl.errors import VerificationError


@dataclass(frozen=True)
class BootVerdict:
    ok: bool
    reason: str | None = None

    def __post_init__(self) -> None:
        if not self.ok and not self.reason:
            raise ValueError("a failed boot check needs a reason")


class BootCheck(Protocol):
    def __call__(self, slot_dir: Path, manifest: SlotManifest) -> BootVerdict: ...


@dataclass(frozen=True)
class HealthSample:
    """Counters since the previous health report (docs/formats.md ``health``)."""

    uptime_s: int
    crashes: int = 0
    errors: int = 0
    metrics: Mapping[str, int | str] = field(default_factory=dict)


class HealthProbe(Protocol):
    def __call__(self, active: SlotManifest, since: datetime | None, now: datetime) -> HealthSample: ...


def _sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


def integrity_check(slot_dir: Path, manifest: SlotManifest) -> BootVerdict:
    """The check every boot gets: the slot's image and configuration are the verified ones."""
    for name, ref in ((FIRMWARE_FILE, manifest.firmware), (CONFIG_FILE, manifest.config)):
        try:
            length, sha = _sha256(slot_dir / name)
        except OSError as exc:
            return BootVerdict(False, f"{name}: {exc.strerror or exc}")
        if (length, sha) != (ref.length, ref.sha256):
            return BootVerdict(False, f"{name}: does not match the verified {ref.target}")
    try:
        check_config((slot_dir / CONFIG_FILE).read_bytes(), CONFIG_FILE, model=manifest.model,
                     version=manifest.version, variant=manifest.variant)
    except VerificationError as exc:
        return BootVerdict(False, str(exc))
    return BootVerdict(True)


def uptime_probe(active: SlotManifest, since: datetime | None, now: datetime) -> HealthSample:
    """Uptime since the previous report; no crash source (a product passes its own probe)."""
    seconds = 0 if since is None else max(0, int((now - since).total_seconds()))
    return HealthSample(seconds)
