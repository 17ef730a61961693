"""The agent against a hostile repository server on 127.0.0.1 (tests/fixtures/hostile_http.py): the
published repository's files, except one that the server makes endless or trickles.

Endless data on metadata: an oversized ``timestamp.json``, root, snapshot or device bin is refused by
the device's TUF client (python-tuf ngclient through otactl's fetcher). Nothing is installed, the
result and the log name the file and the limit, and the fetcher read at most one network read past
the limit: ngclient's maximum lengths for timestamp, root and bins (bins are listed in the snapshot
by version only), the signed length for the snapshot. Slow retrieval: a trickled ``timestamp.json``
does not hang the device. Each case ends with the control: the same device, once the server serves
the real file, installs 2.0.0.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nacl.signing
import pytest
from agent_it_fixtures import Served
from fixtures.hostile_http import endless, hostile_server, trickle
from tuf.ngclient import UpdaterConfig

from otactl.agent.agent import Agent
from otactl.agent.state import DeviceState, Identity
from otactl.app.fleet import import_devices
from otactl.fleet.records import DeviceRecord
from otactl.repo.client import HttpxFetcher

pytestmark = pytest.mark.integration

READ = 64 * 1024  # the most httpx (httpcore) takes from the socket at once
DEFAULTS = UpdaterConfig()


class CountingFetcher(HttpxFetcher):
    """otactl's fetcher, counting the bytes it handed to ngclient per URL path."""

    def __init__(self, **deadline: float) -> None:
        super().__init__(httpx.Client(timeout=5.0), **deadline)
        self.by_path: Counter[str] = Counter()

    def _fetch(self, url: str) -> Iterator[bytes]:
        chunks = super()._fetch(url)
        path = httpx.URL(url).path

        def counted() -> Iterator[bytes]:
            for chunk in chunks:
                self.by_path[path] += len(chunk)
                yield chunk
        return counted()


def device(served: Served, base: Path) -> Path:
    key = nacl.signing.SigningKey(b"\x07" * 32)
    record = DeviceRecord("t9-0007", "t9-engine", "revB", "hp-400", "eu", (), bytes(key.verify_key).hex())
    import_devices(served.ws._fresh(), [record], "test")
    path = base / "t9-0007"
    DeviceState.provision(path, Identity("t9-0007", "t9-engine", "revB"), served.root().read_bytes(), key)
    return path


def snapshot_length(served: Served) -> int:
    timestamp = json.loads((served.ws.ctx.store.root / "metadata" / "timestamp.json").read_bytes())
    return int(timestamp["signed"]["meta"]["snapshot.json"]["length"])


OVERSIZED = {
    # case: (path pattern, the limit the client must stop at)
    "timestamp": (r"^/metadata/timestamp\.json$", lambda served: DEFAULTS.timestamp_max_length),
    "root": (r"^/metadata/\d+\.root\.json$", lambda served: DEFAULTS.root_max_length),
    "snapshot": (r"^/metadata/\d+\.snapshot\.json$", snapshot_length),
    "bin": (r"^/metadata/\d+\.devices-[0-9a-f]+\.json$", lambda served: DEFAULTS.targets_max_length),
}


@pytest.mark.parametrize("case", list(OVERSIZED))
def test_oversized_metadata_is_refused_without_reading_it_all(
    served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    pattern, limit_of = OVERSIZED[case]
    path = device(served, tmp_path)
    served.all_on("2.0.0")
    limit = limit_of(served)
    fetcher = CountingFetcher()
    with hostile_server(served.ws.ctx.store.root) as server:
        server.rules[pattern] = endless(limit=64 * 1024 * 1024)
        agent = Agent(path, server.url, None, fetcher=fetcher)
        with caplog.at_level(logging.WARNING):
            result = agent.run_once(datetime.now(UTC)).check
        hostile = [p for p in server.requests if server.behaviour(p)]
        assert len(hostile) == 1, server.requests
        assert (result.outcome, result.active) == ("unreachable", None)
        for says in ("DownloadLengthMismatchError", f"{hostile[0]}: Downloaded",
                     f"exceeding the maximum allowed length of {limit}"):
            assert says in result.detail
            assert says in caplog.text
        assert limit < fetcher.by_path[hostile[0]] <= limit + READ  # not the server's 64 MiB
        assert DeviceState(path).active().slot is None
        assert not [f for slot in ("slot-a", "slot-b") for f in (path / slot).rglob("*") if f.is_file()]

        server.rules.clear()  # the control: the real file
        result = agent.run_once(datetime.now(UTC)).check
        assert (result.outcome, result.active) == ("committed", "2.0.0"), result.detail
    agent.close()
    fetcher.close()


def test_a_trickled_timestamp_does_not_hang_the_device(served: Served, tmp_path: Path) -> None:
    path = device(served, tmp_path)
    served.all_on("2.0.0")
    fetcher = CountingFetcher(min_rate=1000.0, grace=0.5)
    with hostile_server(served.ws.ctx.store.root) as server:
        server.rules[r"^/metadata/timestamp\.json$"] = trickle(interval=0.05, cap_s=8.0)
        agent = Agent(path, server.url, None, fetcher=fetcher)
        started = time.monotonic()
        result = agent.run_once(datetime.now(UTC)).check
        assert time.monotonic() - started < 4.0  # the server trickles for 8 s
        assert (result.outcome, result.active) == ("unreachable", None)
        assert "SlowRetrievalError" in result.detail and "timestamp.json" in result.detail
        assert "below the minimum average of 1000 bytes/s" in result.detail

        server.rules.clear()  # the control: the same fetcher, the real file
        result = agent.run_once(datetime.now(UTC)).check
        assert (result.outcome, result.active) == ("committed", "2.0.0"), result.detail
    agent.close()
    fetcher.close()
