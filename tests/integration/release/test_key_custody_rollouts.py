"""Key custody for rollouts (issue 11, decision 1105): ring approvals, reinstatements and key rotation
without a release manager's key on the CI machine.

The two-machine flow of test_key_custody: CI's workspace (release managers registered by public key)
and each release manager's signer workspace (``otactl join``), sharing only the store. A rollout of
2.1.0 waits at a lab ring that needs two release managers' approvals; alice and bob approve on their
machines (signed statements in the store), CI's next ``rollout step`` takes them in and the ring
advances; the audit log carries their signatures, which ``audit verify`` checks even when the online
key rewrites the log. Then forged, altered and stale statements, a reinstatement signed on alice's
machine and recorded by CI, and ``keys rotate NAME --public``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fixtures.repo import assert_one_error_line, ok
from integration.cli.test_report_fleet_cli import example_fleet, key_of
from release_cli_parts import MANIFESTS, MODEL
from test_key_custody import CI_PASSPHRASE, MANAGERS, Team, holds_seed, make_team, rm_passphrase, seeds_of

import otactl.keys.keyfile as keyfile
from otactl.app import statements
from otactl.audit import log as audit
from otactl.fleet.records import load_inventory
from otactl.release.bundle import canonical
from otactl.repo.signers import SignerPool
from otactl.store import open_store
from otactl.telemetry.checks import ReportVerifier, Verified
from otactl.telemetry.devices import DeviceRegistry, EnrolledDevice
from otactl.telemetry.report import Event
from otactl.telemetry.reporter import DeviceReporter
from otactl.telemetry.store import ReportStore
from otactl.workspace import Workspace

pytestmark = pytest.mark.integration
PLAN = """\
schema: otactl/canary-plan/1
name: lab-approved
strata: [model, variant]
rings:
  - name: lab
    selector: {tags: [lab]}
    soak_device_hours: 1
    min_reporting_devices: 1
    gates: []
    approvals: {required: 2, keys: [alice, bob, carol]}
  - name: all
    selector: {percent: 100}
    soak_device_hours: 0
    min_reporting_devices: 1
    gates: []
"""


def _healthy_lab_device(db: Path, inventory: Path) -> None:
    """t9-0001 (a lab device) installs 2.1.0 and runs it an hour: its signed reports, admitted by the ingest."""
    registry = DeviceRegistry(EnrolledDevice.from_record(r) for r in load_inventory(inventory))
    verifier = ReportVerifier(registry)
    at = datetime.now(UTC)
    good = DeviceReporter(registry.get("t9-0001"), key_of("t9-0001"), next_seq=1000)
    sends = [good.event("2.1.0", "lab", e, at) for e in (Event.OFFERED, Event.DOWNLOADED, Event.INSTALLED,
                                                         Event.BOOTED, Event.COMMITTED)]
    sends.append(good.health("2.1.0", "lab", at, 3600))
    admitted = [verifier.check(s.to_json(), at) for s in sends]
    assert all(isinstance(v, Verified) for v in admitted), admitted
    store = ReportStore(db)
    try:
        store.ingest([v for v in admitted if isinstance(v, Verified)], at)
    finally:
        store.close()


@pytest.fixture(scope="module")
def waiting_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice and bob joined; 2.0.0 and 2.1.0 approved by them and published; the fleet imported; a rollout of
    2.1.0 whose lab ring passed and awaits two approvals."""
    base = tmp_path_factory.mktemp("custody-rollouts")
    team = make_team(base, f"file://{base / 'store'}", None)
    for name in ("alice", "bob"):
        ok(team.join(name))
    for version in ("2.0.0", "2.1.0"):
        ok(team.ci_run("release", "build", str(MANIFESTS / f"{MODEL}-{version}.yaml")))
        for name in ("alice", "bob"):
            ok(team.rm_run(name, "release", "approve", version))
        ok(team.ci_run("release", "publish", version))
    inventory = example_fleet(base / "inventory.csv")
    ok(team.ci_run("fleet", "import", str(inventory)))
    (team.ci / "canary").mkdir(exist_ok=True)
    (team.ci / "canary" / "lab-approved.yaml").write_text(PLAN)
    ok(team.ci_run("rollout", "start", MODEL, "2.1.0", "--plan", "canary/lab-approved.yaml", "--baseline", "2.0.0"))
    _healthy_lab_device(team.ci / "telemetry.db", inventory)
    waiting = team.ci_run("rollout", "step", MODEL, "-o", "json")
    assert waiting.returncode == 4, waiting.stderr  # waiting: the ring passed, approvals missing
    assert json.loads(waiting.stdout)["action"] == "await_approval"
    return base


@pytest.fixture
def team(waiting_template: Path, tmp_path: Path) -> Team:
    """A copy of the template (its absolute paths rewritten): every test starts at the waiting ring."""
    base = tmp_path / "machines"
    shutil.copytree(waiting_template, base, symlinks=True)
    for cfg in base.rglob("otactl.yaml"):
        cfg.write_text(cfg.read_text().replace(str(waiting_template), str(base)))
    return Team(base, f"file://{base / 'store'}", None, base / "ci" / "ws")


def rollout_id(team: Team) -> str:
    return str(json.loads(ok(team.ci_run("rollout", "status", MODEL, "-o", "json")).stdout)["rollout_id"])


def entries(team: Team) -> list[audit.AuditEntry]:
    return audit.entries(open_store(team.store_url), MODEL)


def statement_key(team: Team, ring: str, name: str) -> Path:
    return team.base / "store" / "requests" / MODEL / "approve" / rollout_id(team) / ring / f"{name}.json"


def keyid_of(team: Team, name: str) -> str:
    return keyfile.read_keyfile(team.machine(name) / f"{name}.key").public.keyid


def test_release_managers_approve_a_ring_on_their_machines_and_ci_takes_it_in(team: Team) -> None:
    shown = ok(team.rm_run("alice", "rollout", "approve", MODEL))
    assert "alice approves ring 'lab'" in shown.stdout and "evidence: verdict pass for ring 'lab'" in shown.stdout
    assert "CI takes it in" in shown.stderr
    doc = json.loads(ok(team.rm_run("bob", "rollout", "approve", MODEL, "-o", "json")).stdout)
    assert (doc["schema"], doc["ring"], doc["release_manager"]) == ("otactl/ring-approval-request/1", "lab", "bob")
    assert statement_key(team, "lab", "bob").is_file()
    assert [e.action for e in entries(team)] == ["start"]  # nothing recorded on the release managers' machines

    stepped = json.loads(ok(team.ci_run("rollout", "step", MODEL, "-o", "json")).stdout)
    assert (stepped["action"], stepped["ring"]) == ("advance", "all")
    assert "took in alice's approval of ring 'lab'" in stepped["reasons"]
    approvals = [e for e in entries(team) if e.action == "approve"]
    assert [(e.actor, e.details["release_manager"], e.details["ring"]) for e in approvals] == [
        ("online", "alice", "lab"), ("online", "bob", "lab")]
    assert [e.details["signer_keyid"] for e in approvals] == [keyid_of(team, "alice"), keyid_of(team, "bob")]
    assert not statement_key(team, "lab", "alice").exists()  # taken in: removed
    verified = ok(team.ci_run("audit", "verify", MODEL))
    assert "chain intact" in verified.stdout
    seeds = seeds_of(team, MANAGERS)
    assert holds_seed(team.ci, seeds) == [] and holds_seed(team.base / "store", seeds) == []


def _rewrite_log(team: Team, change: dict[int, dict[str, str]]) -> None:
    """Someone with the online key rewrites the log from the first changed entry on, each entry re-signed
    and re-chained, so only the release managers' own signatures can tell."""
    ws = Workspace.open(team.ci)
    trust = ws.trust()
    signers = SignerPool(ws, trust)
    os.environ["OTACTL_KEY_PASSPHRASE"] = CI_PASSPHRASE
    try:
        online = signers.get("online")
    finally:
        del os.environ["OTACTL_KEY_PASSPHRASE"]
    store = open_store(team.store_url)
    items = entries(team)
    first = min(change)
    prev = items[first - 2].digest() if first > 1 else audit.GENESIS
    for entry in items[first - 1:]:
        details = {**entry.details, **change.get(entry.seq, {})}
        body = audit.AuditEntry(entry.seq, entry.time, "online", online.public_key.keyid, entry.action, details,
                                prev, "")
        signed = audit.AuditEntry(**{**body.__dict__, "signature": online.sign(canonical(body.body())).signature})
        store.put(f"audit/{MODEL}/{entry.seq:010d}.json", canonical({**signed.body(), "signature": signed.signature}))
        prev = signed.digest()


def test_audit_verify_catches_an_approval_the_online_key_forged(team: Team) -> None:
    ok(team.rm_run("alice", "rollout", "approve", MODEL))
    ok(team.ci_run("rollout", "approve", MODEL))
    approval = next(e for e in entries(team) if e.action == "approve")
    sig = approval.details["signature"]
    forged = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    _rewrite_log(team, {approval.seq: {"release_manager": "carol", "signature": forged}})
    refused = team.ci_run("audit", "verify", MODEL)
    assert refused.returncode == 1
    assert_one_error_line(refused, f"entry {approval.seq}", "release manager's signature over the approve",
                          "'carol'", "does not verify")

    # the same forgery claiming a key that is no release manager's: the online key itself
    online_keyid = next(e for e in entries(team) if e.action == "start").keyid
    _rewrite_log(team, {approval.seq: {"signature": approval.details["signature"], "signer_keyid": online_keyid}})
    refused = team.ci_run("audit", "verify", MODEL)
    assert refused.returncode == 1
    assert_one_error_line(refused, f"entry {approval.seq}", "not a release manager's key")


def test_forged_altered_and_stale_approvals_are_refused(team: Team) -> None:
    before = len(entries(team))
    cases = [  # (who runs, argv, exit code, names in the error line)
        ("alice", ["rollout", "approve", MODEL, "--key", "bob"], 1, ["'bob'", "not here"]),
        ("alice", ["rollout", "approve", MODEL, "--key", "ci"], 2, ["'ci'", "not a release manager's key"]),
        ("ci", ["rollout", "approve", MODEL], 2, ["no release manager's approval of ring 'lab' is waiting"]),
        ("ci", ["rollout", "approve", MODEL, "--key", "alice"], 1, ["'alice'", "not here"]),
        ("ci", ["rollout", "approve", MODEL, "--key", "ci"], 2, ["'ci'", "may not approve"]),
    ]
    for who, argv, code, names in cases:
        result = team.ci_run(*argv) if who == "ci" else team.rm_run(who, *argv)
        assert result.returncode == code, (who, argv, result.stderr)
        assert_one_error_line(result, *names)

    # altered: alice's statement with another evidence digest
    ok(team.rm_run("alice", "rollout", "approve", MODEL))
    path = statement_key(team, "lab", "alice")
    genuine = path.read_bytes()
    doc = json.loads(genuine)
    doc["payload"]["evidence_sha256"] = "0" * 64
    path.write_text(json.dumps(doc))
    refused = team.ci_run("rollout", "approve", MODEL)
    assert refused.returncode == 1
    assert_one_error_line(refused, str(path.relative_to(team.base / "store")), "alice's signature does not verify")

    # forged: mallory's key (not a release manager's) signs a statement and files it as bob's
    mallory = team.machine("mallory")
    mallory.mkdir()
    ok(team.rm_run("mallory", "keys", "generate", "mallory", "--out", "."))
    kf = keyfile.read_keyfile(mallory / "mallory.key")
    mallory_signer = keyfile.FileSigner(kf.unlock(rm_passphrase("mallory")), kf.public)
    st = statements.sign("approve", json.loads(genuine)["payload"], "bob", mallory_signer)
    statement_key(team, "lab", "bob").write_bytes(st.to_bytes())
    path.unlink()
    refused = team.ci_run("rollout", "approve", MODEL)
    assert refused.returncode == 1
    assert_one_error_line(refused, "bob.json", "not a release manager's key", "alice, bob, carol")
    statement_key(team, "lab", "bob").unlink()
    assert len(entries(team)) == before  # nothing recorded by any of it

    # stale: alice's genuine statement for ring lab, replayed once the rollout is at ring 'all'
    path.write_bytes(genuine)
    ok(team.rm_run("bob", "rollout", "approve", MODEL))
    taken = ok(team.ci_run("rollout", "approve", MODEL, "-o", "json"))
    assert json.loads(taken.stdout)["reasons"] == ["ring 'lab' approved by alice (signed on their machine)",
                                                  "ring 'lab' approved by bob (signed on their machine)"]
    assert json.loads(ok(team.ci_run("rollout", "step", MODEL, "-o", "json")).stdout)["ring"] == "all"
    replay = statement_key(team, "all", "alice")
    replay.parent.mkdir(parents=True)
    replay.write_bytes(genuine)
    refused = team.ci_run("rollout", "approve", MODEL)
    assert refused.returncode == 1
    assert_one_error_line(refused, "alice's approval is stale", "ring: signed 'lab', now 'all'")
    ok(team.ci_run("audit", "verify", MODEL))


def reinstate_statement(team: Team, version: str) -> Path:
    return team.base / "store" / "requests" / MODEL / "reinstate" / f"{version}.json"


def test_a_release_manager_reinstates_from_their_machine(team: Team) -> None:
    ok(team.ci_run("rollout", "rollback", MODEL, "--reason", "field reports", "--key", "ci"))
    # refused: no reason; nothing waiting in CI
    no_reason = team.rm_run("alice", "release", "reinstate", MODEL, "2.1.0")
    assert no_reason.returncode == 2
    assert_one_error_line(no_reason, "--reason")
    nothing = team.ci_run("release", "reinstate", MODEL, "2.1.0")
    assert nothing.returncode == 2
    assert_one_error_line(nothing, "no reinstatement signed by a release manager is waiting")

    signed = ok(team.rm_run("alice", "release", "reinstate", MODEL, "2.1.0", "--reason", "agent bug", "-o", "json"))
    request = json.loads(signed.stdout)
    assert (request["release_manager"], request["clears_policy_version"]) == ("alice", 2)
    genuine = reinstate_statement(team, "2.1.0").read_bytes()

    # altered reason; filed for another version; signed by a key that is no release manager's
    doc = json.loads(genuine)
    doc["payload"]["reason"] = "because"
    reinstate_statement(team, "2.1.0").write_text(json.dumps(doc))
    refused = team.ci_run("release", "reinstate", MODEL, "2.1.0")
    assert refused.returncode == 1
    assert_one_error_line(refused, "2.1.0.json", "alice's signature does not verify")
    reinstate_statement(team, "2.0.0").write_bytes(genuine)
    refused = team.ci_run("release", "reinstate", MODEL, "2.0.0")
    assert refused.returncode == 1
    assert_one_error_line(refused, "2.0.0.json", "reinstatement of t9-engine/2.1.0, not t9-engine/2.0.0")
    reinstate_statement(team, "2.0.0").unlink()
    doc = json.loads(genuine)
    doc["keyid"] = next(e for e in entries(team) if e.action == "start").keyid  # the online key's id
    reinstate_statement(team, "2.1.0").write_text(json.dumps(doc))
    refused = team.ci_run("release", "reinstate", MODEL, "2.1.0")
    assert refused.returncode == 1
    assert_one_error_line(refused, "not a release manager's key")
    assert [e.action for e in entries(team)][-1] == "rollback"  # nothing recorded

    reinstate_statement(team, "2.1.0").write_bytes(genuine)
    done = json.loads(ok(team.ci_run("release", "reinstate", MODEL, "2.1.0", "-o", "json")).stdout)
    assert (done["actor"], done["recorded_by"], done["bad_releases"]) == ("alice", "online", [])
    entry = entries(team)[-1]
    assert (entry.action, entry.actor, entry.details["release_manager"]) == ("reinstate", "online", "alice")
    assert entry.details["signer_keyid"] == keyid_of(team, "alice") and entry.details["reason"] == "agent bug"
    assert not reinstate_statement(team, "2.1.0").exists()
    ok(team.ci_run("audit", "verify", MODEL))
    ok(team.ci_run("rollout", "start", MODEL, "2.1.0", "--plan", "canary/lab-approved.yaml", "--baseline", "2.0.0"))

    _rewrite_log(team, {entry.seq: {"reason": "a reason alice never gave"}})
    refused = team.ci_run("audit", "verify", MODEL)
    assert refused.returncode == 1
    assert_one_error_line(refused, "release manager's signature over the reinstate", "does not verify")


def test_a_stale_reinstatement_is_refused(team: Team) -> None:
    ok(team.ci_run("rollout", "rollback", MODEL, "--reason", "field reports", "--key", "ci"))
    ok(team.rm_run("alice", "release", "reinstate", MODEL, "2.1.0", "--reason", "agent bug"))
    genuine = reinstate_statement(team, "2.1.0").read_bytes()
    ok(team.ci_run("release", "reinstate", MODEL, "2.1.0"))
    ok(team.ci_run("rollout", "start", MODEL, "2.1.0", "--plan", "canary/lab-approved.yaml", "--baseline", "2.0.0"))
    ok(team.ci_run("rollout", "rollback", MODEL, "--reason", "it really is 2.1.0", "--key", "ci"))
    reinstate_statement(team, "2.1.0").write_bytes(genuine)  # replayed: it cleared an earlier mark
    refused = team.ci_run("release", "reinstate", MODEL, "2.1.0")
    assert refused.returncode == 1
    assert_one_error_line(refused, "alice's reinstatement is stale", "clears_policy_version: signed 2, now 5")


@pytest.fixture
def carol_new(team: Team) -> Iterator[Path]:
    new = team.base / "carol-new"
    new.mkdir()
    ok(team.rm_run("carol", "keys", "generate", "carol", "--out", str(new)))
    yield new


def test_keys_rotate_takes_a_release_managers_new_public_key(team: Team, carol_new: Path) -> None:
    trust_before = (team.ci / "signing" / "trust.yaml").read_text()
    cases = [  # (argv, exit code, names)
        (["keys", "rotate", "carol", "--public", str(carol_new / "carol.key")], 1, ["carol.key", "private key file"]),
        (["keys", "rotate", "carol"], 2, ["'carol'", "held on their own machine", "--out DIR"]),
        (["keys", "rotate", "releases", "--key", "carol"], 2, ["'carol'", "held on their own machine"]),
        (["keys", "rotate", "timestamp", "--public", str(carol_new / "carol.pub")], 2,
         ["--public", "not a release manager's key"]),
        (["keys", "rotate", "alice", "--public", str(carol_new / "carol.pub")], 2,
         ["counts alice's old signature", "nothing was changed"]),
    ]
    for argv, code, names in cases:
        result = team.ci_run(*argv)
        assert result.returncode == code, (argv, result.stderr)
        assert_one_error_line(result, *names)
    assert (team.ci / "signing" / "trust.yaml").read_text() == trust_before

    old_keyid = keyid_of(team, "carol")
    rotated = json.loads(ok(team.ci_run("keys", "rotate", "carol", "--public", str(carol_new / "carol.pub"),
                                        "-o", "json")).stdout)
    new_keyid = keyfile.read_keyfile(carol_new / "carol.key").public.keyid
    assert (rotated["old"], rotated["new"], rotated["new_keyid"]) == ("carol", "carol", new_keyid)
    keys = {k["name"]: k for k in json.loads(ok(team.ci_run("keys", "list", "-o", "json")).stdout)["keys"]}
    assert (keys["carol"]["keyid"], sorted(keys["carol"]["roles"]), keys["carol"]["private_available"]) == (
        new_keyid, ["releases", "withdrawals"], False)
    store = open_store(team.store_url)
    snapshot = json.loads(store.get("metadata/timestamp.json"))["signed"]["meta"]["snapshot.json"]["version"]
    targets_v = json.loads(store.get(f"metadata/{snapshot}.snapshot.json"))["signed"]["meta"]["targets.json"]["version"]
    delegations = json.loads(store.get(f"metadata/{targets_v}.targets.json"))["signed"]["delegations"]
    for role in delegations["roles"]:
        if role["name"] in ("releases", "withdrawals"):
            assert new_keyid in role["keyids"] and old_keyid not in role["keyids"], role["name"]
    assert holds_seed(team.ci, {"carol": bytes(keyfile.read_keyfile(carol_new / "carol.key").unlock(
        rm_passphrase("carol")))}) == []

    # carol joins with her new key; the old one is no release manager's any more
    refused = team.join("carol")
    assert refused.returncode == 1
    assert_one_error_line(refused, "'carol'", "not a release manager's key")
    shutil.copyfile(carol_new / "carol.key", team.machine("carol") / "carol-new.key")
    ok(team.join("carol", team.machine("carol") / "carol-new.key"))
    shown = ok(team.rm_run("carol", "rollout", "approve", MODEL))
    assert "carol approves ring 'lab'" in shown.stdout
    ok(team.rm_run("alice", "rollout", "approve", MODEL))
    assert json.loads(ok(team.ci_run("rollout", "step", MODEL, "-o", "json")).stdout)["ring"] == "all"
    ok(team.ci_run("audit", "verify", MODEL))
