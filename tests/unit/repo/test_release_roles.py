"""One delegated role per release (decision 1203), proved against python-tuf's ngclient.

The repository here is made with python-tuf's Metadata API in the layout that decision 1203 designs
(``targets`` -> ``releases`` (the approval rule) and ``release-index`` (CI key) -> one terminating role per
release), in a memory store, and read by a real ngclient through otactl's ``StoreFetcher``. Keys are
in-memory ed25519 signers: no Argon2id per test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner, Signature, Signer
from tuf.api.exceptions import RepositoryError, UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.ngclient import Updater

from otactl.errors import VerificationError
from otactl.repo import layout, release_roles
from otactl.repo.client import StoreFetcher, make_updater
from otactl.repo.release_roles import ReleaseRole
from otactl.repo.repository import to_bytes
from otactl.store.memory import MemoryStore

EXPIRES = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
MODEL = "t9-engine"


class CountingFetcher(StoreFetcher):
    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.urls: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.urls.append(url.removeprefix(self.PREFIX))
        return super()._fetch(url)


class Repo:
    """A repository in decision 1203's layout (``legacy``: only the old single ``releases`` role)."""

    def __init__(self, legacy: bool = False) -> None:
        self.store = MemoryStore()
        self.keys: dict[str, Signer] = {n: CryptoSigner.generate_ed25519() for n in
                                        ("root", "targets", "online", "ci", "alice", "mallory")}
        root = Root(expires=EXPIRES, consistent_snapshot=True)
        for role, name in (("root", "root"), ("targets", "targets"), ("snapshot", "online"),
                           ("timestamp", "online")):
            root.add_key(self.keys[name].public_key, role)
        self.root = Metadata(root)
        self.roles: dict[str, Metadata[Targets]] = {}
        self.targets = Metadata(Targets(expires=EXPIRES))
        self.targets.signed.delegations = Delegations(keys={}, roles={})
        self._delegate(self.targets.signed, layout.DELEGATION_PATHS["releases"], "releases", ("ci", "alice"), 2,
                       terminating=False)
        self.roles["releases"] = Metadata(Targets(expires=EXPIRES))
        if not legacy:
            self.migrate()
        self.snapshot = Metadata(Snapshot(expires=EXPIRES, meta={}))
        self.timestamp = Metadata(Timestamp(expires=EXPIRES))
        self.snapshot.signed.version = self.timestamp.signed.version = 0
        self.root.sign(self.keys["root"])
        self.store.put(layout.metadata_key("root", 1), to_bytes(self.root))
        self.publish("targets", "releases", *(["release-index"] if not legacy else []))

    def _delegate(self, signed: Targets, paths: list[str] | tuple[str, ...], name: str, keys: tuple[str, ...],
                  threshold: int, terminating: bool) -> None:
        assert signed.delegations is not None and signed.delegations.roles is not None
        signed.delegations.roles[name] = DelegatedRole(name, [], threshold, terminating, list(paths))
        for k in keys:
            signed.add_key(self.keys[k].public_key, name)

    def migrate(self) -> None:
        """What the offline targets key signs once: the index delegation (decision 1203)."""
        self._delegate(self.targets.signed, release_roles.INDEX_PATHS, release_roles.INDEX, ("ci",), 1,
                       terminating=False)
        index = Targets(expires=EXPIRES)
        index.delegations = Delegations(keys={}, roles={})
        self.roles[release_roles.INDEX] = Metadata(index)

    def sign(self, md: Metadata[Any], *names: str) -> None:
        md.signatures.clear()
        for n in names:
            md.sign(self.keys[n], append=True)

    def publish(self, *changed: str) -> None:
        """Sign the changed roles with their keys (releases' own roles come signed), then snapshot and timestamp."""
        for name in changed:
            again = f"{name}.json" in self.snapshot.signed.meta
            if name == "targets":
                self.targets.signed.version += again
                self.sign(self.targets, "targets")
                data = to_bytes(self.targets)
                version = self.targets.signed.version
            else:
                md = self.roles[name]
                if name in ("releases", release_roles.INDEX):
                    md.signed.version += again
                    self.sign(md, *(("ci", "alice") if name == "releases" else ("ci",)))
                data, version = to_bytes(md), md.signed.version
            self.store.put(layout.metadata_key(name, version), data)
            self.snapshot.signed.meta[f"{name}.json"] = MetaFile(version, len(data),
                                                               {"sha256": hashlib.sha256(data).hexdigest()})
        self.snapshot.signed.version += 1
        self.sign(self.snapshot, "online")
        snap = to_bytes(self.snapshot)
        self.store.put(layout.metadata_key("snapshot", self.snapshot.signed.version), snap)
        self.timestamp.signed.snapshot_meta = MetaFile(self.snapshot.signed.version)
        self.timestamp.signed.version += 1
        self.sign(self.timestamp, "online")
        self.store.put(layout.metadata_key("timestamp", None), to_bytes(self.timestamp))

    def add_file(self, role: Targets, path: str, data: bytes) -> None:
        tf = TargetFile.from_data(path, data, ["sha256"])
        role.targets[path] = tf
        self.store.put(layout.target_key(path, tf.hashes["sha256"]), data)

    # ------------------------------------------------------------------ the release flow
    def build(self, version: str) -> Metadata[Targets]:
        """CI stages the release's own role: version 1, its targets only, the CI signature."""
        md = Metadata(Targets(version=1, expires=EXPIRES))
        self.add_file(md.signed, layout.firmware_path(MODEL, version, "fw.bin"), f"image {version}".encode())
        self.add_file(md.signed, layout.release_path(MODEL, version), f'{{"version": "{version}"}}'.encode())
        md.sign(self.keys["ci"])
        return md

    def approve(self, md: Metadata[Targets], manager: str = "alice") -> None:
        md.sign(self.keys[manager], append=True)

    def list_in_index(self, release: ReleaseRole, md: Metadata[Targets],
                      delegation: DelegatedRole | None = None, keys: dict[str, Signer] | None = None) -> None:
        """Publication: the release's role as signed, and its delegation in the index (signed by CI)."""
        assert self.targets.signed.delegations is not None and self.targets.signed.delegations.roles is not None
        anchor = self.targets.signed.delegations.roles["releases"]
        index = self.roles[release_roles.INDEX].signed
        assert index.delegations is not None and index.delegations.roles is not None
        index.delegations.roles[release.name] = delegation or release.delegation(anchor)
        for keyid in index.delegations.roles[release.name].keyids:
            index.delegations.keys[keyid] = (keys or {}).get(keyid) or self.targets.signed.delegations.keys[keyid]
        self.roles[release.name] = md
        self.publish(release_roles.INDEX, release.name)

    def device(self, tmp: Path, name: str = "device") -> tuple[Updater, CountingFetcher]:
        """otactl's device client (``make_updater``: ngclient plus the index check)."""
        fetcher = CountingFetcher(self.store)
        updater = make_updater(self.store.get(layout.metadata_key("root", 1)), StoreFetcher.PREFIX, tmp / name, fetcher)
        updater.refresh()
        return updater, fetcher

    def plain_ngclient(self, tmp: Path, name: str = "plain") -> Updater:
        """python-tuf's ngclient alone, as any conformant TUF client would read the repository."""
        (tmp / name / "metadata").mkdir(parents=True)
        updater = Updater(str(tmp / name / "metadata"), f"{StoreFetcher.PREFIX}metadata/", str(tmp / name),
                          f"{StoreFetcher.PREFIX}targets/", StoreFetcher(self.store),
                          bootstrap=self.store.get(layout.metadata_key("root", 1)))
        updater.refresh()
        return updater


def _check(tmp: Path, name: str = "device") -> list[ReleaseRole]:
    """The device's check of the index that its ngclient verified and kept."""
    return release_roles.check_trusted(tmp / name / "metadata")


def _descriptor(version: str) -> str:
    return layout.release_path(MODEL, version)


def test_three_releases_staged_at_once_are_approved_and_published_in_any_order_without_rebuilding(
        tmp_path: Path) -> None:
    repo = Repo()
    staged = {v: repo.build(v) for v in ("2.1.0", "2.1.1", "2.2.0")}
    built = {v: to_bytes(md) for v, md in staged.items()}
    repo.approve(staged["2.2.0"])
    repo.approve(staged["2.1.0"])
    repo.list_in_index(ReleaseRole(MODEL, "2.2.0"), staged["2.2.0"])
    repo.list_in_index(ReleaseRole(MODEL, "2.1.0"), staged["2.1.0"])  # after 2.2.0: nothing went stale

    for version in ("2.1.0", "2.2.0"):  # published as approved: the CI signature of the build, still valid
        published = repo.store.get(layout.metadata_key(ReleaseRole(MODEL, version).name, 1))
        assert Metadata.from_bytes(published).signed == Metadata.from_bytes(built[version]).signed
    updater, _ = repo.device(tmp_path)
    for version in ("2.1.0", "2.2.0"):
        info = updater.get_targetinfo(layout.firmware_path(MODEL, version, "fw.bin"))
        assert info is not None
        assert Path(updater.download_target(info, str(tmp_path / "fw.bin"))).read_bytes() == f"image {version}".encode()
    assert updater.get_targetinfo(_descriptor("2.1.1")) is None  # staged: not visible to devices
    visible = _check(tmp_path)
    assert [r.version for r in visible] == ["2.2.0", "2.1.0"]


def test_a_device_fetches_only_the_roles_on_its_path(tmp_path: Path) -> None:
    repo = Repo()
    for model, versions in ((MODEL, ("2.0.0", "2.1.0", "2.2.0")), ("thermo", tuple(f"1.{i}.0" for i in range(20)))):
        for version in versions:
            md = Metadata(Targets(version=1, expires=EXPIRES))
            repo.add_file(md.signed, layout.release_path(model, version), version.encode())
            md.sign(repo.keys["ci"])
            repo.approve(md)
            repo.list_in_index(ReleaseRole(model, version), md)
    updater, fetcher = repo.device(tmp_path)
    assert updater.get_targetinfo(_descriptor("2.1.0")) is not None
    roles = sorted(u.split("/")[-1] for u in fetcher.urls)
    # 2.root.json is ngclient's probe for a newer root (absent); releases: listed before the index
    assert roles == sorted(["2.root.json", "timestamp.json", f"{repo.snapshot.signed.version}.snapshot.json",
                            "1.targets.json", "1.releases.json",
                            f"{repo.roles[release_roles.INDEX].signed.version}.release-index.json",
                            f"1.release-{MODEL}-2.1.0.json"])
    assert len(repo.snapshot.signed.meta) == 3 + 23  # targets, releases, index + one entry per release


@pytest.mark.parametrize("attack", ["approval-keys", "threshold-lowered", "own-key-under-the-manager-keyid",
                                    "own-keys", "target-in-the-index"])
def test_an_online_key_alone_cannot_make_an_unapproved_release_installable(tmp_path: Path, attack: str) -> None:
    """The attacker holds every online key (snapshot, timestamp and the CI key that signs the index), not
    a release manager's: 2.1.1 is staged with the CI signature only."""
    repo = Repo()
    staged = repo.build("2.1.1")
    release = ReleaseRole(MODEL, "2.1.1")
    assert repo.targets.signed.delegations is not None and repo.targets.signed.delegations.roles is not None
    anchor = repo.targets.signed.delegations.roles["releases"]
    alice_id, mallory = repo.keys["alice"].public_key.keyid, repo.keys["mallory"]
    delegation, keys = release.delegation(anchor), None
    if attack == "threshold-lowered":
        delegation.threshold = 1
    elif attack == "own-key-under-the-manager-keyid":
        keys = {alice_id: mallory.public_key}
        forged = staged.sign(mallory, append=True)
        del staged.signatures[forged.keyid]
        staged.signatures[alice_id] = Signature(alice_id, forged.signature)
    elif attack == "own-keys":
        delegation = DelegatedRole(release.name, [mallory.public_key.keyid], 1, True, release.paths)
        keys = {mallory.public_key.keyid: mallory.public_key}
        repo.sign(staged, "mallory")
    if attack == "target-in-the-index":
        repo.add_file(repo.roles[release_roles.INDEX].signed, _descriptor("2.1.1"), b"forged")
        repo.publish(release_roles.INDEX)
    else:
        repo.list_in_index(release, staged, delegation, keys)
    plain = repo.plain_ngclient(tmp_path)
    updater, _ = repo.device(tmp_path)
    if attack == "approval-keys":  # ngclient enforces the threshold of the keys the index names
        with pytest.raises(UnsignedMetadataError):
            plain.get_targetinfo(_descriptor("2.1.1"))
        with pytest.raises(UnsignedMetadataError):
            updater.get_targetinfo(_descriptor("2.1.1"))
        return
    # ngclient itself accepts the others: it trusts the delegator's choice of keys and threshold
    assert plain.get_targetinfo(_descriptor("2.1.1")) is not None
    # otactl's device client does not: the check runs after the lookup, before anything is used
    with pytest.raises(release_roles.UnapprovedReleaseError):
        updater.get_targetinfo(_descriptor("2.1.1"))
    with pytest.raises(VerificationError):
        _check(tmp_path)


def test_an_old_layout_repository_keeps_working_for_devices_provisioned_before(tmp_path: Path) -> None:
    repo = Repo(legacy=True)
    repo.add_file(repo.roles["releases"].signed, _descriptor("2.0.0"), b"2.0.0")
    repo.publish("releases")
    updater, _ = repo.device(tmp_path, "old-device")
    assert updater.get_targetinfo(_descriptor("2.0.0")) is not None

    repo.migrate()  # the offline targets key adds the index once; nothing else changes
    repo.publish("targets", release_roles.INDEX)
    staged = repo.build("2.1.0")
    repo.approve(staged)
    repo.list_in_index(ReleaseRole(MODEL, "2.1.0"), staged)

    updater, _ = repo.device(tmp_path, "old-device")  # same trusted metadata directory, refreshed
    assert updater.get_targetinfo(_descriptor("2.0.0")) is not None
    assert updater.get_targetinfo(_descriptor("2.1.0")) is not None
    assert _check(tmp_path, "old-device") == [ReleaseRole(MODEL, "2.1.0")]


@pytest.mark.parametrize(("paths", "name"), [
    pytest.param(["firmware/*/*/*", "config/t9-engine/2.1.1/*", "releases/t9-engine/2.1.1.json"],
                 "release-t9-engine-2.1.1", id="wider-paths"),
    pytest.param(ReleaseRole(MODEL, "2.1.1").paths, "release-t9-engine-2.2.0", id="name-of-another-release"),
    pytest.param(["releases/t9-engine/*"], "release-t9-engine-2.1.1", id="not-one-release"),
])
def test_a_delegation_that_is_not_exactly_one_release_is_refused(paths: list[str], name: str) -> None:
    with pytest.raises(VerificationError):
        release_roles.release_of(DelegatedRole(name, [], 1, True, paths))


def test_a_pruned_release_keeps_a_version_only_snapshot_entry_until_the_snapshot_key_rotates(
        tmp_path: Path) -> None:
    """ngclient refuses a snapshot that drops an entry it saw (rollback protection), so pruning a release
    leaves ~40 bytes (a version-only entry, the metadata file deleted); rotating the snapshot key, which
    makes devices drop their trusted snapshot, lets the entries go (decision 1203)."""
    repo = Repo()
    for version in ("2.0.0", "2.1.0"):
        staged = repo.build(version)
        repo.approve(staged)
        repo.list_in_index(ReleaseRole(MODEL, version), staged)
    pruned = ReleaseRole(MODEL, "2.0.0")
    repo.device(tmp_path)
    index = repo.roles[release_roles.INDEX].signed
    assert index.delegations is not None and index.delegations.roles is not None
    del index.delegations.roles[pruned.name]
    entry = f"{pruned.name}.json"
    del repo.snapshot.signed.meta[entry]
    repo.publish(release_roles.INDEX)
    with pytest.raises(RepositoryError, match="missing info"):
        repo.device(tmp_path)

    repo.snapshot.signed.meta[entry] = MetaFile(1)  # version only; the role's file may go
    repo.store.delete(layout.metadata_key(pruned.name, 1))
    repo.publish()
    updater, _ = repo.device(tmp_path)
    assert updater.get_targetinfo(_descriptor("2.0.0")) is None
    assert updater.get_targetinfo(_descriptor("2.1.0")) is not None

    old_online = repo.keys["online"].public_key.keyid
    repo.keys["online"] = CryptoSigner.generate_ed25519()
    for role in ("snapshot", "timestamp"):
        repo.root.signed.revoke_key(old_online, role)
        repo.root.signed.add_key(repo.keys["online"].public_key, role)
    repo.root.signed.version += 1
    repo.sign(repo.root, "root")
    repo.store.put(layout.metadata_key("root", 2), to_bytes(repo.root))
    del repo.snapshot.signed.meta[entry]
    repo.publish()
    updater, _ = repo.device(tmp_path)
    assert updater.get_targetinfo(_descriptor("2.1.0")) is not None
    assert entry not in _trusted_snapshot(tmp_path).meta


def _trusted_snapshot(tmp: Path) -> Snapshot:
    signed: Snapshot = Metadata.from_bytes((tmp / "device" / "metadata" / "snapshot.json").read_bytes()).signed
    return signed
