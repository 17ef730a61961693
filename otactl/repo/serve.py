"""Serve a directory store as static files (what a CDN or web server does in production)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Callable, Iterator

from otactl.errors import UsageError
from otactl.store.base import BlobStore


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def make_server(store: BlobStore, host: str = "127.0.0.1", port: int = 0) -> http.server.ThreadingHTTPServer:
    from otactl.store.directory import DirectoryStore

    if not isinstance(store, DirectoryStore):
        raise UsageError(f"{store.url}: only a directory store can be served; serve S3 with its own endpoint")
    handler = functools.partial(_QuietHandler, directory=str(store.root))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_directory(store: BlobStore, host: str, port: int, ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted; ``ready`` gets the base URL once listening (the real port for ``port`` 0)."""
    server = make_server(store, host, port)
    if ready is not None:
        ready(f"http://{host}:{server.server_address[1]}/")
    try:
        server.serve_forever()
    finally:
        server.server_close()


def serve_in_thread(store: BlobStore, host: str = "127.0.0.1") -> tuple[http.server.ThreadingHTTPServer, str]:
    server = make_server(store, host, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"


@contextlib.contextmanager
def served(store: BlobStore, host: str = "127.0.0.1") -> Iterator[str]:
    """The directory store as static files over HTTP while the block runs; yields the base URL."""
    server, url = serve_in_thread(store, host)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
