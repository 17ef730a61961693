"""``otactl repo migrate-devices``: move a repository's device records from hash bins to the director.

Decision 0407. Needs the root keys (the director's root is signed by them) and the offline targets key
(the image repository's ``targets`` lists the director's root, and drops the ``devices`` delegation).
The order keeps every device trusting: first every device's chain and the fleet index are written (the
record files are the ones the bins name, unchanged), invisible to devices; then one journaled
publication of the image repository lists ``director/root.json`` and drops the bins. A device that polls
after it finds the director root (signed by the offline targets key), trusts it, and reads its record
from its own chain from then on; one that polls before still reads the bins. A crash before the
publication leaves the bins in force and the command runs again (the chains at a higher version).

TUF forbids a snapshot to drop a role a client's trusted snapshot lists ("New snapshot is missing info
for 'devices-0.json'"), so the same publication rotates the snapshot key: a new root (root keys) names a
new key ``snapshot-N``, under which the cached snapshot no longer verifies, and a client takes the new,
small snapshot as if it had none (the specification's recovery from a fast-forward attack, section
5.3.11). The old snapshot key stays for the other roles it may sign (it is often the one online key).

With ``--chains served`` (decision 0408) nothing is written per device: the records go into record
packs and the fleet index, and ``otactl repo serve`` signs each chain when the device asks. A service
already running takes the change up at the publication (it watches the director configuration), so
devices that poll right after find their chains.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import otactl.keys.keyfile as keyfile
from otactl.app import director, director_served
from otactl.app.context import Context
from otactl.app.fleet import _entry, list_devices
from otactl.app.keys import _journaled, _new_key, _next_name
from otactl.errors import KeyAccessError, UsageError
from otactl.repo import layout
from otactl.workspace import RoleEntry


@dataclass(frozen=True)
class MigrateDevicesResult:
    store: str
    migrated: bool  # False: already in the director layout
    devices: int
    bins_dropped: int
    snapshot_key: str | None = None  # the new snapshot key (the old one is retired: see the module text)

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "migrated": self.migrated, "devices": self.devices,
                "bins_dropped": self.bins_dropped, "snapshot_key": self.snapshot_key}


def _need(ctx: Context, role: str, why: str) -> None:
    entry = ctx.trust.role(role)
    if sum(ctx.signers.has_private(k) for k in entry.keys) < entry.threshold:
        raise KeyAccessError(f"{ctx.trust.path}: {why} needs {entry.threshold} of the {role} keys "
                             f"({', '.join(entry.keys)}), not here",
                             hint="run `otactl repo migrate-devices` where the offline keys are")


CHAINS = ("stored", "served")  # decision 0407's files per device, or 0408's chains signed on request


def migrate_devices(ctx: Context, chains: str = "stored") -> MigrateDevicesResult:
    """Move the records to the director, its chains ``stored`` per device or ``served`` (signed on
    request by ``otactl repo serve``, which takes the change up while it runs)."""
    if chains not in CHAINS:
        raise UsageError(f"chains {chains!r}: use one of {', '.join(CHAINS)}")
    repo = ctx.repository()
    if director.enabled(repo):
        return MigrateDevicesResult(ctx.store.url, False, sum(1 for _ in director.Index(ctx).rows()), 0)
    _need(ctx, "root", "the director's root and the new snapshot key")
    _need(ctx, "targets", "listing the director's root in targets")
    director.chain_signers(ctx)  # the online keys, before anything is made
    records = list_devices(ctx)
    # devices see none of this before the publication below: a run that stopped with the other choice
    # left only files no device reads, and the configuration says which the director now is
    if chains == "served":
        director_served.write_config(ctx)
    else:
        ctx.store.delete(director_served.CONFIG_KEY)
    snapshot = ctx.trust.role("snapshot")
    new_entry, new_path = _new_key(ctx, _next_name(ctx.trust, "snapshot"))
    roles = dict(ctx.trust.roles)
    roles["snapshot"] = RoleEntry((new_entry.name,), 1, snapshot.expires_days)
    old_trust = ctx.trust
    trust = replace(ctx.trust, keys={**ctx.trust.keys, new_entry.name: new_entry}, roles=roles)
    try:
        repo.trust = ctx.trust = ctx.signers.trust = trust
        index = director.Index(ctx)
        if index.served:  # the records' bytes into packs, shard by shard, then their index rows
            items = (director_served.row_and_bytes(r) for r in director_served.in_shard_order(records))
            director_served.write_records(ctx, index, items)
        else:
            changed = []
            for record in records:
                _, _, tf = _entry(record)  # the same bytes and entry the bins name: the file is there already
                changed.append(director.row_of(record, tf.hashes["sha256"], tf.length))
            director.publish(ctx, index, changed)
        director.create(ctx, repo)
        root = repo.edit_root()
        for name in snapshot.keys:
            root.revoke_key(old_trust.key(name).keyid, "snapshot")
        root.add_key(layout.name_key(keyfile.public_key(new_entry.public), new_entry.name), "snapshot")
        bins = [n for n in repo.role_names() if n == "devices" or n.startswith(f"{layout.BIN_PREFIX}-")]
        repo.drop_delegation("devices", bins)
        repo.publish()
    except BaseException:
        ctx.trust = ctx.signers.trust = old_trust
        if _journaled(ctx, new_entry.public):  # `otactl repo publish` will complete it: keep the key
            ctx.workspace.write_trust(trust)
        else:
            new_path.unlink(missing_ok=True)
        raise
    ctx.workspace.write_trust(trust)
    return MigrateDevicesResult(ctx.store.url, True, len(records), len(bins) - 1, new_entry.name)
