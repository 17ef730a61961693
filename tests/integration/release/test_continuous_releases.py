"""Continuous releases (issue 12, decision 1203): several releases of one model built, staged and
approved at once, published in any order without rebuilding; a repository made before moves to the
new layout without any device losing trust; an index signed by CI's key alone cannot make an
unapproved release installable on a device.

Everything through the real CLI; devices are python-tuf's ngclient (otactl's agent where it installs)
over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from fixtures.online_attacker import attacker_repository, online_keys
from fixtures.repo import PASSPHRASE, assert_one_error_line, ok
from release_cli_parts import MANIFESTS, MODEL, copy_manifest, device, otactl, otactl_json, root_v1, served, ship
from tuf.api.metadata import DelegatedRole, Metadata

from otactl.agent.agent import Agent
from otactl.agent.state import DeviceState, Identity
from otactl.app.context import Context, utcnow
from otactl.app.fleet import import_devices
from otactl.app.init import init_workspace
from otactl.app.policy import publish_policy
from otactl.app.release import staged_key
from otactl.fleet.records import DeviceRecord
from otactl.repo import layout, release_roles
from otactl.repo.release_roles import ReleaseRole

pytestmark = pytest.mark.integration

DEVICE = "t9-cont-0001"


def _releases(ws: Path) -> dict[str, dict[str, Any]]:
    return {r["version"]: r for r in otactl_json(ws, "release", "list")["releases"]}


def test_three_releases_staged_at_once_publish_in_any_order_without_rebuilding(published_ws: Path,
                                                                              tmp_path: Path) -> None:
    ws = published_ws
    hotfix = copy_manifest(tmp_path, "t9-engine-2.0.0.yaml", **{"version: 2.0.0": "version: 2.0.1"})
    for manifest in (hotfix, MANIFESTS / "t9-engine-2.1.0.yaml", MANIFESTS / "t9-engine-2.2.0.yaml"):
        ok(otactl(ws, "release", "build", str(manifest)))  # CI builds every merge
    staged = {v: (ws / "repository" / staged_key(MODEL, v)).read_bytes() for v in ("2.0.1", "2.1.0", "2.2.0")}
    listed = _releases(ws)
    for version in staged:
        assert (listed[version]["status"], listed[version]["signed_by"], listed[version]["needed"]) == \
            ("staged", ["ci"], 1), listed[version]

    ok(otactl(ws, "release", "approve", "2.2.0", "--key", "release-manager"))  # managers approve some,
    ok(otactl(ws, "release", "approve", "2.0.1", "--key", "release-manager"))  # in their own order
    listed = _releases(ws)
    assert {v: listed[v]["status"] for v in staged} == {"2.0.1": "approved", "2.1.0": "staged", "2.2.0": "approved"}
    assert listed["2.2.0"]["signed_by"] == ["ci", "release-manager"]

    ok(otactl(ws, "release", "publish", "2.2.0"))
    ok(otactl(ws, "release", "publish", "2.0.1"))  # staged before 2.2.0 was published: still good
    refused = otactl(ws, "release", "publish", "2.1.0")
    assert refused.returncode == 1
    assert_one_error_line(refused, "t9-engine/2.1.0", "1 of 2 signatures")
    ok(otactl(ws, "release", "approve", "2.1.0", "--key", "release-manager"))
    ok(otactl(ws, "release", "publish", "2.1.0"))
    assert {v: r["status"] for v, r in _releases(ws).items()} == {v: "published" for v in ("2.0.0", *staged)}

    repo = Context.open(ws).repository()
    for version in staged:  # each published as its own role, from the bytes CI built (signatures added)
        role = repo.role(ReleaseRole(MODEL, version).name)
        assert role.signed.version == 1
        assert role.signed == Metadata.from_bytes(staged[version]).signed
    assert repo.role(release_roles.ANCHOR).signed.version == 1  # the approval rule itself never changed

    with served(ws) as url, device(root_v1(ws), url, tmp_path / "device") as (updater, _):
        updater.refresh()
        for version in ("2.0.0", *staged):
            info = updater.get_targetinfo(layout.release_path(MODEL, version))
            assert info is not None, version
            doc = json.loads(Path(updater.download_target(info, str(tmp_path / f"{version}.json"))).read_bytes())
            assert doc["version"] == version
    ok(otactl(ws, "repo", "verify"))


def _legacy_workspace(path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace as otactl made it before decision 1203: one ``releases`` role, no index."""
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    init_workspace(path, store_url=None, endpoint_url=None, release_managers=["release-manager"], approvals=1,
                   bin_bit_length=2, now=utcnow(), shared_passphrase=True, release_index=False)
    return path


def _policy(ws: Path, release: str) -> None:
    publish_policy(Context.open(ws), {
        "model": MODEL, "rollout_id": f"cont-{release}", "salt": "cont", "baseline": release,
        "rings": [{"name": "all", "selector": {"percent": 100}, "release": release}]})


def _poll(device_dir: Path, url: str) -> Any:
    agent = Agent(device_dir, url, None)
    try:
        return agent.check_and_update(utcnow())
    finally:
        agent.close()


def test_a_repository_made_before_moves_to_per_release_roles_without_any_device_losing_trust(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = _legacy_workspace(tmp_path / "ws", monkeypatch)
    ship(ws, MANIFESTS / "t9-engine-2.0.0.yaml")
    key = nacl.signing.SigningKey(hashlib.sha256(DEVICE.encode()).digest())
    import_devices(Context.open(ws), [DeviceRecord(DEVICE, MODEL, "revB", "hp-400", "eu", (),
                                                   bytes(key.verify_key).hex())], "factory")
    _policy(ws, "2.0.0")
    device_dir = tmp_path / "device"
    DeviceState.provision(device_dir, Identity(DEVICE, MODEL, "revB"), root_v1(ws), key)
    with served(ws) as url:
        first = _poll(device_dir, url)  # provisioned before the move: installs 2.0.0 from `releases`
    assert (first.outcome, first.active) == ("committed", "2.0.0"), first.detail
    repo = Context.open(ws).repository()
    assert not repo.has_index() and "2.0.0" in repo.published_releases(MODEL)

    moved = otactl_json(ws, "repo", "migrate-releases")
    assert moved["migrated"] is True and moved["releases_before"] == 1
    again = otactl_json(ws, "repo", "migrate-releases")
    assert again["migrated"] is False  # safe to run again
    trust = (ws / "signing" / "trust.yaml").read_text()
    assert "release-index" in trust

    ok(otactl(ws, "release", "build", str(MANIFESTS / "t9-engine-2.1.0.yaml")))
    ok(otactl(ws, "release", "build", str(MANIFESTS / "t9-engine-2.2.0.yaml")))
    for version in ("2.2.0", "2.1.0"):
        ok(otactl(ws, "release", "approve", version, "--key", "release-manager"))
        ok(otactl(ws, "release", "publish", version))
    repo = Context.open(ws).repository()
    assert repo.published_releases(MODEL) == {"2.0.0": "releases", "2.1.0": "release-t9-engine-2.1.0",
                                              "2.2.0": "release-t9-engine-2.2.0"}
    _policy(ws, "2.1.0")
    with served(ws) as url:
        second = _poll(device_dir, url)  # the same device, its ngclient cache from before the move
        with device(root_v1(ws), url, tmp_path / "old-client") as (updater, _):
            updater.refresh()  # a client that trusted only the old layout finds every release
            assert all(updater.get_targetinfo(layout.release_path(MODEL, v)) for v in ("2.0.0", "2.1.0", "2.2.0"))
    assert (second.outcome, second.active) == ("committed", "2.1.0"), second.detail
    ok(otactl(ws, "repo", "verify"))


def test_an_index_signed_by_ci_alone_cannot_make_an_unapproved_release_installable(
        published_ws: Path, tmp_path: Path) -> None:
    """The attacker holds the CI key (it signs the index) and every online key, no release manager's:
    2.1.0 is staged with the CI signature only. Listing it with the approval rule's threshold is refused
    by ngclient; with a threshold of 1 ngclient accepts it, and otactl's device client refuses it."""
    ws = published_ws
    key = nacl.signing.SigningKey(hashlib.sha256(DEVICE.encode()).digest())
    import_devices(Context.open(ws), [DeviceRecord(DEVICE, MODEL, "revB", "hp-400", "eu", (),
                                                   bytes(key.verify_key).hex())], "factory")
    _policy(ws, "2.0.0")
    device_dir = tmp_path / "device"
    DeviceState.provision(device_dir, Identity(DEVICE, MODEL, "revB"), root_v1(ws), key)
    with served(ws) as url:
        assert _poll(device_dir, url).active == "2.0.0"
    ok(otactl(ws, "release", "build", str(MANIFESTS / "t9-engine-2.1.0.yaml")))
    ctx = Context.open(ws)
    assert "ci" in online_keys(ctx)  # the index's key counts as online here
    staged: Metadata[Any] = Metadata.from_bytes(ctx.store.get(staged_key(MODEL, "2.1.0")))
    repo = attacker_repository(ctx)
    release = ReleaseRole(MODEL, "2.1.0")
    repo.put_signed(release.name, staged)
    index = repo.edit(release_roles.INDEX)
    targets = repo.role("targets").signed
    assert targets.delegations is not None and targets.delegations.roles is not None
    anchor = targets.delegations.roles[release_roles.ANCHOR]
    assert index.delegations is not None and index.delegations.roles is not None
    for keyid in anchor.keyids:
        index.delegations.keys[keyid] = targets.delegations.keys[keyid]
    index.delegations.roles[release.name] = DelegatedRole(release.name, list(anchor.keyids), 1, True, release.paths)
    written = repo.publish()  # with threshold 1, CI's build signature is enough for the publication
    assert not [k for k in written if "targets.json" in k or "root.json" in k], written
    _policy(ws, "2.1.0")
    with served(ws) as url:
        result = _poll(device_dir, url)
    assert (result.outcome, result.active) == ("error", "2.0.0"), result
    assert "needs 1 signatures, the approval rule 2" in result.detail


def test_rotating_the_ci_key_keeps_every_published_release_verifying(published_ws: Path, tmp_path: Path) -> None:
    """The approval rule's CI key changes: the index follows it, and the new CI key signs the published
    releases' unchanged bytes (version 1 still), so devices old and new keep finding them."""
    ws = published_ws
    ship(ws, MANIFESTS / "t9-engine-2.1.0.yaml")
    with served(ws) as url, device(root_v1(ws), url, tmp_path / "before") as (updater, _):
        updater.refresh()
        assert updater.get_targetinfo(layout.release_path(MODEL, "2.1.0")) is not None
    ok(otactl(ws, "keys", "rotate", "releases", "--key", "ci"))
    repo = Context.open(ws).repository()
    targets = repo.role("targets").signed
    assert targets.delegations is not None and targets.delegations.roles is not None
    anchor = targets.delegations.roles[release_roles.ANCHOR]
    for version in ("2.0.0", "2.1.0"):
        role = repo.role(ReleaseRole(MODEL, version).name)
        assert role.signed.version == 1 and set(anchor.keyids) <= set(role.signatures)
    with served(ws) as url:
        for client in ("before", "new"):  # the client that trusted the old rule, and a new one
            with device(root_v1(ws), url, tmp_path / client) as (updater, _):
                updater.refresh()
                for version in ("2.0.0", "2.1.0"):
                    assert updater.get_targetinfo(layout.release_path(MODEL, version)) is not None, (client, version)
    ok(otactl(ws, "repo", "verify"))
