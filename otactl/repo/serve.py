"""Serve a directory store as static files (what a CDN or web server does in production)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterator

from otactl.errors import UsageError
from otactl.store.base import BlobStore

Dynamic = Callable[[str], bytes | None]  # a store key -> its bytes, None if static; NotFoundError: 404


class StoreHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of a directory store, and with ``dynamic`` the files made on request."""

    dynamic: Dynamic | None = None

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.dynamic is not None and self._dynamic(self.dynamic):
            return
        super().do_GET()

    def _dynamic(self, dynamic: Dynamic) -> bool:
        from otactl.errors import NotFoundError

        key = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        try:
            body = dynamic(key)
        except NotFoundError:
            self.send_error(404)
            return True
        except Exception:  # a bad index or pack: the device sees a server error, the log says why
            logging.getLogger("otactl.serve").exception("%s: cannot serve", key)
            self.send_error(500)
            return True
        if body is None:
            return False
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return True


def make_server(store: BlobStore, host: str = "127.0.0.1", port: int = 0,
                dynamic: Dynamic | None = None) -> http.server.ThreadingHTTPServer:
    """``dynamic``: files made on request (device chains signed by the director service, decision 0408)."""
    from otactl.store.directory import DirectoryStore

    if not isinstance(store, DirectoryStore):
        raise UsageError(f"{store.url}: only a directory store can be served; serve S3 with its own endpoint")
    handler = functools.partial(type("_Handler", (StoreHandler,), {"dynamic": staticmethod(dynamic)})
                                if dynamic is not None else StoreHandler, directory=str(store.root))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_directory(store: BlobStore, host: str, port: int, ready: Callable[[str], None] | None = None,
                    dynamic: Dynamic | None = None) -> None:
    """Serve until interrupted; ``ready`` gets the base URL once listening (the real port for ``port`` 0)."""
    server = make_server(store, host, port, dynamic)
    if ready is not None:
        ready(f"http://{host}:{server.server_address[1]}/")
    try:
        server.serve_forever()
    finally:
        server.server_close()


def serve_in_thread(store: BlobStore, host: str = "127.0.0.1",
                    dynamic: Dynamic | None = None) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = make_server(store, host, 0, dynamic)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"


@contextlib.contextmanager
def served(store: BlobStore, host: str = "127.0.0.1", dynamic: Dynamic | None = None) -> Iterator[str]:
    """The directory store as static files over HTTP while the block runs; yields the base URL."""
    server, url = serve_in_thread(store, host, dynamic)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
