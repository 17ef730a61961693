"""`otactl release withdraw` through the real CLI with two of three release managers (decision 0502)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.kdf import reseal_keys
from fixtures.repo import PASSPHRASE, assert_one_error_line, init_workspace, ok
from release_cli_parts import MANIFESTS, otactl

pytestmark = pytest.mark.integration


def test_two_of_three_managers_withdraw_a_release(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws", "--release-manager", "rm1", "--release-manager", "rm2",
                        "--release-manager", "rm3", "--approvals", "2", "--bin-bits", "1")
    reseal_keys(ws, PASSPHRASE)  # cheap to unlock in each command below (decision 0014)
    ok(otactl(ws, "release", "build", str(MANIFESTS / "t9-engine-2.0.0.yaml")))
    ok(otactl(ws, "release", "approve", "2.0.0", "--key", "rm1"))
    ok(otactl(ws, "release", "approve", "2.0.0", "--key", "rm2"))
    ok(otactl(ws, "release", "publish", "2.0.0"))

    first = ok(otactl(ws, "release", "withdraw", "2.0.0", "--key", "rm1", "--reason", "overheats"))
    assert "withdrawal pending (overheats); signed by rm1; needs 1 more of: rm2, rm3" in first.stdout
    for args, names in [(["--key", "rm1"], ["already signed", "rm1"]),
                        (["--key", "online"], ["online", "cannot sign a withdrawal"]),
                        (["--key", "ci"], ["ci", "cannot sign a withdrawal"])]:
        refused = otactl(ws, "release", "withdraw", "2.0.0", *args)
        assert refused.returncode == 2, refused.stderr
        assert_one_error_line(refused, *names)
    missing = otactl(ws, "release", "withdraw", "9.9.9", "--key", "rm2", "--reason", "x")
    assert missing.returncode == 1
    assert_one_error_line(missing, "9.9.9")

    done = json.loads(ok(otactl(ws, "release", "withdraw", "2.0.0", "--key", "rm2", "--output", "json")).stdout)
    assert (done["schema"], done["status"], done["signed_by"]) == ("otactl/release-withdrawal/1", "withdrawn",
                                                                   ["rm1", "rm2"])
    listed = json.loads(ok(otactl(ws, "release", "list", "--output", "json")).stdout)
    assert [r["status"] for r in listed["releases"]] == ["withdrawn"]
    ok(otactl(ws, "repo", "verify"))  # a TUF client downloads every target, the withdrawal too
