"""Device enrolment: each device id's public key and stratum (model, variant, region).

The ingest accepts a report only from an enrolled device, signed with that device's key. The
registry is built from device records (``otactl/device/1`` and ``/2``, docs/formats.md): a JSON or
YAML list file for ``otactl telemetry serve --devices``, or any iterable of records with the same
attributes.

Given the repository's entitlement signers (decision 0406), the registry enrolls a device only from
a record whose entitlement verifies, and takes its key and variant from the signed statement: an
online-key holder who rewrites a record can neither bind a key of their own to a device (and sign
reports as it) nor move a device to another stratum. Records that fail are left out and listed in
``refused``; the rest of the fleet is enrolled.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import nacl.signing

from otactl.errors import InputFileError, OtactlError
from otactl.fleet.entitlements import Entitlement, EntitlementError, Signers
from otactl.telemetry.report import DeviceId, check_identifier
from otactl.telemetry.source import StratumKey
from otactl.yamlio import FieldPath, load_yaml

DEVICE_SCHEMA = "otactl/device/1"
DEVICE_SCHEMA_2 = "otactl/device/2"  # with an entitlement (decision 0406)
FLEET_LIST_SCHEMA = "otactl/fleet/1"  # what `otactl fleet list -o json` writes: {"schema", "devices": [...]}
_SHAPES = (f"a list of device records, or a fleet listing from `otactl fleet list -o json` "
           f"(schema {FLEET_LIST_SCHEMA}, devices: [...])")
_RECORD_FIELDS = frozenset(
    {"schema", "device_id", "model", "hardware_revision", "variant", "region", "tags", "pin",
     "public_key", "features", "entitlement"}
)  # fmt: skip
_REQUIRED = ("device_id", "model", "variant", "region", "public_key")
_HEX_KEY = re.compile(r"[0-9a-f]{64}")


class RecordError(ValueError):
    def __init__(self, field: str | None, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


class EntitlementRefused(OtactlError):
    """A record left out of the registry: its entitlement does not verify (decision 0406)."""

    def __init__(self, device_id: str, problem: str) -> None:
        super().__init__(f"device {device_id!r}: not enrolled: {problem}")
        self.device_id = device_id


class DeviceRecordLike(Protocol):
    """What the registry needs from a device record (the repository's records qualify)."""

    @property
    def device_id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def variant(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def public_key(self) -> str: ...


@dataclass(frozen=True)
class EnrolledDevice:
    device_id: DeviceId
    model: str
    variant: str
    region: str
    public_key: str  # ed25519, 64 lowercase hex digits

    def __post_init__(self) -> None:
        for name in ("device_id", "model", "variant", "region"):
            check_identifier(name, getattr(self, name))
        if not isinstance(self.public_key, str) or not _HEX_KEY.fullmatch(self.public_key):
            raise ValueError("public_key must be an ed25519 public key, 64 lowercase hex digits")

    @property
    def stratum(self) -> StratumKey:
        return StratumKey(self.model, self.variant, self.region)

    @classmethod
    def from_record(cls, record: DeviceRecordLike) -> EnrolledDevice:
        return cls(
            DeviceId(record.device_id), record.model, record.variant, record.region,
            record.public_key,
        )  # fmt: skip

    @classmethod
    def from_entitled(cls, record: DeviceRecordLike, entitlement: Any, signers: Signers) -> EnrolledDevice:
        """From a record whose entitlement verifies: key, model and variant as the statement signs them.
        Raises :class:`EntitlementRefused` otherwise."""
        if not isinstance(entitlement, Entitlement):
            raise EntitlementRefused(record.device_id, "the record carries no entitlement; with entitlement "
                                     "signers, only records whose entitlement verifies are enrolled")
        try:
            st = signers.verify(entitlement, device_id=record.device_id, public_key=record.public_key)
        except EntitlementError as exc:
            raise EntitlementRefused(record.device_id, str(exc)) from None
        if (record.model, record.variant) != (st.model, st.variant):
            raise EntitlementRefused(record.device_id, "the record's model or variant differs from its entitlement")
        return cls(DeviceId(st.device_id), st.model, st.variant, record.region, st.public_key)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], signers: Signers | None = None) -> EnrolledDevice:
        """A device record as in docs/formats.md; raises RecordError naming the field at fault, and
        :class:`EntitlementRefused` for a record that ``signers`` do not vouch for."""
        unknown = sorted(set(data) - _RECORD_FIELDS)
        if unknown:
            raise RecordError(unknown[0], "unknown field")
        schema = data.get("schema", DEVICE_SCHEMA)
        if schema not in (DEVICE_SCHEMA, DEVICE_SCHEMA_2):
            raise RecordError("schema", f"unsupported schema {data.get('schema')!r}")
        for name in _REQUIRED:
            if name not in data:
                raise RecordError(name, "missing field")
        if schema == DEVICE_SCHEMA_2 and signers is None:
            raise RecordError("entitlement", "a record with an entitlement needs the repository's entitlement "
                              "signers to be enrolled (--entitlement-signers)")
        if signers is None:
            return cls(
                DeviceId(data["device_id"]), data["model"], data["variant"], data["region"],
                data["public_key"],
            )  # fmt: skip
        entitlement = None
        if "entitlement" in data:
            try:
                entitlement = Entitlement.from_dict(data["entitlement"])
            except ValueError as exc:
                raise RecordError("entitlement", str(exc)) from None
        claimed = cls(DeviceId(data["device_id"]), data["model"], data["variant"], data["region"], data["public_key"])
        return cls.from_entitled(claimed, entitlement, signers)


class DeviceRegistry:
    """Enrolled devices by id, with their verify keys prepared once.

    With ``signers`` (the repository's entitlement signers), records are enrolled only when their
    entitlement verifies (``EnrolledDevice`` values, which carry no proof, are refused); the others
    are listed in ``refused``."""

    def __init__(self, devices: Iterable[EnrolledDevice | DeviceRecordLike] = (), *,
                 signers: Signers | None = None) -> None:
        self._devices: dict[str, EnrolledDevice] = {}
        self._keys: dict[str, nacl.signing.VerifyKey] = {}
        self.signers = signers
        self.refused: list[EntitlementRefused] = []
        for item in devices:
            if signers is None:
                self.add(item if isinstance(item, EnrolledDevice) else EnrolledDevice.from_record(item))
                continue
            try:
                self.add(EnrolledDevice.from_entitled(item, getattr(item, "entitlement", None), signers))
            except EntitlementRefused as exc:
                self.refused.append(exc)

    def add(self, device: EnrolledDevice) -> None:
        if device.device_id in self._devices:
            raise RecordError("device_id", f"device {device.device_id!r} is enrolled twice")
        self._devices[device.device_id] = device
        self._keys[device.device_id] = nacl.signing.VerifyKey(bytes.fromhex(device.public_key))

    def get(self, device_id: str) -> EnrolledDevice | None:
        return self._devices.get(device_id)

    def verify_key(self, device_id: str) -> nacl.signing.VerifyKey | None:
        return self._keys.get(device_id)

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[EnrolledDevice]:
        return iter(self._devices.values())

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def subset(self, keep: Callable[[str], bool]) -> DeviceRegistry:
        """The devices whose id ``keep`` holds (an ingest shard's), their proofs already checked; the
        refused records likewise."""
        out = DeviceRegistry(signers=self.signers)
        for device in self:
            if keep(device.device_id):
                out.add(device)
        out.refused = [r for r in self.refused if keep(r.device_id)]
        return out

    def enrolled_by_stratum(self) -> dict[StratumKey, int]:
        return dict(Counter(d.stratum for d in self._devices.values()))


def load_registry(path: Path, signers: Signers | None = None) -> DeviceRegistry:
    """Read device records, as a JSON or YAML list or as ``otactl fleet list -o json`` wrote them;
    errors name the file, line and field. With ``signers``, a record whose entitlement does not
    verify is left out (``refused``), not an error: one planted record must not stop the ingest."""
    where = str(path)
    line: Callable[[FieldPath], int | None]
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise InputFileError(where, f"cannot read devices file: {exc}") from None
        except ValueError as exc:
            raise InputFileError(where, f"not valid JSON: {exc}", line=getattr(exc, "lineno", None)) from None
        line = lambda _at: None  # noqa: E731 - json keeps no line numbers
    else:
        doc = load_yaml(path)
        items, line = doc.data, doc.line
    records, base = _records_of(items, where, line)
    registry = DeviceRegistry(signers=signers)
    for index, item in enumerate(records):
        at: FieldPath = (*base, index)
        prefix = f"{'.'.join(map(str, base))}[{index}]"
        if not isinstance(item, dict):
            raise InputFileError(where, "a device record must be a mapping", line=line(at), field=prefix)
        try:
            device = EnrolledDevice.from_mapping(item, signers)
            registry.add(device)
        except EntitlementRefused as exc:
            registry.refused.append(exc)
        except RecordError as exc:
            field = prefix if exc.field is None else f"{prefix}.{exc.field}"
            raise InputFileError(where, exc.problem, line=line(at), field=field) from None
        except ValueError as exc:
            raise InputFileError(where, str(exc), line=line(at), field=prefix) from None
    return registry


def _records_of(doc: Any, where: str, line: Callable[[FieldPath], int | None]) -> tuple[list[Any], FieldPath]:
    """The list of records and where it sits: the document itself, or ``devices`` of a fleet listing."""
    if isinstance(doc, list):
        return doc, ()
    if not isinstance(doc, dict):
        raise InputFileError(where, f"must be {_SHAPES}", line=line(()))
    if doc.get("schema") != FLEET_LIST_SCHEMA:
        got = "missing" if "schema" not in doc else f"{doc['schema']!r:.60} is not {FLEET_LIST_SCHEMA!r}"
        raise InputFileError(where, f"{got}; the file must be {_SHAPES}", line=line(("schema",)), field="schema")
    unknown = sorted(str(k) for k in doc if k not in ("schema", "devices"))
    if unknown:
        raise InputFileError(where, "unknown field in a fleet listing", line=line((unknown[0],)), field=unknown[0])
    if not isinstance(doc.get("devices"), list):
        raise InputFileError(where, "must be a list of device records", line=line(("devices",)), field="devices")
    return doc["devices"], ("devices",)
