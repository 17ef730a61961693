"""The services report their long work through ``otactl.progress`` with the right totals (issue 11).

A recording reporter stands in for the CLI's rich bars: every task a service starts is closed, and
what it advanced adds up to the total it announced."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from app_parts import ROOT

from otactl import progress
from otactl.app import fleet, release
from otactl.app import repo as repo_app
from otactl.app.context import Context
from otactl.fleet.records import load_inventory
from otactl.release.manifest import load_manifest


@dataclass
class Recorded:
    label: str
    total: int | None
    unit: progress.Unit
    done: int = 0
    closed: bool = False

    def advance(self, n: int = 1) -> None:
        assert not self.closed, f"{self.label}: advanced after it was closed"
        self.done += n

    def close(self) -> None:
        self.closed = True


@dataclass
class Recorder:
    tasks: list[Recorded] = field(default_factory=list)

    def start(self, label: str, total: int | None, unit: progress.Unit) -> progress.Task:
        self.tasks.append(Recorded(label, total, unit))
        return self.tasks[-1]

    def one(self, label: str) -> Recorded:
        found = [t for t in self.tasks if t.label == label]
        assert len(found) == 1, (label, [t.label for t in self.tasks])
        return found[0]

    def check_complete(self) -> None:
        """Every task closed, each advanced exactly to its total."""
        for t in self.tasks:
            assert t.closed, t
            assert t.done == t.total, t


def test_build_reports_each_image_hashed_and_the_copy_in_bytes(ws: Path) -> None:
    ctx = Context.open(ws)
    manifest = load_manifest(ROOT / "manifests" / "t9-engine-2.2.0.yaml")
    images = [fw.file for fw in manifest.firmware if fw.file is not None]
    assert images
    with progress.reporting(Recorder()) as rec:
        release.build(ctx, manifest)
    assert isinstance(rec, Recorder)
    rec.check_complete()
    for image in images:
        hashed = rec.one(f"hashing {image.name}")
        assert (hashed.total, hashed.unit) == (image.stat().st_size, "bytes")
    copied = rec.one("copying images to the store")
    assert (copied.total, copied.unit) == (sum(p.stat().st_size for p in images), "bytes")


def test_fleet_import_reports_records_written_metadata_signed_and_written(ws: Path) -> None:
    ctx = Context.open(ws)
    base = load_inventory(ROOT / "examples/fleet/inventory.csv")
    records = [dataclasses.replace(r, device_id=f"t9-9{i:03d}", public_key=hashlib.sha256(b"%d" % i).hexdigest())
               for i, r in enumerate(base[:5])]  # new devices, each with its own key
    with progress.reporting(Recorder()) as rec:
        change = fleet.import_devices(ctx, records, "test")
    assert isinstance(rec, Recorder)
    rec.check_complete()
    assert rec.one("writing device records").total == 5
    # each changed bin, then snapshot and timestamp: what was signed is what was written
    assert rec.one("signing metadata").total == change.bins_changed + 2
    assert rec.one("writing metadata").total == change.files_published == change.bins_changed + 2


def test_a_rotation_of_online_roles_counts_every_role_it_signs(ws: Path) -> None:
    ctx = Context.open(ws)
    repo = ctx.repository()
    repo.force_online_resign()
    with progress.reporting(Recorder()) as rec:
        written = repo.publish()
    assert isinstance(rec, Recorder)
    rec.check_complete()
    assert rec.one("signing metadata").total == len(written) == rec.one("writing metadata").total


def test_verify_reports_every_target_it_checks(ws: Path) -> None:
    with progress.reporting(Recorder()) as rec:
        result = repo_app.verify(Context.open(ws))
    assert isinstance(rec, Recorder)
    rec.check_complete()
    assert rec.one("verifying targets").total == result.targets_checked > 0
    assert rec.one("reading role metadata").total == result.roles - 5  # not root/timestamp/snapshot/targets/devices


def test_reading_the_fleet_reports_bins_and_records(ws: Path) -> None:
    ctx = Context.open(ws)
    with progress.reporting(Recorder()) as rec:
        devices = fleet.list_devices(ctx)
    assert isinstance(rec, Recorder)
    rec.check_complete()
    assert rec.one("reading device records").total == len(devices) == 12
    bins = [n for n in ctx.repository().role_names() if n.startswith("devices-")]
    assert rec.one("reading device hash bins").total == len(bins)


def test_without_a_reporter_nothing_is_recorded_and_the_work_is_done(ws: Path) -> None:
    outer = Recorder()
    with progress.reporting(outer):
        with progress.reporting(Recorder()) as inner:
            fleet.list_devices(Context.open(ws))
        assert isinstance(inner, Recorder) and inner.tasks
    assert outer.tasks == []  # the inner reporter is gone once its block ends
    assert len(fleet.list_devices(Context.open(ws))) == 12  # the silent default


def test_a_task_is_closed_when_the_work_fails_and_totals_are_checked() -> None:
    with progress.reporting(Recorder()) as rec:
        with pytest.raises(RuntimeError), progress.task("failing", 3):
            raise RuntimeError("boom")
        with pytest.raises(ValueError, match="must not be negative"), progress.task("bad", -1):
            pass
    assert isinstance(rec, Recorder)
    assert [(t.label, t.closed) for t in rec.tasks] == [("failing", True)]
