"""A prune never breaks a device mid-update (issue 12, decision 1204).

A real agent polls over HTTP. Right after its refresh, when it asks for its first target, the
operator publishes two new rollout policies (the device's snapshot generation is now two behind)
and prunes; then the agent goes on with what it verified: the rollout role version and the policy
its old snapshot names, then the release. With the generations kept (by count or by age) it commits;
the control, a prune keeping no old generation, breaks it (so the test can fail).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import nacl.signing
import pytest
from agent_it_fixtures import Served
from tuf.ngclient import FetcherInterface

from otactl.agent.agent import Agent
from otactl.agent.state import DeviceState, Identity
from otactl.app.fleet import import_devices
from otactl.app.prune import PruneResult, prune
from otactl.fleet.records import DeviceRecord
from otactl.repo.client import HttpxFetcher

pytestmark = pytest.mark.integration


class _MidUpdate(FetcherInterface):
    """Runs ``meanwhile`` once, just before the first target download (after the refresh)."""

    def __init__(self, inner: HttpxFetcher, meanwhile: Callable[[], None]) -> None:
        self.inner = inner
        self.meanwhile: Callable[[], None] | None = meanwhile

    def _fetch(self, url: str) -> Iterator[bytes]:
        if "/targets/" in url and self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return self.inner.fetch(url)


@pytest.mark.parametrize(("keep_versions", "grace_days", "outcome"), [
    pytest.param(3, 7.0, "committed", id="defaults"),
    pytest.param(2, 0.0, "committed", id="kept-by-count"),
    pytest.param(0, 7.0, "committed", id="kept-by-age"),
    pytest.param(0, 0.0, "unreachable", id="control-nothing-kept"),
])
def test_a_device_that_began_an_update_before_a_prune_finishes_it(
        served: Served, tmp_path: Path, keep_versions: int, grace_days: float, outcome: str) -> None:
    key = nacl.signing.SigningKey(hashlib.sha256(b"t9-prune-1").digest())
    record = DeviceRecord("t9-prune-1", "t9-engine", "revB", "hp-400", "eu", (), bytes(key.verify_key).hex())
    import_devices(served.ws._fresh(), [record], "test")
    device = tmp_path / "device"
    DeviceState.provision(device, Identity("t9-prune-1", "t9-engine", "revB"), served.root().read_bytes(), key)
    served.all_on("2.1.0")
    pruned: list[PruneResult] = []

    def operator() -> None:
        for _ in range(2):
            served.all_on("2.1.0")  # new rollouts versions: the device's generation falls behind
        pruned.append(prune(served.ws._fresh(), dry_run=False, keep_versions=keep_versions, grace_days=grace_days))

    fetcher = HttpxFetcher()
    agent = Agent(device, served.url, None, fetcher=_MidUpdate(fetcher, operator))
    result = agent.check_and_update(datetime.now(UTC))
    agent.close()
    fetcher.close()
    assert len(pruned) == 1 and not pruned[0].problems
    if grace_days == 0:  # the prune did delete: the fixture's older history, not what the device needs
        assert [r for r in pruned[0].removals if r.key.endswith(".rollouts.json")]
    assert result.outcome == outcome, result.detail
    if outcome == "committed":
        assert result.active == "2.1.0"
    else:
        assert "404" in result.detail  # what a prune without the safety margin does to the device
