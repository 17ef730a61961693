"""Repository services: publish (complete a pending journal), verify as a client, status, refresh."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from otactl import progress
from otactl.app.context import Context
from otactl.errors import VerificationError
from otactl.repo import layout, release_roles
from otactl.repo.client import StoreFetcher, make_updater
from otactl.repo.repository import JOURNAL_KEY, replay_journal

AnyMetadata = Metadata[Root] | Metadata[Timestamp] | Metadata[Snapshot] | Metadata[Targets]


@dataclass(frozen=True)
class RoleStatus:
    role: str
    version: int
    expires: str
    days_left: float
    signers: list[str]
    threshold: int
    online: bool
    targets: int | None = None


@dataclass(frozen=True)
class VerifyResult:
    store: str
    roles: int
    targets_checked: int
    bytes_checked: int


@dataclass
class RefreshResult:
    resigned: list[str] = field(default_factory=list)
    expiring_offline: list[RoleStatus] = field(default_factory=list)


def publish_pending(ctx: Context) -> list[str]:
    """Complete an interrupted publication; a no-op when none is pending (idempotent)."""
    if not ctx.store.exists(JOURNAL_KEY):
        return []
    return replay_journal(ctx.store)


def _status_of(ctx: Context, name: str, md: AnyMetadata, delegator_keys: dict[str, str],
               now: datetime) -> RoleStatus:
    signed = md.signed
    names = []
    for keyid in md.signatures:
        key = ctx.trust.key_by_id(keyid)
        names.append(key.name if key else keyid[:12])
    role_name = "devices" if name.startswith(f"{layout.BIN_PREFIX}-") else \
        release_roles.ANCHOR if release_roles.is_release_role(name) else name
    role = ctx.trust.roles.get(role_name)
    left = (signed.expires - now).total_seconds() / 86400
    targets = len(signed.targets) if isinstance(signed, Targets) else None
    return RoleStatus(name, signed.version, signed.expires.isoformat(), round(left, 2), sorted(names),
                      role.threshold if role else 1, name in layout.ONLINE_ROLES or role_name == "devices",
                      targets)


def status(ctx: Context, *, include_bins: bool = False) -> list[RoleStatus]:
    repo = ctx.repository()
    rows = [_status_of(ctx, "root", repo.root, {}, ctx.now),
            _status_of(ctx, "timestamp", repo.timestamp, {}, ctx.now),
            _status_of(ctx, "snapshot", repo.snapshot, {}, ctx.now)]
    for name in repo.role_names():
        if name.startswith(f"{layout.BIN_PREFIX}-") and not include_bins:
            continue
        rows.append(_status_of(ctx, name, repo.role(name), {}, ctx.now))
    if not include_bins:
        bins = [n for n in repo.role_names() if n.startswith(f"{layout.BIN_PREFIX}-")]
        if bins:
            soonest = min((_status_of(ctx, n, repo.role(n), {}, ctx.now) for n in bins), key=lambda r: r.days_left)
            total = sum(len(repo.role(n).signed.targets) for n in bins)
            rows.append(RoleStatus(f"{layout.BIN_PREFIX}-* ({len(bins)} bins)", max(
                repo.role(n).signed.version for n in bins), soonest.expires, soonest.days_left,
                soonest.signers, soonest.threshold, True, total))
    return rows


def verify(ctx: Context) -> VerifyResult:
    """Act as a TUF client against the store: refresh, then download and check every target."""
    repo = ctx.repository()
    root_bytes = ctx.store.get(layout.metadata_key("root", 1))
    checked = 0
    nbytes = 0
    with tempfile.TemporaryDirectory(prefix="otactl-verify-") as tmp:
        updater = make_updater(root_bytes, StoreFetcher.PREFIX, Path(tmp), StoreFetcher(ctx.store))
        try:
            updater.refresh()
            roles = [n for n in repo.role_names() if n not in ("targets", "devices")]
            listed: list[tuple[str, str]] = []
            with progress.task("reading role metadata", len(roles)) as reading:
                for name in roles:
                    listed.extend((name, path) for path in sorted(repo.role(name).signed.targets))
                    reading.advance()
            with progress.task("verifying targets", len(listed)) as verifying:
                for name, path in listed:
                    info = updater.get_targetinfo(path)
                    if info is None:
                        raise VerificationError(f"target {path!r}: listed by {name!r} but not found by a client")
                    updater.download_target(info, str(Path(tmp) / "t"))
                    checked += 1
                    nbytes += info.length
                    verifying.advance()
        except tuf_exc.RepositoryError as exc:
            raise VerificationError(f"{ctx.store.url}: a TUF client refuses the repository: {exc}") from exc
        except tuf_exc.DownloadError as exc:
            raise VerificationError(f"{ctx.store.url}: download failed: {exc}") from exc
    return VerifyResult(ctx.store.url, len(repo.role_names()) + 3, checked, nbytes)


def _signable_here(ctx: Context, role: str) -> bool:
    """Whether this workspace holds the private keys of ``role``'s threshold (a lab, or the offline
    signing machine), so ``refresh --offline`` may re-sign it."""
    entry = ctx.trust.role(role)
    return sum(ctx.signers.has_private(k) for k in entry.keys) >= entry.threshold


def refresh(ctx: Context, *, warn_days: int = 30, force: bool = False, offline: bool = False) -> RefreshResult:
    """Re-sign online roles past half their lifetime; report offline roles close to expiry.

    ``offline``: also re-sign the offline roles (root included: a new ``N.root.json``) that expire
    within ``warn_days`` and whose threshold of keys this workspace holds (decision 1204: a device
    back after a year must find no lapsed role); the others are still reported."""
    repo = ctx.repository()
    result = RefreshResult()
    limit = timedelta(days=warn_days)
    if offline:
        for name in ("root", *(n for n in repo.role_names() if n in layout.OFFLINE_ROLES)):
            expires = (repo.root if name == "root" else repo.role(name)).signed.expires
            if expires - ctx.now < limit and _signable_here(ctx, name):
                if name == "root":
                    repo.edit_root()
                else:
                    repo.edit(name)
                result.resigned.append(name)
    for name in repo.role_names():
        role_name = "devices" if name.startswith(f"{layout.BIN_PREFIX}-") else name
        if role_name not in layout.ONLINE_ROLES:
            continue
        md = repo.role(name)
        lifetime = timedelta(days=ctx.trust.role(role_name).expires_days)
        if force or md.signed.expires - ctx.now < lifetime / 2:
            repo.edit(name)
            result.resigned.append(name)
    ts_life = timedelta(days=ctx.trust.role("timestamp").expires_days)
    if result.resigned or force or repo.timestamp.signed.expires - ctx.now < ts_life / 2 or \
            repo.snapshot.signed.expires - ctx.now < timedelta(days=ctx.trust.role("snapshot").expires_days) / 2:
        repo.publish()
        result.resigned += ["snapshot", "timestamp"]
    from otactl.app import director

    if director.enabled(repo):  # device chains past half their lifetime (decision 0407)
        index = director.Index(ctx)
        life = timedelta(days=ctx.trust.role("devices").expires_days)
        due = list(index.rows()) if force else director.stale_rows(index, ctx.now + life / 2)
        if due:
            director.resign(ctx, index, due)
            result.resigned.append(f"director: {len(due)} device chains")
    for row in status(ctx):
        base = row.role  # a release's own role is signed by its managers: offline (decision 1203)
        offline_role = base in layout.OFFLINE_ROLES or release_roles.is_release_role(base)
        if offline_role and datetime.fromisoformat(row.expires) - ctx.now < limit:
            result.expiring_offline.append(row)
    return result
