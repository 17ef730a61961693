"""Streaming SHA-256 of large images: constant memory, optional progress callback."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from otactl.errors import UsageError

CHUNK = 1024 * 1024


def hash_file(path: Path, progress: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Return (length, sha256 hex) reading ``path`` in 1 MiB chunks into one reused buffer."""
    digest = hashlib.sha256()
    length = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                digest.update(view[:n])
                length += n
                if progress is not None:
                    progress(n)
    except FileNotFoundError:
        raise UsageError(f"{path}: image not found") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read image: {exc.strerror}") from None
    return length, digest.hexdigest()
