"""No private key is ever written in plain text (issue 2).

Run init, rotations and key generation through the real CLI, then read every file they wrote, in
the workspace and in the store, and every byte they printed: no private seed may appear, in raw,
hex or base64 form. The seeds come from unlocking the key files with the passphrase. Key files
are mode 0600 in 0700 directories.
"""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from fixtures.repo import PASSPHRASE, ok, run_otactl

import otactl.keys.keyfile as keyfile
from otactl.workspace import HANDOVER_DIR, KEY_DIR

EXPECTED_KEYS = {
    "ci",
    "entitlement-1",  # the entitlement signer (decision 0406)
    "online",
    "release-manager",
    "root-1",
    "root-2",
    "targets-1",
    "timestamp-2",
    "alice",
    "bob",
}


def _forms(secret: bytes) -> list[bytes]:
    """How a secret could be spelled in a file: raw, hex, and base64 at each of 3 alignments."""
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for start in range(3):
        chunk = secret[start : start + 3 * ((len(secret) - start) // 3)]
        forms += [base64.b64encode(chunk), base64.urlsafe_b64encode(chunk)]
    return forms


def _leaks(blob: bytes, secrets: dict[str, bytes]) -> list[str]:
    return [name for name, secret in secrets.items() if any(form in blob for form in _forms(secret))]


def test_the_detector_finds_planted_seeds() -> None:
    seed = bytes(range(7, 39))
    secrets = {"k": seed}
    assert _leaks(b'{"private": "' + seed.hex().encode() + b'"}', secrets) == ["k"]
    assert _leaks(b"x" + seed + b"y", secrets) == ["k"]
    for prefix in (b"", b"a", b"ab"):
        encoded = base64.b64encode(prefix + seed + b"tail")
        assert _leaks(b"key: " + encoded, secrets) == ["k"], prefix
        assert _leaks(base64.urlsafe_b64encode(prefix + seed), secrets) == ["k"], prefix
    assert _leaks(b"nothing to see " * 20, secrets) == []


@pytest.fixture(scope="module")
def exercised(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """A workspace with an outside store, after init, two rotations and two new keys."""
    base = tmp_path_factory.mktemp("secrecy")
    store = base / "store"
    init = ok(run_otactl("init", "ws", "--store", f"file://{store}", "--shared-passphrase", cwd=base))
    ws = (base / "ws").resolve()
    printed = [init.stdout, init.stderr]
    for argv in (
        ["keys", "rotate", "root"],
        ["keys", "rotate", "timestamp"],
        ["keys", "generate", "alice", "--release-manager"],
        ["keys", "generate", "bob"],
        ["keys", "list"],
    ):
        result = ok(run_otactl(*argv, cwd=ws))
        printed += [result.stdout, result.stderr]
    return ws, store, printed


@pytest.fixture(scope="module")
def seeds(exercised: tuple[Path, Path, list[str]]) -> dict[str, bytes]:
    """Every private key the commands made, unlocked with the passphrase (retired ones too)."""
    ws = exercised[0]
    seeds = {}
    for path in sorted((ws / ".otactl").rglob("*.key")):  # release managers' keys are in handover/
        kf = keyfile.read_keyfile(path)
        signing_key = kf.unlock(PASSPHRASE)
        seeds[kf.name] = bytes(signing_key)  # the 32-byte ed25519 seed
        seeds[f"{kf.name} (expanded)"] = bytes(signing_key._signing_key)  # libsodium's seed || public
    return seeds


def test_no_written_file_holds_a_private_key(exercised: tuple[Path, Path, list[str]], seeds: dict[str, bytes]) -> None:
    ws, store, _ = exercised
    assert {p.name for p in ws.parent.iterdir()} == {"ws", "store"}  # nothing written elsewhere
    assert {n for n in seeds if "(" not in n} == EXPECTED_KEYS  # retired keys included
    files = [p for root in (ws, store) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "trust.yaml" for p in files)
    assert any(p.name.endswith(".root.json") for p in files)
    assert len([p for p in files if p.suffix == ".key"]) == len(EXPECTED_KEYS)
    leaks = {str(p): found for p in files if (found := _leaks(p.read_bytes(), seeds))}
    assert leaks == {}
    assert not [p for p in files if PASSPHRASE.encode() in p.read_bytes()]


def test_nothing_printed_holds_a_private_key(exercised: tuple[Path, Path, list[str]], seeds: dict[str, bytes]) -> None:
    _, _, printed = exercised
    assert any("root-2" in text for text in printed)
    for text in printed:
        assert _leaks(text.encode(), seeds) == []
        assert PASSPHRASE not in text


def test_key_files_are_0600_in_0700_directories(exercised: tuple[Path, Path, list[str]]) -> None:
    ws, _, _ = exercised
    key_dirs = [ws / KEY_DIR, ws / HANDOVER_DIR]  # a release manager's key made here: its own directory
    dirs = [ws / ".otactl", *key_dirs, *(p for d in key_dirs for p in d.rglob("*") if p.is_dir())]
    assert ws / KEY_DIR / "retired" in dirs
    assert {ws / HANDOVER_DIR / "release-manager", ws / HANDOVER_DIR / "alice"} <= set(dirs)
    for d in dirs:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    files = [p for d in key_dirs for p in d.rglob("*") if not p.is_dir()]
    keys = [f for f in files if f.suffix == ".key"]
    assert len(keys) == len(EXPECTED_KEYS)  # no temporary file left behind
    # beside each handed-over key only the root its owner pins (public)
    assert sorted(f.relative_to(ws / HANDOVER_DIR).as_posix() for f in files if f not in keys) == [
        "alice/root.json", "release-manager/root.json"]
    for f in keys:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
