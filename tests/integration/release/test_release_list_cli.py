"""`otactl release list`: every staged, approved and published release, who signed, how many still needed."""

from __future__ import annotations

from pathlib import Path

from fixtures.repo import ok
from release_cli_parts import MANIFESTS, copy_manifest, otactl, otactl_json


def test_release_list_shows_each_release_state_and_approvals(published_ws: Path, tmp_path: Path) -> None:
    patch_release = copy_manifest(tmp_path, "t9-engine-2.1.0.yaml", **{"version: 2.1.0": "version: 2.1.1"})
    for manifest in (MANIFESTS / "t9-engine-2.1.0.yaml", patch_release, MANIFESTS / "t9-engine-2.2.0.yaml"):
        ok(otactl(published_ws, "release", "build", str(manifest)))  # three staged at once
    for version in ("2.2.0", "2.1.0"):  # approved out of build order
        ok(otactl(published_ws, "release", "approve", version, "--key", "release-manager"))

    listed = otactl_json(published_ws, "release", "list")
    assert listed["schema"] == "otactl/releases/1"
    rows = [(r["version"], r["status"], r["signed_by"], r["needed"], r["missing"], r["threshold"])
            for r in listed["releases"]]
    assert rows == [
        ("2.0.0", "published", ["ci", "release-manager"], 0, [], 2),
        ("2.1.0", "approved", ["ci", "release-manager"], 0, [], 2),
        ("2.1.1", "staged", ["ci"], 1, ["release-manager"], 2),
        ("2.2.0", "approved", ["ci", "release-manager"], 0, [], 2),
    ]

    table = ok(otactl(published_ws, "release", "list")).stdout
    lines = {line.split()[1]: line for line in table.splitlines() if line.strip().startswith("t9-engine")}
    assert set(lines) == {"2.0.0", "2.1.0", "2.1.1", "2.2.0"}
    assert "staged" in lines["2.1.1"] and "1 more of: release-manager" in lines["2.1.1"]
    assert "approved" in lines["2.2.0"] and "more of" not in lines["2.2.0"]
    assert "published" in lines["2.0.0"]
