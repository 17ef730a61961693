"""The first ``releases`` and ``withdrawals`` metadata when the release managers hold their own keys.

Both roles need release-manager signatures (``releases``: CI + k, ``withdrawals``: k). When
``otactl init`` registers release managers by public key only (decision 1105), it cannot sign them:
it publishes every other role and stages their first, empty versions instead::

    staging/bootstrap/releases.metadata.json      version 1, no targets; signed by CI at init
    staging/bootstrap/withdrawals.metadata.json   version 1, no targets

Each release manager signs both from their own machine when joining (``otactl join``), after checking
that they are exactly that (version 1, no target, no delegation) and that the targets metadata, verified
from the pinned root, delegates the role to their key. CI's next ``release build`` publishes them once
both meet their thresholds (TUF's own check), then builds. Until then no release exists, so no device
looks for either role.
"""

from __future__ import annotations

from tuf.api.metadata import Metadata, Targets
from tuf.api.serialization import DeserializationError

from otactl.app.context import Context
from otactl.errors import ConflictError, VerificationError
from otactl.repo.canonical import CANONICAL
from otactl.repo.repository import Repository, to_bytes
from otactl.store.base import BlobStore

ROLES = ("releases", "withdrawals")


def staged_key(role: str) -> str:
    return f"staging/bootstrap/{role}.metadata.json"


def stage(store: BlobStore, docs: dict[str, Metadata[Targets]]) -> None:
    for role, md in docs.items():
        store.put_if(staged_key(role), to_bytes(md), None)


def pending(store: BlobStore) -> bool:
    return any(store.exists(staged_key(role)) for role in ROLES)


def _load(store: BlobStore, role: str) -> tuple[Metadata[Targets], str] | None:
    if not store.exists(staged_key(role)):
        return None
    versioned = store.get_versioned(staged_key(role))
    where = f"{store.url}{staged_key(role)}"
    try:
        md: Metadata[Targets] = Metadata.from_bytes(versioned.data)
    except DeserializationError as exc:
        raise VerificationError(f"{where}: not valid TUF metadata ({exc})") from exc
    if not isinstance(md.signed, Targets) or md.signed.version != 1 or md.signed.targets \
            or md.signed.delegations is not None:
        raise VerificationError(f"{where}: not the empty first version of {role!r} that `otactl init` stages; "
                                "refusing to sign or publish it")
    return md, versioned.etag


def _signed_by(targets: Targets, role: str, md: Metadata[Targets]) -> set[str]:
    return set(targets.get_verification_result(role, CANONICAL.serialize(md.signed), md.signatures).signed)


def sign(ctx: Context, key_name: str, targets: Targets) -> list[str]:
    """Add ``key_name``'s signature to each staged role that ``targets`` (verified) delegates to it."""
    keyid = ctx.trust.key(key_name).keyid
    signed = []
    for role in ROLES:
        found = _load(ctx.store, role)
        if found is None or targets.delegations is None or role not in (targets.delegations.roles or {}):
            continue
        md, etag = found
        if keyid not in targets.get_delegated_role(role).keyids or keyid in _signed_by(targets, role, md):
            continue
        md.sign(ctx.signers.get(key_name), append=True, signed_serializer=CANONICAL)
        try:
            ctx.store.put_if(staged_key(role), to_bytes(md), etag)
        except ConflictError:
            raise ConflictError(f"{ctx.store.url}{staged_key(role)}: another release manager signed it at the "
                                "same time", hint="run the command again") from None
        signed.append(role)
    return signed


def publish_if_signed(ctx: Context) -> list[str]:
    """CI: publish the staged first versions once each meets its threshold; the roles published.

    Refuses, naming who has yet to sign, while one of them falls short."""
    repo: Repository = ctx.repository()
    targets = repo.role("targets").signed
    ready: dict[str, Metadata[Targets]] = {}
    short = []
    for role in ROLES:
        found = _load(ctx.store, role)
        if found is None:
            continue
        if f"{role}.json" in repo.snapshot.signed.meta:  # published before a crash: only clean up
            ctx.store.delete(staged_key(role))
            continue
        md, _ = found
        delegated = targets.get_delegated_role(role)
        have = _signed_by(targets, role, md)
        if len(have) < delegated.threshold:
            names = [e.name for e in ctx.trust.keys.values() if e.keyid in set(delegated.keyids) - have]
            short.append(f"{role} {len(have)} of {delegated.threshold} (missing: {', '.join(names)})")
        ready[role] = md
    if short:
        raise VerificationError("the repository's first releases and withdrawals metadata await the release "
                                f"managers' signatures: {'; '.join(short)}",
                                hint="each release manager runs `otactl join` on their own machine "
                                     "(docs/key-custody.md)")
    if not ready:
        return []
    for role, md in ready.items():
        repo.put_signed(role, md)
    repo.publish()
    for role in ready:
        ctx.store.delete(staged_key(role))
    return sorted(ready)
