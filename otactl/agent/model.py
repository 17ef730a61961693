"""The documents the agent reads from the repository, parsed once into frozen dataclasses.

Readers are strict about what they use (types, required fields, the schema's major) and ignore
fields they do not know within a major, so a repository may add optional fields without breaking
devices in the field (docs/formats.md: readers refuse unknown majors).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from otactl.errors import VerificationError
from otactl.rollout.windows import InstallRules, check_zone

POLICY_SCHEMA = "otactl/rollout-policy/1"
RELEASE_SCHEMA = "otactl/release/1"
CONFIG_SCHEMA = "otactl/config/1"
SLOT_SCHEMA = "otactl/slot/1"

_VERSION = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?\Z")
_PATTERN = re.compile(r"^[0-9A-Za-z.*+-]+\Z")
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\Z")  # what a report's ring field may hold


def version_key(version: str) -> tuple[Any, ...]:
    """Orders semantic versions: 2.0.0 < 2.0.1 < 2.1.0-rc1 < 2.1.0."""
    core, _, pre = version.replace("+", "-").partition("-")
    return (*(int(p) for p in core.split(".")), pre == "", pre)


def pattern_matches(pattern: str, version: str) -> bool:
    """``compatible_from`` patterns: ``*`` stands for any characters (``2.0.*``, ``1.*``, ``*``)."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, version) is not None


def _check_schema(doc: dict[str, Any], schema: str, where: str) -> None:
    found = doc.get("schema")
    if found != schema:
        major = schema.rsplit("/", 1)[0]
        if isinstance(found, str) and found.startswith(major + "/"):
            raise VerificationError(f"{where}: schema {found!r} is not supported (this agent reads {schema})")
        raise VerificationError(f"{where}: not a {schema} document (schema {found!r})")


def _load(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError(f"{where}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise VerificationError(f"{where}: not a JSON object")
    return doc


def _str(doc: dict[str, Any], key: str, where: str, *, optional: bool = False) -> str | None:
    value = doc.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise VerificationError(f"{where}: {key}: must be a non-empty string")
    return value


def _version(value: object, where: str) -> str:
    if not isinstance(value, str) or not _VERSION.match(value):
        raise VerificationError(f"{where}: {value!r} is not a version like 2.1.0")
    return value


def _int(doc: dict[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = doc.get(key, default)
    if type(value) is not int or value < 0:
        raise VerificationError(f"{where}: {key}: must be a non-negative integer")
    return value


# --------------------------------------------------------------------------- rollout policy
@dataclass(frozen=True)
class Ring:
    name: str
    release: str
    tags: tuple[str, ...] = ()
    percent: Decimal | None = None  # cumulative share of the fleet, 0 < percent <= 100
    install: InstallRules = field(default_factory=InstallRules)  # windows, preconditions (decision 1202)

    def __post_init__(self) -> None:
        if bool(self.tags) == (self.percent is not None):
            raise ValueError(f"ring {self.name!r}: a selector has either tags or a percent")
        if self.percent is not None and not Decimal(0) < self.percent <= Decimal(100):
            raise ValueError(f"ring {self.name!r}: percent must be in (0, 100]")


@dataclass(frozen=True)
class RolloutPolicy:
    model: str
    rollout_id: str
    salt: str
    policy_version: int
    baseline: str
    rings: tuple[Ring, ...]
    bad_releases: frozenset[str]
    min_security_version: int
    region_timezones: tuple[tuple[str, str], ...] = ()  # region -> IANA zone for `timezone: device`

    def device_zone(self, region: str) -> str:
        """The zone a ``timezone: device`` window is read in: the region's, else UTC."""
        return dict(self.region_timezones).get(region, "UTC")

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> RolloutPolicy:
        doc = _load(data, where)
        _check_schema(doc, POLICY_SCHEMA, where)
        rings_raw = doc.get("rings", [])
        if not isinstance(rings_raw, list):
            raise VerificationError(f"{where}: rings: must be a list")
        rings = []
        for i, raw in enumerate(rings_raw):
            at = f"{where}: rings[{i}]"
            if not isinstance(raw, dict) or not isinstance(raw.get("selector"), dict):
                raise VerificationError(f"{at}: must be an object with a selector")
            sel = raw["selector"]
            tags = sel.get("tags") or []
            pct_raw = sel.get("percent")
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise VerificationError(f"{at}: selector.tags: must be a list of strings")
            pct = None
            if pct_raw is not None:
                try:
                    pct = Decimal(str(pct_raw)) if isinstance(pct_raw, str | int) else None
                except InvalidOperation:
                    pct = None
                if pct is None or not pct.is_finite():
                    raise VerificationError(f"{at}: selector.percent: must be a decimal string like \"2.5\"")
            name = str(_str(raw, "name", at))
            if not _IDENT.match(name):
                raise VerificationError(f"{at}.name: {name!r} is not a ring name ([A-Za-z0-9._+-], max 128)")
            try:
                rings.append(Ring(name, _version(raw.get("release"), f"{at}.release"), tuple(tags), pct,
                                  InstallRules.from_json(raw)))
            except ValueError as exc:
                raise VerificationError(f"{where}: {exc}") from None
        bad = doc.get("bad_releases", [])
        if not isinstance(bad, list) or not all(isinstance(b, str) for b in bad):
            raise VerificationError(f"{where}: bad_releases: must be a list of versions")
        zones = doc.get("region_timezones", {})
        try:
            if not isinstance(zones, dict) or "device" in zones.values():
                raise ValueError("must map regions to IANA time zones")
            region_zones = tuple(sorted((str(r), check_zone(z)) for r, z in zones.items()))
        except ValueError as exc:
            raise VerificationError(f"{where}: region_timezones: {exc}") from None
        return cls(
            model=str(_str(doc, "model", where)),
            rollout_id=str(doc.get("rollout_id") or ""),
            salt=str(_str(doc, "salt", where)),
            policy_version=_int(doc, "policy_version", where, 0),
            baseline=_version(doc.get("baseline"), f"{where}: baseline"),
            rings=tuple(rings),
            bad_releases=frozenset(bad),
            min_security_version=_int(doc, "min_security_version", where, 0),
            region_timezones=region_zones,
        )


# --------------------------------------------------------------------------- release descriptor
@dataclass(frozen=True)
class FileRef:
    target: str
    length: int
    sha256: str

    @classmethod
    def parse(cls, raw: object, where: str) -> FileRef:
        if not isinstance(raw, dict):
            raise VerificationError(f"{where}: must be an object")
        sha = raw.get("sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise VerificationError(f"{where}.sha256: must be 64 hex digits")
        return cls(str(_str(raw, "target", where)), _int(raw, "length", where), sha)


@dataclass(frozen=True)
class DeltaRef:
    """A signed delta to one hardware revision's image from an earlier image (decision 1201)."""

    target: str
    length: int
    sha256: str
    source_version: str
    source_sha256: str

    @classmethod
    def parse(cls, raw: object, where: str) -> DeltaRef:
        ref = FileRef.parse(raw, where)
        assert isinstance(raw, dict)
        source = raw.get("source_sha256")
        if not isinstance(source, str) or not _SHA256.match(source):
            raise VerificationError(f"{where}.source_sha256: must be 64 hex digits")
        return cls(ref.target, ref.length, ref.sha256, _version(raw.get("source_version"), f"{where}.source_version"),
                   source)


def _deltas(raw: object, where: str) -> dict[str, tuple[DeltaRef, ...]]:
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise VerificationError(f"{where}: deltas: must map hardware revisions to lists")
    return {rev: tuple(DeltaRef.parse(d, f"{where}: deltas.{rev}[{i}]") for i, d in enumerate(refs))
            for rev, refs in raw.items()}


@dataclass(frozen=True)
class ReleaseDescriptor:
    model: str
    version: str
    security_version: int
    firmware: dict[str, FileRef]  # hardware revision -> image
    configs: dict[str, FileRef]  # variant -> configuration
    compatible_from: tuple[str, ...]
    stepping_stone: str | None
    deltas: dict[str, tuple[DeltaRef, ...]] = field(default_factory=dict)  # hardware revision -> deltas

    def compatible_with(self, running: str) -> bool:
        return any(pattern_matches(p, running) for p in self.compatible_from)

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> ReleaseDescriptor:
        doc = _load(data, where)
        _check_schema(doc, RELEASE_SCHEMA, where)
        fw, cfg = doc.get("firmware"), doc.get("configs")
        if not isinstance(fw, dict) or not isinstance(cfg, dict):
            raise VerificationError(f"{where}: firmware and configs must be objects")
        compat = doc.get("compatible_from", ["*"])
        if not isinstance(compat, list) or not all(isinstance(c, str) and _PATTERN.match(c) for c in compat):
            raise VerificationError(f"{where}: compatible_from: must be a list of version patterns")
        stone = doc.get("stepping_stone")
        return cls(
            model=str(_str(doc, "model", where)),
            version=_version(doc.get("version"), f"{where}: version"),
            security_version=_int(doc, "security_version", where),
            firmware={rev: FileRef.parse(ref, f"{where}: firmware.{rev}") for rev, ref in fw.items()},
            configs={v: FileRef.parse(ref, f"{where}: configs.{v}") for v, ref in cfg.items()},
            compatible_from=tuple(compat),
            stepping_stone=None if stone is None else _version(stone, f"{where}: stepping_stone"),
            deltas=_deltas(doc.get("deltas", {}), where),
        )


def check_config(data: bytes, where: str, *, model: str, version: str, variant: str) -> dict[str, Any]:
    """A variant's configuration document: it must be for this model, release and variant."""
    doc = _load(data, where)
    _check_schema(doc, CONFIG_SCHEMA, where)
    if (doc.get("model"), doc.get("version"), doc.get("variant")) != (model, version, variant):
        raise VerificationError(f"{where}: is for {doc.get('model')}/{doc.get('version')}/{doc.get('variant')}, "
                                f"not {model}/{version}/{variant}")
    if not isinstance(doc.get("parameters"), dict):
        raise VerificationError(f"{where}: parameters: must be an object")
    return doc


# --------------------------------------------------------------------------- slot manifest
@dataclass(frozen=True)
class SlotManifest:
    """What an A/B slot holds; written last, so a slot without one is empty."""

    model: str
    version: str
    variant: str
    hardware_revision: str
    security_version: int
    firmware: FileRef  # target = the repository path; the slot file is FIRMWARE_FILE
    config: FileRef
    installed_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SLOT_SCHEMA, "model": self.model, "version": self.version, "variant": self.variant,
            "hardware_revision": self.hardware_revision, "security_version": self.security_version,
            "firmware": vars(self.firmware), "config": vars(self.config), "installed_at": self.installed_at,
        }

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> SlotManifest:
        doc = _load(data, where)
        _check_schema(doc, SLOT_SCHEMA, where)
        return cls(
            model=str(_str(doc, "model", where)), version=_version(doc.get("version"), where),
            variant=str(_str(doc, "variant", where)),
            hardware_revision=str(_str(doc, "hardware_revision", where)),
            security_version=_int(doc, "security_version", where),
            firmware=FileRef.parse(doc.get("firmware"), f"{where}: firmware"),
            config=FileRef.parse(doc.get("config"), f"{where}: config"),
            installed_at=str(_str(doc, "installed_at", where)),
        )
