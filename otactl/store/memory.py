"""In-memory store for unit tests (same contract as the real ones)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

from otactl.errors import ConflictError, NotFoundError
from otactl.store.base import BlobStore, Versioned, check_key


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MemoryStore(BlobStore):
    def __init__(self) -> None:
        self.url = "memory://"
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes:
        return self.get_versioned(key).data

    def get_versioned(self, key: str) -> Versioned:
        try:
            data = self.objects[check_key(key)]
        except KeyError:
            raise NotFoundError(f"{self.url}{key}: not found") from None
        return Versioned(data, _etag(data))

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self.objects[check_key(key)] = bytes(data)

    def put_if(self, key: str, data: bytes, expected_etag: str | None) -> str:
        with self._lock:
            current = self.objects.get(check_key(key))
            actual = None if current is None else _etag(current)
            if actual != expected_etag:
                raise ConflictError(f"{self.url}{key}: changed by another writer")
            self.objects[key] = bytes(data)
            return _etag(data)

    def put_file(self, key: str, path: Path) -> None:
        from otactl.errors import StoreError

        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise StoreError(f"{path}: cannot read ({exc.strerror}); nothing written to {self.url}{key}") from None
        self.put(key, data)

    def exists(self, key: str) -> bool:
        return check_key(key) in self.objects

    def list(self, prefix: str = "") -> Iterator[str]:
        return iter(sorted(k for k in list(self.objects) if k.startswith(prefix)))

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(check_key(key), None)
