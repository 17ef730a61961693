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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from securesystemslib.signer import Signer

import otactl.keys.keyfile as keyfile
from otactl.errors import KeyAccessError, StoreError, UsageError
from otactl.repo import layout
from otactl.repo.repository import JOURNAL_KEY, Repository
from otactl.repo.signers import SignerPool
from otactl.store import open_store
from otactl.workspace import (
    DEFAULT_EXPIRY_DAYS,
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


class PassphraseSource:
    """Per-key env var, else the shared one, else one prompt reused for every new key."""

    def __init__(self) -> None:
        self._prompted: str | None = None

    def __call__(self, name: str) -> str:
        for var in keyfile.passphrase_env_names(name):
            if os.environ.get(var):
                return os.environ[var]
        if self._prompted is None:
            if not sys.stdin.isatty():  # name variables that exist, not ones derived from "new keys"
                raise KeyAccessError(f"key {name!r}: no passphrase (set OTACTL_KEY_PASSPHRASE or "
                                     f"{keyfile.passphrase_env_names(name)[0]}; no TTY to prompt on)")
            self._prompted = keyfile.get_passphrase("new keys", confirm=True)
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
    }


def _store_holds_repository(store_url: str, endpoint_url: str | None) -> None:
    store = open_store(store_url, endpoint_url=endpoint_url)
    for key in (layout.metadata_key("timestamp", None), layout.metadata_key("root", None), JOURNAL_KEY,
                layout.metadata_key("root", 1)):
        if store.exists(key):
            raise StoreError(f"{store.url}: already holds a repository ({key}); refusing to overwrite it",
                             hint="choose an empty store or prefix")


def init_workspace(
    directory: Path,
    *,
    store_url: str | None,
    endpoint_url: str | None,
    release_managers: list[str],
    approvals: int,
    bin_bit_length: int,
    now: datetime,
) -> InitResult:
    target = directory.resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target}: already exists and is not empty; refusing to overwrite a workspace")
    for rm in release_managers:
        layout.check_name("release manager", rm)
    if len(set(release_managers)) != len(release_managers) or {"ci", "online", "root-1", "targets-1"} & set(
        release_managers
    ):
        raise UsageError("--release-manager names must be unique and not ci, online, root-1 or targets-1")
    if not 0 <= bin_bit_length <= 16:
        raise UsageError("--bin-bits must be from 0 to 16")
    roles = default_trust_layout(release_managers, approvals)
    store_cfg = store_url or "file://repository"
    if "://" not in store_cfg:  # a plain path means where init runs: record it absolute
        store_cfg = f"file://{Path(store_cfg).resolve()}"
    if store_cfg.startswith("s3://"):
        _store_holds_repository(store_cfg, endpoint_url)
    elif store_url and store_cfg.startswith("file:///"):
        _store_holds_repository(store_cfg, None)

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

        passphrases = PassphraseSource()
        key_names = sorted({k for keys, _ in roles.values() for k in keys})
        entries: dict[str, KeyEntry] = {}
        signers: dict[str, Signer] = {}
        for name in key_names:
            rel = f"{KEY_DIR}/{name}.key"
            pw = passphrases(name)
            pub = keyfile.generate_keyfile(build / rel, name, pw)
            entries[name] = KeyEntry(name, pub.keyid, pub.keyval["public"], f"otactl-file:{rel}")
            signers[name] = keyfile.FileSigner(keyfile.read_keyfile(build / rel).unlock(pw), pub)
        trust = TrustConfig(
            keys=entries,
            roles={n: RoleEntry(tuple(k), t, DEFAULT_EXPIRY_DAYS[n]) for n, (k, t) in roles.items()},
            ci_keys=("ci",),
            release_managers=tuple(release_managers),
            bin_bit_length=bin_bit_length,
        )
        ws = Workspace.open(build)
        ws.write_trust(trust)
        pool = SignerPool(ws, trust, preloaded=signers)
        repo = Repository.create(ws.store(), trust, pool, now)
        published = repo.publish()
        (build / ROOT_FILE).write_bytes(ws.store().get(layout.metadata_key("root", 1)))
        with contextlib.suppress(OSError):
            target.rmdir()  # an empty directory given as the target
        os.replace(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    final_store = Workspace.open(target).store_url
    return InitResult(target, final_store, {n: e.keyid for n, e in entries.items()}, published)
