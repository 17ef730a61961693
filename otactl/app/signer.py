"""A release manager's own machine: join a repository, then review, approve and withdraw from there.

``otactl join DIR --store URL --root root.json --key alice.key`` makes a *signer workspace*
(``otactl/signer/1``, see ``otactl.workspace``): the store, one key, the pinned root. It holds no trust
file and no other key. Every command there learns roles, thresholds and key names from the repository's
signed metadata, verified by python-tuf's ngclient from the pinned root (root rotations followed,
expired or rolled-back metadata refused), and refuses when the store's metadata is not what the client
verified; so what the release manager signs is checked against the repository itself, not against
anything CI or the store says unsigned. Which keys are CI's: the ``releases`` keys that are not
``withdrawals`` keys (the release managers, decision 0502). Names come from ``x-otactl-keyname``.

Signatures go to the store; publication (snapshot, timestamp: the online key) stays with CI.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, Root, Snapshot, Targets
from tuf.api.serialization import DeserializationError

import otactl.keys.keyfile as keyfile
from otactl.app import bootstrap
from otactl.app.context import Context, utcnow
from otactl.errors import KeyAccessError, StoreError, UsageError, VerificationError
from otactl.repo import layout, release_roles
from otactl.repo.client import StoreFetcher, make_updater
from otactl.repo.repository import Repository, to_bytes
from otactl.repo.signers import SignerPool
from otactl.store import open_store
from otactl.store.base import BlobStore
from otactl.workspace import (
    DEFAULT_EXPIRY_DAYS,
    ROOT_FILE,
    TUF_CLIENT_DIR,
    WORKSPACE_FILE,
    KeyEntry,
    RoleEntry,
    SignerWorkspace,
    TrustConfig,
    Workspace,
    is_signer_workspace,
)

# make ngclient load them (rollouts: what `release reinstate` reads, the policies' bad marks)
_PROBES = {"releases": "releases/-/-.json", "withdrawals": "withdrawals/-/-.json", "rollouts": "rollouts/-.json"}


@dataclass(frozen=True)
class Verified:
    """Metadata that ngclient verified from the pinned root: role name -> metadata."""

    store_url: str
    metadata: dict[str, Metadata[Any]]

    @property
    def root(self) -> Root:
        signed: Root = self.metadata["root"].signed
        return signed

    @property
    def targets(self) -> Targets:
        signed: Targets = self.metadata["targets"].signed
        return signed


def verify_repository(store: BlobStore, root_bytes: bytes, client_dir: Path) -> Verified:
    """Refresh a TUF client from ``root_bytes`` over the store; load ``releases`` and ``withdrawals``."""
    client_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    updater = make_updater(root_bytes, StoreFetcher.PREFIX, client_dir, StoreFetcher(store))
    try:
        updater.refresh()
        snapshot: Snapshot = _read(client_dir, "snapshot").signed
        for role, probe in _PROBES.items():
            if f"{role}.json" in snapshot.meta:
                updater.get_targetinfo(probe)
    except tuf_exc.RepositoryError as exc:
        raise VerificationError(f"{store.url}: the TUF client, starting from the pinned root, refuses the "
                                f"repository: {exc}; refusing to sign anything") from exc
    except tuf_exc.DownloadError as exc:
        raise StoreError(f"{store.url}: cannot read the repository: {exc}") from exc
    # the releases probe walks on into the release index (releases does not terminate): loaded too;
    # before the first `releases` is published (bootstrap) neither is looked up
    loaded = [*_PROBES, *([release_roles.INDEX] if "releases.json" in snapshot.meta else [])]
    names = ["root", "timestamp", "snapshot", "targets", *(r for r in loaded if f"{r}.json" in snapshot.meta)]
    verified = Verified(store.url, {name: _read(client_dir, name) for name in names})
    if release_roles.INDEX in verified.metadata:
        try:
            release_roles.check_index(verified.targets, verified.metadata[release_roles.INDEX].signed)
        except VerificationError as exc:
            raise VerificationError(f"{store.url}: {exc.message}; refusing to sign anything") from exc
    return verified


def _read(client_dir: Path, role: str) -> Metadata[Any]:
    return Metadata.from_bytes((client_dir / "metadata" / f"{role}.json").read_bytes())


def derive_trust(verified: Verified, own: SignerWorkspace) -> TrustConfig:
    """The trust configuration as the signed metadata states it; only the signer's key is reachable."""
    root, targets = verified.root, verified.targets
    if targets.delegations is None or targets.delegations.roles is None:
        raise VerificationError(f"{verified.store_url}: the targets metadata delegates nothing")
    own_keyid = keyfile.public_key(own.public).keyid
    entries: dict[str, KeyEntry] = {}
    name_of: dict[str, str] = {}
    for keyid, key in sorted({**root.keys, **targets.delegations.keys}.items()):
        name = layout.key_name(key) or (own.name if keyid == own_keyid else f"key-{keyid[:12]}")
        if name in entries:
            name = f"{name}-{keyid[:8]}"
        uri = own.key_uri if keyid == own_keyid else f"{keyfile.OWNER_SCHEME}:{name}"
        entries[name] = KeyEntry(name, keyid, str(key.keyval.get("public", "")), uri)
        name_of[keyid] = name
    roles: dict[str, RoleEntry] = {}
    for name in layout.TOP_LEVEL:
        r = root.roles[name]
        roles[name] = RoleEntry(tuple(name_of[k] for k in r.keyids), r.threshold, DEFAULT_EXPIRY_DAYS[name])
    for name, d in targets.delegations.roles.items():
        if name in DEFAULT_EXPIRY_DAYS:
            roles[name] = RoleEntry(tuple(name_of[k] for k in d.keyids if k in name_of), d.threshold,
                                    DEFAULT_EXPIRY_DAYS[name])
    if "withdrawals" not in roles or "releases" not in roles:
        raise VerificationError(f"{verified.store_url}: the signed metadata has no withdrawals role (a repository "
                                "made before decision 0502), so it does not say which keys are release managers'")
    managers = roles["withdrawals"].keys
    ci = tuple(k for k in roles["releases"].keys if k not in managers)
    return TrustConfig(entries, roles, ci, managers, 0, path=f"{verified.store_url} (signed metadata)")


@dataclass
class SignerContext(Context):
    """A Context on a signer workspace: its repository is checked against what ngclient verified."""

    verified: Verified | None = field(default=None, repr=False)

    def repository(self) -> Repository:
        repo = super().repository()
        assert self.verified is not None
        loaded: dict[str, Metadata[Any]] = {"root": repo.root, "timestamp": repo.timestamp, "snapshot": repo.snapshot}
        for name, md in self.verified.metadata.items():
            here = loaded[name] if name in loaded else repo.role(name)
            if to_bytes(here) != to_bytes(md):
                raise VerificationError(f"{self.store.url}: the store's {name} metadata is not what the TUF client "
                                        "verified from the pinned root (changed meanwhile, or altered); refusing "
                                        "to sign", hint="run the command again")
        return repo


def _own_name(trust: TrustConfig, sw: SignerWorkspace) -> str:
    entry = trust.key_by_id(keyfile.public_key(sw.public).keyid)
    if entry is None or entry.name not in trust.release_managers:
        names = ", ".join(trust.release_managers) or "none"
        raise KeyAccessError(f"{sw.root}: key {sw.name!r} ({keyfile.public_key(sw.public).keyid[:12]}) is not a "
                             f"release manager's key in the repository's signed metadata (release managers: "
                             f"{names})", hint="register its public key in CI (`otactl keys add NAME --public "
                                               "NAME.pub --release-manager`), or use your current key")
    return entry.name


def _context(sw: SignerWorkspace, store: BlobStore, verified: Verified, now: datetime | None) -> SignerContext:
    trust = derive_trust(verified, sw)
    own = _own_name(trust, sw)
    ws = Workspace(sw.root, sw.store_url, sw.endpoint_url, own)
    return SignerContext(ws, trust, store, SignerPool(ws, trust), now or utcnow(), verified)


def open_signer(path: Path | str, now: datetime | None = None) -> SignerContext:
    sw = SignerWorkspace.open(path)
    store = open_store(sw.store_url, endpoint_url=sw.endpoint_url)
    try:
        root_bytes = sw.pinned_root.read_bytes()
    except OSError as exc:
        raise UsageError(f"{sw.pinned_root}: cannot read the pinned root: {exc.strerror}") from None
    return _context(sw, store, verify_repository(store, root_bytes, sw.client_dir), now)


def open_context(path: Path | str, now: datetime | None = None) -> Context:
    """The context for the commands a signer workspace runs (release review, approve, withdraw, reinstate,
    list; rollout approve): a signer workspace's, or CI's."""
    return open_signer(path, now) if is_signer_workspace(path) else Context.open(path, now)


# ------------------------------------------------------------------------ join
@dataclass(frozen=True)
class JoinResult:
    workspace: Path
    store_url: str
    name: str
    keyid: str
    root_sha256: str  # of the pinned root: compare it with what the repository's owners published
    root_version: int  # the root the client trusts now (after rotations)
    signed: list[str]  # first versions of roles signed while joining (otactl.app.bootstrap)


def join(directory: Path, *, store_url: str, endpoint_url: str | None, root_file: Path,
         key_file: Path | None, key_uri: str | None, public_file: Path | None,
         now: datetime | None = None) -> JoinResult:
    """Make a signer workspace in ``directory`` (it may already hold the key file, nothing of otactl's)."""
    target = directory.resolve()
    if (target / WORKSPACE_FILE).exists():
        raise UsageError(f"{target}: already holds an otactl workspace ({WORKSPACE_FILE})")
    if (key_file is None) == (key_uri is None) or (key_uri is not None and public_file is None):
        raise UsageError("give --key FILE (an otactl key file), or --key-uri URI with --public FILE.pub")
    if key_file is not None:
        kf = keyfile.read_keyfile(key_file.expanduser())
        name, public = kf.name, kf.public
        path = kf.path.resolve()
        uri = f"{keyfile.URI_SCHEME}:{path.relative_to(target) if path.is_relative_to(target) else path}"
    else:
        assert public_file is not None and key_uri is not None
        name, public = keyfile.read_public(public_file.expanduser())
        uri = key_uri
    try:
        root_bytes = root_file.read_bytes()
        root_md = Metadata.from_bytes(root_bytes)
    except OSError as exc:
        raise UsageError(f"{root_file}: cannot read the root to pin: {exc.strerror}") from None
    except DeserializationError as exc:
        raise UsageError(f"{root_file}: not TUF metadata ({exc})") from None
    if not isinstance(root_md.signed, Root):
        raise UsageError(f"{root_file}: not a root (it is {root_md.signed.type!r} metadata)")
    store_cfg = store_url if "://" in store_url else f"file://{Path(store_url).resolve()}"
    store = open_store(store_cfg, endpoint_url=endpoint_url)
    sw = SignerWorkspace(target, store_cfg, endpoint_url, name, uri, public.keyval["public"])
    created = [p for p in (target / ".otactl", target / "signing") if not p.exists()] if target.exists() else [target]
    try:
        verified = verify_repository(store, root_bytes, target / TUF_CLIENT_DIR)
        ctx = _context(sw, store, verified, now)
        own = ctx.workspace.actor or name
        signed = bootstrap.sign(ctx, own, verified.targets) if bootstrap.pending(store) else []
        (target / "signing").mkdir(exist_ok=True)
        (target / ROOT_FILE).write_bytes(root_bytes)
        (target / WORKSPACE_FILE).write_text(sw.to_yaml())
    except BaseException:
        for path in created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return JoinResult(target, store_cfg, own, public.keyid, hashlib.sha256(root_bytes).hexdigest(),
                      verified.root.version, signed)
