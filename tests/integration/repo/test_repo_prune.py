"""`otactl repo prune` (issue 12, decision 1204): old metadata versions and unlisted targets go,
every root stays, a dry run deletes nothing, a problem stops the prune with one line each; on the
directory store through the real CLI, and on an S3-compatible server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.repo import (
    FIRMWARE_PATH,
    PASSPHRASE,
    assert_one_error_line,
    init_workspace,
    initial_root,
    ok,
    open_context,
    run_otactl,
    store_client,
    tree,
    upload_target,
)
from fixtures.s3server import create_bucket, delete_bucket

from otactl.app.keys import rotate_key
from otactl.app.prune import prune
from otactl.repo import layout
from otactl.repo.repository import JOURNAL_KEY
from otactl.store.base import BlobStore

pytestmark = pytest.mark.integration


def _history(ws: Path, versions: int) -> list[bytes]:
    """``versions`` publications of the firmware target (each replaces the last) and a root rotation."""
    images = [f"firmware image {n}\n".encode() * 64 for n in range(versions)]
    for n, data in enumerate(images):
        upload_target(open_context(ws), data)
        if n == 1:
            rotate_key(open_context(ws), "timestamp", None)  # root v2; v1 must survive any prune
    return images


def _client_downloads(store: BlobStore, root_v1: bytes, client_dir: Path) -> bytes:
    updater = store_client(root_v1, store, client_dir)
    updater.refresh()
    info = updater.get_targetinfo(FIRMWARE_PATH)
    assert info is not None
    return Path(updater.download_target(info, str(client_dir / "fw.bin"))).read_bytes()


def test_a_dry_run_lists_what_would_go_and_deletes_nothing(workspace: Path, tmp_path: Path) -> None:
    _history(workspace, 5)
    before = tree(workspace / "repository")
    assert "metadata/timestamp.json" in before
    dry = ok(run_otactl("repo", "prune", "--dry-run", "--keep-versions", "1", "--grace-days", "0", "-o", "json",
                        cwd=workspace))
    assert tree(workspace / "repository") == before  # nothing deleted, nothing written
    doc = json.loads(dry.stdout)
    assert doc["schema"] == "otactl/repo-prune/1" and doc["dry_run"] is True and doc["deleted"] == []
    listed = {item["key"] for item in doc["would_delete"]}
    assert any(k.startswith("targets/firmware/") for k in listed)  # the replaced images
    assert any(k.endswith(".snapshot.json") for k in listed) and any(k.endswith(".releases.json") for k in listed)
    assert not [k for k in listed if k.endswith("root.json") or k == "metadata/timestamp.json"]

    text = ok(run_otactl("repo", "prune", "--dry-run", "--keep-versions", "1", "--grace-days", "0",
                         cwd=workspace)).stdout
    assert {line.split()[2] for line in text.splitlines() if line.startswith("would delete ")} == listed
    assert tree(workspace / "repository") == before

    done = json.loads(ok(run_otactl("repo", "prune", "--keep-versions", "1", "--grace-days", "0", "-o", "json",
                                    cwd=workspace)).stdout)
    assert {item["key"] for item in done["deleted"]} == listed  # exactly what the dry run listed
    after = tree(workspace / "repository")
    assert set(before) - set(after) == {str(Path(k)) for k in listed}
    roots = sorted(k for k in after if k.startswith("metadata/") and k.endswith(".root.json"))
    assert roots == ["metadata/1.root.json", "metadata/2.root.json"]
    # a device from the factory (root v1) still walks the roots and gets the current image
    ctx = open_context(workspace)
    assert _client_downloads(ctx.store, initial_root(workspace), tmp_path / "dev") == b"firmware image 4\n" * 64
    ok(run_otactl("repo", "verify", cwd=workspace))
    again = json.loads(ok(run_otactl("repo", "prune", "--keep-versions", "1", "--grace-days", "0", "-o", "json",
                                     cwd=workspace)).stdout)
    assert again["deleted"] == []  # idempotent


def test_no_grace_takes_an_image_replaced_earlier_in_the_same_second(workspace: Path) -> None:
    """The clock of a command is whole seconds; an mtime later in that second is not in the future (CI once
    wrote, replaced and pruned within one second and the replaced image was kept)."""
    first = _history(workspace, 2)[0]
    ctx = open_context(workspace)
    replaced = [layout.target_key(FIRMWARE_PATH, hashlib.sha256(first).hexdigest())]
    assert ctx.store.exists(replaced[0])
    moment = ctx.now.timestamp() + 0.6  # same second as ctx.now, later than it
    os.utime(workspace / "repository" / replaced[0], (moment, moment))
    listed = {r.key for r in prune(ctx, dry_run=True, keep_versions=0, grace_days=0).removals}
    assert replaced[0] in listed
    assert replaced[0] not in {r.key for r in prune(ctx, dry_run=True, keep_versions=0, grace_days=1).removals}


def test_the_default_grace_period_keeps_everything_just_published(workspace: Path) -> None:
    _history(workspace, 3)
    doc = json.loads(ok(run_otactl("repo", "prune", "--dry-run", "-o", "json", cwd=workspace)).stdout)
    assert doc["would_delete"] == []  # every generation and every upload is under a week old


def test_a_problem_is_one_line_and_nothing_is_deleted(workspace: Path) -> None:
    _history(workspace, 4)
    ctx = open_context(workspace)
    old = layout.metadata_key("snapshot", ctx.repository().snapshot.signed.version - 1)
    ctx.store.put(old, b"{not json")
    before = tree(workspace / "repository")
    result = run_otactl("repo", "prune", "--keep-versions", "1", "--grace-days", "0", cwd=workspace)
    assert result.returncode == 1, result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("otactl: problem: ")]
    assert len(problems) == 1 and old in problems[0] and "not valid TUF metadata" in problems[0]
    rest = "\n".join(line for line in result.stderr.splitlines() if line not in problems)
    assert_one_error_line(subprocess.CompletedProcess(result.args, 1, result.stdout, rest), "nothing was deleted")
    assert tree(workspace / "repository") == before


def test_a_pending_publication_is_never_pruned(workspace: Path) -> None:
    _history(workspace, 2)
    ctx = open_context(workspace)
    ctx.store.put(JOURNAL_KEY, json.dumps({"files": []}).encode())
    before = tree(workspace / "repository")
    result = run_otactl("repo", "prune", "--grace-days", "0", "--keep-versions", "0", cwd=workspace)
    assert result.returncode == 1
    assert_one_error_line(result, "unfinished publication")
    assert tree(workspace / "repository") == before


def test_bad_arguments_exit_2(workspace: Path) -> None:
    result = run_otactl("repo", "prune", "--keep-versions", "-1", cwd=workspace)
    assert result.returncode == 2, result.stderr


# ------------------------------------------------------------------------------------------ S3
@pytest.fixture
def s3_workspace(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    bucket = create_bucket(s3_endpoint)
    ws = init_workspace(tmp_path / "ws", "--store", f"s3://{bucket}/fleet", "--s3-endpoint-url", s3_endpoint)
    yield ws
    delete_bucket(s3_endpoint, bucket)


def test_prune_on_s3(s3_workspace: Path, tmp_path: Path) -> None:
    _history(s3_workspace, 4)
    ctx = open_context(s3_workspace)
    before = set(ctx.store.list())
    dry = prune(ctx, dry_run=True, keep_versions=1, grace_days=0)
    assert dry.removals and set(ctx.store.list()) == before
    done = prune(open_context(s3_workspace), dry_run=False, keep_versions=1, grace_days=0)
    assert {r.key for r in done.removals} == {r.key for r in dry.removals}
    after = set(ctx.store.list())
    assert before - after == {r.key for r in dry.removals}
    assert {"metadata/1.root.json", "metadata/2.root.json"} <= after
    assert _client_downloads(ctx.store, initial_root(s3_workspace), tmp_path / "dev") == b"firmware image 3\n" * 64
