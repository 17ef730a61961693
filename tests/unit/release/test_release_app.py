"""Release services in-process: review reads signed documents; approve and publish re-check the staged bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from release_parts import MANIFESTS, ship
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from otactl.app import release
from otactl.app.context import Context
from otactl.errors import InputFileError, VerificationError
from otactl.release.manifest import load_manifest
from otactl.repo import layout
from otactl.repo.repository import to_bytes


def _releases_version(ctx: Context) -> int:
    """The published repository's generation: unchanged when nothing was published."""
    return ctx.repository().snapshot.signed.version


def _copy_manifest(tmp_path: Path, name: str, **replace: str) -> Path:
    """A manifests/ file copied (with its images) to tmp_path, with text replacements."""
    dest = tmp_path / "m"
    if not dest.exists():
        shutil.copytree(MANIFESTS / "images", dest / "images")
    text = (MANIFESTS / name).read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    out = dest / name
    out.write_text(text)
    return out


# ----------------------------------------------------------------------------------- review
def test_review_shows_targets_variants_changes_and_missing_signers(released: Path) -> None:
    ctx = Context.open(released)
    release.build(ctx, load_manifest(MANIFESTS / "t9-engine-2.1.0.yaml"))
    r = release.review(ctx, "2.1.0")
    assert (r.status, r.signed_by, r.missing, r.threshold) == ("staged", ["ci"], ["release-manager"], 2)
    assert [t["path"] for t in r.targets] == [
        "config/t9-engine/2.1.0/hp-300.json", "config/t9-engine/2.1.0/hp-400.json",
        "config/t9-engine/2.1.0/hp-500.json", "firmware/t9-engine/2.1.0/t9-revA-2.1.0.bin",
        "firmware/t9-engine/2.1.0/t9-revB-2.1.0.bin", "releases/t9-engine/2.1.0.json"]
    assert r.previous == "2.0.0"
    assert r.variant_changes == {"hp-500": {"changed": {"torque_limit_nm": {"from": 1900, "to": 1950}}}}
    assert r.firmware == {"revA": "firmware/t9-engine/2.1.0/t9-revA-2.1.0.bin",
                          "revB": "firmware/t9-engine/2.1.0/t9-revB-2.1.0.bin"}
    assert r.security_version == 2


def test_review_of_a_config_only_release_reuses_the_earlier_image(released: Path) -> None:
    ctx = Context.open(released)
    ship(ctx, MANIFESTS / "t9-engine-2.1.0.yaml")
    release.build(ctx, load_manifest(MANIFESTS / "t9-engine-2.1.1-config.yaml"))
    r = release.review(ctx, "t9-engine/2.1.1")
    assert not [t for t in r.targets if t["path"].startswith("firmware/")]  # nothing new to flash
    assert r.firmware == {"revA": "firmware/t9-engine/2.1.0/t9-revA-2.1.0.bin",
                          "revB": "firmware/t9-engine/2.1.0/t9-revB-2.1.0.bin"}
    assert r.previous == "2.1.0"
    assert r.variant_changes == {"hp-400": {"changed": {"max_hp": {"from": 400, "to": 420},
                                                        "torque_limit_nm": {"from": 1550, "to": 1600}}}}


def test_review_reads_the_signed_documents_not_the_state_file(released: Path) -> None:
    ctx = Context.open(released)
    release.build(ctx, load_manifest(MANIFESTS / "t9-engine-2.1.0.yaml"))
    key = release.state_key("t9-engine", "2.1.0")
    state = json.loads(ctx.store.get(key))
    state["variants"]["hp-500"]["torque_limit_nm"] = 1900  # the state file is not signed
    state["security_version"] = 0
    ctx.store.put(key, json.dumps(state).encode())
    r = release.review(ctx, "2.1.0")
    assert r.variants["hp-500"]["torque_limit_nm"] == 1950
    assert r.security_version == 2
    assert "hp-500" in r.variant_changes


def test_review_refuses_a_tampered_staged_config(released: Path) -> None:
    ctx = Context.open(released)
    built = release.build(ctx, load_manifest(MANIFESTS / "t9-engine-2.1.0.yaml"))
    cfg = next(t for t in built.targets if t["path"].endswith("hp-300.json"))
    ctx.store.put(layout.target_key(cfg["path"], cfg["sha256"]), b'{"parameters": {"max_hp": 900}}')
    with pytest.raises(VerificationError, match=r"config/t9-engine/2\.1\.0/hp-300\.json changed since it was signed"):
        release.review(ctx, "2.1.0")


# --------------------------------------------------------------------------- build refusals
BUILD_REFUSALS = [
    pytest.param("t9-engine-2.0.0.yaml", {}, "version: release t9-engine/2.0.0 already exists", id="version-exists"),
    pytest.param("t9-engine-2.1.0.yaml", {"security_version: 2": "security_version: 0"},
                 "security_version: 0 is below 1, the highest published for t9-engine (anti-rollback floor)",
                 id="security-version-below-floor"),
    pytest.param("t9-engine-2.1.1-config.yaml", {},
                 "firmware.revA.from_release: t9-engine/2.1.0 is not published", id="from-release-unpublished"),
    pytest.param("t9-engine-2.1.0.yaml", {"compatible_from:": "stepping_stone: 2.0.5\ncompatible_from:"},
                 "stepping_stone: t9-engine/2.0.5 is not published", id="stepping-stone-unpublished"),
]


@pytest.mark.parametrize(("name", "replace", "message"), BUILD_REFUSALS)
def test_build_refusals_name_manifest_line_and_field(released: Path, tmp_path: Path, name: str,
                                                    replace: dict[str, str], message: str) -> None:
    ctx = Context.open(released)
    manifest = _copy_manifest(tmp_path, name, **replace)
    before = sorted(ctx.store.list())
    with pytest.raises(InputFileError) as caught:
        release.build(ctx, load_manifest(manifest))
    assert str(caught.value).startswith(f"{manifest}:")
    assert str(caught.value).split(": ", 1)[1] == message
    assert caught.value.line is not None
    assert sorted(ctx.store.list()) == before  # nothing written


# ------------------------------------------------------------------------ approve, publish
def test_approve_refuses_staged_metadata_that_changes_other_releases(released: Path) -> None:
    """A CI-signed proposal that also rewrites an earlier release's entry is not this release."""
    ctx = Context.open(released)
    release.build(ctx, load_manifest(MANIFESTS / "t9-engine-2.1.0.yaml"))
    key = release.staged_key("t9-engine", "2.1.0")
    md = release._staged(ctx, release.ReleaseRef("t9-engine", "2.1.0"))
    published = ctx.repository().find_target("config/t9-engine/2.0.0/hp-300.json")
    assert published is not None
    md.signed.targets["config/t9-engine/2.0.0/hp-300.json"] = published[1]  # 2.0.0's entry, in 2.1.0's role
    md.signatures.clear()
    md.sign(ctx.signers.get("ci"))  # a valid CI signature: a compromised or buggy CI step
    ctx.store.put(key, to_bytes(md))
    with pytest.raises(VerificationError, match=r"also changes other targets \(config/t9-engine/2.0.0/hp-300.json\)"):
        release.approve(ctx, "2.1.0", "release-manager")


def test_a_release_staged_before_another_was_published_publishes_without_rebuilding(released: Path,
                                                                                 tmp_path: Path) -> None:
    """Decision 1203: each release is its own role, so one published meanwhile makes no other stale."""
    ctx = Context.open(released)
    hotfix = _copy_manifest(tmp_path, "t9-engine-2.0.0.yaml", **{"version: 2.0.0": "version: 2.0.1"})
    release.build(ctx, load_manifest(hotfix))
    staged = ctx.store.get(release.staged_key("t9-engine", "2.0.1"))
    release.approve(ctx, "2.0.1", "release-manager")
    ship(ctx, MANIFESTS / "t9-engine-2.1.0.yaml")  # built, approved and published meanwhile
    assert release.publish(ctx, "2.0.1").status == "published"
    repo = ctx.repository()
    assert set(repo.published_releases("t9-engine")) == {"2.0.0", "2.0.1", "2.1.0"}
    published = repo.role("release-t9-engine-2.0.1")
    assert published.signed == Metadata.from_bytes(staged).signed  # the bytes CI built, as approved
    assert published.signed.version == 1


def test_publish_refuses_a_file_changed_after_approval(released: Path) -> None:
    ctx = Context.open(released)
    built = release.build(ctx, load_manifest(MANIFESTS / "t9-engine-2.1.0.yaml"))
    release.approve(ctx, "2.1.0", "release-manager")
    fw = next(t for t in built.targets if t["path"].endswith("t9-revB-2.1.0.bin"))
    ctx.store.put(layout.target_key(fw["path"], fw["sha256"]), b"evil firmware")
    version = _releases_version(ctx)
    with pytest.raises(VerificationError, match=r"t9-revB-2\.1\.0\.bin changed since the CI signature .*to publish"):
        release.publish(ctx, "2.1.0")
    assert _releases_version(ctx) == version
    assert release.info(ctx, release.ReleaseRef("t9-engine", "2.1.0")).status == "approved"


def test_publish_twice_is_a_no_op(released: Path) -> None:
    ctx = Context.open(released)
    version = _releases_version(ctx)
    assert release.publish(ctx, "2.0.0").status == "published"
    assert _releases_version(ctx) == version


def test_list_shows_every_release_with_its_status(released: Path) -> None:
    ctx = Context.open(released)
    release.build(ctx, load_manifest(MANIFESTS / "t9-engine-2.1.0.yaml"))
    rows = [(r.version, r.status, r.missing) for r in release.list_releases(ctx)]
    assert rows == [("2.0.0", "published", []), ("2.1.0", "staged", ["release-manager"])]


def test_a_new_approval_rule_that_would_orphan_a_published_release_is_refused(released: Path) -> None:
    """Decision 1203: the index follows the approval rule; a release approved only by a key that leaves
    the rule would stop verifying on every device, so the publication is refused and names it."""
    ctx = Context.open(released)
    repo = ctx.repository()
    before = _releases_version(ctx)
    targets = repo.edit("targets")
    targets.revoke_key(ctx.trust.key("release-manager").keyid, "releases")
    targets.add_key(CryptoSigner.generate_ed25519().public_key, "releases")  # its private key is not here
    with pytest.raises(VerificationError, match=r"would leave 1 published release\(s\) without enough valid "
                                                r"signatures: release-t9-engine-2\.0\.0"):
        repo.publish()
    assert _releases_version(ctx) == before
