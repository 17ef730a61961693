"""otactl's ngclient fetcher against a hostile server on 127.0.0.1 (tests/fixtures/hostile_http.py).

Slow retrieval: a trickle (one byte every 50 ms, for 8 s) and a server that goes silent after its
headers both end in ``SlowRetrievalError`` within seconds; the control is a body delivered slowly
but above the minimum rate, which takes longer than the grace period and is accepted. Endless data:
``download_bytes`` stops at the maximum length, having read at most one network read past it (a
fetcher that read whole bodies would read the server's 64 MiB). A body compressed without being
asked for is refused. The deadline is small here (0.5 s of grace, 1000 bytes/s) so the test is quick.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from fixtures.hostile_http import HostileServer, endless, gzip, hostile_server, paced, silent, trickle
from tuf.api import exceptions as tuf_exc

from otactl.repo.client import HttpxFetcher

pytestmark = pytest.mark.integration

GRACE_S = 0.5
MIN_RATE = 1000.0
READ = 64 * 1024  # the most httpx (httpcore) takes from the socket at once


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with hostile_server() as srv:
        yield srv


@pytest.fixture
def fetcher() -> Iterator[HttpxFetcher]:
    f = HttpxFetcher(httpx.Client(timeout=1.0), min_rate=MIN_RATE, grace=GRACE_S)
    yield f
    f.close()


SLOW_CASES = {
    # case: (behaviour, what the error says)
    "trickle-one-byte-every-50ms": (trickle(interval=0.05, cap_s=8.0), "below the minimum average of 1000 bytes/s"),
    "silent-after-the-headers": (silent(cap_s=8.0), "nothing received within the timeout"),
}


@pytest.mark.parametrize("case", list(SLOW_CASES))
def test_a_slow_server_ends_in_slow_retrieval_error_within_seconds(
    server: HostileServer, fetcher: HttpxFetcher, case: str
) -> None:
    behaviour, says = SLOW_CASES[case]
    server.rules[r"^/slow$"] = behaviour
    started = time.monotonic()
    with pytest.raises(tuf_exc.SlowRetrievalError, match=says) as info:
        fetcher.download_bytes(f"{server.url}/slow", 16384)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, elapsed  # the server would go on for 8 s
    assert f"{server.url}/slow" in str(info.value)


def test_a_body_slower_than_the_grace_period_but_above_the_minimum_rate_is_accepted(
    server: HostileServer, fetcher: HttpxFetcher
) -> None:
    """The control: 4000 bytes at about 5000 bytes/s take longer than the grace period and arrive."""
    body = bytes(range(256)) * 15 + b"x" * 160
    server.rules[r"^/steady$"] = paced(body, chunk=100, interval=0.02)
    started = time.monotonic()
    assert fetcher.download_bytes(f"{server.url}/steady", len(body)) == body
    assert time.monotonic() - started > GRACE_S


@pytest.mark.parametrize("max_length", [16384, 512000, 5_000_000])
def test_endless_data_stops_at_the_maximum_length(server: HostileServer, fetcher: HttpxFetcher,
                                                  max_length: int) -> None:
    server.rules[r"^/endless$"] = endless(limit=64 * 1024 * 1024)
    url = f"{server.url}/endless"
    with pytest.raises(tuf_exc.DownloadLengthMismatchError, match=f"maximum allowed length of {max_length}") as info:
        fetcher.download_bytes(url, max_length)
    assert str(info.value).startswith(f"{url}: ")  # which file was too long
    assert max_length < fetcher.bytes_received <= max_length + READ


def test_a_body_compressed_without_being_asked_for_is_refused(server: HostileServer, fetcher: HttpxFetcher) -> None:
    server.rules[r"^/packed$"] = gzip(b" " * 1_000_000)  # about 1 KB on the wire
    with pytest.raises(tuf_exc.DownloadError, match="'gzip' body; only identity was asked for"):
        fetcher.download_bytes(f"{server.url}/packed", 16384)
    assert fetcher.bytes_received == 0


def test_the_deadline_is_checked_against_the_bytes_received() -> None:
    """The rule itself, on a fake clock: ``t`` seconds in, ``(t - grace) * min_rate`` bytes are due."""
    now = [0.0]
    body = b"a" * 3000
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=httpx.ByteStream(body)))

    def download(at: float) -> bytes:
        now[0] = 0.0
        fetcher = HttpxFetcher(httpx.Client(transport=transport), min_rate=1000, grace=2.0, clock=lambda: now[0])
        chunks = fetcher.fetch("http://repo.invalid/x")
        now[0] = at  # the one chunk arrives at ``at``
        return b"".join(chunks)

    assert download(4.99) == body  # 2 s + 3000 bytes / 1000 bytes/s = 5 s
    with pytest.raises(tuf_exc.SlowRetrievalError, match=r"3000 bytes in 5\.0 s"):
        download(5.01)
    with pytest.raises(ValueError, match="min_rate"):
        HttpxFetcher(min_rate=0)
