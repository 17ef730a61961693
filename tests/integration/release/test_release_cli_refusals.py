"""Bad input through the real CLI: one clear error line, a non-zero exit, and nothing published.

"Nothing published" is checked three ways: the ``releases`` role and ``timestamp`` keep their
versions, and a TUF client (python-tuf ngclient over HTTP) finds no target of the refused release.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.repo import assert_one_error_line, ok
from release_cli_parts import (
    INVENTORY,
    MANIFESTS,
    MODEL,
    copy_manifest,
    device,
    otactl,
    published_state,
    root_v1,
    served,
)

from otactl.app import release
from otactl.app.context import Context
from otactl.errors import ExitCode
from otactl.repo import layout
from otactl.repo.repository import to_bytes

pytestmark = pytest.mark.integration

NEW = "2.1.0"


def _build_new(ws: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(ok(otactl(ws, "release", "build", str(MANIFESTS / f"{MODEL}-{NEW}.yaml"), "-o", "json")).stdout)


# Each case prepares a workspace with 2.0.0 published and the fleet imported, and returns the command.
def missing_image(ws: Path, tmp: Path) -> list[str]:
    m = copy_manifest(tmp, f"{MODEL}-{NEW}.yaml")
    (m.parent / "images" / "t9-revB-2.1.0.bin").unlink()
    return ["release", "build", str(m)]


def image_is_a_directory(ws: Path, tmp: Path) -> list[str]:
    m = copy_manifest(tmp, f"{MODEL}-{NEW}.yaml")
    image = m.parent / "images" / "t9-revB-2.1.0.bin"
    image.unlink()
    image.mkdir()
    return ["release", "build", str(m)]


def version_exists(ws: Path, tmp: Path) -> list[str]:
    return ["release", "build", str(MANIFESTS / f"{MODEL}-2.0.0.yaml")]


def version_staged(ws: Path, tmp: Path) -> list[str]:
    _build_new(ws)
    return ["release", "build", str(copy_manifest(tmp, f"{MODEL}-{NEW}.yaml", **{"notes: |": "notes: |\n  again"}))]


def security_version_below_published(ws: Path, tmp: Path) -> list[str]:
    return ["release", "build", str(copy_manifest(tmp, f"{MODEL}-{NEW}.yaml",
                                                  **{"security_version: 2": "security_version: 0"}))]


def fleet_set_unknown_variant(ws: Path, tmp: Path) -> list[str]:
    return ["fleet", "set", "t9-0004", "--variant", "hp-900"]


def fleet_set_unknown_device(ws: Path, tmp: Path) -> list[str]:
    return ["fleet", "set", "t9-9999", "--variant", "hp-500"]


def fleet_import_duplicate_device(ws: Path, tmp: Path) -> list[str]:
    inventory = tmp / "inventory.csv"
    lines = INVENTORY.read_text().splitlines()
    inventory.write_text("\n".join([*lines, lines[3].replace(",hp-500,", ",hp-300,")]) + "\n")
    return ["fleet", "import", str(inventory)]


def fleet_import_unknown_variant(ws: Path, tmp: Path) -> list[str]:
    inventory = tmp / "inventory.csv"
    inventory.write_text(INVENTORY.read_text().replace("t9-0005,t9-engine,revA,hp-500", "t9-0005,t9-engine,revA,x"))
    return ["fleet", "import", str(inventory)]


def approve_with_outsider_key(ws: Path, tmp: Path) -> list[str]:
    ok(otactl(ws, "keys", "generate", "outsider"))
    _build_new(ws)
    return ["release", "approve", NEW, "--key", "outsider"]


def approve_with_the_ci_key(ws: Path, tmp: Path) -> list[str]:
    _build_new(ws)
    return ["release", "approve", NEW, "--key", "ci"]


def approve_after_staged_file_changed(ws: Path, tmp: Path) -> list[str]:
    built = _build_new(ws)
    cfg = next(t for t in built["targets"] if t["path"].endswith("/hp-500.json"))
    stored = ws / "repository" / layout.target_key(cfg["path"], cfg["sha256"])
    stored.write_bytes(stored.read_bytes().replace(b"1950", b"9950"))  # same length, other bytes
    return ["release", "approve", NEW, "--key", "release-manager"]


def approve_after_staged_image_changed(ws: Path, tmp: Path) -> list[str]:
    built = _build_new(ws)
    fw = next(t for t in built["targets"] if t["path"].endswith("t9-revA-2.1.0.bin"))
    stored = ws / "repository" / layout.target_key(fw["path"], fw["sha256"])
    data = bytearray(stored.read_bytes())
    data[100] ^= 1  # one bit
    stored.write_bytes(bytes(data))
    return ["release", "approve", NEW, "--key", "release-manager"]


def approve_after_staged_metadata_changed(ws: Path, tmp: Path) -> list[str]:
    _build_new(ws)
    staged = ws / "repository" / release.staged_key(MODEL, NEW)
    doc = json.loads(staged.read_bytes())
    tf = doc["signed"]["targets"]["config/t9-engine/2.1.0/hp-300.json"]
    tf["custom"]["otactl"]["variant"] = "hp-500"  # the signed part changes; the signature stays
    staged.write_text(json.dumps(doc))
    return ["release", "approve", NEW, "--key", "release-manager"]


def publish_with_only_the_ci_signature(ws: Path, tmp: Path) -> list[str]:
    _build_new(ws)
    return ["release", "publish", NEW]


def publish_after_staged_file_changed(ws: Path, tmp: Path) -> list[str]:
    built = _build_new(ws)
    ok(otactl(ws, "release", "approve", NEW, "--key", "release-manager"))
    desc = next(t for t in built["targets"] if t["path"].startswith("releases/"))
    stored = ws / "repository" / layout.target_key(desc["path"], desc["sha256"])
    stored.write_bytes(stored.read_bytes().replace(b'"security_version":2', b'"security_version":0'))
    return ["release", "publish", NEW]


def publish_metadata_signed_by_someone_else(ws: Path, tmp: Path) -> list[str]:
    """The approval signature replaced by one from a key the releases role does not list."""
    _build_new(ws)
    ok(otactl(ws, "keys", "generate", "outsider"))
    ctx = Context.open(ws)
    md = release._staged(ctx, release.ReleaseRef(MODEL, NEW))
    md.sign(ctx.signers.get("outsider"), append=True)
    ctx.store.put(release.staged_key(MODEL, NEW), to_bytes(md))
    return ["release", "publish", NEW]


CASES = [
    pytest.param(missing_image, ExitCode.USAGE, [f"{MODEL}-{NEW}.yaml:8:", "firmware.revB.file", "not found"],
                 id="missing-image"),
    pytest.param(image_is_a_directory, ExitCode.USAGE, [":8:", "firmware.revB.file", "not a regular file"],
                 id="image-is-a-directory"),
    pytest.param(version_exists, ExitCode.USAGE, [f"{MODEL}-2.0.0.yaml:5:", "version: release t9-engine/2.0.0 "
                                                  "already exists"], id="version-already-published"),
    pytest.param(version_staged, ExitCode.USAGE, [":4:", "version: release t9-engine/2.1.0 already exists"],
                 id="version-already-staged"),
    pytest.param(security_version_below_published, ExitCode.USAGE,
                 [":5:", "security_version: 0 is below 1", "anti-rollback"], id="security-version-below-published"),
    pytest.param(fleet_set_unknown_variant, ExitCode.USAGE, ["t9-0004", "unknown variant 'hp-900'"],
                 id="fleet-set-unknown-variant"),
    pytest.param(fleet_set_unknown_device, ExitCode.ERROR, ["'t9-9999'", "not in the fleet"],
                 id="fleet-set-unknown-device"),
    pytest.param(fleet_import_duplicate_device, ExitCode.USAGE,
                 ["inventory.csv:14:", "device_id: device 't9-0002' appears twice (first on line 4)"],
                 id="fleet-import-duplicate-device"),
    pytest.param(fleet_import_unknown_variant, ExitCode.USAGE,
                 ["inventory.csv:7:", "variant: device t9-0005: unknown variant 'x'"],
                 id="fleet-import-unknown-variant"),
    pytest.param(approve_with_outsider_key, ExitCode.USAGE, ["'outsider'", "not a release manager's key"],
                 id="approve-with-a-non-release-manager-key"),
    pytest.param(approve_with_the_ci_key, ExitCode.USAGE, ["'ci'", "not a release manager's key"],
                 id="approve-with-the-ci-key"),
    pytest.param(approve_after_staged_file_changed, ExitCode.ERROR,
                 ["config/t9-engine/2.1.0/hp-500.json", "changed since the CI signature", "refusing to approve"],
                 id="approve-after-a-staged-config-changed"),
    pytest.param(approve_after_staged_image_changed, ExitCode.ERROR,
                 ["firmware/t9-engine/2.1.0/t9-revA-2.1.0.bin", "changed since the CI signature"],
                 id="approve-after-a-staged-image-changed"),
    pytest.param(approve_after_staged_metadata_changed, ExitCode.ERROR,
                 ["no longer carries a valid CI signature", "refusing to approve"],
                 id="approve-after-the-staged-metadata-changed"),
    pytest.param(publish_with_only_the_ci_signature, ExitCode.ERROR, ["1 of 2 signatures", "release-manager"],
                 id="publish-with-only-the-ci-signature"),
    pytest.param(publish_after_staged_file_changed, ExitCode.ERROR,
                 ["releases/t9-engine/2.1.0.json", "changed since the CI signature", "refusing to publish"],
                 id="publish-after-a-staged-file-changed"),
    pytest.param(publish_metadata_signed_by_someone_else, ExitCode.ERROR, ["1 of 2 signatures"],
                 id="publish-with-an-outsiders-signature"),
]


@pytest.mark.parametrize(("prepare", "exit_code", "names"), CASES)
def test_refused_with_one_clear_error_and_nothing_published(
    published_ws: Path, tmp_path: Path, prepare: Callable[[Path, Path], list[str]], exit_code: ExitCode,
    names: list[str],
) -> None:
    argv = prepare(published_ws, tmp_path)
    before = published_state(published_ws)
    result = otactl(published_ws, *argv)
    assert result.returncode == exit_code, result.stderr
    assert_one_error_line(result, *names)
    assert result.stdout == ""
    assert published_state(published_ws) == before
    with served(published_ws) as url, device(root_v1(published_ws), url, tmp_path / "device") as (updater, _):
        updater.refresh()
        assert updater.get_targetinfo(layout.release_path(MODEL, "2.0.0")) is not None  # the client works
        assert updater.get_targetinfo(layout.release_path(MODEL, NEW)) is None
        assert updater.get_targetinfo(f"config/{MODEL}/{NEW}/hp-500.json") is None
