"""Device records and the inventory files they are imported from (CSV or YAML).

Inventory errors name the file, the line of the device and the field (column) at fault.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from otactl.errors import InputFileError, OtactlError, VerificationError
from otactl.release.bundle import canonical
from otactl.repo.layout import check_name
from otactl.yamlio import load_yaml

SCHEMA = "otactl/device/1"
FIELDS = ("device_id", "model", "hardware_revision", "variant", "region", "tags", "public_key", "pin")
REQUIRED = ("device_id", "model", "hardware_revision", "variant", "region", "public_key")
_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")
_PIN = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_NAMED = ("device_id", "model", "hardware_revision", "variant", "region")
_LABELS = tuple((kind, kind.replace("_", " ")) for kind in _NAMED)


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    model: str
    hardware_revision: str
    variant: str
    region: str
    tags: tuple[str, ...]
    public_key: str
    pin: str | None = None

    def __post_init__(self) -> None:
        for kind, label in _LABELS:
            value = getattr(self, kind)
            if not isinstance(value, str):
                raise TypeError(f"{kind} must be text")
            check_name(label, value)
        for tag in self.tags:
            check_name("tag", tag)
        if not _HEX_KEY.match(self.public_key):
            raise ValueError("public_key must be an ed25519 public key, 64 lowercase hex digits")
        if self.pin is not None and not _PIN.match(self.pin):
            raise ValueError(f"pin {self.pin!r} must be a release version like 2.1.0")

    def to_bytes(self) -> bytes:
        return canonical({
            "schema": SCHEMA, "device_id": self.device_id, "model": self.model,
            "hardware_revision": self.hardware_revision, "variant": self.variant, "region": self.region,
            "tags": sorted(self.tags), "pin": self.pin, "public_key": self.public_key,
        })

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> DeviceRecord:
        try:
            doc = json.loads(data)
            if doc.pop("schema", None) != SCHEMA:
                raise ValueError(f"schema is not {SCHEMA}")
            doc["tags"] = tuple(doc.get("tags", ()))
            return cls(**doc)
        except (ValueError, TypeError, OtactlError) as exc:
            raise VerificationError(f"{where}: not a valid device record ({exc})") from None

    def with_changes(self, variant: str | None, tags: list[str] | None, pin: str | None,
                     clear_pin: bool) -> DeviceRecord:
        return replace(
            self,
            variant=variant if variant is not None else self.variant,
            tags=tuple(sorted(set(tags))) if tags is not None else self.tags,
            pin=None if clear_pin else (pin if pin is not None else self.pin),
        )


@dataclass(frozen=True)
class Inventory:
    """Devices read from one inventory file, with the line each was read from."""

    path: str
    records: list[DeviceRecord]
    lines: dict[str, int] = field(default_factory=dict)

    def error(self, device_id: str, fld: str, problem: str) -> InputFileError:
        return InputFileError(self.path, problem, line=self.lines.get(device_id), field=fld)


# (field, problem) -> the error; lets the CSV and YAML readers name lines and fields their own way
Where = Callable[[str | None, str], InputFileError]


def _check(where: Where, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise where(name, "must be text (quote numbers in YAML)")
    label = name.replace("_", " ")
    try:
        return check_name(label, value)
    except OtactlError as exc:
        raise where(name, exc.message.removeprefix(f"{label} ")) from None


def _record(where: Where, raw: dict[str, Any]) -> DeviceRecord:
    tags = raw.get("tags") or ()
    if isinstance(tags, str):
        tags = [t for t in re.split(r"[;\s]+", tags) if t]
    pin = raw.get("pin")
    if isinstance(tags, list | tuple):
        try:  # the fast path: a good row (a million-device inventory is mostly good rows)
            return DeviceRecord(
                raw["device_id"], raw["model"], raw["hardware_revision"], raw["variant"], raw["region"],
                tuple(sorted(set(tags))), raw["public_key"].lower(), None if pin in (None, "") else pin)
        except (KeyError, ValueError, TypeError, AttributeError, OtactlError):
            pass
    # a bad row: find the field to name
    for f in REQUIRED:
        if raw.get(f) in (None, ""):
            raise where(f, "missing (required)")
    for f in _NAMED:
        _check(where, f, raw[f])
    if not isinstance(tags, list | tuple):
        raise where("tags", "must be a list of tags (in CSV: separated by ';')")
    for t in tags:
        _check(where, "tags", t)
    key = raw["public_key"]
    if not isinstance(key, str) or not _HEX_KEY.match(key.lower()):
        raise where("public_key", "must be an ed25519 public key, 64 hex digits")
    if not isinstance(pin, str) or not _PIN.match(pin):
        raise where("pin", f"{pin!r} must be a release version like 2.1.0")
    raise where(None, "not a valid device record")  # pragma: no cover - a field above is at fault


def _read_csv(path: Path) -> tuple[list[DeviceRecord], dict[str, int]]:
    records: list[DeviceRecord] = []
    lines: dict[str, int] = {}
    keys: dict[str, tuple[str, int]] = {}
    name = str(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            if not header:
                raise InputFileError(name, "empty file: expected a header row naming the columns", line=1)
            for col in header:
                if col not in FIELDS:
                    raise InputFileError(name, f"unknown column (allowed: {', '.join(FIELDS)})", line=1,
                                         field=col or "(empty column name)")
            if len(set(header)) != len(header):
                dup = next(c for c in header if header.count(c) > 1)
                raise InputFileError(name, "column appears twice", line=1, field=dup)
            for col in REQUIRED:
                if col not in header:
                    raise InputFileError(name, "required column missing from the header", line=1, field=col)
            for row in reader:
                line = reader.line_num

                def where(fld: str | None, problem: str, line: int = line) -> InputFileError:
                    return InputFileError(name, problem, line=line, field=fld)

                if None in row:
                    raise InputFileError(name, "more values than header columns", line=line)
                record = _record(where, {k: v for k, v in row.items() if v not in (None, "")})
                _add(name, records, lines, keys, record, line, "")
    except FileNotFoundError:
        raise InputFileError(name, "file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(name, f"cannot read CSV: {exc}") from None
    return records, lines


def _read_yaml(path: Path) -> tuple[list[DeviceRecord], dict[str, int]]:
    doc = load_yaml(path)
    if not isinstance(doc.data, list):
        raise doc.error((), "must be a list of devices")
    records: list[DeviceRecord] = []
    lines: dict[str, int] = {}
    keys: dict[str, tuple[str, int]] = {}
    for i, raw in enumerate(doc.data):
        if not isinstance(raw, dict):
            raise doc.error((i,), "each device must be a mapping")
        for key in raw:
            if key not in FIELDS:
                raise doc.error((i, key), f"unknown field (allowed: {', '.join(FIELDS)})")

        def where(fld: str | None, problem: str, i: int = i) -> InputFileError:
            return doc.error((i,) if fld is None else (i, fld), problem)

        record = _record(where, raw)
        _add(doc.path, records, lines, keys, record, doc.line((i,)) or 0, f"{i}.")
    return records, lines


def _add(path: str, records: list[DeviceRecord], lines: dict[str, int], keys: dict[str, tuple[str, int]],
         record: DeviceRecord, line: int, prefix: str) -> None:
    """Append a record; a device id or a device public key seen before in the file is refused.

    Two devices with one key would each be able to sign the other's reports (the ingest verifies a
    report against the key its record binds), so a shared key is an inventory error, not a duplicate.
    """
    first = lines.get(record.device_id)
    if first is not None:
        raise InputFileError(path, f"device {record.device_id!r} appears twice (first on line {first})",
                             line=line, field=f"{prefix}device_id")
    owner = keys.get(record.public_key)
    if owner is not None:
        raise InputFileError(path, f"device {record.device_id!r} reuses the public key of device {owner[0]!r} "
                             f"(line {owner[1]}); every device needs its own key", line=line,
                             field=f"{prefix}public_key")
    lines[record.device_id] = line
    keys[record.public_key] = (record.device_id, line)
    records.append(record)


def recommended_bin_bits(fleet_size: int) -> int:
    """Hash-bin bits for a fleet: about 256 devices per bin, ``round(log2(fleet / 256))`` in 0..16.

    See docs/decisions/0401-device-bin-count.md for why (a device's download per change vs the
    snapshot every device downloads after any change).
    """
    if fleet_size <= 256:
        return 0
    return min(16, round(math.log2(fleet_size / 256)))


def read_inventory(path: Path) -> Inventory:
    """CSV (header row with FIELDS; tags separated by ';') or YAML (a list of mappings)."""
    path = Path(path)
    records, lines = _read_csv(path) if path.suffix.lower() == ".csv" else _read_yaml(path)
    return Inventory(str(path), records, lines)


def load_inventory(path: Path) -> list[DeviceRecord]:
    return read_inventory(path).records
