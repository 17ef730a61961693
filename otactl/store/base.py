"""The blob store interface every store implements."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the opaque tag a conditional write compares against."""

    data: bytes
    etag: str


class BlobStore(abc.ABC):
    """Keys are ``/``-separated relative paths (``metadata/1.root.json``).

    Writes of one object are atomic: a reader sees the old bytes or the new, never a mix.
    ``put_if`` is the optimistic-concurrency primitive: it writes only if the object still has
    ``expected_etag`` (``None``: only if it does not exist) and raises ``ConflictError`` otherwise.
    """

    url: str

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """Return the object's bytes; ``NotFoundError`` if absent."""

    @abc.abstractmethod
    def get_versioned(self, key: str) -> Versioned:
        """Return bytes and etag; ``NotFoundError`` if absent."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write (replace) an object atomically."""

    @abc.abstractmethod
    def put_if(self, key: str, data: bytes, expected_etag: str | None) -> str:
        """Conditional write; returns the new etag or raises ``ConflictError``."""

    @abc.abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file by streaming (constant memory)."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, in lexical order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; absent objects are not an error."""

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Write many new objects; all are durable when this returns; no order among them.

        For bulk writes of objects no reader looks for until the call returns: content-addressed
        targets that metadata names only afterwards. A store may expose a new key partly written
        before the call returns (or after a crash during it); a key that already exists is replaced
        atomically, so calling again repairs that. The default is a loop over ``put``; stores
        override it with something faster (one durability barrier, concurrent uploads).
        """
        for key, data in items:
            self.put(key, data)

    def digest(self, key: str) -> tuple[int, str]:
        """Length and SHA-256 (hex) of an object; stores override it to stream large objects."""
        import hashlib

        data = self.get(key)
        return len(data), hashlib.sha256(data).hexdigest()

    def modified(self, key: str) -> datetime | None:
        """When the object was last written (timezone-aware UTC); None when absent or when this store
        cannot tell (then ``repo prune`` treats the object as new: it is kept)."""
        return None

    def get_optional(self, key: str) -> bytes | None:
        from otactl.errors import NotFoundError

        try:
            return self.get(key)
        except NotFoundError:
            return None


def check_key(key: str) -> str:
    """Refuse keys that could escape the store's root."""
    from otactl.errors import StoreError

    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid object key {key!r}")
    return key
