"""``otactl repo migrate-releases``: give a repository made before decision 1203 its release index.

The offline ``targets`` key signs, once, a delegation to ``release-index`` (CI's key, threshold 1),
appended after every existing delegation. ``releases`` is unchanged and does not terminate, so every
release published before stays where devices provisioned before find it; from the next build on,
each release is its own role delegated from the index (``otactl.app.release``), and devices check
the index against ``releases``, the approval rule (``otactl.repo.release_roles.check_index``).

Crash safety is the publication journal's: the trust file gains the role only once the publication
is written or journaled (``otactl repo publish`` then completes it), so a failure before leaves both
as they were and the command can run again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tuf.api.metadata import DelegatedRole, Targets

import otactl.keys.keyfile as keyfile
from otactl.app.context import Context
from otactl.errors import KeyAccessError, StoreError
from otactl.repo import layout, release_roles
from otactl.repo.repository import JOURNAL_KEY
from otactl.workspace import DEFAULT_EXPIRY_DAYS, RoleEntry


@dataclass(frozen=True)
class MigrateResult:
    store: str
    migrated: bool  # False: the repository already had its index
    index_keys: tuple[str, ...]
    releases_before: int  # releases published in the single ``releases`` role, left where they are

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "migrated": self.migrated, "index_keys": list(self.index_keys),
                "releases_before": self.releases_before}


def migrate_releases(ctx: Context) -> MigrateResult:
    repo = ctx.repository()
    before = sum(1 for path in repo.role(release_roles.ANCHOR).signed.targets if path.startswith("releases/"))
    if repo.has_index():
        keys = ctx.trust.roles[release_roles.INDEX].keys if release_roles.INDEX in ctx.trust.roles else ()
        return MigrateResult(ctx.store.url, False, tuple(keys), before)
    targets_role = ctx.trust.role("targets")
    if sum(ctx.signers.has_private(k) for k in targets_role.keys) < targets_role.threshold:
        raise KeyAccessError(f"{ctx.trust.path}: the delegation to {release_roles.INDEX} is signed by the offline "
                             f"targets key ({', '.join(targets_role.keys)}), which is not here",
                             hint="run `otactl repo migrate-releases` where the targets key is (the offline "
                                  "signing machine)")
    ci = tuple(ctx.trust.ci_keys)
    if not ci:
        raise KeyAccessError(f"{ctx.trust.path}: no CI key (ci_keys) to sign the release index")
    roles = dict(ctx.trust.roles)
    roles[release_roles.INDEX] = RoleEntry(ci, 1, DEFAULT_EXPIRY_DAYS[release_roles.INDEX])
    trust = replace(ctx.trust, roles=roles)
    ctx.trust = trust
    ctx.signers.trust = trust
    repo = ctx.repository()
    targets = repo.edit("targets")
    assert targets.delegations is not None and targets.delegations.roles is not None
    targets.delegations.roles[release_roles.INDEX] = DelegatedRole(
        release_roles.INDEX, [], 1, False, list(release_roles.INDEX_PATHS))
    for name in ci:
        targets.add_key(layout.name_key(keyfile.public_key(trust.key(name).public), name), release_roles.INDEX)
    repo.add_role(release_roles.INDEX, Targets())
    try:
        repo.publish()
    except BaseException:
        if _journaled(ctx):
            ctx.workspace.write_trust(trust)
        raise
    ctx.workspace.write_trust(trust)
    return MigrateResult(ctx.store.url, True, ci, before)


def _journaled(ctx: Context) -> bool:
    """Whether a pending publication carries the index (``otactl repo publish`` will complete it)."""
    try:
        journal = ctx.store.get_optional(JOURNAL_KEY)
    except StoreError:
        return True  # cannot tell: a trust file naming a role the store lacks is refused loudly later
    return journal is not None and f"{release_roles.INDEX}.json".encode() in journal
