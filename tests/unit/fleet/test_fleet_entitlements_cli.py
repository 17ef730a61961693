"""Who needs the entitlement key (decision 0406), through the real CLI: `fleet import` of new devices and
`fleet set --variant` do; `fleet set --tag/--region/--pin` and a re-import of unchanged devices do not.
Bad input is one error line with its exit code, and nothing is published."""

from __future__ import annotations

import json
from pathlib import Path

from fixtures.repo import assert_one_error_line, ok, role_versions, run_otactl
from fleet_parts import INVENTORY_CSV

from otactl.app.context import Context
from otactl.app.fleet import get_device


def _record(ws: Path, device_id: str):  # type: ignore[no-untyped-def]
    ctx = Context.open(ws)
    return get_device(ctx, ctx.repository(), device_id)


def test_operational_changes_need_no_entitlement_key_and_a_new_variant_does(fleet_ws: Path) -> None:
    out = ok(run_otactl("fleet", "import", str(INVENTORY_CSV), cwd=fleet_ws)).stdout
    assert "12 entitlements signed in 1 batches" in out
    signed = _record(fleet_ws, "t9-0004").entitlement
    assert signed is not None and signed.batch.batch.count == 12
    (fleet_ws / ".otactl" / "keys" / "entitlement-1.key").unlink()  # the entitlement key is elsewhere now

    ok(run_otactl("fleet", "import", str(INVENTORY_CSV), cwd=fleet_ws))  # unchanged: nothing to sign
    done = json.loads(ok(run_otactl("fleet", "set", "t9-0004", "--tag", "pilot", "--region", "apac",
                                    "-o", "json", cwd=fleet_ws)).stdout)
    assert (done["entitlements_signed"], done["device"]["region"], done["device"]["tags"]) == (0, "apac", ["pilot"])
    record = _record(fleet_ws, "t9-0004")
    assert record.entitlement == signed  # the same proof, re-listed in the online-signed bin

    before = role_versions(fleet_ws)
    refused = run_otactl("fleet", "set", "t9-0004", "--variant", "hp-500", cwd=fleet_ws)
    assert refused.returncode == 1
    assert_one_error_line(refused, "entitlement-1")
    assert role_versions(fleet_ws) == before


def test_an_online_key_is_refused_as_the_entitlement_key(fleet_ws: Path) -> None:
    ok(run_otactl("fleet", "import", str(INVENTORY_CSV), cwd=fleet_ws))
    before = role_versions(fleet_ws)
    for key, code, names in (("online", 2, ["'online'", "online role"]), ("nobody", 1, ["'nobody'"])):
        refused = run_otactl("fleet", "set", "t9-0004", "--variant", "hp-500", "--entitlement-key", key, cwd=fleet_ws)
        assert refused.returncode == code, refused.stderr
        assert_one_error_line(refused, *names)
    assert role_versions(fleet_ws) == before


def test_features_are_entitlements(fleet_ws: Path) -> None:
    ok(run_otactl("fleet", "import", str(INVENTORY_CSV), cwd=fleet_ws))
    done = json.loads(ok(run_otactl("fleet", "set", "t9-0004", "--feature", "pto", "--feature", "launch-control",
                                    "-o", "json", cwd=fleet_ws)).stdout)
    assert done["entitlements_signed"] == 1
    st = _record(fleet_ws, "t9-0004").entitlement.statement  # type: ignore[union-attr]
    assert (st.features, st.version) == (("launch-control", "pto"), 2)
