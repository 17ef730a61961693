"""`release build --delta-from`: which deltas a build publishes, and what it refuses (decision 1201)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from release_parts import MANIFESTS

from otactl.app import release
from otactl.app.context import Context
from otactl.errors import UsageError
from otactl.release import delta as engine
from otactl.release.manifest import load_manifest
from otactl.repo import layout


def _minor(tmp_path: Path, source_image: str, edit: bool = True) -> Path:
    """The 2.1.0 manifest, with revA's image a small edit of ``source_image`` and revB's new random
    bytes (the repository's own 2.1.0 images are minor edits of 2.0.0's, for the demo's deltas)."""
    dest = tmp_path / "m"
    shutil.copytree(MANIFESTS / "images", dest / "images")
    size = (MANIFESTS / "images" / "t9-revB-2.1.0.bin").stat().st_size
    (dest / "images" / "t9-revB-2.1.0.bin").write_bytes(random.Random(2101).randbytes(size))
    data = bytearray((MANIFESTS / "images" / source_image).read_bytes())
    if edit:
        data[100:104] = b"2.1!"
    (dest / "images" / "t9-revA-2.1.0.bin").write_bytes(bytes(data))
    out = dest / "t9-engine-2.1.0.yaml"
    out.write_text((MANIFESTS / "t9-engine-2.1.0.yaml").read_text())
    return out


def _staged_targets(ctx: Context) -> dict[str, dict]:
    md = release._staged(ctx, release.ReleaseRef("t9-engine", "2.1.0"))
    return {p: {"length": tf.length, "sha256": tf.hashes["sha256"], "custom": layout.get_custom(tf)}
            for p, tf in md.signed.targets.items() if p.startswith("firmware/t9-engine/2.1.0/")}


def test_a_delta_is_published_only_where_it_pays(released: Path, tmp_path: Path) -> None:
    ctx = Context.open(released)
    info = release.build(ctx, load_manifest(_minor(tmp_path, "t9-revA-2.0.0.bin")), delta_from=("2.0.0",))
    targets = _staged_targets(ctx)
    deltas = sorted(p for p in targets if p.endswith(".delta"))
    # revA's image is a small edit of 2.0.0's: a delta. revB's is new random bytes: a delta would not pay
    assert len(deltas) == 1 and deltas[0].startswith("firmware/t9-engine/2.1.0/t9-revA-2.1.0.bin.from-2.0.0-")
    custom = targets[deltas[0]]["custom"]
    image = targets["firmware/t9-engine/2.1.0/t9-revA-2.1.0.bin"]
    assert custom["hardware_revisions"] == ["revA"]
    assert custom["delta"]["target_sha256"] == image["sha256"] and custom["delta"]["source_version"] == "2.0.0"
    assert targets[deltas[0]]["length"] * 2 <= image["length"]
    assert deltas[0] in [t["path"] for t in info.targets]
    # the descriptor lists it for revA, with the same source
    descriptor_tf = release._staged(ctx, release.ReleaseRef("t9-engine", "2.1.0")).signed.targets[
        layout.release_path("t9-engine", "2.1.0")]
    doc = json.loads(ctx.store.get(layout.target_key(descriptor_tf.path, descriptor_tf.hashes["sha256"])))
    assert [d["target"] for d in doc["deltas"]["revA"]] == deltas and "revB" not in doc["deltas"]
    assert doc["deltas"]["revA"][0]["source_sha256"] == custom["delta"]["source_sha256"]
    # the stored delta rebuilds the image
    stored = tmp_path / "d"
    stored.write_bytes(ctx.store.get(layout.target_key(deltas[0], targets[deltas[0]]["sha256"])))
    (tmp_path / "src").write_bytes((MANIFESTS / "images" / "t9-revA-2.0.0.bin").read_bytes())
    with open(tmp_path / "out", "wb") as out:
        assert engine.apply_delta(stored, tmp_path / "src", out) == engine.Digest(image["length"], image["sha256"])
    # publishing checks the delta like any other file of the release
    release.approve(ctx, "t9-engine/2.1.0", "release-manager")
    assert release.publish(ctx, "t9-engine/2.1.0").status == "published"


def test_without_delta_from_the_descriptor_has_no_deltas(released: Path, tmp_path: Path) -> None:
    ctx = Context.open(released)
    release.build(ctx, load_manifest(_minor(tmp_path, "t9-revA-2.0.0.bin")))
    assert not [p for p in _staged_targets(ctx) if p.endswith(".delta")]
    descriptor_tf = release._staged(ctx, release.ReleaseRef("t9-engine", "2.1.0")).signed.targets[
        layout.release_path("t9-engine", "2.1.0")]
    assert "deltas" not in json.loads(ctx.store.get(layout.target_key(descriptor_tf.path,
                                                                      descriptor_tf.hashes["sha256"])))


@pytest.mark.parametrize(("source", "says"), [("9.9.9", "is not published"),
                                              ("2.1.0", "delta source for itself")])
def test_a_bad_delta_source_is_refused_and_nothing_is_staged(released: Path, tmp_path: Path, source: str,
                                                             says: str) -> None:
    ctx = Context.open(released)
    with pytest.raises(UsageError, match=says):
        release.build(ctx, load_manifest(_minor(tmp_path, "t9-revA-2.0.0.bin")), delta_from=(source,))
    assert not ctx.store.exists(release.state_key("t9-engine", "2.1.0"))
