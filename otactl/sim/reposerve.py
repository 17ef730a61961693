"""Serve the simulation's repository on 127.0.0.1 (otactl.repo.serve)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from otactl.repo.serve import serve_in_thread
from otactl.store.base import BlobStore


@contextlib.contextmanager
def serve_store(store: BlobStore) -> Iterator[str]:
    server, url = serve_in_thread(store)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
