"""The blob store interface every store implements."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
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
