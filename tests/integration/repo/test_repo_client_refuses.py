"""What a device refuses, and what it survives (issue 2), over HTTP on 127.0.0.1.

The device is python-tuf's ngclient through otactl's HttpxFetcher. Each refusal is checked after
the same client has accepted the good repository, so the test fails if the attack is not an attack.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import nacl.signing
import pytest
import yaml
from fixtures.repo import (
    FIRMWARE_PATH,
    http_client,
    initial_root,
    ok,
    open_context,
    run_otactl,
    served,
    trusted_version,
    upload_target,
)
from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, Root

import otactl.keys.keyfile as keyfile
from otactl.app.context import utcnow
from otactl.app.repo import refresh as refresh_roles
from otactl.repo import layout
from otactl.repo.repository import to_bytes

pytestmark = pytest.mark.integration

FIRMWARE = b"\x7fELF firmware image " * 512
TIMESTAMP = layout.metadata_key("timestamp", None)


def _download(root: bytes, url: str, client_dir: Path, name: str = "fw.bin") -> bytes:
    with http_client(root, url, client_dir) as (updater, _):
        updater.refresh()
        info = updater.get_targetinfo(FIRMWARE_PATH)
        assert info is not None
        return Path(updater.download_target(info, str(client_dir / name))).read_bytes()


def _refresh(root: bytes, url: str, client_dir: Path) -> None:
    with http_client(root, url, client_dir) as (updater, _):
        updater.refresh()


def _stored_target(ws: Path) -> Path:
    (found,) = (ws / "repository" / "targets" / "firmware" / "m" / "1.0.0").glob("*.fw.bin")
    return found


HASH = tuf_exc.LengthOrHashMismatchError
TOO_LONG = tuf_exc.DownloadLengthMismatchError  # the fetch stops at the signed length


@pytest.mark.parametrize(
    ("tamper", "refusal"),
    [
        pytest.param(lambda b: b[:100] + bytes([b[100] ^ 0x01]) + b[101:], HASH, id="one-bit-flipped"),
        pytest.param(lambda b: b[:-1] + b"\x00", HASH, id="last-byte-replaced"),
        pytest.param(lambda b: b[:-1], HASH, id="truncated"),
        pytest.param(lambda b: b + b"\x00", TOO_LONG, id="one-byte-appended"),
    ],
)
def test_refuses_a_tampered_target(workspace: Path, tmp_path: Path, tamper, refusal) -> None:  # type: ignore[no-untyped-def]
    ctx = open_context(workspace)
    upload_target(ctx, FIRMWARE)
    root = initial_root(workspace)
    with served(ctx.store) as url:
        assert _download(root, url, tmp_path / "device", "good.bin") == FIRMWARE
        stored = _stored_target(workspace)
        stored.write_bytes(tamper(stored.read_bytes()))
        assert stored.read_bytes() != FIRMWARE
        with pytest.raises(refusal):
            _download(root, url, tmp_path / "device", "bad.bin")
    assert not (tmp_path / "device" / "bad.bin").exists()


def test_refuses_a_rolled_back_timestamp(workspace: Path, tmp_path: Path) -> None:
    ctx = open_context(workspace)
    ts_file = workspace / "repository" / TIMESTAMP
    v1 = ts_file.read_bytes()
    upload_target(ctx, FIRMWARE)  # publishes timestamp v2
    root = initial_root(workspace)
    with served(ctx.store) as url:
        assert _download(root, url, tmp_path / "device") == FIRMWARE
        assert trusted_version(tmp_path / "device", "timestamp") == 2
        ts_file.write_bytes(v1)  # an attacker (or a stale mirror) serves the old timestamp
        with pytest.raises(tuf_exc.BadVersionNumberError):
            _refresh(root, url, tmp_path / "device")
        # a device that never saw v2 cannot tell: v1 is a valid, unexpired timestamp
        _refresh(root, url, tmp_path / "new-device")
    assert trusted_version(tmp_path / "device", "timestamp") == 2


def test_refuses_expired_metadata(workspace: Path, tmp_path: Path) -> None:
    upload_target(open_context(workspace), FIRMWARE)
    root = initial_root(workspace)
    store = open_context(workspace).store
    with served(store) as url:
        _refresh(root, url, tmp_path / "device")
        # online roles re-signed by a machine whose clock is 30 days behind: timestamp already expired
        refresh_roles(open_context(workspace, now=utcnow() - timedelta(days=30)), force=True)
        with pytest.raises(tuf_exc.ExpiredMetadataError):
            _refresh(root, url, tmp_path / "device")
        with pytest.raises(tuf_exc.ExpiredMetadataError):
            _refresh(root, url, tmp_path / "new-device")
        # re-signed with the right clock, the same devices update again
        ok(run_otactl("repo", "refresh", "--force", cwd=workspace))
        assert _download(b"", url, tmp_path / "device") == FIRMWARE
        assert _download(root, url, tmp_path / "new-device") == FIRMWARE


def test_keeps_updating_across_root_and_timestamp_key_rotation(workspace: Path, tmp_path: Path) -> None:
    upload_target(open_context(workspace), FIRMWARE)
    root_v1 = initial_root(workspace)
    online = tmp_path / "device-online-before-the-rotations"
    away = tmp_path / "device-back-after-a-year"  # never refreshed: walks every root from v1
    store = open_context(workspace).store
    with served(store) as url:
        _refresh(root_v1, url, online)
        assert trusted_version(online, "root") == 1
        ok(run_otactl("keys", "rotate", "root", cwd=workspace))
        ok(run_otactl("keys", "rotate", "timestamp", cwd=workspace))
        assert _download(root_v1, url, online) == FIRMWARE
        assert _download(root_v1, url, away) == FIRMWARE

    trust = yaml.safe_load((workspace / "signing" / "trust.yaml").read_text())
    for device in (online, away):
        cached = Metadata[Root].from_bytes((device / "metadata" / "root.json").read_bytes()).signed
        assert cached.version == 3  # v2: new root key; v3: new timestamp key
        assert cached.roles["root"].keyids == [trust["keys"]["root-2"]["keyid"]]
        assert cached.roles["timestamp"].keyids == [trust["keys"]["timestamp-2"]["keyid"]]
    assert "root-1" not in trust["keys"]  # retired
    assert (workspace / "signing" / "root.json").read_bytes() == store.get(layout.metadata_key("root", 3))


@pytest.mark.parametrize(
    ("signed_by", "accepted"),
    [
        pytest.param(("new",), False, id="new-root-key-only"),
        pytest.param(("old",), False, id="old-root-key-only"),
        pytest.param(("old", "new"), True, id="old-and-new-root-keys"),
    ],
)
def test_a_new_root_must_be_signed_by_the_old_root_key_and_the_new(
    workspace: Path, tmp_path: Path, signed_by: tuple[str, ...], accepted: bool
) -> None:
    """Someone who holds only a new key cannot take over devices by publishing a root."""
    ctx = open_context(workspace)
    upload_target(ctx, FIRMWARE)
    root_v1 = initial_root(workspace)
    new_key = nacl.signing.SigningKey.generate()
    signers = {
        "new": keyfile.FileSigner(new_key, keyfile.public_key(new_key.verify_key.encode().hex())),
        "old": ctx.signers.get("root-1"),
    }
    forged = Metadata[Root].from_bytes(to_bytes(ctx.repository().root))
    forged.signed.version = 2
    forged.signed.revoke_key(forged.signed.roles["root"].keyids[0], "root")
    forged.signed.add_key(signers["new"].public_key, "root")
    forged.signatures.clear()
    for who in signed_by:
        forged.sign(signers[who], append=True)
    ctx.store.put(layout.metadata_key("root", 2), to_bytes(forged))
    ctx.store.put(layout.metadata_key("root", None), to_bytes(forged))

    with served(ctx.store) as url:
        if accepted:
            assert _download(root_v1, url, tmp_path / "device") == FIRMWARE
            assert trusted_version(tmp_path / "device", "root") == 2
        else:
            with pytest.raises(tuf_exc.UnsignedMetadataError):
                _refresh(root_v1, url, tmp_path / "device")
            assert trusted_version(tmp_path / "device", "root") == 1
