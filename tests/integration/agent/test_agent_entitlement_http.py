"""Entitlement attacks over HTTP (decision 0406): the real agent (python-tuf ngclient, otactl's httpx
fetcher) against the repository served on 127.0.0.1, with every online key (snapshot, timestamp,
rollouts, devices) in the attacker's hands (tests/fixtures/online_attacker.py). The attacker re-signs
the device's bin, snapshot and timestamp; the entitlement inside the record is what they cannot sign.

And the migration: a device provisioned before the repository had entitlements keeps updating."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nacl.signing
import pytest
from agent_it_fixtures import Served
from fixtures.online_attacker import online_keys, publish_record, published_doc, published_record

from otactl.agent.agent import Agent
from otactl.agent.state import CONFIG_FILE, DeviceState, Identity
from otactl.app.entitlements import published_signers
from otactl.app.fleet import import_devices, list_devices, set_device
from otactl.app.migrate_entitlements import migrate_entitlements
from otactl.fleet.entitlements import SIGNERS_PATH
from otactl.fleet.records import DeviceRecord
from otactl.sim.ingest import running_ingest
from otactl.telemetry.devices import EnrolledDevice
from otactl.telemetry.report import DeviceId
from otactl.telemetry.reporter import DeviceReporter, post_reports

pytestmark = pytest.mark.integration


def device_key(device_id: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(f"entitlement-it:{device_id}".encode()).digest())


def make_device(served: Served, base: Path, device_id: str, rev: str, variant: str) -> Path:
    key = device_key(device_id)
    record = DeviceRecord(device_id, "t9-engine", rev, variant, "eu", (), bytes(key.verify_key).hex())
    import_devices(served.ws._fresh(), [record], "test")
    path = base / device_id
    DeviceState.provision(path, Identity(device_id, "t9-engine", rev), served.root().read_bytes(), key)
    return path


def now() -> datetime:
    return datetime.now(UTC)


def running_variant(agent: Agent) -> tuple[str | None, str | None]:
    active = agent.installed()
    return (None, None) if active is None else (active.version, active.variant)


def hp_500_configs(path: Path) -> list[Path]:
    return [p for p in path.rglob(CONFIG_FILE) if b"hp-500" in p.read_bytes()]


def legacy_record(doc: dict, variant: str) -> dict:  # type: ignore[type-arg]
    """The device's record as schema 1 (before decision 0406) with another variant."""
    st = doc["entitlement"]["statement"]
    return {"schema": "otactl/device/1", "device_id": st["device_id"], "model": st["model"],
            "hardware_revision": st["hardware_revision"], "variant": variant, "region": doc["region"],
            "tags": doc["tags"], "pin": doc["pin"], "public_key": st["public_key"]}


@pytest.mark.parametrize("forgery", ["statement-variant-edited", "entitlement-stripped"])
def test_a_record_re_signed_with_hp_500_keeps_the_device_on_hp_300(served: Served, tmp_path: Path,
                                                                    forgery: str) -> None:
    """Attack 1 (and 5): the online-key holder re-signs an hp-300 device's record saying hp-500, with
    the entitlement left as it was but its variant edited, or without any entitlement."""
    ctx = served.ws._fresh()
    # snapshot, timestamp, rollouts, devices and the release index (CI's key): all in hand
    assert online_keys(ctx) == {"online", "ci"}
    path = make_device(served, tmp_path, "t9-3000", "revA", "hp-300")
    served.all_on("2.0.0")
    agent = Agent(path, served.url, None)
    assert agent.check_and_update(now()).outcome == "committed"
    assert running_variant(agent) == ("2.0.0", "hp-300")

    doc = published_doc(ctx, "t9-3000")
    if forgery == "statement-variant-edited":
        doc["entitlement"]["statement"]["variant"] = "hp-500"
        expect = "Merkle path does not lead to the signed root"
    else:
        doc = legacy_record(doc, "hp-500")
        expect = "carries no entitlement"
    publish_record(ctx, "t9-3000", doc)

    result = agent.check_and_update(now())
    assert result.entitlement_problem is not None and expect in result.entitlement_problem
    assert "keeping hp-300" in result.entitlement_problem
    assert result.outcome == "stayed" and running_variant(agent) == ("2.0.0", "hp-300")
    # the next release still installs hp-300's configuration, never hp-500's
    served.all_on("2.1.0")
    result = agent.check_and_update(now())
    assert result.outcome == "committed" and running_variant(agent) == ("2.1.0", "hp-300")
    assert result.entitlement_problem is not None  # reported on every check while the record is forged
    assert not hp_500_configs(path)
    assert agent.report_health(now())  # the refusals count as errors in the health report
    agent.close()


@pytest.mark.parametrize(("first", "then"), [("hp-500", "hp-300"), ("hp-300", "hp-500")],
                         ids=["regrant-a-revoked-tier", "revoke-a-paid-tier"])
def test_an_older_valid_entitlement_replayed_is_refused(served: Served, tmp_path: Path, first: str,
                                                        then: str) -> None:
    """Attack 3: the online-key holder lists the device's older, genuinely signed record again."""
    path = make_device(served, tmp_path, "t9-5000", "revB", first)
    served.all_on("2.0.0")
    agent = Agent(path, served.url, None)
    assert agent.check_and_update(now()).outcome == "committed"
    old = published_record(served.ws.ctx, "t9-5000")  # entitlement version 1
    record, change = set_device(served.ws._fresh(), "t9-5000", variant=then, tags=None, pin=None, clear_pin=False)
    assert change.entitlements_signed == 1 and record.entitlement is not None
    assert record.entitlement.statement.version == 2
    assert agent.check_and_update(now()).outcome == "committed" and running_variant(agent) == ("2.0.0", then)

    publish_record(served.ws._fresh(), "t9-5000", old)
    result = agent.check_and_update(now())
    assert result.entitlement_problem is not None
    assert "entitlement version 1 is older than version 2" in result.entitlement_problem
    assert result.outcome == "stayed" and running_variant(agent) == ("2.0.0", then)
    agent.close()


def test_a_swapped_device_key_is_refused_by_the_agent_and_by_the_ingest(served: Served, tmp_path: Path) -> None:
    """Attack 4: the online-key holder binds a key of their own to a device (to sign its reports)."""
    ctx = served.ws._fresh()
    path = make_device(served, tmp_path, "t9-4000", "revB", "hp-400")
    make_device(served, tmp_path, "t9-4001", "revB", "hp-400")  # an honest neighbour: the control
    served.all_on("2.0.0")
    agent = Agent(path, served.url, None)
    assert agent.check_and_update(now()).outcome == "committed"

    thief = nacl.signing.SigningKey(hashlib.sha256(b"the attacker's key").digest())
    doc = published_doc(ctx, "t9-4000")
    doc["entitlement"]["statement"]["public_key"] = bytes(thief.verify_key).hex()
    publish_record(ctx, "t9-4000", doc)

    result = agent.check_and_update(now())
    assert result.outcome == "error" and "does not describe this device" in result.detail
    assert running_variant(agent) == ("2.0.0", "hp-400")
    agent.close()

    # the ingest enrolls from what `fleet list` reads now (the forged record included)
    records = list_devices(served.ws._fresh())
    signers = published_signers(ctx, ctx.repository())
    assert signers is not None
    forged = EnrolledDevice(DeviceId("t9-4000"), "t9-engine", "hp-400", "eu", bytes(thief.verify_key).hex())
    honest = EnrolledDevice.from_record(next(r for r in records if r.device_id == "t9-4001"))
    with running_ingest(tmp_path / "t.db", records, signers=signers) as ingest, httpx.Client() as http:
        reports = [DeviceReporter(forged, thief).health("2.0.0", "all", now(), uptime_s=3600, crashes=5),
                   DeviceReporter(honest, device_key("t9-4001")).health("2.0.0", "all", now(), uptime_s=3600)]
        results = post_reports(http, f"{ingest.url}/v1/reports", reports)["results"]
        assert [r.get("reason") for r in results] == ["unknown_key", None]
        assert ingest.store.report_count() == 1


def unmigrate(served: Served) -> None:
    """Make the served repository one from before decision 0406: no signers, no entitlement key."""
    ctx = served.ws._fresh()
    repo = ctx.repository()
    del repo.edit("targets").targets[SIGNERS_PATH]
    repo.publish()
    trust = replace(ctx.trust, keys={n: e for n, e in ctx.trust.keys.items() if n != "entitlement-1"},
                    entitlement_keys=())
    ctx.workspace.write_trust(trust)
    ctx.trust = ctx.signers.trust = trust
    (served.ws.path / ".otactl" / "keys" / "entitlement-1.key").unlink()
    (served.ws.path / "signing" / "entitlement-signers.json").unlink()


def test_a_device_provisioned_before_the_migration_keeps_updating_after_it(
        served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unmigrate(served)
    path = make_device(served, tmp_path, "t9-4100", "revB", "hp-400")
    make_device(served, tmp_path, "t9-3100", "revA", "hp-300")
    assert published_doc(served.ws.ctx, "t9-4100")["schema"] == "otactl/device/1"
    served.all_on("2.0.0")
    agent = Agent(path, served.url, None)
    assert agent.check_and_update(now()).outcome == "committed"  # a legacy repository: as before 0406
    assert "entitlement_version" not in (agent.device.load_state().record or {})

    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE_ENTITLEMENT_1", "entitlement-it-passphrase")
    result = migrate_entitlements(served.ws._fresh())
    assert (result.key_created, result.devices, result.entitlements_signed) == ("entitlement-1", 2, 2)
    assert (served.ws.path / "signing" / "entitlement-signers.json").is_file()
    assert published_doc(served.ws.ctx, "t9-4100")["schema"] == "otactl/device/2"
    again = migrate_entitlements(served.ws._fresh())  # idempotent
    assert (again.signers_published, again.entitlements_signed, again.files_published) == (False, 0, 0)

    served.all_on("2.1.0")
    result2 = agent.check_and_update(now())
    assert (result2.outcome, result2.entitlement_problem) == ("committed", None)
    assert running_variant(agent) == ("2.1.0", "hp-400")
    state = agent.device.load_state().record or {}
    assert (state["entitlement_version"], state["entitlements_required"]) == (1, True)

    # from now on a record without an entitlement is refused (attack 5 on a migrated device)
    publish_record(served.ws._fresh(), "t9-4100", legacy_record(published_doc(served.ws.ctx, "t9-4100"), "hp-500"))
    stripped = agent.check_and_update(now())
    assert stripped.entitlement_problem is not None and "carries no entitlement" in stripped.entitlement_problem
    assert running_variant(agent) == ("2.1.0", "hp-400")
    agent.close()
    shutil.rmtree(tmp_path / "t9-3100")
