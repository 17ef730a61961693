"""`otactl init`: scaffold a workspace, generate keys, create and publish the repository.

The workspace is built in a temporary sibling directory and renamed into place only once the
repository is published, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from securesystemslib.signer import Signer, SSlibKey

import otactl.keys.keyfile as keyfile
from otactl.app import bootstrap
from otactl.app.entitlements import ENTITLEMENT_KEY, publish_signers_target, signers_from_trust, write_signers_file
from otactl.errors import KeyAccessError, StoreError, UsageError
from otactl.repo import layout
from otactl.repo.canonical import CANONICAL
from otactl.repo.repository import JOURNAL_KEY, Repository
from otactl.repo.signers import SignerPool
from otactl.store import open_store
from otactl.workspace import (
    DEFAULT_EXPIRY_DAYS,
    HANDOVER_DIR,
    KEY_DIR,
    ROOT_FILE,
    WORKSPACE_FILE,
    KeyEntry,
    RoleEntry,
    TrustConfig,
    Workspace,
)


@dataclass(frozen=True)
class InitResult:
    workspace: Path
    store_url: str
    keys: dict[str, str]  # name -> keyid
    published: list[str]
    handover: dict[str, Path] = field(default_factory=dict)  # release manager -> directory to hand over
    awaiting: list[str] = field(default_factory=list)  # roles staged for the release managers to sign
    warnings: list[str] = field(default_factory=list)


# Keys that live on the CI machine (the build key and the online key): one CI secret may unlock both.
CI_MACHINE_KEYS = ("ci", "online")
SHARED_VAR = "OTACTL_KEY_PASSPHRASE"


@dataclass(frozen=True)
class ReleaseManagerSpec:
    """``NAME`` (lab: the key is made here, to be handed over) or ``NAME=FILE.pub`` (public key only)."""

    name: str
    public: SSlibKey | None = None

    @classmethod
    def parse(cls, spec: str) -> ReleaseManagerSpec:
        name, sep, path = spec.partition("=")
        layout.check_name("release manager", name)
        if not sep:
            return cls(name)
        if not path:
            raise UsageError(f"--release-manager {spec!r}: give NAME or NAME=PATH/TO/NAME.pub")
        _, public = keyfile.read_public(Path(path).expanduser())
        return cls(name, public)


class PassphraseSource:
    """Each new key's passphrase: ``OTACTL_KEY_PASSPHRASE_<NAME>``; for the CI machine's keys (ci,
    online) also the shared ``OTACTL_KEY_PASSPHRASE`` (a CI secret), and for every key with ``shared``
    (a demo or lab); else a TTY prompt: once for the CI machine's keys, once per other key."""

    def __init__(self, *, shared: bool = False) -> None:
        self.shared = shared
        self._prompted: str | None = None

    def __call__(self, name: str) -> str:
        own, _ = keyfile.passphrase_env_names(name)
        if os.environ.get(own):
            return os.environ[own]
        pooled = self.shared or name in CI_MACHINE_KEYS
        if pooled and os.environ.get(SHARED_VAR):
            return os.environ[SHARED_VAR]
        if not sys.stdin.isatty():  # name variables that exist, not ones derived from "new keys"
            if pooled:
                raise KeyAccessError(f"key {name!r}: no passphrase (set {SHARED_VAR} or {own}; no TTY to prompt on)")
            raise KeyAccessError(f"key {name!r}: no passphrase of its own (set {own}: root, targets and each "
                                 f"release manager's key do not share {SHARED_VAR}; no TTY to prompt on)",
                                 hint="for a demo or lab, `otactl init --shared-passphrase` encrypts every key "
                                      f"under {SHARED_VAR}")
        if not pooled:
            return keyfile.prompt_passphrase(f"new key {name!r}", confirm=True)
        if self._prompted is None:
            label = "every new key" if self.shared else "the CI machine's new keys (ci, online)"
            self._prompted = keyfile.prompt_passphrase(label, confirm=True)
        return self._prompted


def default_trust_layout(release_managers: list[str], approvals: int) -> dict[str, tuple[list[str], int]]:
    if approvals < 1 or approvals > len(release_managers):
        raise UsageError(f"--approvals {approvals}: must be between 1 and the number of release managers "
                         f"({len(release_managers)})")
    return {
        "root": (["root-1"], 1),
        "targets": (["targets-1"], 1),
        "snapshot": (["online"], 1),
        "timestamp": (["online"], 1),
        "releases": (["ci", *release_managers], 1 + approvals),
        "rollouts": (["online"], 1),
        "devices": (["online"], 1),
        # a withdrawal needs the same k release managers as an approval, never CI or the online key
        "withdrawals": (list(release_managers), approvals),
        # which approved releases are visible: CI's key, checked by devices against `releases` (decision 1203)
        "release-index": (["ci"], 1),
    }


def _store_holds_repository(store_url: str, endpoint_url: str | None) -> None:
    store = open_store(store_url, endpoint_url=endpoint_url)
    for key in (layout.metadata_key("timestamp", None), layout.metadata_key("root", None), JOURNAL_KEY,
                layout.metadata_key("root", 1)):
        if store.exists(key):
            raise StoreError(f"{store.url}: already holds a repository ({key}); refusing to overwrite it",
                             hint="choose an empty store or prefix")


DEVICE_LAYOUTS = ("bins", "director", "director-served")  # decisions 0401 (hash bins), 0407 (director chains), 0408


def init_workspace(
    directory: Path,
    *,
    store_url: str | None,
    endpoint_url: str | None,
    release_managers: list[str],
    approvals: int,
    bin_bit_length: int,
    now: datetime,
    shared_passphrase: bool = False,
    release_index: bool = True,
    device_layout: str = "bins",
) -> InitResult:
    """``release_managers``: ``NAME`` or ``NAME=FILE.pub`` each (:class:`ReleaseManagerSpec`).
    ``release_index=False`` makes a repository as otactl made it before decision 1203 (one ``releases``
    role), for the tests of ``otactl repo migrate-releases``."""
    target = directory.resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target}: already exists and is not empty; refusing to overwrite a workspace")
    specs = [ReleaseManagerSpec.parse(rm) for rm in release_managers]
    names = [rm.name for rm in specs]
    if len(set(names)) != len(names) or {"ci", "online", "root-1", "targets-1", ENTITLEMENT_KEY} & set(names):
        raise UsageError("--release-manager names must be unique and not ci, online, root-1, targets-1 or "
                         f"{ENTITLEMENT_KEY}")
    publics = [rm.public.keyid for rm in specs if rm.public is not None]
    if len(set(publics)) != len(publics):
        raise UsageError("--release-manager: two release managers give the same public key")
    if not 0 <= bin_bit_length <= 16:
        raise UsageError("--bin-bits must be from 0 to 16")
    if device_layout not in DEVICE_LAYOUTS:
        raise UsageError(f"--device-layout {device_layout!r}: choose {', '.join(DEVICE_LAYOUTS)}")
    roles = default_trust_layout(names, approvals)
    if not release_index:
        del roles["release-index"]
    store_cfg = store_url or "file://repository"
    if "://" not in store_cfg:  # a plain path means where init runs: record it absolute
        store_cfg = f"file://{Path(store_cfg).resolve()}"
    if store_cfg.startswith("s3://"):
        _store_holds_repository(store_cfg, endpoint_url)
    elif store_url and store_cfg.startswith("file:///"):
        _store_holds_repository(store_cfg, None)

    # every passphrase before any Argon2id work: a missing one fails at once, naming its variable
    passphrases = PassphraseSource(shared=shared_passphrase)
    remote = {rm.name: rm.public for rm in specs if rm.public is not None}
    # the entitlement signer (decision 0406): an offline key of its own, asked for after the others
    key_names = [*sorted({k for keys, _ in roles.values() for k in keys} - set(remote)), ENTITLEMENT_KEY]
    passphrase_of = {name: passphrases(name) for name in key_names}

    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.init-", dir=target.parent))
    try:
        for sub in ("signing", "manifests", "canary", KEY_DIR):
            (build / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(build / ".otactl", 0o700)
        os.chmod(build / KEY_DIR, 0o700)
        (build / ".gitignore").write_text(".otactl/\nrepository/\n")
        cfg = f"schema: otactl/workspace/1\nstore: {store_cfg}\n"
        if endpoint_url:
            cfg += f"s3_endpoint_url: {endpoint_url}\n"
        (build / WORKSPACE_FILE).write_text(cfg)

        entries: dict[str, KeyEntry] = {}
        signers: dict[str, Signer] = {}
        handover: dict[str, Path] = {}
        for name in key_names:
            if name in names:  # a release manager's key made here: its own directory, to hand over
                rel = f"{HANDOVER_DIR}/{name}/{name}.key"
                handover[name] = target / HANDOVER_DIR / name
            else:
                rel = f"{KEY_DIR}/{name}.key"
            pub = keyfile.generate_keyfile(build / rel, name, passphrase_of[name])
            entries[name] = KeyEntry(name, pub.keyid, pub.keyval["public"], f"otactl-file:{rel}")
            signers[name] = keyfile.FileSigner(keyfile.read_keyfile(build / rel).unlock(passphrase_of[name]), pub)
        if handover:
            os.chmod(build / HANDOVER_DIR, 0o700)
        for name, public in remote.items():
            entries[name] = KeyEntry(name, public.keyid, public.keyval["public"], f"{keyfile.OWNER_SCHEME}:{name}")
        trust = TrustConfig(
            keys={n: entries[n] for n in sorted(entries)},
            roles={n: RoleEntry(tuple(k), t, DEFAULT_EXPIRY_DAYS[n]) for n, (k, t) in roles.items()},
            ci_keys=("ci",),
            release_managers=tuple(names),
            bin_bit_length=bin_bit_length,
            entitlement_keys=(ENTITLEMENT_KEY,),
        )
        ws = Workspace.open(build)
        ws.write_trust(trust)
        pool = SignerPool(ws, trust, preloaded=signers)
        # releases (CI + k) and withdrawals (k) need k release managers' signatures: with fewer
        # keys here, their first versions wait in the store for the others (otactl.app.bootstrap)
        defer = bootstrap.ROLES if len(names) - len(remote) < approvals else ()
        repo = Repository.create(ws.store(), trust, pool, now, defer=defer, bins=device_layout == "bins")
        if device_layout != "bins":  # decision 0407: per-device chains, the director's root a target
            from otactl.app import director, director_served
            from otactl.app.context import Context

            ctx = Context(ws, trust, ws.store(), pool, now)
            director.create(ctx, repo)
            if device_layout == "director-served":  # decision 0408: chains signed on request
                director_served.write_config(ctx)
        for role, md in repo.deferred.items():
            for k in trust.role(role).keys:
                if k in signers:
                    md.sign(signers[k], append=True, signed_serializer=CANONICAL)
        entitlement_signers = signers_from_trust(trust)
        publish_signers_target(repo, entitlement_signers)
        write_signers_file(build, entitlement_signers)
        published = repo.publish()
        bootstrap.stage(ws.store(), repo.deferred)
        root_v1 = ws.store().get(layout.metadata_key("root", 1))
        (build / ROOT_FILE).write_bytes(root_v1)
        for name in handover:  # the root its owner pins when joining (public; the key is not)
            (build / HANDOVER_DIR / name / "root.json").write_bytes(root_v1)
        with contextlib.suppress(OSError):
            target.rmdir()  # an empty directory given as the target
        os.replace(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    final_store = Workspace.open(target).store_url
    warnings = []
    if shared_passphrase:
        warnings.append(f"every key is encrypted under one passphrase ({SHARED_VAR}, --shared-passphrase): "
                        "a demo or lab only")
    for name, path in handover.items():
        warnings.append(f"release manager {name!r}: the key was made on this machine; move {path} to {name}, "
                        "who joins with `otactl join` (docs/key-custody.md); until it is gone, this machine "
                        f"can approve as {name}")
    return InitResult(target, final_store, {n: e.keyid for n, e in entries.items()}, published, handover,
                      sorted(repo.deferred), warnings)
