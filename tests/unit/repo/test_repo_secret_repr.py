"""No object that holds a private key or a passphrase shows it in ``repr()``, ``str()`` or a traceback.

The objects: ``FileSigner`` and ``KeyFile`` for every workspace key, the ``SignerPool`` (with every
key loaded) and the ``Context`` around it, and on a device the ``Agent``, its ``Outbox`` and the
``DeviceReporter`` that hold the device key. The secrets: each key's seed and libsodium's expanded
form (seed || public), spelled raw, hex, base64 or as Python's ``bytes`` repr, and the passphrase.
The control: the detector finds the seed in pynacl's own ``str(SigningKey)`` and in a plain dataclass.
"""

from __future__ import annotations

import base64
import traceback
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
import pytest
from fixtures.repo import PASSPHRASE, initial_root, open_context

import otactl.keys.keyfile as keyfile
from otactl.agent.agent import Agent
from otactl.agent.state import DeviceState, Identity
from otactl.errors import KeyAccessError
from otactl.telemetry.devices import EnrolledDevice
from otactl.telemetry.report import DeviceId
from otactl.telemetry.reporter import DeviceReporter
from otactl.workspace import KEY_DIR


def _spellings(secret: bytes) -> list[str]:
    """How a secret could be printed: hex, base64 at each of 3 alignments, Python's bytes repr."""
    forms = [secret.hex(), secret.hex().upper(), repr(secret)[2:-1], str(list(secret))[1:-1]]
    for start in range(3):
        chunk = secret[start : start + 3 * ((len(secret) - start) // 3)]
        forms += [base64.b64encode(chunk).decode(), base64.urlsafe_b64encode(chunk).decode()]
    return forms


def _leaks(text: str, secrets: dict[str, bytes], passphrases: tuple[str, ...] = ()) -> list[str]:
    found = [name for name, secret in secrets.items() if any(form in text for form in _spellings(secret))]
    return found + [f"passphrase {p[:6]}..." for p in passphrases if p in text]


def _printed(obj: object) -> str:
    return "\n".join((repr(obj), str(obj), f"{obj}", f"{obj!r}", repr([obj]), repr({"k": obj})))


def _secrets(key: nacl.signing.SigningKey, name: str) -> dict[str, bytes]:
    return {name: bytes(key), f"{name} (expanded)": bytes(key._signing_key)}


def test_the_detector_finds_a_seed_in_what_pynacl_and_a_dataclass_print() -> None:
    key = nacl.signing.SigningKey(bytes(range(40, 72)))
    secrets = _secrets(key, "k")

    @dataclass
    class Holder:
        seed: bytes

    assert _leaks(str(key), secrets) == ["k"]  # pynacl's str() is the seed's bytes repr
    assert _leaks(repr(Holder(bytes(key))), secrets) == ["k"]
    assert _leaks(repr(Holder(bytes(key._signing_key))), secrets) == ["k", "k (expanded)"]
    assert _leaks(f"key={base64.b64encode(b'x' + bytes(key)).decode()}", secrets) == ["k"]
    assert _leaks("passphrase: " + PASSPHRASE, secrets, (PASSPHRASE,)) == [f"passphrase {PASSPHRASE[:6]}..."]
    assert _leaks(repr(key) + key.verify_key.encode().hex(), secrets, (PASSPHRASE,)) == []


def test_key_and_signer_objects_show_no_private_key_or_passphrase(workspace: Path) -> None:
    ctx = open_context(workspace)
    paths = sorted((workspace / ".otactl").rglob("*.key"))  # the release manager's is in handover/ (lab)
    assert len(paths) >= 5
    secrets: dict[str, bytes] = {}
    printed: list[str] = []
    for path in paths:
        kf = keyfile.read_keyfile(path)
        signing_key = kf.unlock(PASSPHRASE)
        secrets.update(_secrets(signing_key, kf.name))
        signer = keyfile.FileSigner(signing_key, kf.public)
        assert kf.public.keyid[:12] in repr(signer) and kf.public.keyid[:12] in repr(kf)  # what they do show
        printed += [_printed(kf), _printed(signer), _printed(ctx.signers.get(kf.name))]
    assert all(ctx.signers.has_private(name) for name in secrets if "(" not in name)
    printed += [_printed(ctx.signers), _printed(ctx)]
    for text in printed:
        assert _leaks(text, secrets, (PASSPHRASE,)) == [], text


def test_a_wrong_passphrase_is_not_in_the_error_or_its_traceback(workspace: Path) -> None:
    path = next((workspace / KEY_DIR).rglob("*.key"))
    kf = keyfile.read_keyfile(path)
    wrong = "wrong-" + PASSPHRASE
    with pytest.raises(KeyAccessError, match="wrong passphrase") as info:
        kf.unlock(wrong)
    text = "".join(traceback.format_exception(info.value)) + repr(info.value)
    assert str(path) in text
    assert _leaks(text, {}, (wrong, PASSPHRASE)) == []


def test_device_objects_show_no_device_key(workspace: Path, tmp_path: Path) -> None:
    key = nacl.signing.SigningKey(bytes(range(100, 132)))
    identity = Identity("t9-0042", "t9-engine", "revB")
    DeviceState.provision(tmp_path / "dev", identity, initial_root(workspace), key)
    agent = Agent(tmp_path / "dev", "http://127.0.0.1:9", None)
    try:
        enrolled = EnrolledDevice(DeviceId("t9-0042"), "t9-engine", "hp-400", "eu", bytes(key.verify_key).hex())
        reporter = DeviceReporter(enrolled, key)
        printed = [_printed(agent), _printed(agent.outbox), _printed(reporter), _printed(agent.device)]
    finally:
        agent.close()
    for text in printed:
        assert _leaks(text, _secrets(key, "device")) == [], text
