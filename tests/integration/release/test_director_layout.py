"""Per-device director metadata (issue 10, decision 0407): a device reads its record from its own small
signed chain, so another device's change costs it nothing and its own change or a rollout step a few KB;
a repository made with hash bins moves to the layout without any device losing trust; the fleet index
is proved consistent with the signed chains; an attacker with the online keys still cannot change what
only the offline keys vouch for.

The real CLI; devices are otactl's agent (python-tuf's ngclient) over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from fixtures.repo import PASSPHRASE, assert_one_error_line, ok, serve_cli
from fixtures.tufjs import tufjs_fetch, tufjs_run
from release_cli_parts import INVENTORY, MANIFESTS, MODEL, otactl, otactl_json, root_v1, served, ship
from tuf.api.metadata import Metadata, TargetFile

from otactl.agent.agent import Agent, CheckResult
from otactl.agent.state import DeviceState, Identity
from otactl.app import director as director_app
from otactl.app.context import Context, utcnow
from otactl.app.fleet import import_devices
from otactl.app.init import init_workspace
from otactl.app.policy import publish_policy
from otactl.fleet import index as fleet_index
from otactl.fleet.records import DeviceRecord
from otactl.repo import director, layout
from otactl.repo.client import HttpxFetcher

pytestmark = pytest.mark.integration

ME, OTHER = "t9-dir-0001", "t9-dir-0002"
# chains stored per device (0407), or signed on request by `otactl repo serve`, the director service (0408)
LAYOUTS = ["director", "director-served"]


def _serve(ws: Path, device_layout: str) -> contextlib.AbstractContextManager[str]:
    """The repository over HTTP: static files, or the real director service process."""
    return serve_cli(ws) if device_layout == "director-served" else served(ws)


def _workspace(path: Path, monkeypatch: pytest.MonkeyPatch, device_layout: str) -> Path:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)
    init_workspace(path, store_url=None, endpoint_url=None, release_managers=["release-manager"], approvals=1,
                   bin_bit_length=2, now=utcnow(), shared_passphrase=True, device_layout=device_layout)
    ship(path, MANIFESTS / "t9-engine-2.0.0.yaml")
    return path


def _key(device_id: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(device_id.encode()).digest())


def _devices(ws: Path, *ids: str) -> None:
    import_devices(Context.open(ws), [DeviceRecord(d, MODEL, "revB", "hp-400", "eu", (),
                                                   bytes(_key(d).verify_key).hex()) for d in ids], "factory")


def _policy(ws: Path, release: str, rollout: str = "dir") -> None:
    publish_policy(Context.open(ws), {
        "model": MODEL, "rollout_id": f"{rollout}-{release}", "salt": "dir", "baseline": release,
        "rings": [{"name": "all", "selector": {"percent": 100}, "release": release}]})


def _provision(ws: Path, tmp_path: Path, device_id: str = ME) -> Path:
    device_dir = tmp_path / device_id
    DeviceState.provision(device_dir, Identity(device_id, MODEL, "revB"), root_v1(ws), _key(device_id))
    return device_dir


class _Device:
    """An agent whose fetcher counts the bytes each poll receives (metadata and targets)."""

    def __init__(self, device_dir: Path, url: str) -> None:
        self.fetcher = HttpxFetcher()
        self.agent = Agent(device_dir, url, None, fetcher=self.fetcher)

    def poll(self) -> tuple[CheckResult, int]:
        before = self.fetcher.bytes_received
        result = self.agent.check_and_update(utcnow())
        return result, self.fetcher.bytes_received - before

    def close(self) -> None:
        self.agent.close()
        self.fetcher.close()


def _state_record(device_dir: Path) -> dict[str, Any]:
    return json.loads((device_dir / "state.json").read_text())["record"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("device_layout", LAYOUTS)
def test_a_device_reads_its_own_chain_and_pays_nothing_for_another_devices_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device_layout: str) -> None:
    ws = _workspace(tmp_path / "ws", monkeypatch, device_layout)
    _devices(ws, ME, OTHER)
    _policy(ws, "2.0.0")
    repo = Context.open(ws).repository()
    assert not [n for n in repo.role_names() if n.startswith("devices")]  # no bins in the image repository
    device_dir = _provision(ws, tmp_path)
    with _serve(ws, device_layout) as url:
        dev = _Device(device_dir, url)
        try:
            first, _ = dev.poll()
            assert (first.outcome, first.active) == ("committed", "2.0.0"), first.detail
            idle, idle_bytes = dev.poll()
            assert idle.outcome == "stayed" and idle_bytes <= 1024, (idle, idle_bytes)

            ok(otactl(ws, "fleet", "set", OTHER, "--tag", "beta"))
            _, other_bytes = dev.poll()
            assert other_bytes <= 1024, other_bytes  # two timestamps: its own chain did not move

            ok(otactl(ws, "fleet", "set", ME, "--tag", "beta"))
            _, own_bytes = dev.poll()
            assert own_bytes <= 8 * 1024, own_bytes
            assert _state_record(device_dir)["tags"] == ["beta"]

            _policy(ws, "2.0.0", rollout="step")  # a rollout step: the image repository's policy moves
            _, step_bytes = dev.poll()
            assert step_bytes <= 8 * 1024, step_bytes
        finally:
            dev.close()
    assert (DeviceState(device_dir).tuf_dir / "director" / "metadata" / "root.json").is_file()
    versions = {r.device_id: r.version for r in director_app.Index(Context.open(ws)).rows()}
    ok(otactl(ws, "repo", "refresh", "--force"))  # every chain at its next version, a fresh expiry
    assert {r.device_id: r.version for r in director_app.Index(Context.open(ws)).rows()} == \
        {d: v + 1 for d, v in versions.items()}
    with _serve(ws, device_layout) as url:
        dev = _Device(device_dir, url)
        try:
            refreshed, _ = dev.poll()
            assert refreshed.outcome == "stayed" and _state_record(device_dir)["tags"] == ["beta"], refreshed
        finally:
            dev.close()
    ok(otactl(ws, "repo", "prune", "--grace-days", "0", "--keep-versions", "0"))  # records are the chains'
    checked = otactl_json(ws, "fleet", "verify")
    assert (checked["devices"], checked["problems"]) == (2, [])
    stored = Context.open(ws).store
    per_device = [k for k in (*stored.list("director/devices/"), *stored.list("targets/devices/"))]
    if device_layout == "director-served":
        assert per_device == []  # nothing stored per device: the service signs from the index
        from otactl.app.director_served import pack_of

        assert len(list(stored.list("director/records/"))) == len({pack_of(d) for d in (ME, OTHER)})
    else:
        assert len(per_device) >= 2 * 4


@pytest.mark.parametrize("chains", ["stored", "served"])
def test_a_repository_with_hash_bins_moves_to_the_director_without_any_device_losing_trust(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chains: str) -> None:
    """Stored chains are static files; served ones come from the `otactl repo serve` process that was
    already serving the bins, which takes the migration up while it runs."""
    ws = _workspace(tmp_path / "ws", monkeypatch, "bins")
    _devices(ws, ME, OTHER)
    _policy(ws, "2.0.0")
    device_dir = _provision(ws, tmp_path)  # provisioned before the move, with the image root only
    with _serve(ws, "director-served" if chains == "served" else "director") as url:
        dev = _Device(device_dir, url)
        try:
            before, _ = dev.poll()
            assert (before.outcome, before.active) == ("committed", "2.0.0"), before.detail
            snapshot_before = len(Context.open(ws).store.get(layout.metadata_key(
                "snapshot", Context.open(ws).repository().snapshot.signed.version)))

            moved = otactl_json(ws, "repo", "migrate-devices", "--chains", chains)
            assert (moved["migrated"], moved["devices"], moved["bins_dropped"]) == (True, 2, 4), moved
            again = otactl_json(ws, "repo", "migrate-devices", "--chains", chains)
            assert again["migrated"] is False  # safe to run again
            per_device = list(Context.open(ws).store.list("director/devices/"))
            assert (per_device == []) == (chains == "served"), per_device  # served: signed on request

            moved_on, _ = dev.poll()  # the first poll after the move: its own chain, the same record
            assert (moved_on.outcome, moved_on.active) == ("stayed", "2.0.0"), moved_on
            repo = Context.open(ws).repository()
            assert not [n for n in repo.role_names() if n.startswith("devices")]
            snapshot_after = len(repo.store.get(layout.metadata_key("snapshot", repo.snapshot.signed.version)))
            assert snapshot_after < snapshot_before

            ok(otactl(ws, "fleet", "set", ME, "--tag", "moved"))  # a change after the move reaches it
            after, _ = dev.poll()
            assert after.outcome == "stayed" and after.active == "2.0.0", after
            assert _state_record(device_dir)["tags"] == ["moved"]
            assert (DeviceState(device_dir).tuf_dir / "director" / "metadata" / "root.json").is_file()
        finally:
            dev.close()
        fresh = _Device(_provision(ws, tmp_path, OTHER), url)  # provisioned after: the director from the start
        try:
            result, _ = fresh.poll()
            assert (result.outcome, result.active) == ("committed", "2.0.0"), result.detail
        finally:
            fresh.close()
    assert otactl_json(ws, "fleet", "verify")["problems"] == []
    ok(otactl(ws, "repo", "verify"))


@pytest.mark.parametrize("device_layout", LAYOUTS)
def test_the_fleet_index_is_proved_consistent_with_the_signed_chains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     device_layout: str) -> None:
    ws = _workspace(tmp_path / "ws", monkeypatch, device_layout)
    ok(otactl(ws, "fleet", "import", str(INVENTORY)))
    listed = otactl_json(ws, "fleet", "list")["devices"]
    plan_rows = list(director_app.Index(Context.open(ws)).rows())
    assert sorted(r.device_id for r in plan_rows) == sorted(d["device_id"] for d in listed)
    assert otactl_json(ws, "fleet", "verify")["problems"] == []

    ctx = Context.open(ws)  # someone edits the index: one device's variant, nothing signed
    victim = plan_rows[0]
    key = fleet_index.shard_key(fleet_index.shard_of(victim.device_id))
    shard = fleet_index.decode(ctx.store.get(key), key)
    shard[victim.device_id] = dataclasses.replace(victim, variant="hp-500")
    ctx.store.put(key, fleet_index.encode(shard))
    refused = otactl(ws, "fleet", "verify")
    assert refused.returncode == 1
    assert_one_error_line(refused, victim.device_id, "attributes differ")

    ok(otactl(ws, "fleet", "import", str(INVENTORY)))  # an import rewrites the row from the signed record
    assert otactl_json(ws, "fleet", "verify")["problems"] == []


def test_online_keys_cannot_point_a_device_at_another_devices_record_or_roll_its_chain_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The online keys sign the chains, so their holder can sign anything into one: the record must
    still describe the device (its key, bound by the offline-signed entitlement) and the chain's
    version may never go down."""
    ws = _workspace(tmp_path / "ws", monkeypatch, "director")
    _devices(ws, ME, OTHER)
    _policy(ws, "2.0.0")
    device_dir = _provision(ws, tmp_path)
    ctx = Context.open(ws)
    with served(ws) as url:
        dev = _Device(device_dir, url)
        try:
            assert dev.poll()[0].active == "2.0.0"
            old_chain = {k: ctx.store.get(k) for k in ctx.store.list(director.device_prefix(ME))}
            ok(otactl(ws, "fleet", "set", ME, "--tag", "beta"))
            assert dev.poll()[0].outcome == "stayed" and _state_record(device_dir)["tags"] == ["beta"]

            for key, data in old_chain.items():  # replay the older chain
                ctx.store.put(key, data)
            replayed, _ = dev.poll()
            assert replayed.outcome == "error" and "version" in replayed.detail.lower(), replayed
            assert _state_record(device_dir)["tags"] == ["beta"]

            ok(otactl(ws, "fleet", "set", ME, "--tag", "gamma"))  # signed afresh, above the replay
            index = director_app.Index(ctx)
            theirs = index.get(OTHER)
            assert theirs is not None
            forged = director.device_chain(ME, TargetFile(theirs.length, {"sha256": theirs.sha256},
                                                          layout.device_path(ME)),
                                           99, ctx.now.replace(year=ctx.now.year + 1), director_app.chain_signers(ctx))
            ctx.store.put(layout.target_key(layout.device_path(ME), theirs.sha256),
                          ctx.store.get(layout.target_key(layout.device_path(OTHER), theirs.sha256)))
            ctx.store.put_many(forged)
            pointed, _ = dev.poll()
            assert pointed.outcome == "error" and "does not describe this device" in pointed.detail, pointed
            assert _state_record(device_dir)["tags"] == ["beta"]  # the replay's poll did not take "gamma" either
        finally:
            dev.close()
    assert Metadata.from_bytes(ctx.store.get(director.root_key(None))).signed.version == 1


def _change_record(ws: Path, device_layout: str, device_id: str, data: bytes) -> None:
    """Replace the bytes of the record the device's chain names, leaving everything signed alone."""
    from otactl.app import director_served

    ctx = Context.open(ws)
    row = director_app.Index(ctx).get(device_id)
    assert row is not None
    if device_layout == "director":
        ctx.store.put(layout.target_key(layout.device_path(device_id), row.sha256), data)
        return
    key = director_served.pack_key(director_served.pack_of(device_id))
    pack = director_served.decode_pack(ctx.store.get(key), key)
    pack[(device_id, row.sha256)] = data
    ctx.store.put(key, director_served.encode_pack(pack))


@pytest.mark.parametrize("device_layout", LAYOUTS)
def test_tufjs_reads_a_devices_record_through_its_own_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            device_layout: str) -> None:
    """A second TUF client (tuf-js) reads the layout: the director root, the device's chain (stored, or
    signed by the service with snapshot and targets named by version only), its record, byte for byte
    what the device's ngclient reads; a record changed on disk or in its pack is refused."""
    ws = _workspace(tmp_path / "ws", monkeypatch, device_layout)
    _devices(ws, ME, OTHER)
    _policy(ws, "2.0.0")
    ok(otactl(ws, "fleet", "set", ME, "--tag", "js"))  # version 2 of its chain
    device_dir = _provision(ws, tmp_path)
    ctx = Context.open(ws)
    director_root = tmp_path / "director-root.json"
    director_root.write_bytes(ctx.store.get(director.root_key(1)))
    with _serve(ws, device_layout) as url:
        dev = _Device(device_dir, url)
        try:
            assert dev.poll()[0].active == "2.0.0"
        finally:
            dev.close()
        mine = (DeviceState(device_dir).tuf_dir / "director" / "targets").iterdir()
        agent_bytes = next(p for p in mine if p.name.endswith(f"{ME}.json")).read_bytes()
        args = (director_root, f"{url}/{director.device_prefix(ME)}", f"{url}/targets/", tmp_path / "js-cache",
                layout.device_path(ME))
        js_bytes = tufjs_fetch(*args, root_url=f"{url}/director/metadata/")
        assert js_bytes == agent_bytes and json.loads(js_bytes)["tags"] == ["js"]

        _change_record(ws, device_layout, ME, js_bytes.replace(b'"js"', b'"jz"'))
        refused = tufjs_run(director_root, f"{url}/{director.device_prefix(ME)}", f"{url}/targets/",
                            tmp_path / "js-cache-2", layout.device_path(ME), root_url=f"{url}/director/metadata/")
        assert not refused.ok and refused.error is not None and "hash" in refused.error.lower(), refused


def test_rotating_a_key_the_director_root_names_is_refused_until_it_can_follow(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The director's root names the root, devices, snapshot and timestamp keys; a rotation that left it
    naming the old key would make every device refuse its chain, so it is refused, nothing written."""
    ws = _workspace(tmp_path / "ws", monkeypatch, "director")
    trust_before = (ws / "signing" / "trust.yaml").read_bytes()
    refused = otactl(ws, "keys", "rotate", "snapshot")
    assert refused.returncode == 2
    assert_one_error_line(refused, "snapshot", "director")
    assert (ws / "signing" / "trust.yaml").read_bytes() == trust_before


@pytest.mark.parametrize("device_layout", LAYOUTS)
def test_a_key_another_device_already_has_is_refused_and_rings_come_from_the_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device_layout: str) -> None:
    """Two inventories, one device key: the second import is refused naming file, line and field, and
    writes nothing. `rollout plan` reads the index, and holds exactly the rings the bins layout gives."""
    ws = _workspace(tmp_path / "ws", monkeypatch, device_layout)
    ok(otactl(ws, "fleet", "import", str(INVENTORY)))
    first = INVENTORY.read_text().splitlines()[1].split(",")
    later = tmp_path / "later.csv"
    later.write_text("device_id,model,hardware_revision,variant,region,tags,public_key\n"
                     f"t9-late-0001,{MODEL},revB,hp-300,eu,,{'ab' * 32}\n"
                     f"t9-late-0002,{MODEL},revB,hp-300,eu,,{first[-1]}\n")
    refused = otactl(ws, "fleet", "import", str(later))
    assert refused.returncode == 2  # bad input
    assert_one_error_line(refused, f"{later}:3", "public_key", f"reuses the public key of device {first[0]!r}")
    assert "t9-late-0001" not in {d["device_id"] for d in otactl_json(ws, "fleet", "list")["devices"]}

    bins_ws = _workspace(tmp_path / "bins", monkeypatch, "bins")
    ok(otactl(bins_ws, "fleet", "import", str(INVENTORY)))
    plans = [otactl_json(w, "rollout", "plan", MODEL, "2.1.0", "--plan", str(MANIFESTS.parent / "canary" /
                                                                           "demo.yaml")) for w in (ws, bins_ws)]
    assert plans[0]["rings"] == plans[1]["rings"] and plans[0]["fleet_devices"] == 12, plans[0]


# ------------------------------------------------------------- chains signed on request (decision 0408)
def _tamper(ws: Path, device_id: str, record: bytes | None = None, **row_changes: Any) -> None:
    """What a holder of the store (index and packs: as much as the online `devices` key) can do with the
    director service: make it sign a row of their choosing, naming a record of their choosing."""
    from otactl.app import director_served

    ctx = Context.open(ws)
    number = fleet_index.shard_of(device_id)
    key = fleet_index.shard_key(number)
    rows = fleet_index.decode(ctx.store.get(key), key)
    row = rows[device_id]
    if record is not None:
        row_changes.update(sha256=hashlib.sha256(record).hexdigest(), length=len(record))
        pack_key = director_served.pack_key(director_served.pack_of(device_id))
        pack = director_served.decode_pack(ctx.store.get(pack_key), pack_key)
        pack[(device_id, row_changes["sha256"])] = record
        ctx.store.put(pack_key, director_served.encode_pack(pack))
    rows[device_id] = dataclasses.replace(row, **row_changes)
    ctx.store.put(key, fleet_index.encode(rows))


def test_the_director_service_signs_what_the_index_says_and_devices_still_refuse_what_it_cannot_vouch_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever writes the index and packs has the service sign what they like (as the online key's
    holder can with stored chains): a granted variant, a chain version gone back, another device's
    record. The device refuses each: the entitlement is offline-signed, versions only go up, a record
    must bind the device's own key."""
    ws = _workspace(tmp_path / "ws", monkeypatch, "director-served")
    _devices(ws, ME, OTHER)
    _policy(ws, "2.0.0")
    device_dir = _provision(ws, tmp_path)
    ctx = Context.open(ws)
    with _serve(ws, "director-served") as url:
        dev = _Device(device_dir, url)
        try:
            assert dev.poll()[0].active == "2.0.0"
            ok(otactl(ws, "fleet", "set", ME, "--tag", "beta"))  # chain version 2
            assert dev.poll()[0].outcome == "stayed" and _state_record(device_dir)["tags"] == ["beta"]
            mine = director_app.Index(ctx).get(ME)
            assert mine is not None and mine.version == 2

            doc = json.loads(director_app.Index(ctx).record_bytes(mine))
            doc["entitlement"]["statement"]["variant"] = "hp-500"
            _tamper(ws, ME, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), variant="hp-500",
                    version=3)
            granted, _ = dev.poll()
            assert granted.entitlement_problem is not None and "keeping hp-400" in granted.entitlement_problem
            active = dev.agent.installed()
            assert active is not None and (active.version, active.variant) == ("2.0.0", "hp-400")

            _tamper(ws, ME, director_app.Index(ctx).record_bytes(mine), variant="hp-400", version=1)
            back, _ = dev.poll()
            assert back.outcome == "error" and "version" in back.detail.lower(), back

            theirs = director_app.Index(ctx).get(OTHER)
            assert theirs is not None
            _tamper(ws, ME, director_app.Index(ctx).record_bytes(theirs), version=9)
            pointed, _ = dev.poll()
            assert pointed.outcome == "error" and "does not describe this device" in pointed.detail, pointed
            assert _state_record(device_dir)["tags"] == ["beta"]
        finally:
            dev.close()
    refused = otactl(ws, "fleet", "verify")  # the row no longer says what its record says
    assert refused.returncode == 1
    assert_one_error_line(refused, "1 of 2 devices inconsistent", ME, "attributes differ")
