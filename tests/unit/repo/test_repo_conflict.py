"""Two writers, one repository (issue 2): exactly one publication wins, the other gets ConflictError.

Both Repository objects are loaded from the same store before either publishes, as two operators
(or a CI job and an operator) would. No update may be lost silently and nothing is left locked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.repo import initial_root, open_context, publish_all, stage_target, store_client

from otactl.errors import ConflictError
from otactl.repo.repository import JOURNAL_KEY, Repository


@pytest.mark.parametrize(
    "concurrently", [pytest.param(False, id="one-after-the-other"), pytest.param(True, id="at-the-same-time")]
)
def test_two_writers_one_wins_the_other_gets_a_conflict(workspace: Path, tmp_path: Path, concurrently: bool) -> None:
    ctx = open_context(workspace)
    for name in ("ci", "release-manager", "online"):
        ctx.signers.get(name)  # unlock once, outside the race
    a, path_a = stage_target(ctx, "a")
    b, path_b = stage_target(ctx, "b")

    outcomes = publish_all([a, b], concurrently)

    winners = [i for i, exc in enumerate(outcomes) if exc is None]
    losers = [exc for exc in outcomes if exc is not None]
    assert len(winners) == 1, outcomes
    assert len(losers) == 1
    assert isinstance(losers[0], ConflictError), repr(losers[0])
    assert str(losers[0])  # a message the CLI can show
    assert not ctx.store.exists(JOURNAL_KEY)  # the loser left no lock behind

    # the winner's update is published whole; the loser's is not there at all
    won, lost = (path_a, path_b) if winners == [0] else (path_b, path_a)
    device = store_client(initial_root(workspace), ctx.store, tmp_path / "device")
    device.refresh()
    assert device.get_targetinfo(won) is not None
    assert device.get_targetinfo(lost) is None
    assert Repository.load(ctx.store, ctx.trust, ctx.signers, ctx.now).timestamp.signed.version == 2


def test_the_loser_can_reload_and_publish(workspace: Path, tmp_path: Path) -> None:
    ctx = open_context(workspace)
    a, path_a = stage_target(ctx, "a")
    b, _ = stage_target(ctx, "b")
    a.publish()
    with pytest.raises(ConflictError):
        b.publish()
    retry, path_b = stage_target(ctx, "b")
    retry.publish()
    device = store_client(initial_root(workspace), ctx.store, tmp_path / "device")
    device.refresh()
    assert device.get_targetinfo(path_a) is not None
    assert device.get_targetinfo(path_b) is not None
