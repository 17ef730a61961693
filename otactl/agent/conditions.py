"""Install preconditions the device checks before it installs, and the install gate (decision 1202).

A precondition is a small object with a ``name`` and a ``check(now)`` that says ok or why not; a
product plugs in its own (CAN bus engine state, a battery gauge, its job scheduler) by passing a
registry of factories to the agent. The built-ins read a device-local state file,
``<device-dir>/conditions.json`` (``{"engine_running": false, "battery_percent": 80,
"in_operation": false}``), which the product (or the fleet simulator) keeps current. A reading that
is missing or unreadable is not met: no data is never success.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from otactl.rollout.windows import InstallRules, PreconditionSpec, window_verdict
from otactl.telemetry.report import MAX_REASON_LEN

CONDITIONS_FILE = "conditions.json"


@dataclass(frozen=True)
class ConditionVerdict:
    ok: bool
    reason: str = ""  # why not (a precondition that is not met)


class Precondition(Protocol):
    @property
    def name(self) -> str: ...

    def check(self, now: datetime) -> ConditionVerdict: ...


PreconditionFactory = Callable[[PreconditionSpec, Path], Precondition]


def read_conditions(device_dir: Path) -> dict[str, Any] | str:
    """The device-local readings, or why they cannot be read."""
    path = device_dir / CONDITIONS_FILE
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return f"no readings ({CONDITIONS_FILE} missing)"
    except (OSError, ValueError) as exc:
        return f"{CONDITIONS_FILE} unreadable ({type(exc).__name__})"
    return doc if isinstance(doc, dict) else f"{CONDITIONS_FILE} is not an object"


def _reading(name: str, device_dir: Path, key: str) -> Any:
    """The device's ``key`` reading for precondition ``name``, or the not-met verdict when the
    conditions file cannot be read."""
    doc = read_conditions(device_dir)
    if isinstance(doc, str):
        return ConditionVerdict(False, f"precondition {name}: {doc}")
    return doc.get(key)


@dataclass(frozen=True)
class _FlagOff:
    """A boolean reading that must be false (``engine_running``, ``in_operation``)."""

    name: str
    reading: str
    what: str
    device_dir: Path

    def check(self, now: datetime) -> ConditionVerdict:
        value = _reading(self.name, self.device_dir, self.reading)
        if isinstance(value, ConditionVerdict):
            return value
        if not isinstance(value, bool):
            return ConditionVerdict(False, f"precondition {self.name}: no {self.reading} reading")
        return ConditionVerdict(not value, f"precondition {self.name}: {self.what}")


@dataclass(frozen=True)
class BatteryMin:
    name: str
    percent: int
    device_dir: Path

    def check(self, now: datetime) -> ConditionVerdict:
        value = _reading(self.name, self.device_dir, "battery_percent")
        if isinstance(value, ConditionVerdict):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            return ConditionVerdict(False, f"precondition {self.name}: no battery_percent reading")
        return ConditionVerdict(value >= self.percent,
                                f"precondition {self.name}: {value:g}% < {self.percent}%")


def _engine_off(spec: PreconditionSpec, device_dir: Path) -> Precondition:
    return _FlagOff(spec.name, "engine_running", "engine running", device_dir)


def _not_in_operation(spec: PreconditionSpec, device_dir: Path) -> Precondition:
    return _FlagOff(spec.name, "in_operation", "in operation", device_dir)


def _battery_min(spec: PreconditionSpec, device_dir: Path) -> Precondition:
    return BatteryMin(spec.name, spec.value or 0, device_dir)


BUILTIN: Mapping[str, PreconditionFactory] = {
    "engine_off": _engine_off,
    "not_in_operation": _not_in_operation,
    "battery_min": _battery_min,
}


@dataclass(frozen=True)
class _Unknown:
    name: str

    def check(self, now: datetime) -> ConditionVerdict:
        return ConditionVerdict(False, f"precondition {self.name}: this agent has no check for it")


def build(specs: Sequence[PreconditionSpec], device_dir: Path,
          registry: Mapping[str, PreconditionFactory] = BUILTIN) -> list[Precondition]:
    """The checks for ``specs``; a name the registry lacks is never met (the device cannot tell)."""
    return [registry[s.name](s, device_dir) if s.name in registry else _Unknown(s.name) for s in specs]


def install_gate(rules: InstallRules, checks: Sequence[Precondition], now: datetime,
                 device_zone: str) -> str | None:
    """None when the device may install now; else why it waits (window first, then every unmet
    precondition). Pure apart from what the checks read."""
    reasons = []
    window = window_verdict(rules.windows, now, device_zone)
    if not window.open:
        reasons.append(window.reason)
    for check in checks:
        try:
            verdict = check.check(now)
        except Exception as exc:  # noqa: BLE001 - a crashing check is a condition not met
            verdict = ConditionVerdict(False, f"precondition {check.name}: check crashed ({type(exc).__name__})")
        if not verdict.ok:
            reasons.append(verdict.reason or f"precondition {check.name}: not met")
    if not reasons:
        return None
    text = "; ".join(reasons)
    return text if len(text) <= MAX_REASON_LEN else text[: MAX_REASON_LEN - 3] + "..."
