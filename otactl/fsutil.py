"""Small filesystem helpers: atomic writes so nothing is ever half-written."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_stream(fh: io.RawIOBase, progress: Callable[[int], None] | None = None,
                  chunk: int = 1024 * 1024) -> tuple[int, str]:
    """(length, SHA-256 hex) of an unbuffered binary file, read into one reused buffer: constant memory."""
    digest = hashlib.sha256()
    length = 0
    buf = bytearray(chunk)
    view = memoryview(buf)
    while n := fh.readinto(buf):
        digest.update(view[:n])
        length += n
        if progress is not None:
            progress(n)
    return length, digest.hexdigest()
