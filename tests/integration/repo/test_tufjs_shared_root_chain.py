"""tuf-js with a root chain served apart from the other metadata (``tufjs_fetch(..., root_url=...)``).

A per-device layout (Uptane's director) keeps one small repository per device, timestamp, snapshot and
targets under ``director/devices/<id>/metadata/``, and one root chain for all of them under
``director/metadata/N.root.json``. tuf-js asks for ``<metadataBaseUrl><N>.root.json``; the script's
rewriting fetcher sends those requests to ``root_url``. Two such repositories are made here by hand with
python-tuf's Metadata API and served from one directory on 127.0.0.1; root v2 rotates the timestamp key,
so a client that did not find root v2 in the shared place cannot verify either device's timestamp.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fixtures.repo import served
from fixtures.tufjs import tufjs_fetch, tufjs_run
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from otactl.store.directory import DirectoryStore

pytestmark = pytest.mark.integration

TARGET = "firmware/m/1.0.0/fw.bin"
DEVICES = {"dev-a": b"firmware built for dev-a", "dev-b": b"firmware built for dev-b, another image"}


def _expires() -> datetime:
    return (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)


def _write(path: Path, md: Metadata, *signers: Signer) -> None:  # type: ignore[type-arg]
    for signer in signers:
        md.sign(signer, append=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(md.to_bytes(JSONSerializer(compact=False)))


def make_director(base: Path) -> Path:
    """``base/director``: the shared root chain (v1, and v2 rotating the timestamp key) and one repository
    per device in ``DEVICES`` listing its own ``TARGET``, its timestamp signed by root v2's key only."""
    keys = {name: CryptoSigner.generate_ed25519() for name in ("root", "snapshot", "targets", "ts-old", "ts-new")}
    director = base / "director"
    root = Root(expires=_expires(), consistent_snapshot=True)
    for role, key in (("root", "root"), ("snapshot", "snapshot"), ("targets", "targets"), ("timestamp", "ts-old")):
        root.add_key(keys[key].public_key, role)
    _write(director / "metadata" / "1.root.json", Metadata(root), keys["root"])
    root.version = 2
    root.revoke_key(keys["ts-old"].public_key.keyid, "timestamp")
    root.add_key(keys["ts-new"].public_key, "timestamp")
    _write(director / "metadata" / "2.root.json", Metadata(root), keys["root"])

    for device, data in DEVICES.items():
        repo = director / "devices" / device
        sha256 = hashlib.sha256(data).hexdigest()
        (repo / "targets" / "firmware" / "m" / "1.0.0").mkdir(parents=True)
        (repo / "targets" / "firmware" / "m" / "1.0.0" / f"{sha256}.fw.bin").write_bytes(data)
        targets = Targets(expires=_expires())
        targets.targets[TARGET] = TargetFile(len(data), {"sha256": sha256}, TARGET,
                                             {"custom": {"otactl": {"device": device}}})
        _write(repo / "metadata" / "1.targets.json", Metadata(targets), keys["targets"])
        snapshot = Snapshot(expires=_expires(), meta={"targets.json": MetaFile(1)})
        _write(repo / "metadata" / "1.snapshot.json", Metadata(snapshot), keys["snapshot"])
        timestamp = Timestamp(expires=_expires(), snapshot_meta=MetaFile(1))
        _write(repo / "metadata" / "timestamp.json", Metadata(timestamp), keys["ts-new"])
    return director


def test_tufjs_walks_the_shared_root_chain_for_each_device(tmp_path: Path) -> None:
    director = make_director(tmp_path / "www")
    anchor = director / "metadata" / "1.root.json"
    with served(DirectoryStore(tmp_path / "www")) as url:
        roots = f"{url}/director/metadata/"
        for device, data in DEVICES.items():
            base = f"{url}/director/devices/{device}"
            cache = tmp_path / "tufjs" / device
            result = tufjs_run(anchor, f"{base}/metadata/", f"{base}/targets/", cache, TARGET, root_url=roots)
            assert result.ok, result.error
            assert result.data == data and result.custom == {"otactl": {"device": device}}
            # root v2 came from the shared chain, and the search for v3 ended there with a 404
            assert result.root_requests == [f"{roots}2.root.json", f"{roots}3.root.json"]
            trusted = (cache / "metadata" / "root.json").read_bytes()
            assert trusted == (director / "metadata" / "2.root.json").read_bytes()
            # again from the cached state: the helper the per-device layout tests call
            assert tufjs_fetch(anchor, f"{base}/metadata/", f"{base}/targets/", cache, TARGET, root_url=roots) == data
            with pytest.raises(AssertionError, match="not found in the trusted metadata"):
                tufjs_fetch(anchor, f"{base}/metadata/", f"{base}/targets/", cache, "firmware/m/1.0.0/other.bin",
                            root_url=roots)


def test_without_the_shared_root_chain_tufjs_cannot_verify_the_rotated_timestamp(tmp_path: Path) -> None:
    """The rewrite is what makes the test above pass: asked under the device's own metadata, root v2 is not
    there (404: tuf-js keeps root v1), and root v1's timestamp key did not sign the timestamp."""
    director = make_director(tmp_path / "www")
    with served(DirectoryStore(tmp_path / "www")) as url:
        base = f"{url}/director/devices/dev-a"
        result = tufjs_run(director / "metadata" / "1.root.json", f"{base}/metadata/", f"{base}/targets/",
                           tmp_path / "tufjs", TARGET)
    assert not result.ok and result.data is None
    assert result.error == "UnsignedMetadataError: timestamp was signed by 0/1 keys", result.error
    assert result.root_requests == []
