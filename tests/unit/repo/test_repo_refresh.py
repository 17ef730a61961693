"""`otactl repo refresh` (issue 2): the cron/CI job that keeps an evergreen repository alive.

It exits 4 when an offline role is close to expiry, re-signs online roles past half their lifetime
(all of them with --force) and leaves offline roles alone.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from fixtures.repo import (
    assert_one_error_line,
    initial_root,
    ok,
    open_context,
    role_versions,
    run_otactl,
    store_client,
    trusted_version,
)

from otactl.app.context import utcnow
from otactl.app.repo import refresh
from otactl.repo import layout

OFFLINE = set(layout.OFFLINE_ROLES)


def test_exits_4_naming_offline_roles_within_warn_days(workspace: Path) -> None:
    before = role_versions(workspace)
    result = run_otactl("repo", "refresh", "--warn-days", "400", cwd=workspace)
    assert result.returncode == 4, result.stderr
    line = assert_one_error_line(result, "offline roles close to expiry", *sorted(OFFLINE))
    assert not any(f"{role} (" in line for role in layout.ONLINE_ROLES)
    assert "nothing needed" in result.stdout  # a fresh repository: no online role to re-sign
    assert role_versions(workspace) == before


def test_exits_0_when_nothing_is_close_to_expiry(workspace: Path) -> None:
    before = role_versions(workspace)
    result = ok(run_otactl("repo", "refresh", "--warn-days", "30", "--output", "json", cwd=workspace))
    doc = json.loads(result.stdout)
    assert doc["schema"] == "otactl/repo-refresh/1"
    assert doc["resigned"] == []
    assert doc["expiring_offline"] == []
    assert role_versions(workspace) == before


def test_force_resigns_every_online_role_and_no_offline_one(workspace: Path, tmp_path: Path) -> None:
    client_dir = tmp_path / "device"
    store_client(initial_root(workspace), open_context(workspace).store, client_dir).refresh()
    before = role_versions(workspace)

    ok(run_otactl("repo", "refresh", "--force", cwd=workspace))

    after = role_versions(workspace)
    assert after.keys() == before.keys()
    for role, version in before.items():
        online = role in layout.ONLINE_ROLES or role.startswith(f"{layout.BIN_PREFIX}-")
        assert after[role] == version + (1 if online else 0), role
    assert any(r.startswith(f"{layout.BIN_PREFIX}-") for r in after)  # the bins were checked too
    store_client(b"", open_context(workspace).store, client_dir).refresh()  # a device accepts it
    assert trusted_version(client_dir, "timestamp") == before["timestamp"] + 1


@pytest.mark.parametrize(
    ("hours_later", "expected"),
    [
        pytest.param(1, set(), id="fresh-nothing-to-do"),
        pytest.param(20, {"snapshot", "timestamp"}, id="timestamp-past-half-life"),
        pytest.param(24 * 4, None, id="every-online-role-past-half-life"),
    ],
)
def test_resigns_online_roles_past_half_their_lifetime(
    workspace: Path, hours_later: int, expected: set[str] | None
) -> None:
    before = role_versions(workspace)
    online = {r for r in before if r in layout.ONLINE_ROLES or r.startswith(f"{layout.BIN_PREFIX}-")}
    result = refresh(open_context(workspace, now=utcnow() + timedelta(hours=hours_later)), warn_days=30)
    assert set(result.resigned) == (online if expected is None else expected)
    assert result.expiring_offline == []
    after = role_versions(workspace)
    assert {r for r in before if after[r] != before[r]} == set(result.resigned)


def test_offline_resigns_the_offline_roles_near_expiry_whose_keys_are_here(workspace: Path, tmp_path: Path) -> None:
    """Decision 1204: after eleven months the offline roles (root too) are re-signed by `--offline`,
    only those within --warn-days; a factory device (root v1) still updates; without the flag they
    are only reported."""
    later = utcnow() + timedelta(days=340)
    warned = refresh(open_context(workspace, now=later), warn_days=30)
    assert {r.role for r in warned.expiring_offline} >= {"root", "targets", "releases"}
    before = role_versions(workspace)
    result = refresh(open_context(workspace, now=later), warn_days=30, offline=True)
    assert {"root", "targets", "releases"} <= set(result.resigned)
    assert result.expiring_offline == []  # nothing left to warn about
    after = role_versions(workspace)
    assert after["root"] == before["root"] + 1 and after["targets"] == before["targets"] + 1
    assert refresh(open_context(workspace, now=later), warn_days=30, offline=True).resigned == []  # not again
    client = store_client(initial_root(workspace), open_context(workspace).store, tmp_path / "device")
    client.refresh()
    assert trusted_version(tmp_path / "device", "root") == after["root"]
