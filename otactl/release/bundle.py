"""The documents a release publishes besides its images: variant configs and the descriptor.

Pure functions: bytes in, bytes out. Signed documents are canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from otactl.release.manifest import Manifest
from otactl.repo import layout


def canonical(doc: dict[str, Any]) -> bytes:
    """Deterministic JSON for the documents otactl signs or hashes: sorted keys, no whitespace, UTF-8.

    (OLPC canonical JSON, which TUF metadata uses, leaves control characters unescaped, so its output
    is not valid JSON when a string holds a newline: release notes do.)
    """
    return _ENCODER.encode(doc).encode()


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class TargetBlob:
    path: str  # target path
    length: int
    sha256: str
    custom: dict[str, Any]
    data: bytes | None = None  # small documents; images are uploaded from their file


def config_document(manifest: Manifest, variant: str) -> bytes:
    return canonical({
        "schema": "otactl/config/1",
        "model": manifest.model,
        "version": manifest.version,
        "variant": variant,
        "parameters": manifest.variants[variant],
    })


def blob(path: str, data: bytes, custom: dict[str, Any]) -> TargetBlob:
    return TargetBlob(path, len(data), hashlib.sha256(data).hexdigest(), custom, data)


def config_blobs(manifest: Manifest) -> list[TargetBlob]:
    return [
        blob(layout.config_path(manifest.model, manifest.version, v), config_document(manifest, v),
             {"model": manifest.model, "version": manifest.version, "variant": v})
        for v in sorted(manifest.variants)
    ]


def descriptor_blob(manifest: Manifest, firmware: dict[str, TargetBlob], configs: list[TargetBlob],
                    deltas: list[TargetBlob] | None = None) -> TargetBlob:
    doc: dict[str, Any] = {
        "schema": "otactl/release/1",
        "model": manifest.model,
        "version": manifest.version,
        "security_version": manifest.security_version,
        "firmware": {rev: {"target": b.path, "length": b.length, "sha256": b.sha256}
                     for rev, b in sorted(firmware.items())},
        "configs": {c.custom["variant"]: {"target": c.path, "length": c.length, "sha256": c.sha256}
                    for c in configs},
        "compatible_from": list(manifest.compatible_from),
        "stepping_stone": manifest.stepping_stone,
        "notes": manifest.notes,
    }
    if deltas:  # optional: a descriptor without deltas is byte for byte what it was before them
        by_rev: dict[str, list[dict[str, Any]]] = {}
        for d in deltas:
            info = d.custom["delta"]
            for rev in d.custom["hardware_revisions"]:
                by_rev.setdefault(rev, []).append({
                    "target": d.path, "length": d.length, "sha256": d.sha256,
                    "source_version": info["source_version"], "source_sha256": info["source_sha256"]})
        doc["deltas"] = {rev: sorted(refs, key=lambda r: r["target"]) for rev, refs in sorted(by_rev.items())}
    custom = {"model": manifest.model, "version": manifest.version,
              "security_version": manifest.security_version, "variants": sorted(manifest.variants),
              "hardware_revisions": sorted(firmware)}
    return blob(layout.release_path(manifest.model, manifest.version), canonical(doc), custom)
