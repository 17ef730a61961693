"""Interop (issue 2): otactl publishes, python-tuf's ngclient refreshes and downloads over HTTP.

The client is a device's: ngclient through otactl's HttpxFetcher (``make_updater``), talking to
the directory store served as static files on 127.0.0.1, and to an S3-compatible server (moto)
holding a repository that ``otactl init --store s3://...`` created.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.repo import (
    FIRMWARE_CUSTOM,
    FIRMWARE_PATH,
    PASSPHRASE,
    http_client,
    init_workspace,
    initial_root,
    ok,
    open_context,
    run_otactl,
    served,
    trusted_version,
    upload_target,
)
from fixtures.s3server import s3_client

from otactl.repo import layout
from otactl.store.directory import DirectoryStore

pytestmark = pytest.mark.integration

FIRMWARE = bytes(range(256)) * 300  # 75 KiB: more than one fetch chunk


def _device_downloads(root_bytes: bytes, url: str, client_dir: Path) -> bytes:
    with http_client(root_bytes, url, client_dir) as (updater, fetcher):
        updater.refresh()
        info = updater.get_targetinfo(FIRMWARE_PATH)
        assert info is not None, f"{FIRMWARE_PATH} not found through {url}"
        assert info.length == len(FIRMWARE)
        assert layout.get_custom(info) == FIRMWARE_CUSTOM
        data = Path(updater.download_target(info, str(client_dir / "fw.bin"))).read_bytes()
        assert fetcher.bytes_received >= len(FIRMWARE)  # it went through otactl's fetcher
    assert trusted_version(client_dir, "timestamp") == 2
    assert trusted_version(client_dir, "releases") == 2
    return data


def test_ngclient_downloads_from_the_directory_store_over_http(workspace: Path, tmp_path: Path) -> None:
    ctx = open_context(workspace)
    upload_target(ctx, FIRMWARE)
    assert isinstance(ctx.store, DirectoryStore)
    with served(ctx.store) as url:
        assert _device_downloads(initial_root(workspace), url, tmp_path / "device") == FIRMWARE


def test_otactl_repo_fetch_downloads_over_http(workspace: Path, tmp_path: Path) -> None:
    ctx = open_context(workspace)
    upload_target(ctx, FIRMWARE)
    out = tmp_path / "fw.bin"
    with served(ctx.store) as url:
        ok(
            run_otactl(
                "repo",
                "fetch",
                FIRMWARE_PATH,
                "--url",
                url,
                "--client-dir",
                str(tmp_path / "dev"),
                "--out",
                str(out),
                cwd=workspace,
            )
        )
        missing = run_otactl(
            "repo",
            "fetch",
            "firmware/m/9.9.9/none.bin",
            "--url",
            url,
            "--client-dir",
            str(tmp_path / "dev"),
            cwd=workspace,
        )
    assert out.read_bytes() == FIRMWARE
    assert missing.returncode == 1
    assert "firmware/m/9.9.9/none.bin" in missing.stderr
    assert "Traceback" not in missing.stderr


def _allow_anonymous_reads(endpoint: str, bucket: str, prefix: str) -> None:
    """What a public distribution bucket does: anyone may GET objects under the prefix."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DevicesRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*",
            }
        ],
    }
    s3_client(endpoint).put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def test_ngclient_downloads_from_the_s3_store_over_http(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    ws = init_workspace(tmp_path / "ws", "--store", f"s3://{s3_bucket}/fleet-a", "--s3-endpoint-url", s3_endpoint)
    assert not (ws / "repository").exists()
    ctx = open_context(ws)
    assert ctx.store.url.startswith(f"s3://{s3_bucket}/fleet-a")
    upload_target(ctx, FIRMWARE)
    ok(run_otactl("repo", "verify", cwd=ws))

    _allow_anonymous_reads(s3_endpoint, s3_bucket, "fleet-a")
    url = f"{s3_endpoint.rstrip('/')}/{s3_bucket}/fleet-a"
    assert _device_downloads(initial_root(ws), url, tmp_path / "device") == FIRMWARE
