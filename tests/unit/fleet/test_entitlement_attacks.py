"""Entitlement verification (decision 0406), attack by attack, without I/O.

The attacker holds every online key (``online`` below signs snapshot, timestamp, rollouts and devices)
but no entitlement key. The HTTP tests (tests/integration/agent/test_agent_entitlement_http.py) run the
real agent for attacks 1, 3, 4 and 5; these check the verification each refusal rests on, and its
control (the genuine case is accepted).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import otactl.keys.keyfile as keyfile
from otactl.agent.entitle import Remembered, judge
from otactl.errors import InputFileError, VerificationError
from otactl.fleet import merkle
from otactl.fleet.entitlements import (
    Accepted,
    Entitlement,
    EntitlementError,
    Signers,
    Statement,
    check_fresh,
    sign_batch,
    sign_in_batches,
)
from otactl.fleet.records import DeviceRecord
from otactl.release.bundle import canonical
from otactl.repo import layout
from otactl.telemetry.devices import DeviceRegistry, load_registry
from otactl.workspace import parse_trust
from otactl.yamlio import load_yaml


def signer(name: str) -> keyfile.FileSigner:
    key = nacl.signing.SigningKey(hashlib.sha256(f"entitlement-unit:{name}".encode()).digest())
    return keyfile.FileSigner(key, layout.name_key(keyfile.public_key(bytes(key.verify_key).hex()), name))


NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
ENT1, ENT2, ENT3, ONLINE = signer("entitlement-1"), signer("entitlement-2"), signer("entitlement-3"), signer("online")


def signers(*keys: keyfile.FileSigner, threshold: int = 1) -> Signers:
    return Signers({s.public_key.keyid: s.public_key for s in keys}, threshold)


def device_pub(device_id: str) -> str:
    return hashlib.sha256(f"device:{device_id}".encode()).hexdigest()


def statement(device_id: str = "t9-0001", variant: str = "hp-300", version: int = 1,
              features: tuple[str, ...] = ()) -> Statement:
    return Statement(device_id, "t9-engine", "revA", device_pub(device_id), variant, features, version)


def entitle(*stmts: Statement, by: tuple[keyfile.FileSigner, ...] = (ENT1,)) -> list[Entitlement]:
    return sign_batch(list(stmts), list(by), batch_id="b-1", issued=NOW)


TRUSTED = signers(ENT1)


def record(ent: Entitlement | None, **changes: object) -> DeviceRecord:
    s = statement() if ent is None else ent.statement
    base = DeviceRecord(s.device_id, s.model, s.hardware_revision, s.variant, "eu", (), s.public_key, None,
                        s.features, ent)
    return replace(base, **changes) if changes else base  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the control
def test_a_genuine_entitlement_verifies_and_the_agent_takes_its_variant() -> None:
    ent = entitle(statement(variant="hp-400"), statement("t9-0002"))[0]
    assert TRUSTED.verify(ent, device_id="t9-0001", public_key=device_pub("t9-0001")).variant == "hp-400"
    verdict = judge(record(ent), TRUSTED, None, public_key=device_pub("t9-0001"))
    assert verdict.problem is None and verdict.record.variant == "hp-400"
    assert verdict.remembered.accepted == Accepted(1, ent.statement.digest()) and verdict.remembered.required


# ------------------------------------------------------------------------------ attack 1
def test_attack_1_a_re_signed_record_with_another_variant_and_the_old_entitlement_keeps_the_old_variant() -> None:
    ent = entitle(statement(variant="hp-300"))[0]
    last = judge(record(ent), TRUSTED, None, public_key=device_pub("t9-0001")).remembered
    forged = replace(ent, statement=replace(ent.statement, variant="hp-500"))
    verdict = judge(record(forged), TRUSTED, last, public_key=device_pub("t9-0001"))
    assert verdict.record.variant == "hp-300" and verdict.problem is not None
    assert "Merkle path does not lead to the signed root" in verdict.problem
    assert verdict.remembered.accepted == last.accepted  # nothing new accepted


# ------------------------------------------------------------------------------ attack 2
@pytest.mark.parametrize("by", [(ONLINE,), (ONLINE, ONLINE)], ids=["online-key", "online-key-twice"])
def test_attack_2_a_batch_signed_by_an_online_key_is_refused(by: tuple[keyfile.FileSigner, ...]) -> None:
    forged = entitle(statement(variant="hp-500"), by=by)[0]
    with pytest.raises(EntitlementError, match=r"batch b-1: 0 of the 1 entitlement signatures needed"):
        TRUSTED.verify(forged, device_id="t9-0001", public_key=device_pub("t9-0001"))
    with pytest.raises(EntitlementError, match="no verified entitlement to keep"):
        judge(record(forged), TRUSTED, None, public_key=device_pub("t9-0001"))


def test_attack_2_a_genuine_signature_moved_onto_a_forged_batch_is_refused() -> None:
    genuine = entitle(statement(variant="hp-300"))[0]
    forged = entitle(statement(variant="hp-500"), by=(ONLINE,))[0]
    moved = replace(forged, batch=replace(forged.batch, signatures=genuine.batch.signatures))
    with pytest.raises(EntitlementError, match="0 of the 1"):
        TRUSTED.verify(moved, device_id="t9-0001", public_key=device_pub("t9-0001"))


def test_attack_2_an_online_key_cannot_be_an_entitlement_signer_in_the_trust_file(tmp_path: Path) -> None:
    trust = tmp_path / "trust.yaml"
    trust.write_text(
        "schema: otactl/trust/1\n"
        f"keys:\n  online: {{keyid: {ONLINE.public_key.keyid}, public: '{ONLINE.public_key.keyval['public']}', "
        "uri: 'otactl-file:online.key'}\n"
        "roles:\n" + "".join(f"  {r}: {{keys: [online], threshold: 1}}\n" for r in
                             ("root", "targets", "snapshot", "timestamp", "releases", "rollouts", "devices"))
        + "entitlements: {keys: [online], threshold: 1}\n")
    with pytest.raises(InputFileError, match=r"entitlements\.keys\.0: key 'online' signs an online role"):
        parse_trust(load_yaml(trust))


# ------------------------------------------------------------------------------ attack 3
@pytest.mark.parametrize(("older", "newer"), [("hp-500", "hp-300"), ("hp-300", "hp-500")],
                         ids=["regrant-a-revoked-tier", "revoke-a-paid-tier"])
def test_attack_3_an_older_valid_entitlement_is_refused(older: str, newer: str) -> None:
    v1 = entitle(statement(variant=older, version=1))[0]
    v2 = entitle(statement(variant=newer, version=2))[0]
    last = judge(record(v2), TRUSTED, None, public_key=device_pub("t9-0001")).remembered
    verdict = judge(record(v1), TRUSTED, last, public_key=device_pub("t9-0001"))
    assert verdict.record.variant == newer
    assert verdict.problem is not None and "entitlement version 1 is older than version 2" in verdict.problem


def test_attack_3_another_statement_with_the_version_already_accepted_is_refused() -> None:
    accepted = Accepted(2, statement(version=2).digest())
    assert check_fresh(statement(version=2), accepted) is None  # the same statement again: fine
    assert check_fresh(statement(version=3, variant="hp-500"), accepted) is None  # a newer one: fine
    problem = check_fresh(statement(version=2, variant="hp-500"), accepted)
    assert problem is not None and "differs from the version 2 already accepted" in problem


# ------------------------------------------------------------------------------ attack 4
def test_attack_4_a_swapped_device_key_is_refused() -> None:
    ent = entitle(statement())[0]
    thief = hashlib.sha256(b"thief").hexdigest()
    with pytest.raises(EntitlementError, match="binds device key"):
        TRUSTED.verify(ent, device_id="t9-0001", public_key=thief)
    swapped = replace(ent, statement=replace(ent.statement, public_key=thief))
    with pytest.raises(EntitlementError, match="Merkle path"):
        TRUSTED.verify(swapped, device_id="t9-0001", public_key=thief)


def test_attack_4_the_ingest_enrolls_no_swapped_key_and_takes_the_variant_from_the_statement(tmp_path: Path) -> None:
    good, other = entitle(statement("t9-0001", "hp-300"), statement("t9-0002", "hp-400"))
    thief = hashlib.sha256(b"thief").hexdigest()
    swapped = replace(other, statement=replace(other.statement, public_key=thief))
    listing = {"schema": "otactl/fleet/1", "devices": [record(good).to_json(), record(swapped).to_json()]}
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(listing))
    registry = load_registry(path, TRUSTED)
    assert [d.device_id for d in registry] == ["t9-0001"]
    assert [r.device_id for r in registry.refused] == ["t9-0002"] and "Merkle path" in str(registry.refused[0])
    # a listing whose claimed variant was edited, the entitlement left alone: refused too
    listing["devices"] = [{**record(good).to_json(), "variant": "hp-500"}]
    path.write_text(json.dumps(listing))
    edited = load_registry(path, TRUSTED)
    assert len(edited) == 0 and "differs from its entitlement" in str(edited.refused[0])
    # in-process records: the same rule
    in_process = DeviceRegistry([record(good), record(swapped)], signers=TRUSTED)
    assert [d.device_id for d in in_process] == ["t9-0001"]
    assert in_process.get("t9-0001").variant == "hp-300"  # type: ignore[union-attr]


def test_attack_4_an_ingest_without_the_signers_refuses_records_that_carry_entitlements(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps([record(entitle(statement())[0]).to_json()]))
    with pytest.raises(InputFileError, match=r"\[0\]\.entitlement: a record with an entitlement needs"):
        load_registry(path)


# ------------------------------------------------------------------------------ attack 5
def test_attack_5_a_record_stripped_of_its_entitlement_is_refused_once_signers_exist() -> None:
    ent = entitle(statement(variant="hp-300"))[0]
    last = judge(record(ent), TRUSTED, None, public_key=device_pub("t9-0001")).remembered
    stripped = record(None, variant="hp-500")
    verdict = judge(stripped, TRUSTED, last, public_key=device_pub("t9-0001"))
    assert verdict.record.variant == "hp-300" and "carries no entitlement" in (verdict.problem or "")
    # the signers document withheld (a device that saw it before): refused as well
    gone = judge(stripped, None, last, public_key=device_pub("t9-0001"))
    assert gone.record.variant == "hp-300" and "no longer lists its entitlement signers" in (gone.problem or "")
    # the control: a legacy repository (no signers ever seen) takes the record as before 0406
    legacy = judge(stripped, None, Remembered("hp-300", (), None, False), public_key=device_pub("t9-0001"))
    assert legacy.problem is None and legacy.record.variant == "hp-500"


# ------------------------------------------------------------------------------ attack 6
def test_attack_6_another_devices_valid_entitlement_is_refused() -> None:
    mine, theirs = entitle(statement("t9-0001", "hp-300"), statement("t9-0002", "hp-500"))
    with pytest.raises(EntitlementError, match="the entitlement is for device 't9-0002', not 't9-0001'"):
        TRUSTED.verify(theirs, device_id="t9-0001", public_key=device_pub("t9-0001"))
    with pytest.raises(ValueError, match="differ from its entitlement statement"):
        record(mine, entitlement=theirs)  # a record cannot even carry it under another device's id
    transplanted = json.loads(record(mine).to_bytes())
    transplanted["entitlement"] = theirs.to_dict()
    with pytest.raises(VerificationError, match="is not its entitlement's 't9-0002'"):
        DeviceRecord.from_bytes(json.dumps(transplanted).encode(), "devices/t9-0001.json")


# ------------------------------------------------------------------------------ attack 7
@pytest.mark.parametrize(("by", "valid"), [
    pytest.param((ENT1,), 1, id="one-of-two"),
    pytest.param((ENT1, ONLINE), 1, id="one-plus-an-online-key"),
    pytest.param((ENT1, ENT1), 1, id="one-key-twice"),
])
def test_attack_7_fewer_signatures_than_the_threshold_are_refused(by: tuple[keyfile.FileSigner, ...],
                                                                  valid: int) -> None:
    two_of_three = signers(ENT1, ENT2, ENT3, threshold=2)
    ent = entitle(statement(variant="hp-500"), by=by)[0]
    with pytest.raises(EntitlementError, match=f"{valid} of the 2 entitlement signatures needed"):
        two_of_three.verify(ent, device_id="t9-0001", public_key=device_pub("t9-0001"))
    good = entitle(statement(variant="hp-500"), by=(ENT3, ENT1))[0]  # the control
    assert two_of_three.verify(good, device_id="t9-0001", public_key=device_pub("t9-0001")).variant == "hp-500"


# ------------------------------------------------------------------------------ forms and trees
def test_documents_round_trip_and_reject_unknown_fields() -> None:
    ent = entitle(statement(features=("launch-control", "pto")), statement("t9-0002"))[0]
    assert Entitlement.from_dict(json.loads(json.dumps(ent.to_dict()))) == ent
    assert Signers.from_bytes(TRUSTED.to_bytes(), "s").keys == TRUSTED.keys
    doc = ent.to_dict()
    doc["statement"]["max_hp"] = 500
    with pytest.raises(ValueError, match="statement: unknown field 'max_hp'"):
        Entitlement.from_dict(doc)
    with pytest.raises(ValueError, match="version must be an integer"):
        replace(statement(), version=True)
    with pytest.raises(ValueError, match="features must be sorted and unique"):
        statement(features=("pto", "launch-control"))


NAMES = st.from_regex(layout._NAME, fullmatch=True).filter(lambda n: n not in (".", ".."))


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(NAMES, min_size=1, max_size=9, unique=True), model=NAMES, revision=NAMES, variant=NAMES,
       region=NAMES, tags=st.sets(NAMES, max_size=3), features=st.sets(NAMES, max_size=3),
       pin=st.sampled_from([None, "2.0.0", "2.1.0-rc.1", "10.0.3+build.7"]), version=st.integers(1, 2**31))
def test_a_records_bytes_are_the_canonical_form_of_its_document(
        ids: list[str], model: str, revision: str, variant: str, region: str, tags: set[str], features: set[str],
        pin: str | None, version: int) -> None:
    """Statements, proofs and records are spelled directly, not through the JSON encoder (a million-device
    import builds three documents per device): over every name the checks admit, the same bytes as
    encoding each whole document, and they read back to the same record."""
    stmts = [Statement(i, model, revision, device_pub(i), variant, tuple(sorted(features)), version) for i in ids]
    for st_ in stmts:
        assert st_.to_bytes() == canonical(st_.to_dict())
    for ent in entitle(*stmts):
        assert ent.to_bytes() == canonical(ent.to_dict())
        rec = replace(record(ent), region=region, tags=tuple(sorted(tags)), pin=pin)
        data = rec.to_bytes()
        assert data == canonical(json.loads(data))
        assert json.loads(data) == {"schema": "otactl/device/2", "device_id": rec.device_id, "region": region,
                                    "tags": sorted(tags), "pin": pin, "entitlement": ent.to_dict()}
        assert DeviceRecord.from_bytes(data, "r") == rec


def test_batches_hold_at_most_the_batch_size_and_each_proof_verifies() -> None:
    stmts = [statement(f"t9-{i:04d}") for i in range(10)]
    proofs = list(sign_in_batches(stmts, [ENT1], issued=NOW, batch_size=4))
    assert [p.batch.batch.count for p in proofs] == [4] * 8 + [2] * 2
    assert len({p.batch.batch.batch_id for p in proofs}) == 3
    for p in proofs:
        TRUSTED.verify(p, device_id=p.statement.device_id, public_key=p.statement.public_key)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 300), data=st.data())
def test_every_inclusion_path_verifies_and_a_changed_one_does_not(size: int, data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    root, paths = merkle.tree(leaves)
    assert merkle.tree_hex(leaves) == (root, [[node.hex() for node in path] for path in paths])
    i = data.draw(st.integers(0, size - 1))
    assert merkle.root_from_path(leaves[i], i, size, paths[i]) == root
    assert len(paths[i]) <= (size - 1).bit_length()
    if size > 1:
        j = data.draw(st.integers(0, size - 1).filter(lambda j: j != i))
        assert merkle.root_from_path(leaves[i], j, size, paths[i]) != root  # another position
        assert merkle.root_from_path(leaves[j], i, size, paths[i]) != root  # another leaf
        k = data.draw(st.integers(0, len(paths[i]) - 1))
        bent = [*paths[i][:k], bytes(32), *paths[i][k + 1:]]
        assert merkle.root_from_path(leaves[i], i, size, bent) != root
    assert merkle.root_from_path(leaves[i], i, size, [*paths[i], root]) is None  # too long
    assert merkle.root_from_path(leaves[i], size, size, paths[i]) is None  # outside the tree


def test_an_interior_node_is_not_a_leaf() -> None:
    """RFC 6962's 0x00/0x01 prefixes: the two children of a node, presented as one leaf, do not verify."""
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(4)]
    root, _ = merkle.tree(leaves)
    inner = merkle.node_hash(leaves[0], leaves[1])
    assert merkle.root_from_path(merkle.leaf_hash(inner), 0, 2, [merkle.node_hash(leaves[2], leaves[3])]) != root


def test_the_ingest_reads_its_signers_file_or_names_it(tmp_path: Path) -> None:
    from otactl.telemetry.server import load_enrolment

    good = entitle(statement())[0]
    devices = tmp_path / "fleet.json"
    devices.write_text(json.dumps([record(good).to_json()]))
    signers_file = tmp_path / "entitlement-signers.json"
    signers_file.write_bytes(TRUSTED.to_bytes())
    assert [d.device_id for d in load_enrolment(devices, signers_file)] == ["t9-0001"]
    with pytest.raises(InputFileError, match=r"missing\.json: cannot read the entitlement signers"):
        load_enrolment(devices, tmp_path / "missing.json")
    signers_file.write_text('{"schema": "otactl/entitlement-signers/1", "threshold": 2, "keys": {}}')
    with pytest.raises(VerificationError, match=r"entitlement-signers\.json: not a valid entitlement signers document"):
        load_enrolment(devices, signers_file)
