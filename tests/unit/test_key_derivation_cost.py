"""Key files made by the real CLI carry the production Argon2id cost (decision 0002), whatever the tests
use for their own keys (fixtures/kdf.py, decision 0014: in-process test keys are made cheaply)."""

from __future__ import annotations

import json
from pathlib import Path

import nacl.pwhash
from fixtures.repo import PASSPHRASE, cli_env, init_workspace, ok, run_otactl

import otactl.keys.keyfile as keyfile

INTERACTIVE = {"opslimit": nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
               "memlimit": nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE}


def _costs(root: Path) -> dict[str, dict[str, int]]:
    docs = {str(p.relative_to(root)): json.loads(p.read_bytes()) for p in sorted(root.rglob("*.key"))}
    return {name: {k: doc["kdf"][k] for k in INTERACTIVE} for name, doc in docs.items()
            if doc.get("schema") == keyfile.SCHEMA}


def test_init_and_keys_generate_seal_every_key_under_the_interactive_profile(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    ok(run_otactl("keys", "generate", "alice", "--out", str(tmp_path / "alice"), cwd=tmp_path,
                  env=cli_env(PASSPHRASE)))
    made = {**_costs(ws), **_costs(tmp_path / "alice")}
    assert len(made) >= 6 and any(name.startswith("alice") for name in made), sorted(made)
    assert made == dict.fromkeys(made, INTERACTIVE)
    for name in made:  # and they still unlock with the passphrase they were made under
        keyfile.read_keyfile((ws if (ws / name).exists() else tmp_path / "alice") / name).unlock(PASSPHRASE)
