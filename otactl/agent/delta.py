"""Fetching a release's image on the device: as a signed delta when one fits, else in full (decision 1201).

A delta is used only when every check passes; any other outcome falls back to the full image,
and the reason is logged:

1. the release descriptor lists a delta for this hardware revision whose source is the image in the
   active slot (its length and SHA-256, hashed from the slot's file, not taken from its manifest);
2. the targets metadata signs that delta, and its custom metadata names the same source and, as its
   result, exactly the image the descriptor and the metadata sign;
3. ngclient downloads it (its signed length and hash: a tampered delta never reaches the decoder);
4. the decoder rebuilds the image into the inactive slot, streamed (memory bounded by one window,
   never by the image), and the result has the image's signed length and SHA-256.

Only then is the slot's image the release's image; the caller installs it exactly as a full download.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuf.api import exceptions as tuf_exc
from tuf.ngclient import Updater

from otactl.agent.model import DeltaRef, FileRef
from otactl.errors import OtactlError
from otactl.release import delta as engine
from otactl.release.hashing import hash_file
from otactl.repo import layout
from otactl.telemetry.report import Transfer, TransferMode

log = logging.getLogger("otactl.agent")


@dataclass(frozen=True)
class Fetched:
    transfer: Transfer
    fallback: str | None  # why a listed delta was not used (None: delta used, or none listed)


class _NoDelta(Exception):
    pass


def _check_custom(info_custom: dict[str, object], ref: DeltaRef, image: FileRef) -> None:
    fields = info_custom.get("delta")
    if not isinstance(fields, dict):
        raise _NoDelta(f"{ref.target}: its signed metadata does not describe a delta")
    expected = {"format": engine.FORMAT, "source_sha256": ref.source_sha256, "target": image.target,
                "target_sha256": image.sha256, "target_length": image.length}
    wrong = sorted(k for k, v in expected.items() if fields.get(k) != v)
    if wrong:
        raise _NoDelta(f"{ref.target}: its signed metadata disagrees with the release on {', '.join(wrong)}")


def fetch_image(updater: Updater, image: FileRef, deltas: tuple[DeltaRef, ...], source: Path | None, dest: Path,
                full: Callable[[], None], received: Callable[[], int | None]) -> Fetched:
    """Put the verified ``image`` at ``dest``: rebuilt from a delta on ``source`` if one fits, else ``full()``.

    ``received()`` counts bytes off the network (None if the fetcher does not count); without it the
    signed lengths of what was downloaded are counted.
    """
    start = received()
    downloaded = 0
    reason: str | None = None
    if deltas:
        work = dest.with_name(dest.name + ".delta")
        try:
            if source is None or not source.is_file():
                raise _NoDelta("no image in the active slot to apply a delta to")
            length, sha = hash_file(source)
            ref = next((d for d in deltas if d.source_sha256 == sha), None)
            if ref is None:
                raise _NoDelta("no delta from the image in the active slot")
            info = updater.get_targetinfo(ref.target)
            if info is None:
                raise _NoDelta(f"{ref.target} is not a published target")
            if (info.length, info.hashes.get("sha256")) != (ref.length, ref.sha256):
                raise _NoDelta(f"{ref.target}: the release descriptor and the signed targets metadata disagree")
            _check_custom(layout.get_custom(info), ref, image)
            updater.download_target(info, str(work))
            downloaded += info.length
            with open(dest, "wb") as out:
                result = engine.apply_delta(work, source, out, expect_source=engine.Digest(length, sha),
                                            expect_target=engine.Digest(image.length, image.sha256))
            if result != engine.Digest(image.length, image.sha256):
                raise _NoDelta("the rebuilt image does not match the release's signed image")
            log.info("image %s rebuilt from delta %s", image.target, ref.target)
            return Fetched(Transfer(TransferMode.DELTA, _bytes(received, start, downloaded)), None)
        except (_NoDelta, OtactlError, tuf_exc.DownloadError, tuf_exc.RepositoryError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, _NoDelta | OtactlError) else str(exc)
            log.warning("delta not used, downloading the full image %s: %s", image.target, reason)
            dest.unlink(missing_ok=True)
        finally:
            work.unlink(missing_ok=True)
    full()
    downloaded += image.length
    return Fetched(Transfer(TransferMode.FULL, _bytes(received, start, downloaded)), reason)


def _bytes(received: Callable[[], int | None], start: int | None, counted: int) -> int:
    now = received()
    return counted if now is None or start is None else now - start
