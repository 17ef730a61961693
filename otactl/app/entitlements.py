"""Entitlement signers for the fleet services (decision 0406): the published signers document, the
entitlement keys a command signs with, and the migration of a repository made before entitlements.

The rollout controller never calls into this module: only `fleet import`, `fleet set --variant`
(a changed grant) and `fleet entitle` load an entitlement key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from securesystemslib.signer import Signer
from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import TargetFile

import otactl.keys.keyfile as keyfile
from otactl.app.context import Context
from otactl.errors import KeyAccessError, UsageError, VerificationError
from otactl.fleet.entitlements import SIGNERS_PATH, Signers
from otactl.repo import layout
from otactl.repo.repository import Repository
from otactl.workspace import KeyEntry, TrustConfig

ENTITLEMENT_KEY = "entitlement-1"  # the file key `init` and the migration make when none is named
SIGNERS_FILE = "signing/entitlement-signers.json"  # the workspace's copy, for `telemetry serve --entitlement-signers`


def published_signers(ctx: Context, repo: Repository) -> Signers | None:
    """The repository's ``entitlements/signers.json``; None while the repository is not migrated."""
    tf = repo.role("targets").signed.targets.get(SIGNERS_PATH)
    if tf is None:
        return None
    data = ctx.store.get(layout.target_key(SIGNERS_PATH, tf.hashes["sha256"]))
    try:
        tf.verify_length_and_hashes(data)
    except LengthOrHashMismatchError as exc:
        raise VerificationError(f"{ctx.store.url}: {SIGNERS_PATH}: does not match the signed targets ({exc})") \
            from None
    return Signers.from_bytes(data, SIGNERS_PATH)


def write_signers_file(workspace_root: Path, signers: Signers) -> None:
    """The published signers document, beside ``signing/root.json`` (public; committed)."""
    from otactl.fsutil import atomic_write

    atomic_write(workspace_root / SIGNERS_FILE, signers.to_bytes() + b"\n")


def signers_from_trust(trust: TrustConfig) -> Signers:
    """The signers document the trust configuration's ``entitlements`` section declares."""
    if not trust.entitlement_keys:
        raise UsageError(f"{trust.path}: entitlements: no entitlement keys declared")
    keys = {}
    for name in trust.entitlement_keys:
        key = layout.name_key(keyfile.public_key(trust.key(name).public), name)
        keys[key.keyid] = key
    return Signers(keys, trust.entitlement_threshold)


def check_not_online(trust: TrustConfig, names: Sequence[str]) -> None:
    """An entitlement key held by an online role would let an online-key thief grant entitlements."""
    online = {k for role in layout.ONLINE_ROLES if role in trust.roles for k in trust.role(role).keys}
    for name in names:
        if name in online:
            raise UsageError(f"{trust.path}: entitlements: key {name!r} also signs an online role; an entitlement "
                             "key must be held by no online role (decision 0406)")


def resolve_key(trust: TrustConfig, ref: str) -> KeyEntry:
    """``--entitlement-key NAME|URI``: a key of the trust configuration, by name or by its URI."""
    if ref in trust.keys:
        return trust.keys[ref]
    found = [e for e in trust.keys.values() if e.uri == ref]
    if not found:
        raise KeyAccessError(f"--entitlement-key {ref!r}: no key of that name or URI in {trust.path}",
                             hint="declare it under keys (with its public key) and entitlements.keys")
    return found[0]


@dataclass(frozen=True)
class EntitlementSigners:
    """The signers a command signs batches with, loaded on first use (a passphrase or KMS call)."""

    ctx: Context
    signers: Signers
    refs: tuple[str, ...]

    def load(self) -> list[Signer]:
        trust = self.ctx.trust
        entries = [resolve_key(trust, r) for r in (self.refs or trust.entitlement_keys)]
        if not entries:
            raise KeyAccessError(f"{SIGNERS_PATH}: this change needs an entitlement signature and {trust.path} "
                                 "declares no entitlement key", hint="give --entitlement-key NAME|URI")
        check_not_online(trust, [e.name for e in entries])
        if not self.refs:  # the trust file's keys: those held here (a 2-of-3 team need not hold all three)
            held = [e for e in entries if self.ctx.signers.has_private(e.name)]
            entries = held or entries[:1]  # none held: the first one's error says why
        out: list[Signer] = []
        for entry in entries:
            if entry.keyid not in self.signers.keys:
                raise KeyAccessError(f"key {entry.name!r} is not an entitlement signer of this repository "
                                     f"({SIGNERS_PATH} names: {', '.join(self.signers.names())})",
                                     hint="`otactl fleet entitle` publishes the trust file's signers")
            if entry.keyid not in {s.public_key.keyid for s in out}:
                out.append(self.ctx.signers.get(entry.name))
        if len(out) < self.signers.threshold:
            raise KeyAccessError(f"{len(out)} of the {self.signers.threshold} entitlement signatures needed "
                                 f"({SIGNERS_PATH}: {', '.join(self.signers.names())})",
                                 hint="give one --entitlement-key per signer")
        return out


def publish_signers_target(repo: Repository, signers: Signers) -> bool:
    """Stage ``signers`` as the top-level target (the targets key signs it at publication); False when
    the published document is already this one."""
    data = signers.to_bytes()
    digest = hashlib.sha256(data).hexdigest()
    targets = repo.role("targets").signed.targets
    old = targets.get(SIGNERS_PATH)
    if old is not None and old.hashes.get("sha256") == digest:
        return False
    repo.store.put(layout.target_key(SIGNERS_PATH, digest), data)
    tf = TargetFile(len(data), {"sha256": digest}, SIGNERS_PATH)
    layout.set_custom(tf, {"threshold": signers.threshold})
    repo.edit("targets").targets[SIGNERS_PATH] = tf
    return True
