"""Blob stores: where a published repository, staged releases, rollout state and audit live.

``open_store(url)`` picks the implementation: ``file://PATH`` (or a bare path) for a local
directory, ``s3://BUCKET/PREFIX`` for S3 or an S3-compatible server, ``memory://`` for tests.
"""

from __future__ import annotations

from otactl.store.base import BlobStore, Versioned
from otactl.store.memory import MemoryStore


def open_store(url: str, *, endpoint_url: str | None = None) -> BlobStore:
    from otactl.errors import UsageError

    if url.startswith("s3://"):
        from otactl.store.s3 import S3Store  # boto3 is heavy: import on demand

        return S3Store.from_url(url, endpoint_url=endpoint_url)
    if url.startswith("memory://"):
        return MemoryStore()
    if url.startswith("file://") or "://" not in url:
        from otactl.store.directory import DirectoryStore

        return DirectoryStore(url.removeprefix("file://"))
    raise UsageError(f"store URL {url!r}: unsupported scheme (use file://PATH or s3://BUCKET/PREFIX)")


__all__ = ["BlobStore", "MemoryStore", "Versioned", "open_store"]
