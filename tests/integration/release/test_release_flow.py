"""The whole job through the real CLI, and devices that are real TUF clients over HTTP on 127.0.0.1.

CI build → review (JSON) → approve → publish; then python-tuf's ngclient (otactl's HttpxFetcher)
resolves device record → release descriptor → its variant's config and its revision's firmware.
A release carrying only the CI signature is refused by otactl and, if written into a served
repository by someone holding the online key, by the client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.repo import ok, role_versions
from release_cli_parts import (
    INVENTORY,
    MANIFESTS,
    MODEL,
    device,
    download,
    otactl,
    otactl_json,
    published_state,
    root_v1,
    served,
    ship,
)
from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, MetaFile
from tuf.ngclient import Updater

from otactl.app import release
from otactl.app.context import Context
from otactl.errors import VerificationError
from otactl.fleet.records import DeviceRecord
from otactl.repo import layout, release_roles
from otactl.repo.release_roles import ReleaseRole
from otactl.repo.repository import JOURNAL_KEY, to_bytes

pytestmark = pytest.mark.integration


def _params(manifest: str, variant: str) -> dict[str, Any]:
    return yaml.safe_load((MANIFESTS / manifest).read_text())["variants"][variant]  # type: ignore[no-any-return]


def _resolve(updater: Updater, device_id: str, version: str, dest: Path) -> tuple[dict, dict, bytes]:  # type: ignore[type-arg]
    """What the device agent does: its record, then the release descriptor, then what it names."""
    path = layout.device_path(device_id)
    record = DeviceRecord.from_bytes(download(updater, path, dest), path).to_json()  # its entitlement's fields (0406)
    descriptor = json.loads(download(updater, layout.release_path(record["model"], version), dest))
    config = json.loads(download(updater, descriptor["configs"][record["variant"]]["target"], dest))
    firmware = download(updater, descriptor["firmware"][record["hardware_revision"]]["target"], dest)
    return record, config, firmware


def test_ci_build_review_approve_publish_then_devices_fetch_their_own_variant(fresh_ws: Path, tmp_path: Path) -> None:
    ws = fresh_ws
    built = otactl_json(ws, "release", "build", str(MANIFESTS / f"{MODEL}-2.0.0.yaml"))
    assert (built["status"], built["signed_by"], built["missing"]) == ("staged", ["ci"], ["release-manager"])

    review = otactl_json(ws, "release", "review", "2.0.0")
    assert review["schema"] == "otactl/release-review/1"
    assert [t["path"] for t in review["targets"]] == [
        *(f"config/{MODEL}/2.0.0/{v}.json" for v in ("hp-300", "hp-400", "hp-500")),
        f"firmware/{MODEL}/2.0.0/t9-revA-2.0.0.bin", f"firmware/{MODEL}/2.0.0/t9-revB-2.0.0.bin",
        f"releases/{MODEL}/2.0.0.json"]
    assert review["variants"]["hp-400"] == _params(f"{MODEL}-2.0.0.yaml", "hp-400")
    assert review["variant_changes"] == {v: {"added": _params(f"{MODEL}-2.0.0.yaml", v)}
                                         for v in ("hp-300", "hp-400", "hp-500")}
    assert review["previous"] is None
    assert (review["missing"], review["threshold"]) == (["release-manager"], 2)

    before = published_state(ws)
    refused = otactl(ws, "release", "publish", "2.0.0")
    assert refused.returncode == 1 and "missing one or more of: release-manager" in refused.stderr
    assert published_state(ws) == before

    assert otactl_json(ws, "release", "approve", "2.0.0", "--key", "release-manager")["status"] == "approved"
    assert otactl_json(ws, "release", "publish", "2.0.0")["status"] == "published"
    ok(otactl(ws, "fleet", "import", str(INVENTORY)))

    with served(ws) as url:
        # t9-0001 is a revA engine sold as hp-400: it gets that config and that image, and nothing else
        with device(root_v1(ws), url, tmp_path / "t9-0001") as (updater, fetcher):
            updater.refresh()
            record, config, firmware = _resolve(updater, "t9-0001", "2.0.0", tmp_path / "dl")
        assert (record["variant"], record["hardware_revision"]) == ("hp-400", "revA")
        assert config == {"schema": "otactl/config/1", "model": MODEL, "version": "2.0.0", "variant": "hp-400",
                          "parameters": _params(f"{MODEL}-2.0.0.yaml", "hp-400")}
        assert firmware == (MANIFESTS / "images" / "t9-revA-2.0.0.bin").read_bytes()
        assert fetcher.target_names() == ["devices/t9-0001.json", f"releases/{MODEL}/2.0.0.json",
                                          f"config/{MODEL}/2.0.0/hp-400.json",
                                          f"firmware/{MODEL}/2.0.0/t9-revA-2.0.0.bin"]

        # the tier changes: only that device's bin, snapshot and timestamp are re-signed
        versions = role_versions(ws)
        ok(otactl(ws, "fleet", "set", "t9-0001", "--variant", "hp-500"))
        changed = {r for r, v in role_versions(ws).items() if versions[r] != v}
        bin_name = Context.open(ws).repository().bin_for(layout.device_path("t9-0001"))
        assert changed == {bin_name, "snapshot", "timestamp"}
        with device(root_v1(ws), url, tmp_path / "t9-0001") as (updater, fetcher):
            updater.refresh()
            record, config, _ = _resolve(updater, "t9-0001", "2.0.0", tmp_path / "dl2")
        assert config["variant"] == "hp-500" and config["parameters"] == _params(f"{MODEL}-2.0.0.yaml", "hp-500")
        assert f"metadata/{versions[bin_name] + 1}.{bin_name}.json" in " ".join(fetcher.urls)

        # the next release: review shows the change against the published one
        ok(otactl(ws, "release", "build", str(MANIFESTS / f"{MODEL}-2.1.0.yaml")))
        review = otactl_json(ws, "release", "review", "2.1.0")
        assert review["previous"] == "2.0.0"
        assert review["variant_changes"] == {"hp-500": {"changed": {"torque_limit_nm": {"from": 1900, "to": 1950}}}}
        ok(otactl(ws, "release", "approve", "2.1.0", "--key", "release-manager"))
        ok(otactl(ws, "release", "publish", "2.1.0"))
        with device(root_v1(ws), url, tmp_path / "t9-0001") as (updater, _):
            updater.refresh()
            _, config, firmware = _resolve(updater, "t9-0001", "2.1.0", tmp_path / "dl3")
        assert config["parameters"]["torque_limit_nm"] == 1950
        assert firmware == (MANIFESTS / "images" / "t9-revA-2.1.0.bin").read_bytes()


def test_config_only_release_points_at_the_earlier_image(published_ws: Path, tmp_path: Path) -> None:
    ws = published_ws
    ship(ws, MANIFESTS / f"{MODEL}-2.1.0.yaml")
    ok(otactl(ws, "release", "build", str(MANIFESTS / f"{MODEL}-2.1.1-config.yaml")))
    review = otactl_json(ws, "release", "review", "2.1.1")
    assert not [t for t in review["targets"] if t["path"].startswith("firmware/")]
    assert review["firmware"] == {"revA": f"firmware/{MODEL}/2.1.0/t9-revA-2.1.0.bin",
                                  "revB": f"firmware/{MODEL}/2.1.0/t9-revB-2.1.0.bin"}
    ok(otactl(ws, "release", "approve", "2.1.1", "--key", "release-manager"))
    ok(otactl(ws, "release", "publish", "2.1.1"))
    with served(ws) as url, device(root_v1(ws), url, tmp_path / "t9-0004") as (updater, _):
        updater.refresh()
        descriptor = json.loads(download(updater, layout.release_path(MODEL, "2.1.1"), tmp_path / "dl"))
        assert descriptor["firmware"]["revB"]["target"] == f"firmware/{MODEL}/2.1.0/t9-revB-2.1.0.bin"
        record, config, firmware = _resolve(updater, "t9-0004", "2.1.1", tmp_path / "dl")
    assert (record["variant"], record["hardware_revision"]) == ("hp-400", "revB")
    assert config["parameters"] == {"max_hp": 420, "torque_limit_nm": 1600, "boost_map": "standard"}
    assert firmware == (MANIFESTS / "images" / "t9-revB-2.1.0.bin").read_bytes()


def _hand_publish_release(ws: Path, role: Metadata) -> None:  # type: ignore[type-arg]
    """What someone holding the online and CI keys can do: list a release's role in the index (CI's key)
    with the approval rule's keys and threshold, and both in a new snapshot (online key)."""
    ctx = Context.open(ws)
    online, ci = ctx.signers.get("online"), ctx.signers.get("ci")
    store = ctx.store
    ts = Metadata.from_bytes(store.get(layout.metadata_key("timestamp", None)))
    snap = Metadata.from_bytes(store.get(layout.metadata_key("snapshot", ts.signed.snapshot_meta.version)))
    targets = ctx.repository().role("targets").signed
    assert targets.delegations is not None and targets.delegations.roles is not None
    anchor = targets.delegations.roles[release_roles.ANCHOR]
    index_meta = snap.signed.meta[f"{release_roles.INDEX}.json"]
    index = Metadata.from_bytes(store.get(layout.metadata_key(release_roles.INDEX, index_meta.version)))
    assert index.signed.delegations is not None and index.signed.delegations.roles is not None
    name = ReleaseRole(MODEL, "2.1.0")
    index.signed.delegations.roles[name.name] = name.delegation(anchor)
    for keyid in anchor.keyids:
        index.signed.delegations.keys[keyid] = targets.delegations.keys[keyid]
    index.signed.version += 1
    index.signatures.clear()
    index.sign(ci)
    for role_name, md in ((name.name, role), (release_roles.INDEX, index)):
        store.put(layout.metadata_key(role_name, md.signed.version), to_bytes(md))
        snap.signed.meta[f"{role_name}.json"] = MetaFile(md.signed.version)
    snap.signed.version += 1
    snap.signatures.clear()
    snap.sign(online)
    store.put(layout.metadata_key("snapshot", snap.signed.version), to_bytes(snap))
    ts.signed.snapshot_meta = MetaFile(snap.signed.version)
    ts.signed.version += 1
    ts.signatures.clear()
    ts.sign(online)
    store.put(layout.metadata_key("timestamp", None), to_bytes(ts))


def test_releases_with_only_the_ci_signature_are_refused_by_the_repository_and_by_clients(
    published_ws: Path, tmp_path: Path,
) -> None:
    ws = published_ws
    ok(otactl(ws, "release", "build", str(MANIFESTS / f"{MODEL}-2.1.0.yaml")))
    ctx = Context.open(ws)
    ref = release.ReleaseRef(MODEL, "2.1.0")
    ci_only = release._staged(ctx, ref)
    assert [ctx.trust.key_by_id(k).name for k in ci_only.signatures] == ["ci"]  # type: ignore[union-attr]

    # otactl's own Repository refuses to publish it, whoever calls it (bypassing `release publish`)
    before = published_state(ws)
    repo = ctx.repository()
    repo.add_release(ReleaseRole(MODEL, "2.1.0"), ci_only)
    with pytest.raises(VerificationError, match=r"role 'release-t9-engine-2\.1\.0': 1 of the 2 signatures needed; "
                                                r"missing: release-manager"):
        repo.publish()
    assert published_state(ws) == before
    assert not ctx.store.exists(JOURNAL_KEY)

    with served(ws) as url, device(root_v1(ws), url, tmp_path / "dev") as (updater, _):
        updater.refresh()
        assert updater.get_targetinfo(layout.release_path(MODEL, "2.0.0")) is not None

        # written straight into the served directory with a valid index, snapshot and timestamp: refused
        _hand_publish_release(ws, release._staged(ctx, ref))
    with served(ws) as url, device(root_v1(ws), url, tmp_path / "dev") as (updater, _):
        updater.refresh()  # timestamp and snapshot are validly signed by the online key
        with pytest.raises(tuf_exc.UnsignedMetadataError, match=r"release-t9-engine-2\.1\.0"):
            updater.get_targetinfo(layout.release_path(MODEL, "2.1.0"))

    # the control: the same bytes with the release manager's signature added are accepted
    approved = release._staged(ctx, ref)
    approved.sign(ctx.signers.get("release-manager"), append=True)
    _hand_publish_release(ws, approved)
    with served(ws) as url, device(root_v1(ws), url, tmp_path / "dev") as (updater, _):
        updater.refresh()
        assert updater.get_targetinfo(layout.release_path(MODEL, "2.1.0")) is not None
