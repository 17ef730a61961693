"""Device records and the inventory files they are imported from (CSV or YAML).

A record is the online-signed TUF target ``devices/<id>.json``. Schema ``otactl/device/2`` carries the
device's offline-signed entitlement (decision 0406: model, hardware revision, device key, variant and
features live only inside it); ``otactl/device/1``, from before a repository's migration, carries
them itself. Inventory errors name the file, the line of the device and the field (column) at fault.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from otactl.errors import InputFileError, OtactlError, VerificationError
from otactl.fleet.entitlements import Entitlement, Statement
from otactl.release.bundle import canonical
from otactl.repo.layout import NAME_PATTERN, check_name
from otactl.yamlio import load_yaml

SCHEMA = "otactl/device/1"  # a legacy record: no entitlement (a repository not migrated, 0406)
SCHEMA_2 = "otactl/device/2"  # a record carrying its offline-signed entitlement
FIELDS = ("device_id", "model", "hardware_revision", "variant", "region", "tags", "public_key", "pin", "features")
REQUIRED = ("device_id", "model", "hardware_revision", "variant", "region", "public_key")
_HEX_KEY = re.compile(r"^[0-9a-f]{64}\Z")
_PIN = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?\Z")
_NAMED = ("device_id", "model", "hardware_revision", "variant", "region")
_FIVE_NAMES = re.compile(rf"^{NAME_PATTERN}(?:\n{NAME_PATTERN}){{4}}\Z")  # check_name's rule, five times
_LABELS = tuple((kind, kind.replace("_", " ")) for kind in _NAMED)
_V2_FIELDS = frozenset({"schema", "device_id", "region", "tags", "pin", "entitlement"})

_COPIED = ("device_id", "model", "hardware_revision", "variant", "region", "tags", "public_key", "pin", "features")
Grant = tuple[str, str, str, str, str, tuple[str, ...]]  # device id, model, hw revision, key, variant, features


@dataclass(frozen=True, slots=True)  # slots: an import holds a million of them
class DeviceRecord:
    """A device's record. ``variant``, ``features``, ``model``, ``hardware_revision`` and
    ``public_key`` are what the record *claims*: with an entitlement they equal its statement, and
    only a verifier (the agent, the ingest: ``Signers.verify``) makes them trustworthy."""

    device_id: str
    model: str
    hardware_revision: str
    variant: str
    region: str
    tags: tuple[str, ...]
    public_key: str
    pin: str | None = None
    features: tuple[str, ...] = ()
    entitlement: Entitlement | None = field(default=None, compare=True)

    def __post_init__(self) -> None:
        try:  # the five names in one match (a million-device import checks a million records)
            named = _FIVE_NAMES.match("\n".join((self.device_id, self.model, self.hardware_revision, self.variant,
                                                 self.region))) is not None
        except TypeError:
            named = False
        if not named:  # find the one at fault
            for kind, label in _LABELS:
                value = getattr(self, kind)
                if not isinstance(value, str):
                    raise TypeError(f"{kind} must be text")
                check_name(label, value)
        for tag in self.tags:
            check_name("tag", tag)
        for feature in self.features:
            check_name("feature", feature)
        if self.features and list(self.features) != sorted(set(self.features)):
            raise ValueError("features must be sorted and unique")
        if not _HEX_KEY.match(self.public_key):
            raise ValueError("public_key must be an ed25519 public key, 64 lowercase hex digits")
        if self.pin is not None and not _PIN.match(self.pin):
            raise ValueError(f"pin {self.pin!r} must be a release version like 2.1.0")
        if self.entitlement is not None and self.entitlement.statement.grant != self.grant:
            raise ValueError("the record's device, model, hardware revision, key, variant or features differ "
                             "from its entitlement statement")

    @property
    def grant(self) -> Grant:
        """What only the entitlement signers may change (decision 0406)."""
        return (self.device_id, self.model, self.hardware_revision, self.public_key, self.variant, self.features)

    def statement(self, version: int) -> Statement:
        return Statement.of_checked(self.device_id, self.model, self.hardware_revision, self.public_key,
                                    self.variant, self.features, version)

    def entitled(self, entitlement: Entitlement | None) -> DeviceRecord:
        """This record carrying ``entitlement`` (which must grant what the record says)."""
        if entitlement is not None and entitlement.statement.grant != self.grant:
            raise ValueError("the entitlement's statement grants another device, key, variant or features")
        new = object.__new__(DeviceRecord)  # the other fields are checked already: copy, do not re-check
        for name in _COPIED:
            object.__setattr__(new, name, getattr(self, name))
        object.__setattr__(new, "entitlement", entitlement)
        return new

    def to_bytes(self) -> bytes:
        if self.entitlement is None:
            return canonical({
                "schema": SCHEMA, "device_id": self.device_id, "model": self.model,
                "hardware_revision": self.hardware_revision, "variant": self.variant, "region": self.region,
                "tags": sorted(self.tags), "pin": self.pin, "public_key": self.public_key,
            })
        # canonical({... "entitlement": ...}), spelled directly: the id, region, tags and pin are checked
        # names and versions, which JSON writes without escapes (test_entitlement_attacks.py compares)
        tags = '"' + '","'.join(sorted(self.tags)) + '"' if self.tags else ""
        pin = "null" if self.pin is None else f'"{self.pin}"'
        return b'{"device_id":"%s","entitlement":%s,"pin":%s,"region":"%s","schema":"%s","tags":[%s]}' % (
            self.device_id.encode(), self.entitlement.to_bytes(), pin.encode(), self.region.encode(),
            SCHEMA_2.encode(), tags.encode())

    def inventory_digest(self) -> str:
        """A short digest of what an inventory row says about the device (change detection only:
        ``fleet import`` skips a device whose published bin entry carries the same digest). Fields
        are names, hex and versions (no newline, no comma), joined by newlines."""
        text = "\n".join((*self.grant[:5], ",".join(self.features), self.region,
                          ",".join(sorted(self.tags)) if self.tags else "", self.pin or ""))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        """The record in ``fleet list -o json`` (the ingest reads it back: ``telemetry serve --devices``)."""
        doc: dict[str, Any] = {"schema": SCHEMA if self.entitlement is None else SCHEMA_2,
                               "device_id": self.device_id, "model": self.model,
                               "hardware_revision": self.hardware_revision, "variant": self.variant,
                               "region": self.region, "tags": list(self.tags), "public_key": self.public_key,
                               "pin": self.pin}
        if self.entitlement is not None:
            doc["features"] = list(self.features)
            doc["entitlement"] = self.entitlement.to_dict()
        return doc

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> DeviceRecord:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            schema = doc.pop("schema", None)
            if schema == SCHEMA_2:
                return cls._from_v2(doc)
            if schema != SCHEMA:
                raise ValueError(f"schema is neither {SCHEMA_2} nor {SCHEMA}")
            doc["tags"] = tuple(doc.get("tags", ()))
            if "features" in doc or "entitlement" in doc:
                raise ValueError(f"a {SCHEMA} record carries no features or entitlement")
            return cls(**doc)
        except (ValueError, TypeError, OtactlError) as exc:
            raise VerificationError(f"{where}: not a valid device record ({exc})") from None

    @classmethod
    def _from_v2(cls, doc: dict[str, Any]) -> DeviceRecord:
        unknown = sorted(set(doc) - _V2_FIELDS)
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        ent = Entitlement.from_dict(doc.get("entitlement"))
        st = ent.statement
        tags = doc.get("tags", [])
        if not isinstance(tags, list):
            raise ValueError("tags must be a list")
        if doc.get("device_id") != st.device_id:
            raise ValueError(f"device_id {doc.get('device_id')!r} is not its entitlement's {st.device_id!r}")
        region = doc.get("region")
        if not isinstance(region, str):
            raise ValueError("region must be text")
        return cls(st.device_id, st.model, st.hardware_revision, st.variant, region, tuple(tags),
                   st.public_key, doc.get("pin"), st.features, ent)

    def with_changes(self, variant: str | None, tags: list[str] | None, pin: str | None,
                     clear_pin: bool, *, region: str | None = None,
                     features: list[str] | None = None) -> DeviceRecord:
        """The record with these changes; a changed grant (variant, features) drops the entitlement,
        which the entitlement signers must then sign again. Tags, region and pin keep it."""
        new = replace(
            self,
            variant=variant if variant is not None else self.variant,
            features=tuple(sorted(set(features))) if features is not None else self.features,
            tags=tuple(sorted(set(tags))) if tags is not None else self.tags,
            region=region if region is not None else self.region,
            pin=None if clear_pin else (pin if pin is not None else self.pin),
            entitlement=None,
        )
        return new if new.grant != self.grant else replace(new, entitlement=self.entitlement)


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


def _listed(value: Any) -> Any:
    """Tags or features: a list, or in CSV one cell separated by ';' (or blanks)."""
    if not value:
        return ()
    if isinstance(value, str):
        return [t for t in re.split(r"[;\s]+", value) if t]
    return value


def _record(where: Where, raw: dict[str, Any]) -> DeviceRecord:
    tags = _listed(raw.get("tags"))
    features = _listed(raw.get("features"))
    pin = raw.get("pin")
    if isinstance(tags, list | tuple) and isinstance(features, list | tuple):
        try:  # the fast path: a good row (a million-device inventory is mostly good rows)
            intern = sys.intern  # a million devices name a few models, variants and regions: one copy each
            return DeviceRecord(
                raw["device_id"], intern(raw["model"]), intern(raw["hardware_revision"]), intern(raw["variant"]),
                intern(raw["region"]), tuple(sorted({intern(t) for t in tags})) if tags else (),
                raw["public_key"].lower(), None if pin in (None, "") else pin,
                tuple(sorted(set(features))) if features else ())
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
    if not isinstance(features, list | tuple):
        raise where("features", "must be a list of feature names (in CSV: separated by ';')")
    for f in features:
        _check(where, "features", f)
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
