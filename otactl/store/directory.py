"""A local directory store: publishable as static files (``metadata/`` and ``targets/``).

Each write goes to a temporary file in the same directory, is fsynced, then renamed into place,
so readers never see a partial object. ``put_if`` takes an exclusive ``flock`` on a lock file
beside the object and compares the current content hash before writing.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from otactl.errors import ConflictError, NotFoundError, StoreError
from otactl.fsutil import sha256_stream
from otactl.store.base import BlobStore, Versioned, check_key

_LOCK_SUFFIX = ".otactl-lock"


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DirectoryStore(BlobStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = f"file://{self.root}/"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{path}: not found") from None
        except IsADirectoryError:
            raise NotFoundError(f"{path}: is a directory, not an object") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read: {exc.strerror}") from exc

    def get_versioned(self, key: str) -> Versioned:
        data = self.get(key)
        return Versioned(data, _etag(data))

    def _atomic_write(self, path: Path, writer: Callable[[BinaryIO], object]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise StoreError(f"{path.parent}: cannot write: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                writer(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise StoreError(f"{path}: cannot write: {exc.strerror}") from exc
            raise

    def put(self, key: str, data: bytes) -> None:
        self._atomic_write(self._path(key), lambda fh: fh.write(data))

    def put_if(self, key: str, data: bytes, expected_etag: str | None) -> str:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(path.parent / f".{path.name}{_LOCK_SUFFIX}", os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            raise StoreError(f"{path}: cannot lock: {exc.strerror}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                actual: str | None = _etag(path.read_bytes())
            except FileNotFoundError:
                actual = None
            if actual != expected_etag:
                raise ConflictError(f"{path}: changed by another writer")
            self.put(key, data)
            return _etag(data)
        finally:
            os.close(lock_fd)  # closing releases the flock

    def put_file(self, key: str, path: Path) -> None:
        if not Path(path).is_file():
            raise StoreError(f"{path}: not found (or not a regular file); nothing written to {self.url}{key}")

        def copy(fh: BinaryIO) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, fh, 1024 * 1024)

        try:
            self._atomic_write(self._path(key), copy)
        except FileNotFoundError as exc:
            raise StoreError(f"{path}: not found") from exc

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Bulk write with one durability barrier (``syncfs``) instead of one fsync per object.

        A new key is created exclusively and written in place (no temporary file and rename: on a
        directory of a million files those double the cost), so until the call returns, or after a
        crash during it, a new key may hold partial bytes; readers must not look for it yet (see
        ``BlobStore.put_many``). A key that already exists keeps its bytes if they are the same and
        is otherwise replaced atomically, so re-running after a crash repairs a partial object.
        """
        made: set[str] = set()
        root = current = str(self.root)
        try:
            for key, data in items:
                current = f"{root}/{check_key(key)}"
                parent = current.rpartition("/")[0]
                if parent not in made:
                    Path(parent).mkdir(parents=True, exist_ok=True)
                    made.add(parent)
                try:
                    fd = os.open(current, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    if self.get(key) != data:
                        self.put(key, data)
                    continue
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
            current = str(self.root)
            _sync_filesystem(self.root)
        except OSError as exc:
            raise StoreError(f"{current}: cannot write: {exc.strerror}") from exc

    def digest(self, key: str) -> tuple[int, str]:
        """Stream the object through SHA-256 in 1 MiB chunks (constant memory for large images)."""
        path = self._path(key)
        try:
            with open(path, "rb", buffering=0) as fh:
                return sha256_stream(fh)
        except (FileNotFoundError, IsADirectoryError):
            raise NotFoundError(f"{path}: not found") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return iter(())
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and (name.endswith(".tmp") or name.endswith(_LOCK_SUFFIX)):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if rel.startswith(prefix):
                    keys.append(rel)
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def modified(self, key: str) -> datetime | None:
        try:
            return datetime.fromtimestamp(self._path(key).stat().st_mtime, UTC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.url}{key}: cannot stat ({exc.strerror})") from None


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


def _sync_filesystem(path: Path) -> None:
    """Flush the file system holding ``path`` (Linux ``syncfs``; elsewhere a global ``sync``)."""
    syncfs = _syncfs()
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
