"""Install windows and install preconditions (decision 1202). Pure: ``now`` is an argument.

A window is a cron expression (five fields, minute granularity, read with ``croniter``) for when it
opens, a duration, and the time zone the expression is read in: an IANA name, or ``device`` (the
device's own zone: its region's zone from the plan's ``region_timezones``, else UTC). The duration
is real elapsed time from the opening, so a 120-minute window is 120 minutes across a DST change.
A device installs while any of its windows is open (no windows: always open).

A precondition names a device-local check (``engine_off``, ``not_in_operation``, ``battery_min``
with a percentage); the agent evaluates them (``otactl.agent.conditions``). The plan, the signed
rollout policy and the agent share these types and their JSON form, defined here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

DEVICE_ZONE = "device"
MAX_DURATION_MINUTES = 7 * 24 * 60
PRECONDITIONS = ("engine_off", "not_in_operation", "battery_min")  # battery_min takes a percentage


def check_cron(expr: object) -> str:
    """A five-field cron expression, or ValueError saying what is wrong."""
    if not isinstance(expr, str) or len(expr.split()) != 5:
        raise ValueError(f"must be a cron expression of five fields (minute hour day month weekday), got {expr!r}")
    if not croniter.is_valid(expr):
        raise ValueError(f"{expr!r} is not a valid cron expression")
    return expr


def check_zone(name: object) -> str:
    """An IANA time zone name (or ``device``), or ValueError."""
    if name == DEVICE_ZONE:
        return DEVICE_ZONE
    if not isinstance(name, str) or not name:
        raise ValueError(f"must be an IANA time zone name like Europe/Berlin, or {DEVICE_ZONE!r}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name like Europe/Berlin)") from None
    return name


@dataclass(frozen=True)
class InstallWindow:
    cron: str
    duration_minutes: int
    timezone: str = DEVICE_ZONE

    def __post_init__(self) -> None:
        check_cron(self.cron)
        check_zone(self.timezone)
        if isinstance(self.duration_minutes, bool) or not isinstance(self.duration_minutes, int) \
                or not 1 <= self.duration_minutes <= MAX_DURATION_MINUTES:
            raise ValueError(f"duration_minutes must be an integer from 1 to {MAX_DURATION_MINUTES}")

    def zone(self, device_zone: str) -> ZoneInfo:
        return ZoneInfo(device_zone if self.timezone == DEVICE_ZONE else self.timezone)

    def opened(self, now: datetime, device_zone: str) -> datetime | None:
        """When the window holding ``now`` opened (UTC), or None when it is closed at ``now``."""
        local = now.astimezone(self.zone(device_zone))
        start: datetime = croniter(self.cron, local + timedelta(seconds=1)).get_prev(datetime)
        start = start.astimezone(UTC)
        return start if start <= now < start + timedelta(minutes=self.duration_minutes) else None

    def next_open(self, now: datetime, device_zone: str) -> datetime:
        """The window's next opening after ``now``, in the window's zone."""
        nxt: datetime = croniter(self.cron, now.astimezone(self.zone(device_zone))).get_next(datetime)
        return nxt

    def to_json(self) -> dict[str, Any]:
        return {"cron": self.cron, "duration_minutes": self.duration_minutes, "timezone": self.timezone}

    @classmethod
    def from_json(cls, raw: object) -> InstallWindow:
        if not isinstance(raw, dict) or set(raw) - {"cron", "duration_minutes", "timezone"} \
                or not {"cron", "duration_minutes"} <= set(raw):
            raise ValueError("an install window is {cron, duration_minutes, timezone}")
        return cls(raw["cron"], raw["duration_minutes"], raw.get("timezone", DEVICE_ZONE))


@dataclass(frozen=True)
class PreconditionSpec:
    """``name`` is one of PRECONDITIONS (an agent may know more); ``value`` is battery_min's percentage."""

    name: str
    value: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.replace("_", "").isalnum():
            raise ValueError(f"precondition name must be a word like engine_off, got {self.name!r}")
        if self.value is not None and (isinstance(self.value, bool) or not isinstance(self.value, int)
                                       or not 0 <= self.value <= 100):
            raise ValueError(f"{self.name}: must be an integer percentage from 0 to 100")

    def label(self) -> str:
        return self.name if self.value is None else f"{self.name}: {self.value}"

    def to_json(self) -> str | dict[str, int]:
        return self.name if self.value is None else {self.name: self.value}

    @classmethod
    def from_json(cls, raw: object) -> PreconditionSpec:
        if isinstance(raw, str):
            return cls(raw)
        if isinstance(raw, dict) and len(raw) == 1:
            ((name, value),) = raw.items()
            return cls(str(name), value)
        raise ValueError(f"a precondition is a name or {{name: value}}, got {raw!r}")


@dataclass(frozen=True)
class InstallRules:
    """What a ring's devices must see before they install (empty: install at once)."""

    windows: tuple[InstallWindow, ...] = ()
    preconditions: tuple[PreconditionSpec, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.windows or self.preconditions)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.windows:
            out["install_windows"] = [w.to_json() for w in self.windows]
        if self.preconditions:
            out["preconditions"] = [p.to_json() for p in self.preconditions]
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> InstallRules:
        windows = doc.get("install_windows", [])
        pre = doc.get("preconditions", [])
        if not isinstance(windows, list) or not isinstance(pre, list):
            raise ValueError("install_windows and preconditions must be lists")
        return cls(tuple(InstallWindow.from_json(w) for w in windows),
                   tuple(PreconditionSpec.from_json(p) for p in pre))


@dataclass(frozen=True)
class WindowVerdict:
    open: bool
    reason: str  # why not, or which window is open


def window_verdict(windows: Sequence[InstallWindow], now: datetime, device_zone: str) -> WindowVerdict:
    """Open when any window holds ``now`` (no windows: always open); else when the next one opens."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not windows:
        return WindowVerdict(True, "no install window")
    for w in windows:
        if w.opened(now, device_zone) is not None:
            return WindowVerdict(True, f"inside maintenance window {w.cron!r} ({w.zone(device_zone).key})")
    soonest = min((w.next_open(now, device_zone) for w in windows), key=lambda t: t.astimezone(UTC))
    tz = soonest.tzinfo
    zone = tz.key if isinstance(tz, ZoneInfo) else str(tz)
    when = soonest.strftime("%H:%M") if soonest.date() == now.astimezone(tz).date() \
        else soonest.strftime("%Y-%m-%d %H:%M")
    return WindowVerdict(False, f"outside maintenance window until {when} {zone}")
