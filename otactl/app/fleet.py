"""Fleet services: import an inventory and change one device, as signed records in hash bins.

A device's record is the target ``devices/<id>.json`` in its succinct hash bin ``devices-XX``;
changing one device re-signs only its bin, snapshot and timestamp. An import writes every record
file in one bulk write (``BlobStore.put_many``), then edits each bin once and publishes once.
Entitlements (decision 0406) are signed in batches inside that write, never one signature per record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import TargetFile

from otactl import progress
from otactl.app import director
from otactl.app.context import Context
from otactl.app.entitlements import EntitlementSigners, published_signers
from otactl.errors import InputFileError, NotFoundError, OtactlError, UsageError
from otactl.fleet import index as fleet_index
from otactl.fleet.entitlements import DEFAULT_BATCH_SIZE, SIGNERS_PATH, EntitlementError, Signers, sign_in_batches
from otactl.fleet.records import DeviceRecord
from otactl.repo import layout
from otactl.repo.repository import Repository


@dataclass(frozen=True)
class FleetChange:
    devices: int
    bins_changed: int
    files_published: int
    unchanged: int = 0
    entitlements_signed: int = 0  # new statements (decision 0406)
    entitlement_batches: int = 0  # signed batches they went into
    layout: str = "bins"  # or "director": then each written device got a new signed chain (decision 0407)


@dataclass(frozen=True)
class ModelReleases:
    """What the published releases of one model declare."""

    variants: frozenset[str]
    versions: frozenset[str]
    hardware_revisions: frozenset[str] = frozenset()


def model_releases(repo: Repository, model: str) -> ModelReleases | None:
    """Variants and versions of the model's published releases; None if it has none yet."""
    variants: set[str] = set()
    versions: set[str] = set()
    revisions: set[str] = set()
    prefix, images = f"releases/{model}/", f"firmware/{model}/"
    for path, tf in repo.published_targets():
        if path.startswith(prefix):
            versions.add(path.removeprefix(prefix).removesuffix(".json"))
            variants.update(layout.get_custom(tf).get("variants", []))
        elif path.startswith(images):  # an image names the hardware revisions it is built for
            revisions.update(layout.get_custom(tf).get("hardware_revisions", []))
    return ModelReleases(frozenset(variants), frozenset(versions), frozenset(revisions)) if versions else None


def known_variants(repo: Repository, model: str) -> set[str] | None:
    """Variants declared by the model's published releases; None if it has none yet."""
    found = model_releases(repo, model)
    return None if found is None else set(found.variants)


def _problem(record: DeviceRecord, releases: ModelReleases | None) -> tuple[str, str] | None:
    """(field, problem) if the record names a variant or pin the model's releases do not have."""
    if releases is None:
        return None
    if record.variant not in releases.variants:
        return "variant", (f"unknown variant {record.variant!r} for model {record.model!r} "
                           f"(known: {', '.join(sorted(releases.variants))})")
    if releases.hardware_revisions and record.hardware_revision not in releases.hardware_revisions:
        return "hardware_revision", (f"no firmware for hardware revision {record.hardware_revision!r} of model "
                                     f"{record.model!r} (images exist for: "
                                     f"{', '.join(sorted(releases.hardware_revisions))})")
    if record.pin is not None and record.pin not in releases.versions:
        return "pin", f"release {record.model}/{record.pin} is not published"
    return None


def _entry(record: DeviceRecord) -> tuple[str, bytes, TargetFile]:
    data = record.to_bytes()
    path = layout.device_path(record.device_id)
    tf = TargetFile(len(data), {"sha256": hashlib.sha256(data).hexdigest()}, path)
    custom: dict[str, str] = {"model": record.model, "variant": record.variant}
    if record.entitlement is not None:  # change detection for the next import (online-signed: a hint only)
        custom["row"] = record.inventory_digest()
    layout.set_custom(tf, custom)
    return path, data, tf


@dataclass
class _Plan:
    """What to write: records ready (legacy, or an entitlement reused) and records whose grant needs a
    new statement of this version, signed by the entitlement signers."""

    ready: list[DeviceRecord] = field(default_factory=list)
    to_sign: list[tuple[DeviceRecord, int]] = field(default_factory=list)
    unchanged: int = 0
    old: dict[str, TargetFile | None] = field(default_factory=dict)  # device id -> its published entry


Changed = TargetFile | fleet_index.Row  # a written record's bin entry, or in the director layout its index row


class _Records:
    """Where the layout keeps records: hash bins in the repository, or the director (decision 0407)."""

    def __init__(self, ctx: Context, repo: Repository) -> None:
        self.repo = repo
        self.index = director.Index(ctx) if director.enabled(repo) else None
        self._bins: dict[str, str] = {}
        self._written = 0
        # chains signed on request (decision 0408): records are written as they stream, nothing is kept
        self.retains = self.index is None or not self.index.served
        self.layout = "bins" if self.index is None else "director"

    def entry(self, device_id: str) -> TargetFile | None:
        """The device's published record entry (bin entry, or the index row's)."""
        if self.index is not None:
            row = self.index.get(device_id)
            return None if row is None else director.entry_of(row)
        path = layout.device_path(device_id)
        if device_id not in self._bins:
            self._bins[device_id] = self.repo.bin_for(path)
        return self.repo.role(self._bins[device_id]).signed.targets.get(path)

    def indexed_as(self, record: DeviceRecord) -> bool:
        """Whether the fleet index row says what ``record`` says (always, with bins: no index). A row
        that differs (an index left behind, or edited) makes the device's chain and row written again."""
        if self.index is None:
            return True
        row = self.index.get(record.device_id)
        return row is not None and (row.model, row.variant, row.region, row.tags, row.pin) == \
            (record.model, record.variant, record.region, tuple(sorted(record.tags)), record.pin)

    def prepare(self, record: DeviceRecord, old: TargetFile | None,
                looked_up: bool) -> tuple[Changed, str, bytes] | None:
        """What the layout needs of a record to write and publish it (not the record: a million entitled
        records would be gigabytes): its bin entry or index row, its file's key and its bytes; None when
        the published record and its index row already say this. ``old`` is its published entry if known;
        ``looked_up`` says an absent one was looked for already."""
        if self.index is not None and self.index.served:  # no entry, no file key: the row is what is written
            from otactl.app import director_served

            row, data = director_served.row_and_bytes(record)
            was = self.index.get(record.device_id) if old is not None or not looked_up else None
            return None if was is not None and was.at(0, 0) == row else (row, "", data)
        path, data, tf = _entry(record)
        old = old or (None if looked_up else self.entry(record.device_id))
        if old is not None and old.length == tf.length and old.hashes == tf.hashes and \
                layout.get_custom(old) == layout.get_custom(tf) and self.indexed_as(record):
            return None
        kept: Changed = tf if self.index is None else director.row_of(record, tf.hashes["sha256"], tf.length)
        return kept, layout.target_key(path, tf.hashes["sha256"]), data

    def write(self, ctx: Context, items: Iterator[tuple[Changed, str, bytes]]) -> None:
        """Write the record files (content-addressed: invisible until published), or with chains signed
        on request (decision 0408) the record packs and index rows, which publishes them."""
        if self.index is not None and self.index.served:
            from otactl.app import director_served

            self._written = director_served.write_records(
                ctx, self.index, ((row, data) for row, _, data in items if isinstance(row, fleet_index.Row)))
            return
        ctx.store.put_many((key, data) for _, key, data in items)

    def read(self, ctx: Context, tf: TargetFile) -> bytes:
        """The published record file an entry names (not yet checked against it)."""
        if self.index is not None and self.index.served:
            row = self.index.get(tf.path.removeprefix("devices/").removesuffix(".json"))
            if row is None:
                raise NotFoundError(f"{tf.path}: not in the fleet index")
            return self.index.packs.record(row)
        return ctx.store.get(layout.target_key(tf.path, tf.hashes["sha256"]))

    def stage(self, changed: Sequence[Changed]) -> None:
        if self.index is not None:
            return
        for tf in changed:
            assert isinstance(tf, TargetFile)
            device_id = tf.path.removeprefix("devices/").removesuffix(".json")
            bin_name = self._bins.get(device_id) or self.repo.bin_for(tf.path)
            self.repo.edit(bin_name).targets[tf.path] = tf

    def publish(self, ctx: Context, changed: Sequence[Changed]) -> int:
        """Publish the changed records; the number of metadata files written."""
        if not self.retains:
            return self._written  # written and indexed by ``write``
        if not changed:
            return 0
        if self.index is None:
            return len(self.repo.publish())
        return director.publish(ctx, self.index, [row for row in changed if isinstance(row, fleet_index.Row)])


def _published_record(ctx: Context, where: _Records, tf: TargetFile) -> DeviceRecord | None:
    """The published record a bin entry names; None when its file is unreadable or not a record (a new
    statement is then signed from the inventory)."""
    try:
        data = where.read(ctx, tf)
        tf.verify_length_and_hashes(data)
        return DeviceRecord.from_bytes(data, tf.path)
    except (OtactlError, LengthOrHashMismatchError):
        return None


def _plan(ctx: Context, where: _Records, records: list[DeviceRecord], signers: Signers | None,
          *, reread: bool = False, known: Mapping[str, DeviceRecord] | None = None) -> _Plan:
    """Per record: unchanged (its bin entry carries the same inventory digest), an entitlement to
    reuse (same grant, and the published one verifies), or a new statement with the next version.
    ``reread`` ignores the digests (a migration re-checks every record)."""
    plan = _Plan()
    for r in records:
        if signers is None:
            if r.features:
                raise UsageError(f"device {r.device_id}: features need entitlements; this repository has none "
                                 f"yet ({SIGNERS_PATH})", hint="run `otactl fleet entitle`")
            plan.ready.append(r.entitled(None))
            continue
        old_tf = where.entry(r.device_id)
        if old_tf is None:
            plan.to_sign.append((r, 1))
            continue
        plan.old[r.device_id] = old_tf  # only devices that have one: a new fleet's million are not kept
        if not reread and layout.get_custom(old_tf).get("row") == r.inventory_digest() and where.indexed_as(r):
            plan.unchanged += 1
            continue
        old = (known or {}).get(r.device_id) or _published_record(ctx, where, old_tf)
        ent = None if old is None else old.entitlement
        if ent is not None and ent.statement.grant == r.grant:
            try:
                signers.verify(ent, device_id=r.device_id, public_key=r.public_key)
                plan.ready.append(r.entitled(ent))
                continue
            except EntitlementError:
                pass  # signed by signers no longer trusted (a migration), or forged: sign it again
        plan.to_sign.append((r, 1 if ent is None else ent.statement.version + 1))
    return plan


def _write(ctx: Context, where: _Records, plan: _Plan, keys: EntitlementSigners | None,
           batch_size: int) -> tuple[list[Changed], int, int]:
    """Write the record files (one bulk write) and stage their entries; (changed records, records
    whose bytes were already published, batches signed)."""
    signer_list = keys.load() if plan.to_sign and keys is not None else []
    changed: list[Changed] = []
    unchanged = 0
    batches = -(-len(plan.to_sign) // batch_size)

    def entitled() -> Iterator[tuple[DeviceRecord, bool]]:
        """Each record to write, and whether ``_plan`` looked up its published entry (a new device has none)."""
        for r in plan.ready:
            yield r, r.device_id in plan.old
        proofs = sign_in_batches((r.statement(v) for r, v in plan.to_sign), signer_list, issued=ctx.now,
                                 batch_size=batch_size)
        for (r, _), proof in zip(plan.to_sign, proofs, strict=True):
            yield r.entitled(proof), True

    def files(written: progress.Task) -> Iterator[tuple[Changed, str, bytes]]:
        nonlocal unchanged
        for r, looked_up in entitled():
            written.advance()
            item = where.prepare(r, plan.old.get(r.device_id), looked_up)
            if item is None:
                unchanged += 1
                continue
            if where.retains:  # not when written as they stream past (a million rows are 350 MB)
                changed.append(item[0])
            yield item

    # record files are content-addressed: invisible to devices until a bin names them
    with progress.task("writing device records", len(plan.ready) + len(plan.to_sign)) as writing:
        where.write(ctx, files(writing))
    where.stage(changed)
    return changed, unchanged, batches


def import_devices(ctx: Context, records: list[DeviceRecord], source: str,
                   lines: Mapping[str, int] | None = None, *, entitlement_keys: Sequence[str] = (),
                   batch_size: int = DEFAULT_BATCH_SIZE) -> FleetChange:
    """Write every record (unchanged ones are skipped) and publish the changed bins once.

    In a migrated repository (decision 0406) a device whose grant (variant, features, key, model,
    hardware revision) is new or changed gets a new statement, signed in batches of ``batch_size``
    by the entitlement keys (``entitlement_keys``: names or URIs; default the trust file's); other
    changes reuse the published entitlement and need no entitlement key."""
    repo = ctx.repository()
    releases: dict[str, ModelReleases | None] = {}
    for r in records:
        if r.model not in releases:
            releases[r.model] = model_releases(repo, r.model)
        problem = _problem(r, releases[r.model])
        if problem is not None:
            raise InputFileError(source, f"device {r.device_id}: {problem[1]}",
                                 line=(lines or {}).get(r.device_id), field=problem[0])
    signers = published_signers(ctx, repo)
    where = _Records(ctx, repo)
    if where.index is not None:
        _check_keys(ctx, records, source, lines)
        if where.index.served:  # shard order: each record pack and index shard is written once
            from otactl.app import director_served

            records = director_served.in_shard_order(records)
    plan = _plan(ctx, where, records, signers)
    keys = None if signers is None else EntitlementSigners(ctx, signers, tuple(entitlement_keys))
    changed, unchanged, batches = _write(ctx, where, plan, keys, batch_size)
    written = where.publish(ctx, changed)
    return FleetChange(len(records), _units(where, changed), written, plan.unchanged + unchanged,
                       len(plan.to_sign), batches, where.layout)


def _check_keys(ctx: Context, records: list[DeviceRecord], source: str, lines: Mapping[str, int] | None) -> None:
    """A device key another device of the fleet already binds is refused (the inventory file itself is
    checked when read): two devices with one key could each sign the other's reports. A device that
    moves its key to another device in the same inventory is fine."""
    owners = director.key_owners(ctx, {r.public_key for r in records})
    in_file = {r.device_id: r.public_key for r in records}
    for r in records:
        owner = owners.get(r.public_key)
        if owner is not None and owner != r.device_id and in_file.get(owner, r.public_key) == r.public_key:
            raise InputFileError(source, f"device {r.device_id!r} reuses the public key of device {owner!r}, "
                                 "already in the fleet; every device needs its own key",
                                 line=(lines or {}).get(r.device_id), field="public_key")


def _units(where: _Records, changed: Sequence[Changed]) -> int:
    """Hash bins changed (none in the director layout)."""
    if where.index is not None:
        return 0
    return len({where.repo.bin_for(tf.path) for tf in changed if isinstance(tf, TargetFile)})


def get_device(ctx: Context, repo: Repository, device_id: str) -> DeviceRecord:
    layout.check_name("device id", device_id)
    if director.enabled(repo):
        return director.get_record(ctx, device_id)
    path = layout.device_path(device_id)
    found = repo.find_target(path)
    if found is None:
        raise NotFoundError(f"device {device_id!r}: not in the fleet (import it with `otactl fleet import`)")
    _, tf = found
    data = ctx.store.get(layout.target_key(path, tf.hashes["sha256"]))
    tf.verify_length_and_hashes(data)
    return DeviceRecord.from_bytes(data, path)


def set_device(ctx: Context, device_id: str, *, variant: str | None, tags: list[str] | None,
               pin: str | None, clear_pin: bool, region: str | None = None, features: list[str] | None = None,
               entitlement_keys: Sequence[str] = ()) -> tuple[DeviceRecord, FleetChange]:
    """Change one device. A new variant or features needs the entitlement signers (in a migrated
    repository); tags, region and pin are operational and reuse the device's entitlement."""
    if pin is not None and clear_pin:
        raise UsageError("give --pin or --unpin, not both")
    repo = ctx.repository()
    record = get_device(ctx, repo, device_id)
    try:
        new = record.with_changes(variant, tags, pin, clear_pin, region=region, features=features)
    except ValueError as exc:
        raise UsageError(f"device {device_id}: {exc}") from None
    problem = _problem(new, model_releases(repo, new.model))
    if problem is not None:
        raise UsageError(f"device {device_id}: {problem[0]}: {problem[1]}")
    if new == record:
        return record, FleetChange(1, 0, 0, 1)
    signers = published_signers(ctx, repo)
    where = _Records(ctx, repo)
    plan = _plan(ctx, where, [new], signers, reread=True, known={device_id: record})
    keys = None if signers is None else EntitlementSigners(ctx, signers, tuple(entitlement_keys))
    changed, _, batches = _write(ctx, where, plan, keys, DEFAULT_BATCH_SIZE)
    written = where.publish(ctx, changed)
    final = get_device(ctx, repo, device_id) if changed or written else record
    return final, FleetChange(1, _units(where, changed), written, 0 if changed or written else 1, len(plan.to_sign),
                              batches,
                              where.layout)


def list_devices(ctx: Context) -> list[DeviceRecord]:
    repo = ctx.repository()
    if director.enabled(repo):
        return director.list_records(ctx)
    return sorted(bin_records(ctx, repo), key=lambda r: r.device_id)


def bin_records(ctx: Context, repo: Repository) -> Iterator[DeviceRecord]:
    """Every record of the hash bins, in no set order, one at a time (a million records with their
    entitlements are gigabytes; ``list_devices`` sorts them)."""
    bins = [n for n in repo.role_names() if n.startswith(f"{layout.BIN_PREFIX}-")]
    paths: list[str] = []
    with progress.task("reading device hash bins", len(bins)) as reading:
        for name in bins:
            paths.extend(repo.role(name).signed.targets)
            reading.advance()
    with progress.task("reading device records", len(paths)) as reading:
        for path in paths:
            yield get_device(ctx, repo, path.removeprefix("devices/").removesuffix(".json"))
            reading.advance()
