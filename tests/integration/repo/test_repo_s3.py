"""The repository on an S3-compatible server (moto over HTTP on 127.0.0.1), issue 2.

One workspace is initialised into ``s3://BUCKET/fleet-a`` for the module. A second ``init`` into
the same prefix is refused and changes nothing; two writers racing through S3 conditional writes
get exactly one success and one ConflictError.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.repo import (
    PASSPHRASE,
    assert_one_error_line,
    init_workspace,
    initial_root,
    open_context,
    publish_all,
    run_otactl,
    stage_target,
    store_client,
)
from fixtures.s3server import create_bucket, delete_bucket, s3_client

from otactl.errors import ConflictError
from otactl.repo.repository import JOURNAL_KEY
from otactl.store.s3 import S3Store

pytestmark = pytest.mark.integration

PREFIX = "fleet-a"


@pytest.fixture(scope="module")
def s3_workspace(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    bucket = create_bucket(s3_endpoint)
    base = tmp_path_factory.mktemp("s3ws")
    ws = init_workspace(base / "ws", "--store", f"s3://{bucket}/{PREFIX}", "--s3-endpoint-url", s3_endpoint)
    yield ws, bucket
    delete_bucket(s3_endpoint, bucket)


@pytest.fixture
def passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)


def _objects(endpoint: str, bucket: str) -> dict[str, str]:
    listing = s3_client(endpoint).list_objects_v2(Bucket=bucket)
    return {item["Key"]: item["ETag"] for item in listing.get("Contents", ())}


def test_init_into_a_prefix_that_holds_a_repository_is_refused(
    s3_workspace: tuple[Path, str], s3_endpoint: str, tmp_path: Path
) -> None:
    _, bucket = s3_workspace
    before = _objects(s3_endpoint, bucket)
    assert f"{PREFIX}/metadata/timestamp.json" in before
    result = run_otactl(
        "init", "second", "--store", f"s3://{bucket}/{PREFIX}", "--s3-endpoint-url", s3_endpoint, cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    assert_one_error_line(result, f"s3://{bucket}/{PREFIX}", "already holds a repository")
    assert list(tmp_path.iterdir()) == []  # no workspace, no build directory
    assert _objects(s3_endpoint, bucket) == before


@pytest.mark.parametrize(
    "concurrently", [pytest.param(False, id="one-after-the-other"), pytest.param(True, id="at-the-same-time")]
)
def test_two_writers_through_s3_one_wins_the_other_gets_a_conflict(
    s3_workspace: tuple[Path, str], tmp_path: Path, passphrase: None, concurrently: bool
) -> None:
    ws, _ = s3_workspace
    ctx_a, ctx_b = open_context(ws), open_context(ws)  # two processes: two stores, two S3 clients
    assert isinstance(ctx_a.store, S3Store)
    assert ctx_a.store is not ctx_b.store
    version = ctx_a.repository().timestamp.signed.version
    a, path_a = stage_target(ctx_a, f"a-{concurrently}")
    b, path_b = stage_target(ctx_b, f"b-{concurrently}")

    outcomes = publish_all([a, b], concurrently)

    winners = [i for i, exc in enumerate(outcomes) if exc is None]
    assert len(winners) == 1, outcomes
    (loser,) = [exc for exc in outcomes if exc is not None]
    assert isinstance(loser, ConflictError), repr(loser)
    assert not ctx_a.store.exists(JOURNAL_KEY)
    won, lost = (path_a, path_b) if winners == [0] else (path_b, path_a)
    device = store_client(initial_root(ws), ctx_a.store, tmp_path / "device")
    device.refresh()
    assert device.get_targetinfo(won) is not None
    assert device.get_targetinfo(lost) is None
    assert open_context(ws).repository().timestamp.signed.version == version + 1
