"""Fleet services: import an inventory and change one device, as signed records in hash bins.

A device's record is the target ``devices/<id>.json`` in its succinct hash bin ``devices-XX``;
changing one device re-signs only its bin, snapshot and timestamp.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from otactl.app.context import Context
from otactl.errors import NotFoundError, UsageError
from otactl.fleet.records import DeviceRecord
from otactl.repo import layout
from otactl.repo.repository import Repository


@dataclass(frozen=True)
class FleetChange:
    devices: int
    bins_changed: int
    files_published: int


def known_variants(repo: Repository, model: str) -> set[str] | None:
    """Variants declared by the model's published releases; None if it has none yet."""
    variants: set[str] = set()
    found = False
    for path, tf in repo.role("releases").signed.targets.items():
        if path.startswith(f"releases/{model}/"):
            found = True
            variants.update(layout.get_custom(tf).get("variants", []))
    return variants if found else None


def _check_variant(repo: Repository, record: DeviceRecord, where: str) -> None:
    variants = known_variants(repo, record.model)
    if variants is not None and record.variant not in variants:
        raise UsageError(f"{where}: unknown variant {record.variant!r} for model {record.model!r} "
                         f"(known: {', '.join(sorted(variants))})")


def _put_record(ctx: Context, repo: Repository, record: DeviceRecord) -> str:
    data = record.to_bytes()
    sha = hashlib.sha256(data).hexdigest()
    path = layout.device_path(record.device_id)
    ctx.store.put(layout.target_key(path, sha), data)
    bin_name = repo.bin_for(path)
    repo.add_target(bin_name, path, len(data), sha, {"model": record.model, "variant": record.variant})
    return bin_name


def import_devices(ctx: Context, records: list[DeviceRecord], source: str) -> FleetChange:
    repo = ctx.repository()
    bins: set[str] = set()
    for r in records:
        _check_variant(repo, r, f"{source}: device {r.device_id}")
    for r in records:
        bins.add(_put_record(ctx, repo, r))
    written = repo.publish()
    return FleetChange(len(records), len(bins), len(written))


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
    repo = ctx.repository()
    record = get_device(ctx, repo, device_id)
    try:
        new = record.with_changes(variant, tags, pin, clear_pin)
    except ValueError as exc:
        raise UsageError(f"device {device_id}: {exc}") from None
    _check_variant(repo, new, f"device {device_id}")
    if new == record:
        return record, FleetChange(1, 0, 0)
    _put_record(ctx, repo, new)
    written = repo.publish()
    return new, FleetChange(1, 1, len(written))


def list_devices(ctx: Context) -> list[DeviceRecord]:
    repo = ctx.repository()
    out = []
    for name in repo.role_names():
        if name.startswith(f"{layout.BIN_PREFIX}-"):
            for path in repo.role(name).signed.targets:
                out.append(get_device(ctx, repo, path.removeprefix("devices/").removesuffix(".json")))
    return sorted(out, key=lambda r: r.device_id)
