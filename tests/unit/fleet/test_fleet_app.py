"""Fleet services on a real workspace: import in bulk, change one device, and who sees what.

A device change must re-sign only its bin, snapshot and timestamp; everything a device reads is
checked through python-tuf's ngclient (reading the store directly).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest
from fixtures.repo import CrashingStore, initial_root, role_versions, store_client
from fleet_parts import INVENTORY_CSV, INVENTORY_YAML

from otactl.app import fleet
from otactl.app.context import Context
from otactl.errors import InputFileError, NotFoundError, UsageError
from otactl.fleet.records import DeviceRecord, read_inventory
from otactl.repo import layout
from otactl.repo.repository import JOURNAL_KEY
from otactl.store.base import BlobStore


def _import(ws: Path, inventory: Path = INVENTORY_CSV) -> fleet.FleetChange:
    inv = read_inventory(inventory)
    return fleet.import_devices(Context.open(ws), inv.records, inv.path, inv.lines)


def _changed(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {name for name in after if before.get(name) != after[name]}


def _device_bin(ws: Path, device_id: str) -> str:
    return Context.open(ws).repository().bin_for(layout.device_path(device_id))


def _client_record(ws: Path, tmp_path: Path, device_id: str) -> dict:  # type: ignore[type-arg]
    ctx = Context.open(ws)
    client = store_client(initial_root(ws), ctx.store, tmp_path / f"client-{device_id}")
    client.refresh()
    info = client.get_targetinfo(layout.device_path(device_id))
    assert info is not None, f"a TUF client does not find {device_id}'s record"
    path = client.download_target(info, str(tmp_path / f"{device_id}.json"))
    raw = Path(path).read_bytes()
    assert json.loads(raw)["schema"] == "otactl/device/2"  # a record with its entitlement (decision 0406)
    return DeviceRecord.from_bytes(raw, str(path)).to_json()


@pytest.mark.parametrize("inventory", [INVENTORY_CSV, INVENTORY_YAML], ids=["csv", "yaml"])
def test_import_publishes_every_record_in_its_bin(fleet_ws: Path, tmp_path: Path, inventory: Path) -> None:
    before = role_versions(fleet_ws)
    change = _import(fleet_ws, inventory)
    assert (change.devices, change.unchanged) == (12, 0)
    bins = {_device_bin(fleet_ws, f"t9-{i:04d}") for i in range(12)}
    assert change.bins_changed == len(bins)
    assert _changed(before, role_versions(fleet_ws)) == bins | {"snapshot", "timestamp"}
    assert [r.device_id for r in fleet.list_devices(Context.open(fleet_ws))] == [f"t9-{i:04d}" for i in range(12)]
    record = _client_record(fleet_ws, tmp_path, "t9-0004")
    assert (record["variant"], record["hardware_revision"], record["schema"]) == ("hp-400", "revB", "otactl/device/2")


def test_reimporting_the_same_inventory_publishes_nothing(fleet_ws: Path) -> None:
    _import(fleet_ws)
    before = role_versions(fleet_ws)
    change = _import(fleet_ws, INVENTORY_YAML)  # same devices, other format
    assert (change.unchanged, change.bins_changed, change.files_published) == (12, 0, 0)
    assert role_versions(fleet_ws) == before


def test_reimport_with_one_change_touches_only_that_bin(fleet_ws: Path, tmp_path: Path) -> None:
    _import(fleet_ws)
    before = role_versions(fleet_ws)
    edited = tmp_path / "inventory.csv"
    text = INVENTORY_CSV.read_text()
    edited.write_text(text.replace("t9-0007,t9-engine,revA,hp-400", "t9-0007,t9-engine,revA,hp-500"))
    change = _import(fleet_ws, edited)
    assert (change.unchanged, change.bins_changed) == (11, 1)
    assert _changed(before, role_versions(fleet_ws)) == {_device_bin(fleet_ws, "t9-0007"), "snapshot", "timestamp"}


def test_set_changes_only_the_devices_bin_snapshot_and_timestamp(fleet_ws: Path, tmp_path: Path) -> None:
    _import(fleet_ws)
    before = role_versions(fleet_ws)
    record, change = fleet.set_device(Context.open(fleet_ws), "t9-0004", variant="hp-500", tags=["pilot"],
                                      pin="2.0.0", clear_pin=False)
    assert (record.variant, record.tags, record.pin) == ("hp-500", ("pilot",), "2.0.0")
    assert change.bins_changed == 1
    assert _changed(before, role_versions(fleet_ws)) == {_device_bin(fleet_ws, "t9-0004"), "snapshot", "timestamp"}
    published = _client_record(fleet_ws, tmp_path, "t9-0004")
    assert (published["variant"], published["tags"], published["pin"]) == ("hp-500", ["pilot"], "2.0.0")
    other = _client_record(fleet_ws, tmp_path, "t9-0005")
    assert other["variant"] == "hp-500" and other["tags"] == [] and other["pin"] is None


def test_set_to_the_same_values_publishes_nothing(fleet_ws: Path) -> None:
    _import(fleet_ws)
    before = role_versions(fleet_ws)
    _, change = fleet.set_device(Context.open(fleet_ws), "t9-0004", variant="hp-400", tags=None, pin=None,
                                 clear_pin=False)
    assert change.files_published == 0
    assert role_versions(fleet_ws) == before


SET_REFUSALS = [
    pytest.param("t9-0004", {"variant": "hp-999"}, UsageError,
                 "device t9-0004: variant: unknown variant 'hp-999' for model 't9-engine' (known: hp-300, hp-400, "
                 "hp-500)", id="unknown-variant"),
    pytest.param("t9-9999", {"variant": "hp-500"}, NotFoundError,
                 "device 't9-9999': not in the fleet (import it with `otactl fleet import`)", id="unknown-device"),
    pytest.param("t9-0004", {"pin": "9.9.9"}, UsageError, "device t9-0004: pin: release t9-engine/9.9.9 is not "
                 "published", id="pin-unpublished"),
    pytest.param("t9-0004", {"pin": "latest"}, UsageError, "device t9-0004: pin 'latest' must be a release version "
                 "like 2.1.0", id="pin-not-a-version"),
    pytest.param("t9-0004", {"pin": "2.0.0", "clear_pin": True}, UsageError, "give --pin or --unpin, not both",
                 id="pin-and-unpin"),
    pytest.param("t9-0004", {"tags": ["ok", "not ok"]}, UsageError,
                 "tag 'not ok': use letters, digits, '.', '_' and '-' (max 128)", id="bad-tag"),
    pytest.param("../etc", {"variant": "hp-500"}, UsageError,
                 "device id '../etc': use letters, digits, '.', '_' and '-' (max 128)", id="path-in-device-id"),
]


@pytest.mark.parametrize(("device", "changes", "error", "message"), SET_REFUSALS)
def test_set_refusals_change_nothing(fleet_ws: Path, device: str, changes: dict, error: type,  # type: ignore[type-arg]
                                     message: str) -> None:
    _import(fleet_ws)
    before = role_versions(fleet_ws)
    kwargs = {"variant": None, "tags": None, "pin": None, "clear_pin": False, **changes}
    with pytest.raises(error) as caught:
        fleet.set_device(Context.open(fleet_ws), device, **kwargs)
    assert str(caught.value) == message
    assert role_versions(fleet_ws) == before


def test_import_with_an_unknown_variant_names_file_line_and_field(fleet_ws: Path, tmp_path: Path) -> None:
    bad = tmp_path / "inventory.csv"
    bad.write_text(INVENTORY_CSV.read_text().replace("t9-0003,t9-engine,revA,hp-300", "t9-0003,t9-engine,revA,hp-350"))
    before = role_versions(fleet_ws)
    keys = sorted(Context.open(fleet_ws).store.list())
    with pytest.raises(InputFileError) as caught:
        _import(fleet_ws, bad)
    assert str(caught.value) == (f"{bad}:5: variant: device t9-0003: unknown variant 'hp-350' for model "
                                 "'t9-engine' (known: hp-300, hp-400, hp-500)")
    assert role_versions(fleet_ws) == before
    assert sorted(Context.open(fleet_ws).store.list()) == keys  # nothing half-written


def test_import_with_a_hardware_revision_without_firmware_names_file_line_and_field(fleet_ws: Path,
                                                                                     tmp_path: Path) -> None:
    """2.0.0 has images for revA and revB only: a revC engine could never install anything."""
    bad = tmp_path / "inventory.csv"
    bad.write_text(INVENTORY_CSV.read_text().replace("t9-0005,t9-engine,revA", "t9-0005,t9-engine,revC"))
    before = role_versions(fleet_ws)
    keys = sorted(Context.open(fleet_ws).store.list())
    with pytest.raises(InputFileError) as caught:
        _import(fleet_ws, bad)
    assert str(caught.value) == (f"{bad}:7: hardware_revision: device t9-0005: no firmware for hardware revision "
                                 "'revC' of model 't9-engine' (images exist for: revA, revB)")
    assert role_versions(fleet_ws) == before
    assert sorted(Context.open(fleet_ws).store.list()) == keys


def test_a_model_without_releases_accepts_any_variant(workspace: Path) -> None:
    change = _import(workspace)
    assert change.devices == 12


class BulkRecordingStore(CrashingStore):
    """Records every write (CrashingStore never crashes with no limit) and each bulk write's size."""

    def __init__(self, inner: BlobStore) -> None:
        super().__init__(inner, writes_allowed=None)
        self.bulk: list[int] = []

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        batch = list(items)
        self.bulk.append(len(batch))
        self.inner.put_many(batch)


def test_import_writes_records_in_one_bulk_write_and_publishes_once(fleet_ws: Path) -> None:
    ctx = Context.open(fleet_ws)
    store = BulkRecordingStore(ctx.store)
    ctx = Context(ctx.workspace, ctx.trust, store, ctx.signers, ctx.now)
    inv = read_inventory(INVENTORY_CSV)
    fleet.import_devices(ctx, inv.records, inv.path, inv.lines)
    assert store.bulk == [12]
    assert not [k for k in store.writes if k.startswith("targets/devices/")]  # no record file one by one
    assert store.writes.count(JOURNAL_KEY) == 2  # one publication: journal written, then removed
