"""Release manifests (``manifests/*.yaml``), parsed once into frozen dataclasses.

See manifests/SCHEMA.md for the format. Unknown keys are refused; every error names the file,
line and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otactl.errors import OtactlError
from otactl.repo.layout import check_name
from otactl.yamlio import YamlDoc, check_keys, load_yaml

SCHEMA = "otactl/manifest/1"
_VERSION = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_PATTERN = re.compile(r"^[0-9A-Za-z.*+-]+$")


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

    @property
    def release_id(self) -> str:
        return f"{self.model}/{self.version}"


def _name(doc: YamlDoc, where: tuple[str | int, ...], value: Any, kind: str) -> str:
    if not isinstance(value, str):
        raise doc.error(where, f"{kind} must be a string")
    try:
        return check_name(kind, value)
    except OtactlError as exc:
        raise doc.error(where, exc.message) from None


def parse_manifest(doc: YamlDoc) -> Manifest:
    top = check_keys(
        doc, (), doc.data,
        {"schema", "model", "version", "security_version", "firmware", "variants", "compatible_from",
         "stepping_stone", "notes"},
        {"schema", "model", "version", "security_version", "firmware", "variants"},
    )
    if top["schema"] != SCHEMA:
        raise doc.error(("schema",), f"expected {SCHEMA!r}")
    model = _name(doc, ("model",), top["model"], "model")
    version = str(top["version"])
    if not _VERSION.match(version):
        raise doc.error(("version",), f"{version!r} is not a semantic version like 2.1.0")
    sv = top["security_version"]
    if not isinstance(sv, int) or isinstance(sv, bool) or sv < 0:
        raise doc.error(("security_version",), "must be a non-negative integer")
    fw_raw = check_keys(doc, ("firmware",), top["firmware"], set(top["firmware"] or {}))
    if not fw_raw:
        raise doc.error(("firmware",), "must name at least one hardware revision")
    base = Path(doc.path).parent
    firmware = []
    for rev, spec in fw_raw.items():
        _name(doc, ("firmware", rev), rev, "hardware revision")
        spec = check_keys(doc, ("firmware", rev), spec, {"file", "from_release"})
        if ("file" in spec) == ("from_release" in spec):
            raise doc.error(("firmware", rev), "give exactly one of 'file' or 'from_release'")
        if "file" in spec:
            if not isinstance(spec["file"], str) or not spec["file"]:
                raise doc.error(("firmware", rev, "file"), "must be a path")
            path = (base / spec["file"]).resolve()
            _name(doc, ("firmware", rev, "file"), path.name, "image file name")
            firmware.append(FirmwareSpec(rev, path, None))
        else:
            src = str(spec["from_release"])
            if not _VERSION.match(src):
                raise doc.error(("firmware", rev, "from_release"), f"{src!r} is not a version")
            firmware.append(FirmwareSpec(rev, None, src))
    variants_raw = check_keys(doc, ("variants",), top["variants"], set(top["variants"] or {}))
    if not variants_raw:
        raise doc.error(("variants",), "must define at least one variant")
    variants: dict[str, dict[str, Any]] = {}
    for name, params in variants_raw.items():
        _name(doc, ("variants", name), name, "variant")
        if not isinstance(params, dict):
            raise doc.error(("variants", name), "parameters must be a mapping")
        _check_json_value(doc, ("variants", name), params)
        variants[name] = params
    compat = top.get("compatible_from", ["*"])
    if not isinstance(compat, list) or not all(isinstance(c, str) and _PATTERN.match(c) for c in compat):
        raise doc.error(("compatible_from",), "must be a list of version patterns like '2.0.*'")
    stone = top.get("stepping_stone")
    if stone is not None and not (isinstance(stone, str) and _VERSION.match(stone)):
        raise doc.error(("stepping_stone",), "must be a version or null")
    notes = top.get("notes", "")
    if not isinstance(notes, str):
        raise doc.error(("notes",), "must be text")
    return Manifest(doc.path, model, version, sv, tuple(firmware), variants, tuple(compat), stone, notes)


def _check_json_value(doc: YamlDoc, where: tuple[str | int, ...], value: Any) -> None:
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
    elif value is not None and not isinstance(value, (str, int, bool)):
        raise doc.error(where, f"unsupported value type {type(value).__name__}")


def load_manifest(path: str | Path) -> Manifest:
    return parse_manifest(load_yaml(path))
