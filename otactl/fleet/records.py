"""Device records and the inventory files they are imported from (CSV or YAML)."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, replace
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
        for kind in ("device_id", "model", "hardware_revision", "variant", "region"):
            check_name(kind.replace("_", " "), getattr(self, kind))
        for tag in self.tags:
            check_name("tag", tag)
        if not _HEX_KEY.match(self.public_key):
            raise ValueError("public_key must be an ed25519 public key, 64 lowercase hex digits")

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


def _record(path: str, where: str, raw: dict[str, Any]) -> DeviceRecord:
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise InputFileError(path, f"unknown field(s) {', '.join(unknown)}", field=where)
    missing = [f for f in REQUIRED if not raw.get(f)]
    if missing:
        raise InputFileError(path, f"missing {', '.join(missing)}", field=where)
    tags = raw.get("tags") or ()
    if isinstance(tags, str):
        tags = [t for t in re.split(r"[;\s]+", tags) if t]
    try:
        return DeviceRecord(
            str(raw["device_id"]), str(raw["model"]), str(raw["hardware_revision"]), str(raw["variant"]),
            str(raw["region"]), tuple(sorted(set(map(str, tags)))), str(raw["public_key"]).lower(),
            str(raw["pin"]) if raw.get("pin") else None,
        )
    except (ValueError, OtactlError) as exc:
        raise InputFileError(path, str(exc), field=where) from None


def load_inventory(path: Path) -> list[DeviceRecord]:
    """CSV (header row with FIELDS; tags separated by ';') or YAML (a list of mappings)."""
    records: list[DeviceRecord] = []
    if path.suffix.lower() == ".csv":
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                for row in reader:
                    where = f"line {reader.line_num}"
                    if None in row:
                        raise InputFileError(str(path), "more values than header columns", line=reader.line_num)
                    records.append(_record(str(path), where, {k: v for k, v in row.items() if v != ""}))
        except FileNotFoundError:
            raise InputFileError(str(path), "file not found") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputFileError(str(path), f"cannot read CSV: {exc}") from None
    else:
        doc = load_yaml(path)
        if not isinstance(doc.data, list):
            raise doc.error((), "must be a list of devices")
        for i, raw in enumerate(doc.data):
            if not isinstance(raw, dict):
                raise doc.error((i,), "each device must be a mapping")
            try:
                records.append(_record(doc.path, f"[{i}]", raw))
            except InputFileError as exc:
                raise InputFileError(doc.path, exc.message.split(": ", 2)[-1], line=doc.line((i,)),
                                     field=f"[{i}]") from None
    seen: set[str] = set()
    for r in records:
        if r.device_id in seen:
            raise InputFileError(str(path), f"device {r.device_id!r} appears twice")
        seen.add(r.device_id)
    return records
