"""TUF clients: python-tuf's ngclient over HTTP (httpx) or straight from a blob store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_exc
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from otactl.errors import NotFoundError, StoreError
from otactl.store.base import BlobStore


class HttpxFetcher(FetcherInterface):
    """ngclient fetcher over httpx (connection reuse, timeouts, streaming)."""

    def __init__(self, client: httpx.Client | None = None, timeout: float = 15.0) -> None:
        self._client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        self.bytes_received = 0

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            response = self._client.send(self._client.build_request("GET", url), stream=True)
        except httpx.HTTPError as exc:
            raise tuf_exc.DownloadError(f"{url}: {exc}") from exc
        if response.status_code != 200:
            response.close()
            raise tuf_exc.DownloadHTTPError(f"{url}: HTTP {response.status_code}", response.status_code)
        return self._chunks(response)

    def _chunks(self, response: httpx.Response) -> Iterator[bytes]:
        try:
            for chunk in response.iter_bytes(64 * 1024):
                self.bytes_received += len(chunk)
                yield chunk
        except httpx.HTTPError as exc:
            raise tuf_exc.DownloadError(f"{response.url}: {exc}") from exc
        finally:
            response.close()

    def close(self) -> None:
        self._client.close()


class StoreFetcher(FetcherInterface):
    """Reads ``store://metadata/...`` URLs straight from a blob store (for `repo verify`)."""

    PREFIX = "store://"

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def _fetch(self, url: str) -> Iterator[bytes]:
        key = url.removeprefix(self.PREFIX)
        try:
            data = self.store.get(key)
        except NotFoundError:
            raise tuf_exc.DownloadHTTPError(f"{url}: not found", 404) from None
        except StoreError as exc:
            raise tuf_exc.DownloadError(str(exc)) from exc
        return iter([data])


def make_updater(
    root_bytes: bytes,
    base_url: str,
    client_dir: Path,
    fetcher: FetcherInterface,
) -> Updater:
    """A device-side ngclient: ``client_dir`` holds trusted metadata and downloaded targets."""
    metadata_dir = client_dir / "metadata"
    targets_dir = client_dir / "targets"
    metadata_dir.mkdir(parents=True, exist_ok=True)
    targets_dir.mkdir(parents=True, exist_ok=True)
    # the trust anchor is used only on first start; after that the client's own cached root
    # (updated through every root rotation) is what it trusts
    bootstrap = None if (metadata_dir / "root.json").exists() else root_bytes
    base = base_url.rstrip("/") if not base_url.endswith("://") else base_url[:-1]
    return Updater(
        metadata_dir=str(metadata_dir),
        metadata_base_url=f"{base}/metadata/",
        target_base_url=f"{base}/targets/",
        target_dir=str(targets_dir),
        fetcher=fetcher,
        config=UpdaterConfig(max_root_rotations=256),
        bootstrap=bootstrap,
    )


def fetch_target(root: Path, url: str, client_dir: Path, target: str) -> bytes:
    """Refresh and download one target with ngclient over httpx; errors become OtactlErrors."""
    from otactl.errors import UsageError, VerificationError

    try:
        root_bytes = root.read_bytes()
    except OSError as exc:
        raise UsageError(f"{root}: cannot read the trusted root: {exc.strerror}") from None
    fetcher = HttpxFetcher()
    try:
        updater = make_updater(root_bytes, url, client_dir, fetcher)
        updater.refresh()
        info = updater.get_targetinfo(target)
        if info is None:
            raise VerificationError(f"{target}: no such target in the repository at {url}")
        path = updater.download_target(info, str(client_dir / "download.tmp"))
        data = Path(path).read_bytes()
        Path(path).unlink()
        return data
    except tuf_exc.DownloadError as exc:
        raise VerificationError(f"{url}: cannot download: {exc}") from exc
    except tuf_exc.RepositoryError as exc:
        raise VerificationError(f"{url}: refused by the TUF client: {exc}") from exc
    finally:
        fetcher.close()
