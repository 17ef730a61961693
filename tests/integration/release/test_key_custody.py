"""Key custody (issue 11, decision 1105): release managers approve from their own machines.

Separate directories stand for separate machines and share only the repository's store: CI's
workspace (the ci and online keys, root and targets under passphrases of their own, every release
manager registered by public key only) and one signer workspace per release manager (``otactl join``:
their own key and the pinned root, nothing else). CI builds and stages, two of three release managers
approve from their own directories, CI publishes, and a device (python-tuf's ngclient over HTTP)
accepts the release. Then the refusals: each one line on stderr, its documented exit code, no traceback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.kdf import reseal_keys
from fixtures.repo import assert_one_error_line, cli_env, ok, run_otactl
from fixtures.s3server import create_bucket, delete_bucket, s3_client
from release_cli_parts import MANIFESTS, MODEL, device, download

import otactl.keys.keyfile as keyfile
from otactl.repo import layout
from otactl.repo.serve import served
from otactl.store import open_store
from otactl.store.base import BlobStore

pytestmark = pytest.mark.integration

MANAGERS = ("alice", "bob", "carol")
CI_SECRETS = {"OTACTL_KEY_PASSPHRASE_ROOT_1": "root-only-pass", "OTACTL_KEY_PASSPHRASE_TARGETS_1": "targets-only-pass",
              "OTACTL_KEY_PASSPHRASE_ENTITLEMENT_1": "entitlement-only-pass"}  # decision 0406
CI_PASSPHRASE = "ci-machine-pass"  # the CI secret: unlocks ci and online, nothing else


def rm_passphrase(name: str) -> str:
    return f"{name}-own-pass"


@dataclass
class Team:
    base: Path
    store_url: str
    endpoint: str | None
    ci: Path  # CI's workspace

    def machine(self, name: str) -> Path:
        return self.base / name

    def ci_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_otactl(*args, cwd=self.ci, env=cli_env(CI_PASSPHRASE, **CI_SECRETS))

    def rm_run(self, name: str, *args: str, passphrase: str | None = None) -> subprocess.CompletedProcess[str]:
        """``otactl ARGS`` on ``name``'s machine: only their own passphrase in the environment."""
        env = cli_env(None, **{f"OTACTL_KEY_PASSPHRASE_{name.upper()}": passphrase or rm_passphrase(name)})
        return run_otactl(*args, cwd=self.machine(name), env=env)

    def endpoint_args(self) -> list[str]:
        return ["--s3-endpoint-url", self.endpoint] if self.endpoint else []

    def join(self, name: str, key: Path | None = None) -> subprocess.CompletedProcess[str]:
        # the root reaches the release manager out of band (the release repository's signing/root.json)
        shutil.copyfile(self.ci / "signing" / "root.json", self.machine(name) / "root.json")
        return self.rm_run(name, "join", ".", "--store", self.store_url, *self.endpoint_args(),
                           "--root", "root.json", "--key", str(key or self.machine(name) / f"{name}.key"))


def make_team(base: Path, store_url: str, endpoint: str | None) -> Team:
    team = Team(base, store_url, endpoint, base / "ci" / "ws")
    for name in MANAGERS:  # each on their own machine: the key never leaves it, the .pub is mailed
        team.machine(name).mkdir(parents=True)
        ok(team.rm_run(name, "keys", "generate", name, "--out", "."))
        reseal_keys(team.machine(name), rm_passphrase(name))  # cheap to unlock from here on (decision 0014)
    pubs = [a for n in MANAGERS for a in ("--release-manager", f"{n}={team.machine(n) / f'{n}.pub'}")]
    (base / "ci").mkdir()
    ok(run_otactl("init", str(team.ci), "--store", store_url, *team.endpoint_args(), "--approvals", "2", *pubs,
                  cwd=base / "ci", env=cli_env(CI_PASSPHRASE, **CI_SECRETS)))
    reseal_keys(team.ci, CI_PASSPHRASE, **{k.removeprefix("OTACTL_KEY_PASSPHRASE_").lower(): v
                                           for k, v in CI_SECRETS.items()})
    return team


def seeds_of(team: Team, names: tuple[str, ...]) -> dict[str, bytes]:
    out = {}
    for name in names:
        kf = keyfile.read_keyfile(team.machine(name) / f"{name}.key")
        out[name] = bytes(kf.unlock(rm_passphrase(name)))
    return out


def holds_seed(root: Path, seeds: dict[str, bytes]) -> list[str]:
    found = []
    for path in (p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path}: {n}" for n, s in seeds.items() if s in data or s.hex().encode() in data]
    return found


@contextmanager
def repository_url(team: Team, store: BlobStore) -> Iterator[str]:
    """Where devices read the repository: the directory store served on 127.0.0.1, or the bucket itself
    (anonymous reads under the prefix, as a public distribution bucket allows)."""
    if team.endpoint is None:
        with served(store) as url:
            yield url
        return
    bucket, _, prefix = team.store_url.removeprefix("s3://").partition("/")
    policy = {"Version": "2012-10-17", "Statement": [{
        "Sid": "DevicesRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*"}]}
    s3_client(team.endpoint).put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    yield f"{team.endpoint.rstrip('/')}/{bucket}/{prefix}"


@pytest.fixture(params=["dir", "s3"])
def team(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Team]:
    if request.param == "dir":
        yield make_team(tmp_path, f"file://{tmp_path / 'store'}", None)
        return
    endpoint: str = request.getfixturevalue("s3_endpoint")
    bucket = create_bucket(endpoint)
    try:
        yield make_team(tmp_path, f"s3://{bucket}/fleet", endpoint)
    finally:
        delete_bucket(endpoint, bucket)


def test_two_of_three_release_managers_approve_from_their_own_machines(team: Team, tmp_path: Path) -> None:
    trust = (team.ci / "signing" / "trust.yaml").read_text()
    for name in MANAGERS:
        assert f"uri: otactl-owner:{name}" in trust
    assert not (team.ci / ".otactl" / "handover").exists()
    assert sorted(p.name for p in (team.ci / ".otactl" / "keys").iterdir()) == [
        "ci.key", "entitlement-1.key", "online.key", "root-1.key", "targets-1.key"]
    # root, targets and the entitlement signer (0406) do not open with the CI secret: each has its own passphrase
    for name, var in (("root-1", "OTACTL_KEY_PASSPHRASE_ROOT_1"), ("targets-1", "OTACTL_KEY_PASSPHRASE_TARGETS_1"),
                      ("entitlement-1", "OTACTL_KEY_PASSPHRASE_ENTITLEMENT_1")):
        kf = keyfile.read_keyfile(team.ci / ".otactl" / "keys" / f"{name}.key")
        kf.unlock(CI_SECRETS[var])
        with pytest.raises(keyfile.KeyAccessError, match="wrong passphrase"):
            kf.unlock(CI_PASSPHRASE)
    keys = json.loads(ok(team.ci_run("keys", "list", "-o", "json")).stdout)["keys"]
    assert {k["name"]: k["private_available"] for k in keys if k["name"] in MANAGERS} == dict.fromkeys(MANAGERS, False)

    # the first releases/withdrawals metadata wait for the release managers' signatures
    refused = team.ci_run("release", "build", str(MANIFESTS / "t9-engine-2.0.0.yaml"))
    assert refused.returncode == 1
    assert_one_error_line(refused, "await the release managers' signatures", "releases 1 of 3", "withdrawals 0 of 2")
    for name in ("alice", "bob"):
        joined = ok(team.join(name))
        assert f"joined as {name}" in joined.stdout
        assert "signed       the first releases and withdrawals metadata" in joined.stderr
    # a signer workspace holds its own key and public metadata, nothing else
    private = [p.name for p in team.machine("alice").rglob("*.key")]
    assert private == ["alice.key"]

    ok(team.ci_run("release", "build", str(MANIFESTS / "t9-engine-2.0.0.yaml")))
    refused = team.ci_run("release", "publish", "2.0.0")
    assert refused.returncode == 1
    assert_one_error_line(refused, "1 of 3 signatures")

    review = ok(team.rm_run("alice", "release", "review", "2.0.0"))
    assert "hp-400" in review.stdout
    first = ok(team.rm_run("alice", "release", "approve", "2.0.0", "-o", "json"))
    assert json.loads(first.stdout)["signed_by"] == ["alice", "ci"]
    second = ok(team.rm_run("bob", "release", "approve", "2.0.0", "-o", "json"))
    assert json.loads(second.stdout)["status"] == "approved"
    assert "published" in ok(team.ci_run("release", "publish", "2.0.0")).stdout

    # a device with the initial root accepts the release
    store = open_store(team.store_url, endpoint_url=team.endpoint)
    root_v1 = store.get(layout.metadata_key("root", 1))
    with repository_url(team, store) as url, device(root_v1, url, tmp_path / "device") as (updater, _):
        updater.refresh()
        descriptor = json.loads(download(updater, f"releases/{MODEL}/2.0.0.json", tmp_path / "dl"))
    assert descriptor["version"] == "2.0.0"

    # withdrawal: proposed and signed by two managers on their machines, published by CI
    pending = ok(team.rm_run("alice", "release", "withdraw", "2.0.0", "--reason", "bootloader CVE", "-o", "json"))
    assert json.loads(pending.stdout)["status"] == "pending"
    signed = ok(team.rm_run("bob", "release", "withdraw", "2.0.0", "-o", "json"))
    assert json.loads(signed.stdout)["status"] == "signed"
    done = ok(team.ci_run("release", "withdraw", "2.0.0", "-o", "json"))
    assert json.loads(done.stdout)["status"] == "withdrawn"
    assert json.loads(done.stdout)["signed_by"] == ["alice", "bob"]

    # no release manager's private key reached the CI machine or the store
    seeds = seeds_of(team, MANAGERS)
    assert holds_seed(team.ci, seeds) == []
    if team.store_url.startswith("file://"):
        assert holds_seed(Path(team.store_url.removeprefix("file://")), seeds) == []


@pytest.fixture
def staged(tmp_path: Path) -> Team:
    """The directory-store team with alice and bob joined and 2.0.0 staged by CI."""
    team = make_team(tmp_path, f"file://{tmp_path / 'store'}", None)
    for name in ("alice", "bob"):
        ok(team.join(name))
    ok(team.ci_run("release", "build", str(MANIFESTS / "t9-engine-2.0.0.yaml")))
    return team


def test_refusals_each_one_line_with_its_exit_code(staged: Team, tmp_path: Path) -> None:
    team = staged
    cases = [
        # (who, argv, exit code, names in the error line)
        ("alice", ["release", "approve", "2.0.0", "--key", "bob"], 1, ["'bob'", "not here", "held by its owner"]),
        ("alice", ["release", "approve", "2.0.0", "--key", "ci"], 2, ["'ci'", "not a release manager's key"]),
        ("ci", ["release", "approve", "2.0.0", "--key", "alice"], 1, ["'alice'", "not here"]),
        ("ci", ["release", "approve", "2.0.0"], 2, ["(here: none)"]),
        ("ci", ["release", "withdraw", "2.0.0", "--reason", "x"], 2, ["(here: none)"]),
        ("alice", ["fleet", "list"], 2, ["signer workspace"]),
    ]
    for who, argv, code, names in cases:
        result = team.ci_run(*argv) if who == "ci" else team.rm_run(who, *argv)
        assert result.returncode == code, (who, argv, result.stderr)
        assert_one_error_line(result, *names)
    wrong = team.rm_run("alice", "release", "approve", "2.0.0", passphrase="not-alices-passphrase")
    assert wrong.returncode == 1
    assert_one_error_line(wrong, "alice.key", "wrong passphrase")

    # a key the repository does not know cannot join, nor sign where a manager's key was swapped for it
    mallory = team.machine("mallory")
    mallory.mkdir()
    ok(team.rm_run("mallory", "keys", "generate", "mallory", "--out", "."))
    refused = team.join("mallory")
    assert refused.returncode == 1
    assert_one_error_line(refused, "'mallory'", "not a release manager's key", "alice, bob, carol")
    assert sorted(p.name for p in mallory.iterdir()) == ["mallory.key", "mallory.pub", "root.json"]  # nothing kept
    shutil.copyfile(mallory / "mallory.key", team.machine("alice") / "alice.key")
    swapped = team.rm_run("alice", "release", "approve", "2.0.0")
    assert swapped.returncode == 1
    assert_one_error_line(swapped, "alice.key", "expected")
    info = json.loads(ok(team.ci_run("release", "list", "-o", "json")).stdout)["releases"][0]
    assert info["signed_by"] == ["ci"]  # nothing was signed by any of it


def test_a_signer_refuses_a_store_that_disagrees_with_the_verified_metadata(staged: Team) -> None:
    """Someone with write access to the store rewrites the published targets metadata (re-signed by
    nobody): ngclient, from the pinned root, refuses it and nothing is signed."""
    team = staged
    store = open_store(team.store_url)
    snapshot = json.loads(store.get(layout.metadata_key("timestamp", None)))["signed"]["meta"]["snapshot.json"]
    snap = json.loads(store.get(layout.metadata_key("snapshot", snapshot["version"])))
    targets_version = snap["signed"]["meta"]["targets.json"]["version"]
    key = layout.metadata_key("targets", targets_version)
    doc = json.loads(store.get(key))
    doc["signed"]["delegations"]["roles"][0]["threshold"] = 1
    store.put(key, json.dumps(doc).encode())
    refused = team.rm_run("alice", "release", "approve", "2.0.0")
    assert refused.returncode == 1
    assert_one_error_line(refused, "refusing to sign")
    info = json.loads(ok(team.ci_run("release", "list", "-o", "json")).stdout)["releases"][0]
    assert info["signed_by"] == ["ci"]
