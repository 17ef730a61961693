"""Agent services for the CLI: provision a device directory, run the poll loop, show the state."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from otactl.agent.agent import Agent, RunResult
from otactl.agent.state import DeviceState, Identity
from otactl.errors import UsageError


@dataclass(frozen=True)
class Provisioned:
    device_dir: Path
    device_id: str
    public_key: str  # what the device's record in the fleet inventory carries


def provision(device_dir: Path, device_id: str, model: str, hardware_revision: str, root: Path) -> Provisioned:
    try:
        anchor = root.read_bytes()
    except OSError as exc:
        raise UsageError(f"{root}: cannot read the trust anchor ({exc.strerror})") from None
    try:
        identity = Identity(device_id, model, hardware_revision)
    except UsageError as exc:
        raise UsageError(f"device identity: {exc}") from None
    state = DeviceState.provision(device_dir, identity, anchor)
    return Provisioned(device_dir, device_id, bytes(state.signing_key().verify_key).hex())


def run_loop(agent: Agent, *, interval: float, once: bool, clock: Callable[[], datetime],
             on_result: Callable[[RunResult], None], stop: threading.Event | None = None) -> RunResult:
    """``run_once`` every ``interval`` seconds until ``stop`` is set (or once); the last result."""
    stop = stop or threading.Event()
    while True:
        result = agent.run_once(clock())
        on_result(result)
        if once or stop.wait(interval):
            return result


def status(device_dir: Path) -> dict[str, Any]:
    device = DeviceState(device_dir)
    pointer = device.active()
    state = device.load_state()
    reports = device.load_reports()
    slots = {}
    for slot in ("a", "b"):
        m = device.manifest(slot)
        slots[slot] = None if m is None else {"version": m.version, "variant": m.variant,
                                              "security_version": m.security_version, "installed_at": m.installed_at}
    return {
        "device_id": device.identity.device_id, "model": device.identity.model,
        "hardware_revision": device.identity.hardware_revision, "active_slot": pointer.slot,
        "trial": pointer.trial, "slots": slots, "security_floor": state.security_floor,
        "failed_here": state.failed_here, "reports": {"next_seq": reports.next_seq, "pending": len(reports.outbox),
                                                      "accepted": reports.accepted, "refused": reports.refused,
                                                      "dropped": reports.dropped},
    }
