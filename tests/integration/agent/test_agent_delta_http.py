"""Signed delta updates over HTTP (decision 1201): the real agent, python-tuf ngclient through otactl's
fetcher, and the repository served on 127.0.0.1.

Releases (model t9-engine, hardware revision revA; images of ~1 MiB of text-like records):
1.0.0, 1.0.1 (another image) and 1.1.0 (a minor change of 1.0.0's image), built with
``--delta-from 1.0.0``. A device on 1.0.0 rebuilds 1.1.0 from the delta; every other case falls
back to the full image and still installs it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nacl.signing
import pytest
from tuf.api.metadata import Metadata, TargetFile, Targets

from otactl.agent.agent import Agent
from otactl.agent.state import FIRMWARE_FILE, DeviceState, Identity
from otactl.app import release as release_svc
from otactl.app.fleet import import_devices
from otactl.app.policy import publish_policy
from otactl.fleet.records import DeviceRecord
from otactl.release import bundle
from otactl.release import delta as engine
from otactl.release.manifest import load_manifest
from otactl.repo import layout
from otactl.repo.client import HttpxFetcher
from otactl.repo.repository import to_bytes
from otactl.repo.serve import serve_in_thread
from otactl.sim.ingest import running_ingest
from otactl.sim.workspace import SimWorkspace
from otactl.telemetry.report import Event, Report, Transfer, TransferMode, parse_payload

pytestmark = pytest.mark.integration
PASSPHRASE = "agent-delta-passphrase"
MODEL = "t9-engine"


def image(seed: int, changes: int) -> bytes:
    """~1 MiB of records, the same for one seed; ``changes`` lines edited and one inserted."""
    r = random.Random(seed)
    lines = [f"record {i:06d} value {r.randrange(10**6):06d} {r.choice(['alpha', 'beta', 'gamma'])}\n"
             for i in range(28000)]
    edit = random.Random(seed + changes)
    for _ in range(changes):
        lines[edit.randrange(len(lines))] = f"patched {edit.randrange(10**9)}\n"
    if changes:
        lines.insert(len(lines) // 2, "inserted by the minor release\n")
    return "".join(lines).encode()


IMAGES = {"1.0.0": image(1, 0), "1.0.1": image(2, 0), "1.1.0": image(1, 20), "1.2.0": image(1, 40)}


def write_manifest(base: Path, version: str) -> Path:
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "images" / f"d-revA-{version}.bin").write_bytes(IMAGES[version])
    path = base / f"{MODEL}-{version}.yaml"
    path.write_text(f"""schema: otactl/manifest/1
model: {MODEL}
version: {version}
security_version: 1
firmware:
  revA: {{file: images/d-revA-{version}.bin}}
variants:
  hp-400: {{max_hp: 400}}
""")
    return path


def release(ws: SimWorkspace, manifest: Path, delta_from: tuple[str, ...] = ()) -> None:
    parsed = load_manifest(manifest)
    release_svc.build(ws._fresh(), parsed, delta_from=delta_from)
    approve_and_publish(ws, parsed.version)


def approve_and_publish(ws: SimWorkspace, version: str) -> None:
    release_svc.approve(ws._fresh(), f"{MODEL}/{version}", "release-manager")
    release_svc.publish(ws._fresh(), f"{MODEL}/{version}")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("agent-delta")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
        ws = SimWorkspace.create(base / "ws")
        release(ws, write_manifest(base / "m", "1.0.0"))
        release(ws, write_manifest(base / "m", "1.0.1"))
        release(ws, write_manifest(base / "m", "1.1.0"), delta_from=("1.0.0",))
    return base


class Repo:
    def __init__(self, ws: SimWorkspace, url: str, manifests: Path) -> None:
        self.ws, self.url, self.manifests = ws, url, manifests

    def all_on(self, version: str) -> None:
        publish_policy(self.ws._fresh(), {
            "model": MODEL, "rollout_id": f"delta-{version}", "salt": "delta", "baseline": "1.0.0",
            "rings": [{"name": "all", "selector": {"percent": 100}, "release": version}]})

    def device(self, base: Path, device_id: str) -> tuple[Path, DeviceRecord]:
        key = nacl.signing.SigningKey(hashlib.sha256(device_id.encode()).digest())
        record = DeviceRecord(device_id, MODEL, "revA", "hp-400", "eu", (), bytes(key.verify_key).hex())
        import_devices(self.ws._fresh(), [record], "test")
        path = base / device_id
        DeviceState.provision(path, Identity(device_id, MODEL, "revA"),
                              (self.ws.path / "signing" / "root.json").read_bytes(), key)
        return path, record

    def target(self, version: str, delta: bool) -> tuple[str, TargetFile]:
        targets = dict(self.ws._fresh().repository().published_targets())
        path = next(p for p in targets
                    if p.startswith(f"firmware/{MODEL}/{version}/") and p.endswith(".delta") == delta)
        return path, targets[path]


@pytest.fixture
def repo(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Repo]:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    shutil.copytree(template, tmp_path / "t", symlinks=True)
    ws = SimWorkspace.open(tmp_path / "t" / "ws")
    server, url = serve_in_thread(ws.ctx.store)
    try:
        yield Repo(ws, url, tmp_path / "t" / "m")
    finally:
        server.shutdown()
        server.server_close()


class Device:
    """An agent whose HTTP requests are recorded."""

    def __init__(self, repo: Repo, base: Path, device_id: str) -> None:
        self.path, self.record = repo.device(base, device_id)
        self.requested: list[str] = []
        self.http = httpx.Client(event_hooks={"request": [lambda r: self.requested.append(r.url.path)]})
        self.agent = Agent(self.path, repo.url, None, fetcher=HttpxFetcher(self.http))

    def update(self) -> str:
        self.requested.clear()
        return self.agent.check_and_update(datetime.now(UTC)).outcome

    def firmware_requests(self) -> list[str]:
        return [re.sub(r"/[0-9a-f]{64}\.", "/", p) for p in self.requested if p.startswith("/targets/firmware/")]

    def downloaded(self, version: str) -> Report:
        reports = [parse_payload(e["payload"]) for e in self.agent.outbox.log.outbox]
        return next(r for r in reversed(reports) if r.event is Event.DOWNLOADED and r.release == version)

    def slot_image(self) -> bytes:
        slot = self.agent.device.active().slot
        assert slot is not None
        return (self.agent.device.slot_dir(slot) / FIRMWARE_FILE).read_bytes()

    def close(self) -> None:
        self.agent.close()
        self.http.close()


@pytest.fixture
def device(repo: Repo, tmp_path: Path) -> Iterator[Device]:
    dev = Device(repo, tmp_path / "devices", "t9-d001")
    try:
        yield dev
    finally:
        dev.close()


def fallback_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("delta not used")]


def on(repo: Repo, device: Device, version: str) -> None:
    repo.all_on(version)
    assert device.update() == "committed"
    assert device.slot_image() == IMAGES[version]


def test_the_build_publishes_a_signed_delta_with_its_source_and_result(repo: Repo) -> None:
    _, tf = repo.target("1.1.0", delta=True)
    image_path, image_tf = repo.target("1.1.0", delta=False)
    custom = layout.get_custom(tf)["delta"]
    assert custom == {"format": engine.FORMAT, "source_version": "1.0.0",
                      "source_sha256": hashlib.sha256(IMAGES["1.0.0"]).hexdigest(),
                      "source_length": len(IMAGES["1.0.0"]), "target": image_path,
                      "target_sha256": image_tf.hashes["sha256"], "target_length": image_tf.length}
    assert tf.length * 10 <= image_tf.length  # the goal: >= 10x fewer bytes for a minor release
    assert not [p for p, _ in repo.ws._fresh().repository().published_targets()
                if p.startswith(f"firmware/{MODEL}/1.0.1/") and p.endswith(".delta")]  # built without --delta-from


def test_the_happy_path_rebuilds_the_image_from_the_delta_with_fewer_bytes(repo: Repo, device: Device,
                                                                          tmp_path: Path) -> None:
    on(repo, device, "1.0.0")
    assert device.downloaded("1.0.0").transfer == Transfer(TransferMode.FULL, len(IMAGES["1.0.0"]))
    repo.all_on("1.1.0")
    delta_path, delta_tf = repo.target("1.1.0", delta=True)
    assert device.update() == "committed"
    assert device.slot_image() == IMAGES["1.1.0"]
    assert device.firmware_requests() == [f"/targets/{delta_path}"]  # the delta only, not the image
    # the report of the download says how the image came and what it cost
    assert device.downloaded("1.1.0").transfer == Transfer(TransferMode.DELTA, delta_tf.length)
    assert delta_tf.length * 10 <= len(IMAGES["1.1.0"])
    with running_ingest(tmp_path / "t.db", [device.record]) as ingest:  # which admits the new field
        device.agent.ingest_url = ingest.url
        flush = device.agent.flush()
    assert flush.posted >= 10 and (flush.accepted, flush.refused, flush.pending) == (flush.posted, 0, 0)


def test_a_tampered_delta_is_refused_by_the_tuf_client_and_the_full_image_is_used(
        repo: Repo, device: Device, caplog: pytest.LogCaptureFixture) -> None:
    on(repo, device, "1.0.0")
    delta_path, delta_tf = repo.target("1.1.0", delta=True)
    stored = repo.ws.path / "store" / layout.target_key(delta_path, delta_tf.hashes["sha256"])
    if not stored.is_file():  # the workspace's directory store
        stored = next(repo.ws.path.rglob(Path(layout.target_key(delta_path, delta_tf.hashes["sha256"])).name))
    data = bytearray(stored.read_bytes())
    data[-10] ^= 0x01  # one bit changed after signing
    stored.write_bytes(bytes(data))
    repo.all_on("1.1.0")
    assert device.update() == "committed"
    image_path, _ = repo.target("1.1.0", delta=False)
    assert device.firmware_requests() == [f"/targets/{delta_path}", f"/targets/{image_path}"]
    assert device.slot_image() == IMAGES["1.1.0"]
    transfer = device.downloaded("1.1.0").transfer
    assert transfer is not None and transfer.mode is TransferMode.FULL
    assert transfer.bytes == delta_tf.length + len(IMAGES["1.1.0"])  # the refused delta cost its bytes too
    [why] = fallback_reasons(caplog)
    assert "LengthOrHashMismatchError" in why


def test_a_delta_for_another_source_is_not_used(repo: Repo, device: Device,
                                                caplog: pytest.LogCaptureFixture) -> None:
    on(repo, device, "1.0.1")  # the delta is from 1.0.0's image
    repo.all_on("1.1.0")
    assert device.update() == "committed"
    image_path, _ = repo.target("1.1.0", delta=False)
    assert device.firmware_requests() == [f"/targets/{image_path}"]
    assert device.slot_image() == IMAGES["1.1.0"]
    transfer = device.downloaded("1.1.0").transfer
    assert transfer is not None and (transfer.mode, transfer.bytes) == (TransferMode.FULL, len(IMAGES["1.1.0"]))
    assert fallback_reasons(caplog)[-1].endswith("no delta from the image in the active slot")


def test_a_missing_source_falls_back_to_the_full_image(repo: Repo, device: Device, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    on(repo, device, "1.0.0")
    slot = device.agent.device.active().slot
    assert slot is not None
    (device.agent.device.slot_dir(slot) / FIRMWARE_FILE).unlink()  # the active slot's image is gone
    repo.all_on("1.1.0")
    assert device.update() == "committed"
    image_path, _ = repo.target("1.1.0", delta=False)
    assert device.firmware_requests() == [f"/targets/{image_path}"]
    assert device.slot_image() == IMAGES["1.1.0"]
    transfer = device.downloaded("1.1.0").transfer
    assert transfer is not None and transfer.mode is TransferMode.FULL
    assert fallback_reasons(caplog)[-1].endswith("no image in the active slot to apply a delta to")

    fresh = Device(repo, tmp_path / "devices", "t9-d002")  # factory-empty: no source at all
    try:
        assert fresh.update() == "committed"
        assert fresh.firmware_requests() == [f"/targets/{image_path}"]
    finally:
        fresh.close()


def _sign_bad_delta(repo: Repo, version: str) -> None:
    """As a CI key holder would: replace the staged delta with one that rebuilds another image of the
    same length, its header claiming the real image, and sign the result (descriptor and metadata)."""
    ctx = repo.ws._fresh()
    md: Metadata[Targets] = Metadata.from_bytes(ctx.store.get(release_svc.staged_key(MODEL, version)))
    delta_path = next(p for p in md.signed.targets if p.startswith(f"firmware/{MODEL}/{version}/")
                      and p.endswith(".delta"))
    work = repo.manifests / "bad"
    work.mkdir()
    wrong = bytearray(IMAGES[version])
    wrong[len(wrong) // 3] ^= 0x20  # not the released image
    (work / "src").write_bytes(IMAGES["1.0.0"])
    (work / "wrong").write_bytes(bytes(wrong))
    engine.build_delta(work / "src", work / "wrong", work / "bad.delta")
    real = hashlib.sha256(IMAGES[version]).hexdigest()
    bad = (work / "bad.delta").read_bytes().replace(hashlib.sha256(bytes(wrong)).hexdigest().encode(), real.encode())
    sha = hashlib.sha256(bad).hexdigest()
    ctx.store.put(layout.target_key(delta_path, sha), bad)
    md.signed.targets[delta_path] = _retarget(md.signed.targets[delta_path], bad)
    desc_path = layout.release_path(MODEL, version)
    desc_tf = md.signed.targets[desc_path]
    doc = json.loads(ctx.store.get(layout.target_key(desc_path, desc_tf.hashes["sha256"])))
    doc["deltas"]["revA"][0].update(length=len(bad), sha256=sha)
    desc = bundle.canonical(doc)
    ctx.store.put(layout.target_key(desc_path, hashlib.sha256(desc).hexdigest()), desc)
    md.signed.targets[desc_path] = _retarget(desc_tf, desc)
    md.signatures.clear()
    md.sign(ctx.signers.get(ctx.trust.ci_keys[0]), append=True)
    ctx.store.put(release_svc.staged_key(MODEL, version), to_bytes(md))


def _retarget(tf: TargetFile, data: bytes) -> TargetFile:
    new = TargetFile(len(data), {"sha256": hashlib.sha256(data).hexdigest()}, tf.path)
    new.unrecognized_fields.update(tf.unrecognized_fields)
    return new


def test_a_delta_that_rebuilds_the_wrong_image_is_refused_before_install(
        repo: Repo, device: Device, caplog: pytest.LogCaptureFixture) -> None:
    on(repo, device, "1.0.0")
    release_svc.build(repo.ws._fresh(), load_manifest(write_manifest(repo.manifests, "1.2.0")), delta_from=("1.0.0",))
    _sign_bad_delta(repo, "1.2.0")
    approve_and_publish(repo.ws, "1.2.0")
    delta_path, _ = repo.target("1.2.0", delta=True)
    repo.all_on("1.2.0")
    assert device.update() == "committed"
    image_path, _ = repo.target("1.2.0", delta=False)
    assert device.firmware_requests() == [f"/targets/{delta_path}", f"/targets/{image_path}"]
    assert device.slot_image() == IMAGES["1.2.0"]  # the full image, never the wrong one
    transfer = device.downloaded("1.2.0").transfer
    assert transfer is not None and transfer.mode is TransferMode.FULL
    [why] = fallback_reasons(caplog)
    assert why.endswith("the reconstructed image does not match the delta's declared target")
