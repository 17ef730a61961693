"""`otactl release withdraw`: a signed withdrawal, needing the release managers' threshold.

The ``withdrawals`` role (delegated by ``targets`` to the release managers, threshold k: the same k
as an approval, decision 0502) lists one target per withdrawn release,
``withdrawals/<model>/<version>.json``. Devices refuse a release that role lists, whatever a rollout
policy says; the online key can neither add nor remove an entry.

    staging/withdrawals/<model>/<version>.metadata.json   the proposed next ``withdrawals`` metadata

The first release manager proposes it (with ``--reason``) and signs; each next one signs exactly
those bytes; the signature that meets the threshold publishes it through the journal and marks the
release withdrawn in ``releases-state/``. Signed on a release manager's own machine (no online key
there, decision 1105), it stays ``signed`` until CI runs ``release withdraw`` without ``--key``,
which publishes it. Like ``releases``, the role is one file, so withdrawals
publish one after another: a proposal made on an older version is proposed again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.api.serialization import DeserializationError

from otactl.app import release
from otactl.app.context import Context
from otactl.errors import ConflictError, NotFoundError, UsageError, VerificationError
from otactl.repo import layout
from otactl.repo.canonical import CANONICAL, canonical_json
from otactl.repo.repository import Repository, to_bytes
from otactl.workspace import RoleEntry

ROLE = "withdrawals"
SCHEMA = "otactl/withdrawal/1"


def staged_key(model: str, version: str) -> str:
    return f"staging/withdrawals/{model}/{version}.metadata.json"


@dataclass(frozen=True)
class WithdrawalInfo:
    model: str
    version: str
    status: str  # pending | signed (to the threshold, CI publishes it) | withdrawn
    reason: str
    signed_by: list[str]
    missing: list[str]
    threshold: int
    withdrawals_version: int  # the version of the ``withdrawals`` metadata that lists (or will list) it
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "status": self.status, "reason": self.reason,
                "signed_by": self.signed_by, "missing": self.missing, "threshold": self.threshold,
                "withdrawals_version": self.withdrawals_version, "notes": self.notes}


def _role(ctx: Context) -> RoleEntry:
    entry = ctx.trust.roles.get(ROLE)
    if entry is None:
        raise UsageError(f"{ctx.trust.path}: no role {ROLE!r}: this workspace predates signed withdrawal",
                         hint="see docs/decisions/0502-signed-withdrawal.md (a new repository has it)")
    return entry


def _published(ctx: Context, repo: Repository) -> Metadata[Targets]:
    try:
        return repo.role(ROLE)
    except NotFoundError:
        raise VerificationError(f"{ctx.store.url}: the repository has no {ROLE!r} role, so devices could not "
                                "check a withdrawal; refusing to record an unsigned one",
                                hint="see docs/decisions/0502-signed-withdrawal.md") from None


def _signers(ctx: Context, repo: Repository, md: Metadata[Targets]) -> list[str]:
    """Names of the keys whose signatures the published delegation accepts (TUF's own check)."""
    result = repo.role("targets").signed.get_verification_result(ROLE, CANONICAL.serialize(md.signed),
                                                                  md.signatures)
    names = []
    for keyid in result.signed:
        entry = ctx.trust.key_by_id(keyid)
        names.append(entry.name if entry else keyid[:12])
    return sorted(names)


def _reason_of(md: Metadata[Targets], path: str) -> str:
    tf = md.signed.targets.get(path)
    return "" if tf is None else str(layout.get_custom(tf).get("reason", ""))


def _pick_key(ctx: Context, role: RoleEntry, key_name: str | None) -> str:
    if key_name is None:
        local = [k for k in role.keys if ctx.signers.has_private(k)]
        if len(local) != 1:
            raise UsageError("say which release-manager key signs the withdrawal with --key "
                             f"(here: {', '.join(local) or 'none'})")
        return local[0]
    if key_name not in role.keys:
        raise UsageError(f"key {key_name!r} cannot sign a withdrawal (the {ROLE} role's keys: "
                         f"{', '.join(role.keys)})")
    return key_name


def _propose(ctx: Context, repo: Repository, ref: release.ReleaseRef, published: Metadata[Targets],
             reason: str) -> Metadata[Targets]:
    """The next ``withdrawals`` metadata: the published one plus this release's entry, unsigned."""
    path = layout.withdrawal_path(ref.model, ref.version)
    doc = canonical_json({"schema": SCHEMA, "model": ref.model, "version": ref.version, "reason": reason,
                          "time": ctx.now.isoformat().replace("+00:00", "Z")})
    sha = hashlib.sha256(doc).hexdigest()
    ctx.store.put(layout.target_key(path, sha), doc)  # content-addressed: invisible until listed
    md: Metadata[Targets] = Metadata.from_bytes(to_bytes(published))
    md.signatures.clear()
    tf = TargetFile(len(doc), {"sha256": sha}, path)
    layout.set_custom(tf, {"model": ref.model, "version": ref.version, "reason": reason})
    md.signed.targets[path] = tf
    md.signed.version += 1
    md.signed.expires = repo._expiry(ROLE)
    return md


def _check_pending(ref: release.ReleaseRef, md: Metadata[Targets], published: Metadata[Targets]) -> bool:
    """Is ``md`` the published metadata plus exactly this release's entry? False: made on an older base."""
    if md.signed.version != published.signed.version + 1:
        return False
    path = layout.withdrawal_path(ref.model, ref.version)
    changed = sorted({p for p, tf in md.signed.targets.items() if published.signed.targets.get(p) != tf}
                     | {p for p in published.signed.targets if p not in md.signed.targets})
    if changed != [path]:
        raise VerificationError(f"release {ref}: the pending withdrawal also changes {', '.join(changed[:3])}; "
                                "refusing to sign it")
    return True


def withdraw(ctx: Context, spec: str, reason: str | None, key_name: str | None) -> WithdrawalInfo:
    """Sign (propose, or add a signature to) the withdrawal of a release; publish it at the threshold."""
    ref = release.resolve(ctx, spec)
    release.info(ctx, ref)  # NotFoundError for a release that does not exist
    role = _role(ctx)
    repo = ctx.repository()
    published = _published(ctx, repo)
    path = layout.withdrawal_path(ref.model, ref.version)
    if path in published.signed.targets:  # withdrawn (perhaps before a crash): finish the bookkeeping
        signed_by = _signers(ctx, repo, published)
        _mark_withdrawn(ctx, ref, _reason_of(published, path), signed_by)
        return WithdrawalInfo(ref.model, ref.version, "withdrawn", _reason_of(published, path), signed_by, [],
                              role.threshold, published.signed.version)
    if key_name is not None or any(ctx.signers.has_private(k) for k in role.keys):
        key_name = _pick_key(ctx, role, key_name)
    # else: CI, with no release manager's key, may publish a withdrawal they signed elsewhere
    notes: list[str] = []
    staged = ctx.store.get_optional(staged_key(ref.model, ref.version))
    etag: str | None = None
    md: Metadata[Targets] | None = None
    if staged is not None:
        versioned = ctx.store.get_versioned(staged_key(ref.model, ref.version))
        etag = versioned.etag
        try:
            md = Metadata.from_bytes(versioned.data)
        except DeserializationError as exc:
            raise VerificationError(f"{ctx.store.url}{staged_key(ref.model, ref.version)}: corrupt ({exc}); "
                                    "delete it and withdraw again") from exc
        if not _check_pending(ref, md, published):
            notes.append(f"the pending withdrawal was signed on {ROLE} v{md.signed.version - 1} (v"
                         f"{published.signed.version} is published now); proposed again, its signatures "
                         f"({', '.join(_signers(ctx, repo, md)) or 'none'}) must be given again")
            reason = reason or _reason_of(md, path)
            md = None
        elif reason is not None and reason != _reason_of(md, path):
            raise UsageError(f"release {ref}: the pending withdrawal gives the reason {_reason_of(md, path)!r}; "
                             "sign it as it is (leave out --reason)")
    if md is None:
        if not reason:
            raise UsageError(f"release {ref}: say why with --reason (the first release manager's "
                             "withdrawal proposes it)")
        key_name = key_name or _pick_key(ctx, role, None)  # before anything is written
        md = _propose(ctx, repo, ref, published, reason)
    threshold = repo.role("targets").signed.get_delegated_role(ROLE).threshold
    signers = _signers(ctx, repo, md)
    if len(signers) < threshold:  # else: signed enough elsewhere or before a failed publication: publish
        key_name = key_name or _pick_key(ctx, role, None)
        if key_name in signers:
            raise UsageError(f"release {ref}: the withdrawal is already signed with key {key_name!r}",
                             hint=f"another release manager runs `otactl release withdraw {ref} --key NAME`")
        md.sign(ctx.signers.get(key_name), append=True, signed_serializer=CANONICAL)
        signers = _signers(ctx, repo, md)
        try:
            ctx.store.put_if(staged_key(ref.model, ref.version), to_bytes(md), etag)
        except ConflictError:
            raise ConflictError(f"release {ref}: another release manager signed the withdrawal at the same "
                                "time", hint="run the command again") from None
    final_reason = _reason_of(md, path)
    if len(signers) < threshold:
        missing = [k for k in role.keys if k not in signers]
        return WithdrawalInfo(ref.model, ref.version, "pending", final_reason, signers, missing, threshold,
                              md.signed.version, notes)
    online = [k for r in ("snapshot", "timestamp") for k in ctx.trust.role(r).keys]
    if not all(ctx.signers.has_private(k) for k in online):  # a release manager's own machine
        notes.append(f"signed to the threshold; publishing needs the online key: CI runs `otactl release "
                     f"withdraw {ref}`")
        return WithdrawalInfo(ref.model, ref.version, "signed", final_reason, signers, [], threshold,
                              md.signed.version, notes)
    repo.put_signed(ROLE, md)
    repo.publish()  # re-checks the threshold against the delegation, then the journal
    ctx.store.delete(staged_key(ref.model, ref.version))
    _mark_withdrawn(ctx, ref, final_reason, signers)
    return WithdrawalInfo(ref.model, ref.version, "withdrawn", final_reason, signers, [], threshold,
                          md.signed.version, notes)


def _mark_withdrawn(ctx: Context, ref: release.ReleaseRef, reason: str, signed_by: list[str]) -> None:
    """The unsigned status beside the signed withdrawal (what `release list` and the controller read)."""
    state, etag = release._versioned_state(ctx, ref)
    if state["status"] == "withdrawn":
        return
    state["status"] = "withdrawn"
    state["withdrawn"] = {"at": ctx.now.isoformat(), "reason": reason or "(none given)", "signed_by": signed_by}
    ctx.store.put_if(release.state_key(ref.model, ref.version), json.dumps(state, indent=1).encode(), etag)


def withdrawn_versions(ctx: Context, model: str) -> dict[str, str]:
    """Published withdrawals of ``model``: version -> reason (from the signed metadata)."""
    repo = ctx.repository()
    if f"{ROLE}.json" not in repo.snapshot.signed.meta:
        return {}
    prefix = f"withdrawals/{model}/"
    return {p.removeprefix(prefix).removesuffix(".json"): str(layout.get_custom(tf).get("reason", ""))
            for p, tf in repo.role(ROLE).signed.targets.items() if p.startswith(prefix)}
