"""`fleet import` and `rollout plan` pause Python's cycle collector (otactl.bulk): at 1M devices its
full passes were ~40% of an import. That is only safe while what they build holds no reference cycles,
so these run an import, a re-import and a plan in each layout with the collector off and count what
only the collector could free."""

from __future__ import annotations

import gc
import hashlib
from pathlib import Path

import pytest

from otactl.app import rollout
from otactl.app.context import Context, utcnow
from otactl.app.fleet import import_devices
from otactl.app.init import DEVICE_LAYOUTS, init_workspace
from otactl.bulk import collector_paused
from otactl.fleet.records import DeviceRecord


def _records(n: int, tag: str) -> list[DeviceRecord]:
    return [DeviceRecord(f"dev-{i}", "m", "revA", "base", ("eu", "na")[i % 2], (tag,),
                         hashlib.sha256(f"dev-{i}".encode()).hexdigest()) for i in range(n)]


PLAN = Path(__file__).resolve().parents[3] / "canary" / "default.yaml"


def _workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device_layout: str) -> Path:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", "bulk-gc-test")
    ws = tmp_path / "ws"
    init_workspace(ws, store_url=None, endpoint_url=None, release_managers=["release-manager"], approvals=1,
                   bin_bit_length=2, now=utcnow(), shared_passphrase=True, device_layout=device_layout)
    return ws


@pytest.mark.parametrize("device_layout", DEVICE_LAYOUTS)
def test_an_import_and_a_plan_leave_nothing_for_the_cycle_collector(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device_layout: str) -> None:
    ws = _workspace(tmp_path, monkeypatch, device_layout)
    gc.collect()
    gc.disable()
    try:
        for tag in ("first", "second"):  # a new fleet, then every record changed
            change = import_devices(Context.open(ws), _records(300, tag), "factory")
            assert change.devices - change.unchanged == 300
            left = gc.collect()
            # none today; a library's setup may leave a few, a cycle per device would leave hundreds
            assert left < 50, f"{device_layout}: {left} objects in reference cycles after importing 300 devices"
        report = rollout.plan(Context.open(ws), "m", "2.0.0", PLAN)
        assert report.fleet_devices == 300
        left = gc.collect()
        assert left < 50, f"{device_layout}: {left} objects in reference cycles after planning 300 devices"
    finally:
        gc.enable()


def test_the_collector_is_paused_inside_and_restored_after_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested: the outer block restores it
            pass
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()
