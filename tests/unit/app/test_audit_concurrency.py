"""Eight processes act on one rollout at once, through the real console script, on the directory store
and on S3 (a real S3-compatible server over HTTP); repeated.

Each process either succeeds (its action is in the audit log exactly once) or fails with one clear
error line (a conflict, exit 1; an action the state no longer allows, exit 2); never a traceback.
After each round state, published policy and audit log agree and the chain verifies.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from app_parts import MODEL, OPERATOR, PASSPHRASE, clone_workspace, prepared_template, verify_audit
from fixtures.repo import assert_one_error_line, cli_env, otactl_argv

from otactl.app.context import Context
from otactl.audit import log as audit

pytestmark = pytest.mark.integration
ROUNDS = 3
KEY = ["--key", OPERATOR]
COMMANDS: list[tuple[str, list[str]]] = [
    ("pause", ["rollout", "pause", MODEL, "--reason", "p1", *KEY]),
    ("pause", ["rollout", "pause", MODEL, "--reason", "p2", *KEY]),
    ("resume", ["rollout", "resume", MODEL, "--reason", "r", *KEY]),
    ("approve", ["rollout", "approve", MODEL, "--key", "release-manager"]),
    ("approve", ["rollout", "approve", MODEL, "--key", "release-manager"]),
    ("rollback", ["rollout", "rollback", MODEL, "--reason", "rb", *KEY]),
    ("abort", ["rollout", "abort", MODEL, "--reason", "ab", *KEY]),
    ("recover", ["rollout", "recover", MODEL]),
]


@pytest.fixture(params=["dir", "s3"])
def store_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if request.param == "s3":
        return "s3", request.getfixturevalue("s3_endpoint")
    return "dir", None


def test_eight_processes_at_once(store_kind: tuple[str, str | None], tmp_path: Path,
                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    kind, endpoint = store_kind
    template = prepared_template(str(tmp_path_factory.getbasetemp() / "crash-templates"), kind, endpoint, "approvals")
    env = cli_env(PASSPHRASE)
    won_total: Counter[str] = Counter()
    for round_ in range(ROUNDS):
        ws = clone_workspace(template, tmp_path / f"round-{round_}", endpoint)
        before = audit.entries(Context.open(ws).store, MODEL)
        procs = [(action, subprocess.Popen([*otactl_argv(), *args, "--workspace", str(ws), "--output", "json"],
                                           cwd=ws, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True))
                 for action, args in COMMANDS]
        won: Counter[str] = Counter()
        for action, proc in procs:
            out, err = proc.communicate(timeout=300)
            result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            if proc.returncode == 0:
                assert "Traceback" not in out + err
                if action != "recover":
                    assert json.loads(out)["action"] == action
                    won[action] += 1
            else:
                assert proc.returncode in (1, 2), (action, proc.returncode, err)
                assert_one_error_line(result)
        after = audit.entries(Context.open(ws).store, MODEL)
        assert after[: len(before)] == before
        new = Counter(e.action for e in after[len(before):])
        assert new == won, (round_, new, won)  # every winner recorded exactly once, no loser recorded
        assert sum(won.values()) >= 1
        verify_audit(ws)  # chain, signatures; state and policy agree with the log
        won_total += won
    assert won_total  # the rounds did something
