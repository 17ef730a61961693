"""`otactl fleet entitle`: give a repository offline-signed entitlements (decision 0406).

One publication: ``entitlements/signers.json`` (the trust file's entitlement keys and threshold) as
a target of the top-level ``targets`` role (the offline targets key signs it), and every device
record re-written as ``otactl/device/2`` with a statement signed in batches by the entitlement keys.
Devices provisioned before keep working: they learn the signers through TUF at their next refresh,
and from then on refuse a record without a valid entitlement.

Run again, it is idempotent: the signers document is replaced only when the trust file's differs
(a rotation of entitlement keys), and only records whose entitlement does not verify under the
published signers are signed again (their version raised). With no entitlement key declared, it
makes the file key ``entitlement-1`` (its own passphrase, like the other offline keys) and adds it
to ``signing/trust.yaml`` once the publication succeeded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import otactl.keys.keyfile as keyfile
from otactl.app.context import Context
from otactl.app.entitlements import (
    ENTITLEMENT_KEY,
    EntitlementSigners,
    check_not_online,
    publish_signers_target,
    signers_from_trust,
    write_signers_file,
)
from otactl.app.fleet import _plan, _Records, _write, list_devices
from otactl.errors import UsageError
from otactl.fleet.entitlements import DEFAULT_BATCH_SIZE
from otactl.workspace import KEY_DIR, KeyEntry, TrustConfig


@dataclass(frozen=True)
class MigrationResult:
    signers: list[str]
    threshold: int
    signers_published: bool  # False: the published signers document was already the trust file's
    devices: int
    entitlements_signed: int
    entitlement_batches: int
    files_published: int
    key_created: str | None = None  # the entitlement key file made by this run


def migrate_entitlements(ctx: Context, *, entitlement_keys: Sequence[str] = (), threshold: int | None = None,
                         batch_size: int = DEFAULT_BATCH_SIZE) -> MigrationResult:
    created: str | None = None
    trust = ctx.trust
    if not trust.entitlement_keys:
        if ENTITLEMENT_KEY in trust.keys:
            raise UsageError(f"{trust.path}: a key named {ENTITLEMENT_KEY!r} exists but entitlements.keys does "
                             "not name it", hint=f"add `entitlements: {{keys: [{ENTITLEMENT_KEY}]}}` to the file")
        trust = _with_new_key(ctx)
        created = ENTITLEMENT_KEY
    if threshold is not None:
        if not 1 <= threshold <= len(trust.entitlement_keys):
            raise UsageError(f"--threshold {threshold}: must be from 1 to {len(trust.entitlement_keys)}")
        trust = replace(trust, entitlement_threshold=threshold)
    check_not_online(trust, trust.entitlement_keys)
    old_trust, ctx.trust, ctx.signers.trust = ctx.trust, trust, trust
    try:
        repo = ctx.repository()
        signers = signers_from_trust(trust)
        records = list_devices(ctx)
        published = publish_signers_target(repo, signers)
        where = _Records(ctx, repo)
        plan = _plan(ctx, where, records, signers, reread=True)
        keys = EntitlementSigners(ctx, signers, tuple(entitlement_keys))
        first = len(repo.publish()) if published and not where.retains else 0  # served: records go live in _write
        changed, _, batches = _write(ctx, where, plan, keys, batch_size)
        if where.index is None:
            written = len(repo.publish()) if changed or published else 0
        else:  # the signers first (devices look for them), then the chains naming records they sign
            written = first + (len(repo.publish()) if published and where.retains else 0) + \
                where.publish(ctx, changed)
    except BaseException:
        ctx.trust = ctx.signers.trust = old_trust
        if created is not None:
            with contextlib.suppress(OSError):
                (ctx.workspace.root / KEY_DIR / f"{created}.key").unlink()
        raise
    if trust != old_trust:
        ctx.workspace.write_trust(trust)
    write_signers_file(ctx.workspace.root, signers)
    return MigrationResult(signers.names(), signers.threshold, published, len(records), len(plan.to_sign),
                           batches, written, created)


def _with_new_key(ctx: Context) -> TrustConfig:
    """The trust configuration with a new file key ``entitlement-1`` as the one entitlement signer
    (the key file is written now; the trust file once the publication succeeded)."""
    from otactl.app.init import PassphraseSource

    passphrase = PassphraseSource()(ENTITLEMENT_KEY)
    rel = f"{KEY_DIR}/{ENTITLEMENT_KEY}.key"
    path = ctx.workspace.root / rel
    if path.exists():
        raise UsageError(f"{path}: already exists; refusing to overwrite a key file")
    path.parent.mkdir(parents=True, exist_ok=True)
    pub = keyfile.generate_keyfile(path, ENTITLEMENT_KEY, passphrase)
    ctx.signers.add(ENTITLEMENT_KEY, keyfile.FileSigner(keyfile.read_keyfile(path).unlock(passphrase), pub))
    entry = KeyEntry(ENTITLEMENT_KEY, pub.keyid, pub.keyval["public"], f"{keyfile.URI_SCHEME}:{rel}")
    return replace(ctx.trust, keys={**ctx.trust.keys, ENTITLEMENT_KEY: entry},
                   entitlement_keys=(ENTITLEMENT_KEY,), entitlement_threshold=1)
