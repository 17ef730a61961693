"""Every manifest in manifests/ parses and builds; every bad manifest gets its exact message.

Bad manifests live in bad_manifests/, one rule each; the first line of each says the message it must
produce (``{file}`` stands for the path it was loaded from): file, line and field.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from release_parts import MANIFESTS, ship

from otactl.app import release
from otactl.app.context import Context
from otactl.errors import ExitCode, InputFileError
from otactl.release.manifest import SCHEMA, VERSION_RE, load_manifest

BAD = Path(__file__).parent / "bad_manifests"
GOOD_FILES = sorted(MANIFESTS.glob("*.yaml"))
BAD_FILES = sorted(BAD.glob("*.yaml"))

# The rules issue 3 names; each must have its bad manifest (a missing file would shrink the table silently).
REQUIRED_BAD_CASES = {
    "unknown-key", "missing-field", "bad-version", "negative-security-version", "float-in-variant",
    "file-and-from-release", "missing-image", "empty-variants",
}


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <message>'"
    return first.removeprefix("# expect: ").replace("{file}", str(path))


def test_manifests_directory_is_not_empty() -> None:
    assert len(GOOD_FILES) >= 3, GOOD_FILES


@pytest.mark.parametrize("path", GOOD_FILES, ids=[p.name for p in GOOD_FILES])
def test_every_manifest_parses(path: Path) -> None:
    m = load_manifest(path)
    assert path.name.startswith(f"{m.model}-{m.version}")  # file names say what they hold
    assert m.variants and m.firmware
    for fw in m.firmware:
        assert (fw.file is None) != (fw.from_release is None)
        if fw.file is not None:
            assert fw.file.is_file()


def _prerequisites(path: Path) -> list[Path]:
    """The manifests whose releases ``path`` needs published first (from_release, stepping_stone), in order."""
    by_version = {load_manifest(p).version: p for p in GOOD_FILES}
    m = load_manifest(path)
    needed = {fw.from_release for fw in m.firmware if fw.from_release} | {m.stepping_stone} - {None}
    out: list[Path] = []
    for version in sorted(needed, key=release.version_key):
        assert version in by_version, f"{path.name} needs {version}, which no file in manifests/ provides"
        for dep in [*_prerequisites(by_version[version]), by_version[version]]:
            if dep not in out:
                out.append(dep)
    return out


@pytest.mark.parametrize("path", GOOD_FILES, ids=[p.name for p in GOOD_FILES])
def test_every_manifest_builds_in_a_fresh_workspace(path: Path, workspace: Path) -> None:
    ctx = Context.open(workspace)
    for dep in _prerequisites(path):
        ship(ctx, dep)
    m = load_manifest(path)
    built = release.build(ctx, m)
    assert (built.status, built.signed_by, built.missing) == ("staged", ["ci"], ["release-manager"])
    paths = {t["path"] for t in built.targets}
    assert f"releases/{m.model}/{m.version}.json" in paths
    assert {f"config/{m.model}/{m.version}/{v}.json" for v in m.variants} <= paths
    assert {f"firmware/{m.model}/{m.version}/{fw.file.name}" for fw in m.firmware if fw.file} <= paths


def test_the_bad_manifest_table_covers_every_required_rule() -> None:
    assert {p.stem for p in BAD_FILES} >= REQUIRED_BAD_CASES


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_manifest_gets_its_exact_message(path: Path) -> None:
    expected = _expected(path)
    with pytest.raises(InputFileError) as caught:
        load_manifest(path)
    assert str(caught.value) == expected
    assert caught.value.exit_code == ExitCode.USAGE
    assert re.match(rf"^{re.escape(str(path))}:\d+: ", str(caught.value)), "names the file and a line"


def test_a_bad_manifest_in_manifests_would_be_caught(tmp_path: Path) -> None:
    """The good-file tests can fail: a copy of a real manifest with one field broken is refused."""
    src = GOOD_FILES[0]
    broken = tmp_path / src.name
    broken.write_text(src.read_text().replace(f"schema: {SCHEMA}", "schema: otactl/manifest/9"))
    with pytest.raises(InputFileError, match=r":\d+: schema: expected"):
        load_manifest(broken)


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        pytest.param("2.1.0", True, id="plain"),
        pytest.param("2.1.0-rc.1", True, id="pre-release"),
        pytest.param("2.1.0+build.5", True, id="build-metadata"),
        pytest.param("2.1", False, id="two-parts"),
        pytest.param("v2.1.0", False, id="v-prefix"),
        pytest.param("2.1.0/../x", False, id="path-escape"),
        pytest.param("2.1.0 ", False, id="trailing-space"),
    ],
)
def test_version_syntax(version: str, ok: bool) -> None:
    assert bool(VERSION_RE.match(version)) is ok
