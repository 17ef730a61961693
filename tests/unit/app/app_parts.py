"""Shared parts of the application-service tests: a real workspace with published releases and the
example fleet (built once per module, copied per test), a canary plan, in-memory telemetry.

A test module takes the fixtures by importing them: ``from app_parts import template, ws``.
"""

from __future__ import annotations

import functools
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from fixtures.s3server import create_bucket, s3_client

from otactl.app import fleet, journal, release, rollout
from otactl.app.context import Context, utcnow
from otactl.app.init import init_workspace
from otactl.app.policy import current_policy
from otactl.audit import log as audit
from otactl.fleet.records import load_inventory
from otactl.keys.keyfile import public_key
from otactl.release.manifest import load_manifest
from otactl.telemetry.source import CohortCounts, MemorySource, StratumKey

ROOT = Path(__file__).resolve().parents[3]
PASSPHRASE = "test-passphrase"
MODEL = "t9-engine"
OPERATOR = "release-manager"  # a person's key: it signs pause, resume, abort and rollback
RELEASES = ("2.0.0", "2.1.0")  # published in the template; a module may publish more (build_template)
PLAN = """\
schema: otactl/canary-plan/1
name: test
strata: [model, variant]
rings:
  - name: canary
    selector: {percent: 30}
    soak_device_hours: 100
    min_reporting_devices: 10
    gates:
      - {metric: crash_rate, max_ratio: 1.3, missing: wait}
      - {metric: install_failure_rate, max_ratio: 1.3, limit: 0.2, missing: wait}
%(approvals)s
  - name: all
    selector: {percent: 100}
    soak_device_hours: 0
    min_reporting_devices: 1
    gates: []
"""
APPROVALS = """\
    approvals:
      required: 1
      keys: [release-manager]"""


def build_template(ws: Path, versions: tuple[str, ...] = RELEASES, *, store_url: str | None = None,
                   endpoint_url: str | None = None) -> Path:
    """``init`` with one release manager, ``versions`` of t9-engine built, approved and published, the fleet
    (on the workspace's directory store, or on ``store_url`` such as ``s3://bucket/prefix``)."""
    os.environ["OTACTL_KEY_PASSPHRASE"] = PASSPHRASE
    init_workspace(ws, store_url=store_url, endpoint_url=endpoint_url, release_managers=["release-manager"],
                   approvals=1, bin_bit_length=2, now=utcnow(), shared_passphrase=True)
    ctx = Context.open(ws)
    for version in versions:
        name = "t9-engine-2.1.1-config.yaml" if version == "2.1.1" else f"t9-engine-{version}.yaml"
        m = load_manifest(ROOT / "manifests" / name)
        release.build(ctx, m)
        release.approve(ctx, m.version, "release-manager")
        release.publish(ctx, m.version)
    fleet.import_devices(ctx, load_inventory(ROOT / "examples/fleet/inventory.csv"), "inventory")
    return ws


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_template(tmp_path_factory.mktemp("tpl") / "ws")


@pytest.fixture
def ws(template: Path, tmp_path: Path) -> Path:
    os.environ["OTACTL_KEY_PASSPHRASE"] = PASSPHRASE
    dest = tmp_path / "ws"
    shutil.copytree(template, dest)
    return dest


def plan_file(ws: Path, *, approvals: bool = False) -> Path:
    path = ws / "canary" / "test.yaml"
    path.write_text(PLAN % {"approvals": APPROVALS if approvals else ""})
    return path


def ctx_at(ws: Path, hours: float = 0) -> Context:
    ctx = Context.open(ws)
    ctx.now = ctx.now + timedelta(hours=hours)
    return ctx


def counts(devices: int, hours: float, crash_rate: float, install_failures: int = 0) -> CohortCounts:
    """A cohort's counts: ``crash_rate`` crashes per device-hour, one crash per crashing hour and period."""
    crashes = round(crash_rate * hours)
    return CohortCounts(reports=devices * 10, installs=devices, install_failures=install_failures, crashes=crashes,
                        device_hours=hours, crash_hours=min(hours, float(crashes)), periods=int(hours // 24),
                        period_crashes=crashes, period_crash_sq=crashes, devices=devices)


def telemetry(new_crash_rate: float, old_crash_rate: float = 0.002, devices: int = 40,
              release: str = "2.1.0", baseline: str = "2.0.0") -> MemorySource:
    """Ring cohort on ``release`` and control on ``baseline``, with the given crash rates per device-hour."""
    src = MemorySource()
    for variant in ("hp-300", "hp-400", "hp-500"):
        key = StratumKey(MODEL, variant, "eu")
        hours = devices * 100.0
        src.set(MODEL, release, "canary", key, counts(devices, hours, new_crash_rate))
        # the baseline's installs failed now and then (1 in 8): enough for the ring to rule out a 2x regression
        src.set(MODEL, baseline, "all", key, counts(devices * 4, hours * 4, old_crash_rate, devices // 2))
    return src


def policy(ws: Path) -> dict:
    ctx = Context.open(ws)
    doc = current_policy(ctx, ctx.repository(), MODEL)
    assert doc is not None
    return doc


def verify_audit(ws: Path) -> audit.VerifyReport:
    ctx = Context.open(ws)

    def key_for(keyid: str):
        entry = ctx.trust.key_by_id(keyid)
        return None if entry is None else public_key(entry.public)

    report = audit.verify(ctx.store, MODEL, key_for)
    journal.check(ctx, MODEL)  # state and published policy are what the log's last transition records
    return report


def snapshot(ws: Path) -> dict[str, bytes]:
    """Every byte a command could have written under the workspace: state, archives, audit log, repository."""
    return {str(p.relative_to(ws)): p.read_bytes() for p in sorted(ws.rglob("*")) if p.is_file()}


# ------------------------------------------- pre-states for the crash matrix and the concurrency test
def _setup(ws: Path, setup: str) -> None:
    """Bring a fresh template workspace to the command's pre-state."""
    plan = plan_file(ws, approvals=setup == "approvals")
    if setup == "fresh":
        return
    rollout.start(ctx_at(ws), MODEL, "2.1.0", plan, baseline="2.0.0")
    if setup == "paused":
        rollout.pause(ctx_at(ws, 0.5), MODEL, "setup", key=OPERATOR)
    if setup == "rolled_back":
        rollout.rollback(ctx_at(ws, 0.5), MODEL, "setup", key=OPERATOR)


def _bucket_of(ws: Path) -> tuple[str, str]:
    line = next(x for x in (ws / "otactl.yaml").read_text().splitlines() if x.startswith("store:"))
    bucket, _, prefix = line.split("s3://", 1)[1].strip().partition("/")
    return bucket, prefix


def clone_workspace(template: Path, dest: Path, endpoint: str | None) -> Path:
    """A copy of the template workspace; on S3, its objects copied into a new bucket."""
    shutil.copytree(template, dest, symlinks=True)
    if endpoint is not None:
        bucket, prefix = _bucket_of(template)
        target = create_bucket(endpoint, "otactl-crash")
        client = s3_client(endpoint)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", ()):
                client.copy_object(Bucket=target, Key=item["Key"], CopySource={"Bucket": bucket, "Key": item["Key"]})
        cfg = dest / "otactl.yaml"
        cfg.write_text(cfg.read_text().replace(f"s3://{bucket}/{prefix}", f"s3://{target}/{prefix}"))
    return dest


@functools.cache
def _base_template(root: str, kind: str, endpoint: str | None) -> Path:
    ws = Path(root) / f"{kind}-base" / "ws"
    store_url = None if endpoint is None else f"s3://{create_bucket(endpoint, 'otactl-crash-tpl')}/fleet"
    return build_template(ws, store_url=store_url, endpoint_url=endpoint)


@functools.cache
def prepared_template(root: str, kind: str, endpoint: str | None, setup: str) -> Path:
    """A workspace (directory store, or S3 at ``endpoint``) in the pre-state ``setup``: built once per
    session and store kind, then cloned per pre-state."""
    ws = clone_workspace(_base_template(root, kind, endpoint), Path(root) / f"{kind}-{setup}" / "ws", endpoint)
    _setup(ws, setup)
    return ws
