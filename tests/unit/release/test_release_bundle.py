"""The documents a release publishes: variant configs and the descriptor (docs/formats.md)."""

from __future__ import annotations

import hashlib
import json

import pytest
from release_parts import MANIFESTS

from otactl.release import bundle
from otactl.release.manifest import load_manifest


@pytest.fixture
def manifest():  # type: ignore[no-untyped-def]
    return load_manifest(MANIFESTS / "t9-engine-2.1.0.yaml")


def test_config_document_holds_only_its_variant(manifest) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(bundle.config_document(manifest, "hp-400"))
    assert doc == {"schema": "otactl/config/1", "model": "t9-engine", "version": "2.1.0", "variant": "hp-400",
                   "parameters": {"max_hp": 400, "torque_limit_nm": 1550, "boost_map": "standard"}}


def test_config_blobs_one_per_variant_with_paths_hashes_and_custom(manifest) -> None:  # type: ignore[no-untyped-def]
    blobs = bundle.config_blobs(manifest)
    assert [b.path for b in blobs] == [f"config/t9-engine/2.1.0/{v}.json" for v in ("hp-300", "hp-400", "hp-500")]
    for b in blobs:
        assert b.data is not None
        assert (b.length, b.sha256) == (len(b.data), hashlib.sha256(b.data).hexdigest())
        assert b.custom == {"model": "t9-engine", "version": "2.1.0", "variant": b.path.rsplit("/", 1)[1][:-5]}


def test_documents_are_deterministic_sorted_compact_json(manifest) -> None:  # type: ignore[no-untyped-def]
    data = bundle.config_document(manifest, "hp-300")
    assert data == bundle.config_document(load_manifest(MANIFESTS / "t9-engine-2.1.0.yaml"), "hp-300")
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()


def test_descriptor_points_at_firmware_and_configs(manifest) -> None:  # type: ignore[no-untyped-def]
    fw = {"revA": bundle.TargetBlob("firmware/t9-engine/2.0.0/t9-revA-2.0.0.bin", 10, "aa" * 32, {})}
    configs = bundle.config_blobs(manifest)
    d = bundle.descriptor_blob(manifest, fw, configs)
    assert d.path == "releases/t9-engine/2.1.0.json"
    assert d.data is not None
    doc = json.loads(d.data)
    assert doc["schema"] == "otactl/release/1"
    assert doc["security_version"] == 2
    assert doc["firmware"] == {"revA": {"target": "firmware/t9-engine/2.0.0/t9-revA-2.0.0.bin", "length": 10,
                                        "sha256": "aa" * 32}}
    assert set(doc["configs"]) == {"hp-300", "hp-400", "hp-500"}
    assert doc["configs"]["hp-400"]["sha256"] == configs[1].sha256
    assert doc["compatible_from"] == ["2.0.*"] and doc["stepping_stone"] is None
    assert "\n" in doc["notes"]  # release notes keep their newlines and stay valid JSON
    assert d.custom["variants"] == ["hp-300", "hp-400", "hp-500"]
    assert d.custom["hardware_revisions"] == ["revA"]
