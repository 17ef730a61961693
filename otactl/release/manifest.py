"""Release manifests (``manifests/*.yaml``), parsed once into frozen dataclasses.

See manifests/SCHEMA.md for the format. Unknown keys are refused; every error names the file,
line and field. Image files are checked here (they must exist next to the manifest) so that a
typo is reported against the manifest line, before anything is hashed or uploaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otactl.errors import InputFileError, OtactlError
from otactl.repo.layout import check_name
from otactl.yamlio import FieldPath, YamlDoc, check_keys, load_yaml

SCHEMA = "otactl/manifest/1"
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?\Z")
_PATTERN = re.compile(r"^[0-9A-Za-z.*+-]+\Z")
TOP_KEYS_ORDER = ("schema", "model", "version", "security_version", "firmware", "variants", "compatible_from",
                  "stepping_stone", "notes")
TOP_KEYS = set(TOP_KEYS_ORDER)
REQUIRED_KEYS = {"schema", "model", "version", "security_version", "firmware", "variants"}


@dataclass(frozen=True)
class FirmwareSpec:
    hardware_revision: str
    file: Path | None  # an image to hash and publish, or
    from_release: str | None  # reuse the image already published with that release


@dataclass(frozen=True)
class Manifest:
    path: str
    model: str
    version: str
    security_version: int
    firmware: tuple[FirmwareSpec, ...]
    variants: dict[str, dict[str, Any]]
    compatible_from: tuple[str, ...]
    stepping_stone: str | None
    notes: str
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def release_id(self) -> str:
        return f"{self.model}/{self.version}"

    def error(self, where: str, problem: str) -> InputFileError:
        """An error about field ``where`` (``firmware.revA.file``) naming this manifest's file and line."""
        parts = where.split(".")
        while parts and ".".join(parts) not in self.lines:
            parts.pop()
        return InputFileError(self.path, problem, line=self.lines.get(".".join(parts)), field=where)


def _name(doc: YamlDoc, where: FieldPath, value: Any, kind: str) -> str:
    if not isinstance(value, str):
        raise doc.error(where, f"{kind} must be a string")
    try:
        return check_name(kind, value)
    except OtactlError as exc:
        raise doc.error(where, exc.message) from None


def _version(doc: YamlDoc, where: FieldPath, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise doc.error(where, "must be a semantic version like 2.1.0")
    if not isinstance(value, str):  # YAML reads `2.1` as a number
        raise doc.error(where, f"{value!r} is a number, not a semantic version like 2.1.0")
    if not VERSION_RE.match(value):
        raise doc.error(where, f"{value!r} is not a semantic version like 2.1.0")
    return value


def _mapping(doc: YamlDoc, where: FieldPath, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise doc.error(where, "must be a mapping")
    return value


def _firmware(doc: YamlDoc, raw: Any) -> tuple[FirmwareSpec, ...]:
    fw_raw = _mapping(doc, ("firmware",), raw)
    if not fw_raw:
        raise doc.error(("firmware",), "must name at least one hardware revision")
    base = Path(doc.path).parent
    firmware = []
    names: dict[str, tuple[str, Path]] = {}
    for rev, spec in fw_raw.items():
        _name(doc, ("firmware", rev), rev, "hardware revision")
        spec = check_keys(doc, ("firmware", rev), spec, {"file", "from_release"})
        if ("file" in spec) == ("from_release" in spec):
            raise doc.error(("firmware", rev), "give exactly one of 'file' or 'from_release'")
        if "file" not in spec:
            firmware.append(FirmwareSpec(rev, None, _version(doc, ("firmware", rev, "from_release"),
                                                             spec["from_release"])))
            continue
        where = ("firmware", rev, "file")
        if not isinstance(spec["file"], str) or not spec["file"]:
            raise doc.error(where, "must be a path relative to the manifest")
        path = (base / spec["file"]).resolve()
        _name(doc, where, path.name, "image file name")
        if not path.exists():
            raise doc.error(where, f"image {spec['file']!r} not found (relative to the manifest)")
        if not path.is_file():
            raise doc.error(where, f"image {spec['file']!r} is not a regular file")
        # the target path is firmware/<model>/<version>/<file name>: two different images with
        # one name would overwrite each other
        if path.name in names and names[path.name][1] != path:
            raise doc.error(where, f"image file name {path.name!r} is also used by revision "
                                   f"{names[path.name][0]!r} for a different file; rename one")
        names.setdefault(path.name, (rev, path))
        firmware.append(FirmwareSpec(rev, path, None))
    return tuple(firmware)


def _variants(doc: YamlDoc, raw: Any) -> dict[str, dict[str, Any]]:
    variants_raw = _mapping(doc, ("variants",), raw)
    if not variants_raw:
        raise doc.error(("variants",), "must define at least one variant")
    variants: dict[str, dict[str, Any]] = {}
    for name, params in variants_raw.items():
        _name(doc, ("variants", name), name, "variant")
        if not isinstance(params, dict):
            raise doc.error(("variants", name), "parameters must be a mapping")
        _check_json_value(doc, ("variants", name), params)
        variants[name] = params
    return variants


def parse_manifest(doc: YamlDoc) -> Manifest:
    top = check_keys(doc, (), doc.data, TOP_KEYS)
    for key in sorted(REQUIRED_KEYS, key=list(TOP_KEYS_ORDER).index):
        if key not in top:
            raise doc.error((key,), "missing (a required field)")
    if top["schema"] != SCHEMA:
        raise doc.error(("schema",), f"expected {SCHEMA!r}")
    model = _name(doc, ("model",), top["model"], "model")
    version = _version(doc, ("version",), top["version"])
    sv = top["security_version"]
    if not isinstance(sv, int) or isinstance(sv, bool) or sv < 0:
        raise doc.error(("security_version",), "must be a non-negative integer")
    firmware = _firmware(doc, top["firmware"])
    variants = _variants(doc, top["variants"])
    compat = top.get("compatible_from", ["*"])
    if not isinstance(compat, list) or not all(isinstance(c, str) and _PATTERN.match(c) for c in compat):
        raise doc.error(("compatible_from",), "must be a list of version patterns like '2.0.*'")
    stone = top.get("stepping_stone")
    if stone is not None:
        stone = _version(doc, ("stepping_stone",), stone)
        if stone == version:
            raise doc.error(("stepping_stone",), "a release cannot be its own stepping stone")
    notes = top.get("notes", "")
    if not isinstance(notes, str):
        raise doc.error(("notes",), "must be text")
    lines = {".".join(str(p) for p in where): line for where, line in doc.lines.items()}
    return Manifest(doc.path, model, version, sv, firmware, variants, tuple(compat), stone, notes, lines)


def _check_json_value(doc: YamlDoc, where: FieldPath, value: Any) -> None:
    """Variant parameters become canonical JSON: no floats (canonical JSON forbids them), no dates."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_json_value(doc, (*where, k), v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json_value(doc, (*where, i), v)
    elif isinstance(value, float):
        raise doc.error(where, "floats are not allowed in signed configuration; use integers "
                               "(e.g. scaled units) or strings")
    elif value is not None and not isinstance(value, str | int | bool):
        raise doc.error(where, f"unsupported value type {type(value).__name__}")


def load_manifest(path: str | Path) -> Manifest:
    return parse_manifest(load_yaml(path))
