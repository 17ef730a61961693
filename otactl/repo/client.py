"""TUF clients: python-tuf's ngclient over HTTP (httpx) or straight from a blob store."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx
from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import TargetFile
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from otactl.errors import NotFoundError, StoreError, VerificationError
from otactl.repo import release_roles
from otactl.store.base import BlobStore

# Slow retrieval (see HttpxFetcher): a download must average MIN_RATE bytes/s after GRACE_S seconds.
# 1 KiB/s is far below any working link (a 5 MB bin may take 82 minutes), and far above a trickle.
MIN_RATE = 1024.0  # bytes per second
GRACE_S = 30.0


class HttpxFetcher(FetcherInterface):
    """ngclient fetcher over httpx (connection reuse, timeouts, streaming).

    Endless data: the body is streamed as the network delivers it and never read whole, so
    ngclient's ``download_bytes``/``download_file`` stop at the maximum length (the signed length,
    or ``UpdaterConfig``'s ``*_max_length``) at most one network read past it. Only the identity
    encoding is asked for, and a body sent compressed anyway is refused: ngclient counts the bytes
    this fetcher yields, and a decoded chunk could be a thousand times its size on the wire.

    Slow retrieval: every download must keep an average of ``min_rate`` bytes per second once
    ``grace`` seconds have passed since its request was sent, that is, ``t`` seconds in it must
    have received ``(t - grace) * min_rate`` bytes. A server that trickles (one byte a second,
    forever) is cut with ``SlowRetrievalError``. The check runs whenever bytes arrive; a silence is
    bounded by the httpx timeout (also ``SlowRetrievalError``), so a download ends at most one
    timeout past its deadline. The state is per download: one fetcher may serve many threads.
    """

    def __init__(
        self,
        client: httpx.Client | None = None,
        timeout: float = 15.0,
        *,
        min_rate: float = MIN_RATE,
        grace: float = GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_rate <= 0 or grace < 0:
            raise ValueError(f"min_rate must be > 0 and grace >= 0, not {min_rate} and {grace}")
        self._client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        self.min_rate = min_rate
        self.grace = grace
        self._clock = clock
        self.bytes_received = 0

    def __repr__(self) -> str:
        return f"HttpxFetcher(min_rate={self.min_rate:g}, grace={self.grace:g})"

    def _fetch(self, url: str) -> Iterator[bytes]:
        started = self._clock()
        request = self._client.build_request("GET", url, headers={"Accept-Encoding": "identity"})
        try:
            response = self._client.send(request, stream=True)
        except httpx.ReadTimeout as exc:
            raise tuf_exc.SlowRetrievalError(f"{url}: no response within the timeout ({exc})") from exc
        except httpx.HTTPError as exc:
            raise tuf_exc.DownloadError(f"{url}: {exc}") from exc
        if response.status_code != 200:
            response.close()
            raise tuf_exc.DownloadHTTPError(f"{url}: HTTP {response.status_code}", response.status_code)
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            response.close()
            raise tuf_exc.DownloadError(f"{url}: the server sent a {encoding!r} body; only identity was asked for")
        return self._chunks(url, response, started)

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """ngclient's own download (it stops at ``max_length``); its length error names the URL."""
        with contextlib.ExitStack() as stack:
            try:
                file = stack.enter_context(super().download_file(url, max_length))
            except tuf_exc.DownloadLengthMismatchError as exc:
                raise tuf_exc.DownloadLengthMismatchError(f"{url}: {exc}") from exc
            yield file

    def _chunks(self, url: str, response: httpx.Response, started: float) -> Iterator[bytes]:
        received = 0
        try:
            for chunk in response.iter_raw():
                received += len(chunk)
                self.bytes_received += len(chunk)
                elapsed = self._clock() - started
                if elapsed > self.grace + received / self.min_rate:
                    raise tuf_exc.SlowRetrievalError(
                        f"{url}: {received} bytes in {elapsed:.1f} s, below the minimum average of "
                        f"{self.min_rate:g} bytes/s after {self.grace:g} s")
                yield chunk
        except httpx.ReadTimeout as exc:
            raise tuf_exc.SlowRetrievalError(f"{url}: nothing received within the timeout after "
                                             f"{received} bytes ({exc})") from exc
        except httpx.HTTPError as exc:
            raise tuf_exc.DownloadError(f"{url}: {exc}") from exc
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


_RELEASE_TARGETS = ("firmware/", "config/", "releases/")


class CheckedUpdater(Updater):
    """ngclient's Updater, plus decision 1203's check: every lookup of a release's target is followed by
    ``release_roles.check_trusted`` on the metadata the client now trusts, so a release index signed by
    CI's key alone (threshold lowered, keys swapped, a target of its own) never makes an unapproved
    release installable. ngclient verifies delegations as the delegator wrote them; this is the part of
    the approval rule it cannot see."""

    def __init__(self, metadata_dir: str, metadata_base_url: str, target_dir: str, target_base_url: str,
                 fetcher: FetcherInterface, config: UpdaterConfig, bootstrap: bytes | None) -> None:
        super().__init__(metadata_dir, metadata_base_url, target_dir, target_base_url, fetcher, config,
                         bootstrap=bootstrap)
        self._trusted_dir = Path(metadata_dir)

    def get_targetinfo(self, target_path: str) -> TargetFile | None:
        info = super().get_targetinfo(target_path)
        if target_path.startswith(_RELEASE_TARGETS):
            try:
                release_roles.check_trusted(self._trusted_dir)
            except VerificationError as exc:
                raise release_roles.UnapprovedReleaseError(exc.message) from exc
        return info


def _updater(cls: type[Updater], root_bytes: bytes | None, base_url: str, metadata_path: str, client_dir: Path,
             fetcher: FetcherInterface) -> Updater:
    """ngclient with ``client_dir/metadata`` (trusted metadata) and ``client_dir/targets``. The trust
    anchor ``root_bytes`` is used only on first start; after that the client's own cached root (updated
    through every root rotation) is what it trusts."""
    metadata_dir = client_dir / "metadata"
    targets_dir = client_dir / "targets"
    metadata_dir.mkdir(parents=True, exist_ok=True)
    targets_dir.mkdir(parents=True, exist_ok=True)
    trusted = (metadata_dir / "root.json").exists()
    if not trusted and root_bytes is None:
        raise VerificationError(f"{client_dir}: no root trusted yet, and none given")
    base = base_url.rstrip("/") if not base_url.endswith("://") else base_url[:-1]
    return cls(
        metadata_dir=str(metadata_dir),
        metadata_base_url=f"{base}/{metadata_path}",
        target_base_url=f"{base}/targets/",
        target_dir=str(targets_dir),
        fetcher=fetcher,
        config=UpdaterConfig(max_root_rotations=256),
        bootstrap=None if trusted else root_bytes,
    )


def make_updater(root_bytes: bytes, base_url: str, client_dir: Path, fetcher: FetcherInterface) -> Updater:
    """A device-side ngclient (:class:`CheckedUpdater`): ``client_dir`` holds trusted metadata and
    downloaded targets."""
    return _updater(CheckedUpdater, root_bytes, base_url, "metadata/", client_dir, fetcher)


def make_director_updater(root_bytes: bytes | None, base_url: str, device_id: str, client_dir: Path,
                          fetcher: FetcherInterface) -> Updater:
    """A device's ngclient for its own director chain (decision 0407): per-device timestamp, snapshot
    and targets under ``director/devices/<id>/``, the shared root chain read through
    :class:`~otactl.repo.director.DirectorFetcher`, the record among the repository's targets.
    ``root_bytes`` is the director root to start from; None once ``client_dir`` trusts one."""
    from otactl.repo import director

    return _updater(Updater, root_bytes, base_url, director.device_prefix(device_id), client_dir,
                    director.DirectorFetcher(fetcher))


def read_small(updater: Updater, path: str) -> bytes | None:
    """A small verified target (record, policy, descriptor), from ngclient's cache when current."""
    info = updater.get_targetinfo(path)
    if info is None:
        return None
    cached = updater.find_cached_target(info)
    return Path(cached or updater.download_target(info)).read_bytes()


def record_updater(image: Updater, base_url: str, device_id: str, client_dir: Path,
                   fetcher: FetcherInterface) -> Updater:
    """The client that lists ``device_id``'s record, refreshed: its own director chain (decision 0407)
    once the repository lists a director root, and for ever after (a device that trusts a director
    never reads hash bins again); else ``image`` itself (hash bins). ``image`` is refreshed already."""
    from otactl.repo import director

    director_dir = client_dir / "director"
    root_bytes = None
    if not (director_dir / "metadata" / "root.json").exists():
        root_bytes = read_small(image, director.ROOT_TARGET)  # offline-signed: the top-level targets
        if root_bytes is None:
            return image
    chain = make_director_updater(root_bytes, base_url, device_id, director_dir, fetcher)
    chain.refresh()
    return chain


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
