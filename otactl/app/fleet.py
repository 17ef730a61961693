"""Fleet services: import an inventory and change one device, as signed records in hash bins.

A device's record is the target ``devices/<id>.json`` in its succinct hash bin ``devices-XX``;
changing one device re-signs only its bin, snapshot and timestamp. An import writes every record
file in one bulk write (``BlobStore.put_many``), then edits each bin once and publishes once.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tuf.api.metadata import TargetFile

from otactl import progress
from otactl.app.context import Context
from otactl.errors import InputFileError, NotFoundError, UsageError
from otactl.fleet.records import DeviceRecord
from otactl.repo import layout
from otactl.repo.repository import Repository


@dataclass(frozen=True)
class FleetChange:
    devices: int
    bins_changed: int
    files_published: int
    unchanged: int = 0


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
    for path, tf in repo.role("releases").signed.targets.items():
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
    layout.set_custom(tf, {"model": record.model, "variant": record.variant})
    return path, data, tf


def import_devices(ctx: Context, records: list[DeviceRecord], source: str,
                   lines: Mapping[str, int] | None = None) -> FleetChange:
    """Write every record (unchanged ones are skipped) and publish the changed bins once."""
    repo = ctx.repository()
    releases: dict[str, ModelReleases | None] = {}
    for r in records:
        if r.model not in releases:
            releases[r.model] = model_releases(repo, r.model)
        problem = _problem(r, releases[r.model])
        if problem is not None:
            raise InputFileError(source, f"device {r.device_id}: {problem[1]}",
                                 line=(lines or {}).get(r.device_id), field=problem[0])
    changed: dict[str, list[TargetFile]] = defaultdict(list)
    unchanged = 0

    def files(written: progress.Task) -> Iterator[tuple[str, bytes]]:
        nonlocal unchanged
        for r in records:
            written.advance()
            path, data, tf = _entry(r)
            bin_name = repo.bin_for(path)
            old = repo.role(bin_name).signed.targets.get(path)
            if old is not None and old.length == tf.length and old.hashes == tf.hashes and \
                    layout.get_custom(old) == layout.get_custom(tf):
                unchanged += 1
                continue
            changed[bin_name].append(tf)
            yield layout.target_key(path, tf.hashes["sha256"]), data

    # record files are content-addressed: invisible to devices until a bin names them
    with progress.task("writing device records", len(records)) as writing:
        ctx.store.put_many(files(writing))
    for bin_name, entries in changed.items():
        targets = repo.edit(bin_name).targets
        for tf in entries:
            targets[tf.path] = tf
    written = repo.publish() if changed else []
    return FleetChange(len(records), len(changed), len(written), unchanged)


def get_device(ctx: Context, repo: Repository, device_id: str) -> DeviceRecord:
    layout.check_name("device id", device_id)
    path = layout.device_path(device_id)
    found = repo.find_target(path)
    if found is None:
        raise NotFoundError(f"device {device_id!r}: not in the fleet (import it with `otactl fleet import`)")
    _, tf = found
    data = ctx.store.get(layout.target_key(path, tf.hashes["sha256"]))
    tf.verify_length_and_hashes(data)
    return DeviceRecord.from_bytes(data, path)


def set_device(ctx: Context, device_id: str, *, variant: str | None, tags: list[str] | None,
               pin: str | None, clear_pin: bool) -> tuple[DeviceRecord, FleetChange]:
    if pin is not None and clear_pin:
        raise UsageError("give --pin or --unpin, not both")
    repo = ctx.repository()
    record = get_device(ctx, repo, device_id)
    try:
        new = record.with_changes(variant, tags, pin, clear_pin)
    except ValueError as exc:
        raise UsageError(f"device {device_id}: {exc}") from None
    problem = _problem(new, model_releases(repo, new.model))
    if problem is not None:
        raise UsageError(f"device {device_id}: {problem[0]}: {problem[1]}")
    if new == record:
        return record, FleetChange(1, 0, 0, 1)
    path, data, tf = _entry(new)
    ctx.store.put(layout.target_key(path, tf.hashes["sha256"]), data)
    repo.edit(repo.bin_for(path)).targets[path] = tf
    written = repo.publish()
    return new, FleetChange(1, 1, len(written))


def list_devices(ctx: Context) -> list[DeviceRecord]:
    repo = ctx.repository()
    bins = [n for n in repo.role_names() if n.startswith(f"{layout.BIN_PREFIX}-")]
    paths: list[str] = []
    with progress.task("reading device hash bins", len(bins)) as reading:
        for name in bins:
            paths.extend(repo.role(name).signed.targets)
            reading.advance()
    out = []
    with progress.task("reading device records", len(paths)) as reading:
        for path in paths:
            out.append(get_device(ctx, repo, path.removeprefix("devices/").removesuffix(".json")))
            reading.advance()
    return sorted(out, key=lambda r: r.device_id)
