"""Through the real console script: a telemetry source that cannot be read is an error (exit 1, its
cause verbatim, nothing recorded), never a rollback; only a release manager clears a bad mark."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from fixtures.kdf import reseal_keys
from fixtures.repo import PASSPHRASE, assert_one_error_line, init_workspace, ok, run_otactl, tree

from otactl.app.context import Context
from otactl.app.policy import current_policy
from otactl.audit import log as audit
from otactl.keys.keyfile import public_key

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
PLAN = Path(__file__).parent / "plans" / "two-rings.yaml"
MODEL = "t9-engine"
CLOSED_PORT = "http://127.0.0.1:9"  # discard: nothing listens on loopback


@pytest.fixture(scope="module")
def running_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``otactl init``, 2.0.0 and 2.1.0 shipped, the example fleet, a rollout of 2.1.0 started."""
    ws = reseal_keys(init_workspace(tmp_path_factory.mktemp("missing-telemetry") / "ws"), PASSPHRASE)  # 0014
    for version in ("2.0.0", "2.1.0"):
        ok(run_otactl("release", "build", str(ROOT / "manifests" / f"{MODEL}-{version}.yaml"), cwd=ws))
        ok(run_otactl("release", "approve", version, "--key", "release-manager", cwd=ws))
        ok(run_otactl("release", "publish", version, cwd=ws))
    ok(run_otactl("fleet", "import", str(ROOT / "examples/fleet/inventory.csv"), cwd=ws))
    ok(run_otactl("rollout", "start", MODEL, "2.1.0", "--plan", str(PLAN), cwd=ws))
    return ws


@pytest.fixture
def ws(running_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OTACTL_KEY_PASSPHRASE", PASSPHRASE)  # for the in-process reads below
    dest = tmp_path / "ws"
    shutil.copytree(running_template, dest, symlinks=True)
    return dest.resolve()


def published(ws: Path) -> dict:
    ctx = Context.open(ws)
    doc = current_policy(ctx, ctx.repository(), MODEL)
    assert doc is not None
    return doc


def audit_entries(ws: Path) -> list[audit.AuditEntry]:
    ctx = Context.open(ws)

    def key_for(keyid: str):
        entry = ctx.trust.key_by_id(keyid)
        return None if entry is None else public_key(entry.public)

    audit.verify(ctx.store, MODEL, key_for)
    return audit.entries(ctx.store, MODEL)


@pytest.mark.parametrize(
    ("command", "cause"),
    [
        (["step"], "telemetry database {ws}/missing/telemetry.db does not exist"),
        (["step", "--output", "json"], "telemetry database {ws}/missing/telemetry.db does not exist"),
        (["watch", "--interval", "0.2", "--timeout", "60"], "telemetry database {ws}/missing/telemetry.db "
                                                             "does not exist"),
    ],
    ids=["step", "step-json", "watch"],
)
def test_a_missing_sqlite_database_is_an_error_and_nothing_is_recorded(ws: Path, command: list[str],
                                                                       cause: str) -> None:
    before = tree(ws)
    started = time.monotonic()
    result = run_otactl("rollout", command[0], MODEL, "--telemetry", "sqlite:missing/telemetry.db", *command[1:],
                        cwd=ws)
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 30  # watch stops at once, it does not wait out its timeout
    line = assert_one_error_line(result, "telemetry source unavailable", cause.format(ws=ws),
                                 "nothing was recorded, the rollout is unchanged")
    assert "rolled" not in line and result.stdout == ""
    assert tree(ws) == before  # state, archives, policy, repository metadata, audit log: byte for byte
    assert published(ws)["policy_version"] == 1 and published(ws)["bad_releases"] == []
    assert [e.action for e in audit_entries(ws)] == ["start"]


def test_an_unreachable_prometheus_is_an_error_and_nothing_is_recorded(ws: Path) -> None:
    before = tree(ws)
    result = run_otactl("rollout", "step", MODEL, "--telemetry", f"prometheus:{CLOSED_PORT}", cwd=ws)
    assert result.returncode == 1, result.stderr
    assert_one_error_line(result, "telemetry source unavailable", f"Prometheus at {CLOSED_PORT} is unreachable",
                          "nothing was recorded")
    assert tree(ws) == before
    status = json.loads(ok(run_otactl("rollout", "status", MODEL, "--output", "json", cwd=ws)).stdout)
    assert (status["status"], status["ring"], status["policy_version"]) == ("running", "canary", 1)


def test_only_a_release_manager_reinstates_and_the_release_ships_again(ws: Path) -> None:
    ok(run_otactl("rollout", "rollback", MODEL, "--reason", "field reports", "--key", "release-manager", cwd=ws))
    assert published(ws)["bad_releases"] == ["2.1.0"]
    refused = run_otactl("rollout", "start", MODEL, "2.1.0", "--plan", str(PLAN), cwd=ws)
    assert refused.returncode == 1
    assert_one_error_line(refused, "release 2.1.0 is marked bad")

    before = tree(ws)
    for key, named in (("ci", "is not a release manager's key"), ("online", "is not a release manager's key")):
        result = run_otactl("release", "reinstate", MODEL, "2.1.0", "--reason", "x", "--key", key, cwd=ws)
        assert result.returncode == 2
        assert_one_error_line(result, f"key {key!r}", named)
    result = run_otactl("release", "reinstate", MODEL, "2.0.0", "--reason", "x", "--key", "release-manager",
                        cwd=ws)
    assert result.returncode == 2
    assert_one_error_line(result, "release t9-engine/2.0.0 is not marked bad")
    assert tree(ws) == before

    done = json.loads(ok(run_otactl("release", "reinstate", MODEL, "2.1.0", "--reason", "agent bug, not 2.1.0",
                                    "--key", "release-manager", "--output", "json", cwd=ws)).stdout)
    assert done["schema"] == "otactl/release-reinstate/1"
    assert (done["version"], done["actor"], done["bad_releases"]) == ("2.1.0", "release-manager", [])
    assert published(ws)["bad_releases"] == []
    ok(run_otactl("rollout", "start", MODEL, "2.1.0", "--plan", str(PLAN), cwd=ws))
    entries = audit_entries(ws)
    assert [(e.action, e.actor) for e in entries][-2:] == [("reinstate", "release-manager"), ("start", "online")]
    assert entries[-2].details["reason"] == "agent bug, not 2.1.0"
