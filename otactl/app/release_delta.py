"""Deltas for ``release build --delta-from VERSION`` (decision 1201).

For each named earlier release and each hardware revision whose image the new release uploads, the
published source image is read from the store (verified against its signed length and hash), the
delta is built (``otactl.release.delta``) and uploaded content-addressed, like the images: nothing
names it until the staged ``releases`` metadata does. A delta is kept only when it is at most half
the image (a device gains little from a bigger one, and the repository stores it for ever).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import TargetFile

from otactl import progress
from otactl.app.context import Context
from otactl.errors import UsageError, VerificationError
from otactl.release import bundle
from otactl.release import delta as engine
from otactl.release.manifest import Manifest
from otactl.repo import layout
from otactl.repo.repository import Repository

KEEP_AT_MOST = 0.5  # of the image's length


def delta_path(image_path: str, source_version: str, source_sha256: str) -> str:
    """``firmware/<model>/<version>/<image>.from-<source version>-<sha256[:12]>.delta``: beside its image."""
    return f"{image_path}.from-{source_version}-{source_sha256[:12]}.delta"


def _source_image(ctx: Context, repo: Repository, model: str, version: str, rev: str,
                  into: Path) -> tuple[str, bundle.TargetBlob] | None:
    """The image ``rev`` had in release ``version``, written to ``into``; None if it had none."""
    found = repo.find_target(layout.release_path(model, version))
    if found is None:
        raise UsageError(f"--delta-from {version}: {model}/{version} is not published")
    descriptor = json.loads(_verified(ctx, found[1].path, found[1]))
    ref = descriptor.get("firmware", {}).get(rev)
    if ref is None:
        return None
    image = repo.find_target(ref["target"])
    if image is None:
        raise VerificationError(f"{model}/{version}: image {ref['target']} is not published")
    into.write_bytes(_verified(ctx, ref["target"], image[1]))
    return ref["target"], bundle.TargetBlob(ref["target"], ref["length"], ref["sha256"], {})


def _verified(ctx: Context, path: str, tf: TargetFile) -> bytes:
    data = ctx.store.get(layout.target_key(path, tf.hashes["sha256"]))
    try:
        tf.verify_length_and_hashes(data)
    except LengthOrHashMismatchError as exc:
        raise VerificationError(f"{path}: the stored file does not match its signed hash ({exc})") from None
    return data


def build_deltas(ctx: Context, repo: Repository, manifest: Manifest, images: Sequence[tuple[bundle.TargetBlob, Path]],
                 sources: Sequence[str]) -> list[bundle.TargetBlob]:
    """Build, upload and describe the deltas from each of ``sources`` to each uploaded image."""
    model, version = manifest.model, manifest.version
    by_rev = {rev: (blob, path) for blob, path in images for rev in blob.custom["hardware_revisions"]}
    out: list[bundle.TargetBlob] = []
    for source in dict.fromkeys(sources):
        if source == version:
            raise UsageError(f"--delta-from {source}: a release cannot be a delta source for itself")
        for rev, (image, image_file) in sorted(by_rev.items()):
            with tempfile.TemporaryDirectory(prefix="otactl-delta-") as tmp:
                src_file = Path(tmp) / "source.img"
                found = _source_image(ctx, repo, model, source, rev, src_file)
                if found is None or found[1].sha256 == image.sha256:
                    continue  # no device of this revision runs it, or the image did not change
                src = found[1]
                delta_file = Path(tmp) / "image.delta"
                with progress.task(f"delta {source} -> {version} ({rev})", image.length, "bytes") as step:
                    result = engine.build_delta(src_file, image_file, delta_file, progress=step.advance)
                if result.target != engine.Digest(image.length, image.sha256):
                    raise VerificationError(f"{image_file}: changed while the release was being built")
                if result.delta.length > image.length * KEEP_AT_MOST:
                    continue
                path = delta_path(image.path, source, src.sha256)
                blob = bundle.TargetBlob(path, result.delta.length, result.delta.sha256, {
                    "model": model, "version": version, "security_version": manifest.security_version,
                    "hardware_revisions": [rev],
                    "delta": {"format": engine.FORMAT, "source_version": source, "source_sha256": src.sha256,
                              "source_length": src.length, "target": image.path, "target_sha256": image.sha256,
                              "target_length": image.length}})
                ctx.store.put_file(layout.target_key(path, blob.sha256), delta_file)
                out.append(blob)
    return out
