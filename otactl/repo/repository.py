"""Create, load, edit and publish the TUF repository held in a blob store.

Publication is journaled: every new metadata file is first written, as one object, to
``staging/publish-journal.json`` (created only if absent: it is also the writers' lock), then copied
into place in the safe order — targets roles, snapshot, timestamp, then a new root (see
``sign_all``) — and the journal is removed. New metadata files have new versioned names, so until
``timestamp.json`` is replaced clients see the old repository; after, the new one. A crash leaves
the journal behind and ``otactl repo publish`` replays it (the same bytes: idempotent).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from securesystemslib.signer import Key
from tuf.api.exceptions import LengthOrHashMismatchError, UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

import otactl.keys.keyfile as keyfile
from otactl import progress
from otactl.errors import ConflictError, NotFoundError, StoreError, VerificationError
from otactl.repo import layout, release_roles
from otactl.repo.canonical import CANONICAL
from otactl.repo.signers import SignerPool
from otactl.store.base import BlobStore
from otactl.workspace import OPTIONAL_ROLES, RoleEntry, TrustConfig

JOURNAL_KEY = "staging/publish-journal.json"
_SERIALIZER = JSONSerializer(compact=True)


def to_bytes(md: Metadata[Any]) -> bytes:
    return md.to_bytes(_SERIALIZER)


def _hashed(role: str) -> bool:
    """Which metadata entries carry length and hashes beside the version (decision 0503): all but the
    device hash bins, whose hashes would cost every device ~100 bytes per bin on every publication."""
    return not role.startswith(f"{layout.BIN_PREFIX}-")


def meta_file(role: str, version: int, data: bytes) -> MetaFile:
    """The snapshot's (or for ``snapshot``, the timestamp's) entry for ``role`` published as ``data``."""
    if not _hashed(role):
        return MetaFile(version)
    return MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def _public(trust: TrustConfig, name: str) -> Key:
    return layout.name_key(keyfile.public_key(trust.key(name).public), name)


def _parse(store: BlobStore, key: str) -> Metadata[Any]:
    raw = store.get(key)
    try:
        return Metadata.from_bytes(raw)
    except DeserializationError as exc:
        raise VerificationError(f"{store.url}{key}: not valid TUF metadata ({exc})") from exc


class Repository:
    def __init__(self, store: BlobStore, trust: TrustConfig, signers: SignerPool, now: datetime):
        self.store = store
        self.trust = trust
        self.signers = signers
        self.now = now
        self.root: Metadata[Root]
        self.timestamp: Metadata[Timestamp]
        self.snapshot: Metadata[Snapshot]
        self._timestamp_etag: str | None = None
        self._roles: dict[str, Metadata[Targets]] = {}
        self._changed: list[str] = []  # targets-type roles to re-sign, in order
        self._presigned: set[str] = set()
        self._root_changed = False
        self._old_root: Metadata[Root] | None = None
        self._force_online = False
        self.deferred: dict[str, Metadata[Targets]] = {}  # made by create(defer=...), not published

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, store: BlobStore, trust: TrustConfig, signers: SignerPool, now: datetime) -> Repository:
        repo = cls(store, trust, signers, now)
        if store.exists(JOURNAL_KEY):
            raise StoreError(
                f"{store.url}: an unfinished publication is pending",
                hint="run `otactl repo publish` to complete it",
            )
        try:
            ts = store.get_versioned(layout.metadata_key("timestamp", None))
        except NotFoundError:
            raise StoreError(f"{store.url}: holds no otactl repository (no metadata/timestamp.json)",
                             hint="run `otactl init` to create one") from None
        try:
            repo.timestamp = Metadata.from_bytes(ts.data)
        except DeserializationError as exc:
            raise VerificationError(f"{store.url}metadata/timestamp.json: invalid ({exc})") from exc
        repo._timestamp_etag = ts.etag
        snap_version = repo.timestamp.signed.snapshot_meta.version
        repo.snapshot = _parse(store, layout.metadata_key("snapshot", snap_version))
        repo.root = _parse(store, layout.metadata_key("root", None))
        return repo

    def role(self, name: str) -> Metadata[Targets]:
        if name not in self._roles:
            meta = self.snapshot.signed.meta.get(f"{name}.json")
            if meta is None:
                raise NotFoundError(f"{self.store.url}: no role {name!r} in the repository")
            key = layout.metadata_key(name, meta.version)
            if release_roles.is_release_role(name):
                self._roles[name] = self._release_role(name, key, meta)
            else:
                self._roles[name] = _parse(self.store, key)
        return self._roles[name]

    def _release_role(self, name: str, key: str, meta: MetaFile) -> Metadata[Targets]:
        """A release's role, as a device would accept it: the bytes the snapshot pins, signed to the
        threshold the index delegates (which devices check against the approval rule, decision 1203)."""
        raw = self.store.get(key)
        try:
            meta.verify_length_and_hashes(raw)
        except LengthOrHashMismatchError as exc:
            raise VerificationError(f"{self.store.url}{key}: not the bytes the snapshot names ({exc})") from None
        try:
            md: Metadata[Targets] = Metadata.from_bytes(raw)
            self.role(release_roles.INDEX).verify_delegate(name, md, CANONICAL)
        except DeserializationError as exc:
            raise VerificationError(f"{self.store.url}{key}: not valid TUF metadata ({exc})") from exc
        except (UnsignedMetadataError, ValueError) as exc:
            raise VerificationError(f"{self.store.url}{key}: not signed as the release index delegates it "
                                    f"({exc})") from None
        return md

    # ------------------------------------------------------------------ releases (both layouts)
    def has_index(self) -> bool:
        """Per-release roles (decision 1203); False for a repository made before them (decision 0010)."""
        return release_roles.INDEX in self._roles or f"{release_roles.INDEX}.json" in self.snapshot.signed.meta

    def _index_roles(self) -> dict[str, DelegatedRole]:
        if not self.has_index():
            return {}
        delegations = self.role(release_roles.INDEX).signed.delegations
        return {} if delegations is None or delegations.roles is None else dict(delegations.roles)

    def published_releases(self, model: str) -> dict[str, str]:
        """Version -> the role that lists the release: ``releases`` for those published before the
        index, else the release's own role."""
        out: dict[str, str] = {}
        prefix = f"releases/{model}/"
        if "releases.json" in self.snapshot.signed.meta:
            for path in self.role("releases").signed.targets:
                if path.startswith(prefix) and path.endswith(".json") and path.count("/") == 2:
                    out[path.removeprefix(prefix).removesuffix(".json")] = "releases"
        for name, delegation in self._index_roles().items():
            release = release_roles.release_of(delegation)
            if release.model == model:
                out[release.version] = name
        return out

    def published_targets(self) -> Iterator[tuple[str, TargetFile]]:
        """Every target of every published release, in both layouts."""
        names = (["releases"] if "releases.json" in self.snapshot.signed.meta else []) + list(self._index_roles())
        for name in names:
            yield from self.role(name).signed.targets.items()

    def add_release(self, release: release_roles.ReleaseRole, md: Metadata[Targets]) -> None:
        """Install a release's role, signed by CI and its managers, and delegate it from the index with
        exactly the approval rule's keys and threshold (what devices check)."""
        targets = self.role("targets").signed
        assert targets.delegations is not None and targets.delegations.roles is not None
        anchor = targets.delegations.roles[release_roles.ANCHOR]
        self.put_signed(release.name, md)
        index = self.edit(release_roles.INDEX)
        if index.delegations is None:
            index.delegations = Delegations(keys={}, roles={})
        assert index.delegations.roles is not None
        for keyid in anchor.keyids:
            index.delegations.keys[keyid] = targets.delegations.keys[keyid]
        index.delegations.roles[release.name] = release.delegation(anchor)

    def _sync_index(self) -> None:
        """After the offline targets key changed the approval rule (a manager added, a key rotated, a
        threshold changed), every release the index delegates gets the new rule too: devices refuse an
        index whose delegations differ from it. A release's role keeps its signed bytes (version 1); the
        rule's keys held here that have not signed it sign those bytes now (CI's new key after a CI
        rotation). A release that would then no longer verify refuses the whole publication, naming it:
        its managers sign it again first, or nothing changes."""
        if "targets" not in self._changed or not self._index_roles():
            return
        targets = self.role("targets").signed
        assert targets.delegations is not None and targets.delegations.roles is not None
        anchor = targets.delegations.roles[release_roles.ANCHOR]
        keys = {k: targets.delegations.keys[k] for k in anchor.keyids}
        current = self.role(release_roles.INDEX).signed.delegations
        assert current is not None and current.roles is not None
        if current.keys == keys and all(sorted(r.keyids) == sorted(anchor.keyids) and r.threshold == anchor.threshold
                                        for r in current.roles.values()):
            return
        releases = {name: self.role(name) for name in current.roles}  # verified under the rule they had
        index = self.edit(release_roles.INDEX)
        assert index.delegations is not None and index.delegations.roles is not None
        index.delegations.keys = keys
        for name, role in list(index.delegations.roles.items()):
            index.delegations.roles[name] = DelegatedRole(name, list(anchor.keyids), anchor.threshold, True,
                                                          role.paths)
        names = {e.keyid: e.name for e in self.trust.keys.values()}
        lapsed = []
        for name, md in releases.items():
            added = False
            for keyid in anchor.keyids:
                key_name = names.get(keyid)
                if keyid not in md.signatures and key_name is not None and self.signers.has_private(key_name):
                    md.sign(self.signers.get(key_name), append=True, signed_serializer=CANONICAL)
                    added = True
            if added:
                self.put_signed(name, md)
            try:
                self.role(release_roles.INDEX).verify_delegate(name, md, CANONICAL)
            except UnsignedMetadataError:
                lapsed.append(name)
        if lapsed:
            rule = ", ".join(names.get(k, k[:12]) for k in anchor.keyids)
            raise VerificationError(
                f"the new approval rule ({anchor.threshold} of {rule}) would leave {len(lapsed)} published "
                f"release(s) without enough valid signatures: "
                f"{', '.join(sorted(lapsed)[:5])}{' ...' if len(lapsed) > 5 else ''}; nothing was published",
                hint="their release managers' keys must be here to sign them again under the new rule "
                     "(or keep the old key until they are)")

    def _trust_role(self, name: str) -> RoleEntry:
        return self.trust.role(release_roles.ANCHOR if release_roles.is_release_role(name) else name)

    def role_names(self) -> list[str]:
        return [m.removesuffix(".json") for m in self.snapshot.signed.meta]

    def bin_for(self, target_path: str) -> str:
        succinct = self.role("devices").signed.delegations
        assert succinct is not None and succinct.succinct_roles is not None
        return succinct.succinct_roles.get_role_for_target(target_path)

    def delegator(self, name: str) -> Metadata[Targets] | Metadata[Root]:
        if name in ("targets", "snapshot", "timestamp", "root"):
            return self.root
        if name.startswith(f"{layout.BIN_PREFIX}-"):
            return self.role("devices")
        if release_roles.is_release_role(name):
            return self.role(release_roles.INDEX)
        return self.role("targets")

    def find_target(self, path: str) -> tuple[str, TargetFile] | None:
        """The role that lists ``path`` and its entry, searched as a TUF client does: the top-level
        delegations in order, a terminating one ending the search, the index's releases within it."""
        if path.startswith("devices/"):
            name = self.bin_for(path)
            tf = self.role(name).signed.targets.get(path)
            return None if tf is None else (name, tf)
        delegations = self.role("targets").signed.delegations
        assert delegations is not None and delegations.roles is not None
        for name, role in delegations.roles.items():
            published = f"{name}.json" in self.snapshot.signed.meta or name in self._roles
            if not published or not role.is_delegated_path(path):
                continue
            if name == release_roles.INDEX:
                for release, delegation in self._index_roles().items():
                    if delegation.is_delegated_path(path):  # terminating: this release's role or nothing
                        tf = self.role(release).signed.targets.get(path)
                        return None if tf is None else (release, tf)
                continue
            tf = self.role(name).signed.targets.get(path)
            if tf is not None:
                return name, tf
            if role.terminating:
                return None
        return None

    # ------------------------------------------------------------------ creating
    @classmethod
    def create(cls, store: BlobStore, trust: TrustConfig, signers: SignerPool, now: datetime,
               consistent_snapshot: bool = True, defer: Iterable[str] = (), bins: bool = True) -> Repository:
        """A new repository; the roles in ``defer`` are made (version 1, in ``deferred``) but not
        published: their signers are elsewhere (``otactl.app.bootstrap``). ``bins=False``: no ``devices``
        role (the director layout keeps device records outside the repository, decision 0407)."""
        repo = cls(store, trust, signers, now)
        deferred = set(defer)
        root = Root(expires=repo._expiry("root"), consistent_snapshot=consistent_snapshot)
        for name in layout.TOP_LEVEL:
            r = trust.role(name)
            for k in r.keys:
                root.add_key(_public(trust, k), name)
            root.roles[name].threshold = r.threshold
        repo.root = Metadata(root)
        repo._root_changed = True
        repo.timestamp = Metadata(Timestamp(expires=repo._expiry("timestamp")))
        repo.snapshot = Metadata(Snapshot(expires=repo._expiry("snapshot")))
        repo.timestamp.signed.version = repo.snapshot.signed.version = 0  # bumped to 1 on publish

        targets = Targets(expires=repo._expiry("targets"))
        delegated: dict[str, DelegatedRole] = {}
        targets.delegations = Delegations(keys={}, roles=delegated)
        plain = [n for n in layout.DELEGATED if n != "devices" and n in trust.roles]  # withdrawals is optional
        for name in layout.DELEGATED:
            if (name not in trust.roles and name in OPTIONAL_ROLES) or (name == "devices" and not bins):
                continue
            r = trust.role(name)
            delegated[name] = DelegatedRole(name, [], r.threshold, name == "devices", layout.DELEGATION_PATHS[name])
            for k in r.keys:
                targets.add_key(_public(trust, k), name)
        repo._add_new("targets", targets)
        for name in plain:
            if name in deferred:
                repo.deferred[name] = Metadata(Targets(version=1, expires=repo._expiry(name)))
            else:
                repo._add_new(name, Targets(expires=repo._expiry(name)))
        if not bins:
            return repo
        devices = Targets(expires=repo._expiry("devices"))
        bins_role = trust.role("devices")
        succinct = SuccinctRoles([], bins_role.threshold, trust.bin_bit_length, layout.BIN_PREFIX)
        devices.delegations = Delegations(keys={}, succinct_roles=succinct)
        for k in bins_role.keys:
            devices.add_key(_public(trust, k))
        repo._add_new("devices", devices)
        for bin_name in succinct.get_roles():
            repo._add_new(bin_name, Targets(expires=repo._expiry("devices")))
        return repo

    def drop_delegation(self, name: str, roles: Iterable[str]) -> None:
        """Remove ``targets``' delegation to ``name`` (and keys only it used); ``roles`` (``name`` and the
        roles it delegated) leave the snapshot in the next publication."""
        targets = self.edit("targets")
        assert targets.delegations is not None and targets.delegations.roles is not None
        role = targets.delegations.roles.pop(name)
        used = {k for r in targets.delegations.roles.values() for k in r.keyids}
        for keyid in role.keyids:
            if keyid not in used:
                targets.delegations.keys.pop(keyid, None)
        for gone in roles:
            self.snapshot.signed.meta.pop(f"{gone}.json", None)
            self._roles.pop(gone, None)
            if gone in self._changed:
                self._changed.remove(gone)

    def add_role(self, name: str, signed: Targets) -> None:
        """A new delegated role (the caller writes its delegation), published as version 1."""
        self._add_new(name, signed)

    def _add_new(self, name: str, signed: Targets) -> None:
        signed.version = 0  # bumped to 1 on publish
        self._roles[name] = Metadata(signed)
        self._changed.append(name)

    def _expiry(self, name: str) -> datetime:
        return (self.now + timedelta(days=self.trust.role(name).expires_days)).replace(microsecond=0)

    # ------------------------------------------------------------------ editing
    def edit(self, name: str) -> Targets:
        md = self.role(name)
        if name not in self._changed:
            self._changed.append(name)
        return md.signed

    def put_signed(self, name: str, md: Metadata[Targets]) -> None:
        """Install metadata that was signed elsewhere (a release approved by its signers)."""
        self._roles[name] = md
        if name not in self._changed:
            self._changed.append(name)
        self._presigned.add(name)

    def edit_root(self) -> Root:
        if not self._root_changed:
            self._old_root = Metadata.from_bytes(to_bytes(self.root))
            self._root_changed = True
        return self.root.signed

    def force_online_resign(self) -> None:
        self._force_online = True

    def add_target(self, role: str, path: str, length: int, sha256: str, custom: dict[str, Any]) -> TargetFile:
        tf = TargetFile(length, {"sha256": sha256}, path)
        layout.set_custom(tf, custom)
        self.edit(role).targets[path] = tf
        return tf

    # ------------------------------------------------------------------ signing
    def _sign(self, name: str, md: Metadata[Any], key_names: Iterable[str]) -> None:
        md.signatures.clear()
        for k in key_names:
            if self.signers.has_private(k):
                md.sign(self.signers.get(k), append=True, signed_serializer=CANONICAL)

    def _check_threshold(self, name: str, md: Metadata[Any], delegator: Metadata[Any]) -> None:
        try:
            delegator.verify_delegate(name, md, CANONICAL)
        except UnsignedMetadataError:
            role = self._trust_role(name)
            signed_by = {s for s in md.signatures}
            missing = [k for k in role.keys if self.trust.key(k).keyid not in signed_by]
            raise VerificationError(
                f"role {name!r}: {len(role.keys) - len(missing)} of the {role.threshold} signatures "
                f"needed; missing: {', '.join(missing)}"
            ) from None

    def sign_all(self) -> list[tuple[str, bytes]]:
        """Sign every changed role, snapshot and timestamp; return files in publication order."""
        if self._force_online:
            for name in self.role_names():
                if name != "targets" and (name in ("rollouts", "devices", release_roles.INDEX)
                                          or name.startswith("devices-")):
                    self.edit(name)
        with progress.task("signing metadata", len(self._changed) + 2 + self._root_changed) as signing:
            return self._sign_all(signing)

    def _sign_all(self, signing: progress.Task) -> list[tuple[str, bytes]]:
        files: list[tuple[str, bytes]] = []
        root_files: list[tuple[str, bytes]] = []
        if self._root_changed:
            root = self.root.signed
            if self._old_root is not None:
                root.version = self._old_root.signed.version + 1
            root.expires = self._expiry("root")
            names = list(self.trust.role("root").keys)
            self.root.signatures.clear()
            old_keyids: set[str] = set()
            if self._old_root is not None:
                old_keyids = set(self._old_root.signed.roles["root"].keyids)
            for entry in self.trust.keys.values():
                if entry.keyid in old_keyids and entry.name not in names:
                    names.append(entry.name)
            self._sign("root", self.root, names)
            self._check_threshold("root", self.root, self.root)
            if self._old_root is not None:
                self._old_root.verify_delegate("root", self.root)  # old keys vouch for the new root
            data = to_bytes(self.root)
            root_files = [(layout.metadata_key("root", root.version), data), (layout.metadata_key("root", None), data)]
            signing.advance()
        snapshot = self.snapshot.signed
        self._sync_index()
        # delegators sign after their delegates' keys are settled: targets, devices, then the rest
        order = sorted(self._changed, key=lambda n: (n != "targets", n != "devices"))
        for name in order:
            md = self._roles[name]
            if name not in self._presigned:
                md.signed.version += 1
                md.signed.expires = self._expiry(name)
                self._sign(name, md, self._keys_for(name))
            self._check_threshold(name, md, self.delegator(name))
            data = to_bytes(md)
            files.append((layout.metadata_key(name, md.signed.version), data))
            snapshot.meta[f"{name}.json"] = meta_file(name, md.signed.version, data)
            signing.advance()
        self._hash_unchanged_roles()
        snapshot.version += 1
        snapshot.expires = self._expiry("snapshot")
        self._sign("snapshot", self.snapshot, self._keys_for("snapshot"))
        self._check_threshold("snapshot", self.snapshot, self.root)
        snapshot_bytes = to_bytes(self.snapshot)
        files.append((layout.metadata_key("snapshot", snapshot.version), snapshot_bytes))
        signing.advance()
        ts = self.timestamp.signed
        ts.snapshot_meta = meta_file("snapshot", snapshot.version, snapshot_bytes)
        ts.version += 1
        ts.expires = self._expiry("timestamp")
        self._sign("timestamp", self.timestamp, self._keys_for("timestamp"))
        self._check_threshold("timestamp", self.timestamp, self.root)
        files.append((layout.metadata_key("timestamp", None), to_bytes(self.timestamp)))
        signing.advance()
        # A new root goes last: a device fetches N+1.root.json before timestamp.json, so a root that
        # appeared first would make it distrust the old timestamp (crash or not) when a top-level
        # key rotates. Until the root appears, the old root's keys also signed the roles above.
        return files + root_files

    def _hash_unchanged_roles(self) -> None:
        """Give hashes to snapshot entries written before they carried any (a repository made before
        decision 0503): the published bytes of those few roles are read and hashed once."""
        for entry, meta in list(self.snapshot.signed.meta.items()):
            name = entry.removesuffix(".json")
            if meta.hashes is None and _hashed(name):
                data = self.store.get(layout.metadata_key(name, meta.version))
                self.snapshot.signed.meta[entry] = meta_file(name, meta.version, data)

    def _keys_for(self, name: str) -> list[str]:
        """The role's keys, plus while root changes the keys the old root trusted for it."""
        names = list(self.trust.role(name).keys)
        if self._old_root is not None and name in self._old_root.signed.roles:
            old = set(self._old_root.signed.roles[name].keyids)
            names += [e.name for e in self.trust.keys.values() if e.keyid in old and e.name not in names]
        return names

    # ------------------------------------------------------------------ publishing
    def publish(self) -> list[str]:
        files = self.sign_all()
        journal = {
            "schema": "otactl/publish-journal/1",
            "created": self.now.isoformat(),
            "base_timestamp_etag": self._timestamp_etag,
            "files": [{"key": k, "data": d.decode()} for k, d in files],
        }
        try:
            self.store.put_if(JOURNAL_KEY, json.dumps(journal).encode(), None)
        except ConflictError:
            raise ConflictError(
                f"{self.store.url}: another publication is in progress or unfinished",
                hint="retry; if no one else is publishing, run `otactl repo publish` to complete it",
            ) from None
        current = self.store.get_optional(layout.metadata_key("timestamp", None))
        if self._timestamp_etag is not None and current is not None:
            if self.store.get_versioned(layout.metadata_key("timestamp", None)).etag != self._timestamp_etag:
                self.store.delete(JOURNAL_KEY)
                raise ConflictError(f"{self.store.url}: the repository changed since it was read; retry")
        elif current is not None:
            self.store.delete(JOURNAL_KEY)
            raise StoreError(f"{self.store.url}: already holds a TUF repository; refusing to overwrite it")
        return replay_journal(self.store)


def replay_journal(store: BlobStore) -> list[str]:
    """Copy a journal's files into place in their order (see ``sign_all``); then drop the journal."""
    try:
        journal = json.loads(store.get(JOURNAL_KEY))
        files = [(f["key"], f["data"].encode()) for f in journal["files"]]
    except NotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{store.url}{JOURNAL_KEY}: corrupt publication journal ({exc})") from exc
    ts_key = layout.metadata_key("timestamp", None)
    with progress.task("writing metadata", len(files)) as writing:
        for key, data in files:
            if key == ts_key:
                base = journal.get("base_timestamp_etag")
                try:
                    current = store.get_versioned(ts_key)
                except NotFoundError:
                    current = None
                if current is None or current.data != data:
                    store.put_if(ts_key, data, None if current is None else current.etag)
                    del base  # the journal is the lock: no other writer moved timestamp meanwhile
            else:
                store.put(key, data)
            writing.advance()
    store.delete(JOURNAL_KEY)
    return [k for k, _ in files]
