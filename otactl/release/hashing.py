"""Streaming SHA-256 of large images: constant memory, optional progress callback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from otactl.errors import UsageError
from otactl.fsutil import sha256_stream

CHUNK = 1024 * 1024


def hash_file(path: Path, progress: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Return (length, sha256 hex) reading ``path`` in 1 MiB chunks into one reused buffer."""
    try:
        with open(path, "rb", buffering=0) as fh:
            return sha256_stream(fh, progress, CHUNK)
    except FileNotFoundError:
        raise UsageError(f"{path}: image not found") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read image: {exc.strerror}") from None
