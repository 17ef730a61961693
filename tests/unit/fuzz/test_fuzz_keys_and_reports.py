"""Property-based fuzzing of key files and device reports.

Key files: a real otactl key file (cheap Argon2id parameters so that an unlock costs microseconds),
its JSON mutated field by field, its bytes cut short or overwritten, or arbitrary bytes. Reading it
(and unlocking it, when it reads) returns a key or raises one KeyAccessError with a one-line message,
never another exception and never a hang (a tampered file must not make Argon2id run for hours).

Device reports: valid signed envelopes from an enrolled device with their payload JSON mutated,
their bytes edited, their signature changed, and arbitrary JSON as an envelope. ``parse_payload``
returns a report or raises ``ReportError``; the ingest's ``ReportVerifier.check`` admits or refuses
with a reason, never raises.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils
import pytest
from fuzz_parts import assert_clear_error, deadline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otactl.keys.keyfile as keyfile
from otactl.errors import KeyAccessError
from otactl.telemetry.checks import Refused, ReportVerifier, Verified
from otactl.telemetry.devices import DeviceRegistry, EnrolledDevice
from otactl.telemetry.report import Event, ReportError, parse_payload
from otactl.telemetry.reporter import DeviceReporter

FUZZ_EXAMPLES = int(os.environ.get("OTACTL_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=not os.environ.get("OTACTL_FUZZ_RANDOM"),
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GUARD_S = 20.0
PASSPHRASE = "fuzz-passphrase"

JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                        st.sampled_from(["", "00", "zz", "argon2id", "xsalsa20poly1305", "a" * 200, "\u0000",
                                         "otactl/private-key/1", "otactl/report/1", "2026-11-27T19:00:00Z"]))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=10)


def _mutate_json(doc: Any, data: st.DataObject) -> Any:
    """Replace, drop or add one value somewhere in ``doc`` (a copy)."""
    doc = json.loads(json.dumps(doc))
    paths: list[tuple[Any, ...]] = []

    def walk(value: Any, where: tuple[Any, ...]) -> None:
        paths.append(where)
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*where, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*where, i))

    walk(doc, ())
    where = data.draw(st.sampled_from(paths))
    if not where:
        return data.draw(JSON_VALUES)
    parent = doc
    for step in where[:-1]:
        parent = parent[step]
    op = data.draw(st.sampled_from(["replace", "drop", "add"]))
    if op == "replace":
        parent[where[-1]] = data.draw(JSON_VALUES)
    elif op == "drop":
        del parent[where[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(max_size=10))] = data.draw(JSON_VALUES)
    else:
        parent.insert(where[-1], data.draw(JSON_VALUES))
    return doc


def _mutate_bytes(raw: bytes, data: st.DataObject) -> bytes:
    op = data.draw(st.sampled_from(["truncate", "overwrite", "insert"]))
    at = data.draw(st.integers(0, len(raw)))
    if op == "truncate":
        return raw[:at]
    junk = data.draw(st.binary(min_size=1, max_size=16))
    return raw[:at] + junk + raw[at + (len(junk) if op == "overwrite" else 0):]


# ----------------------------------------------------------------------------------- key files
@pytest.fixture(scope="module")
def key_doc() -> dict[str, Any]:
    """A key file as ``generate_keyfile`` writes it, with libsodium's minimum Argon2id cost."""
    kdf = nacl.pwhash.argon2id
    signing = nacl.signing.SigningKey.generate()
    salt = nacl.utils.random(kdf.SALTBYTES)
    box_key = kdf.kdf(nacl.secret.SecretBox.KEY_SIZE, PASSPHRASE.encode(), salt,
                      opslimit=kdf.OPSLIMIT_MIN, memlimit=kdf.MEMLIMIT_MIN)
    pub = keyfile.public_key(signing.verify_key.encode().hex())
    return {
        "schema": keyfile.SCHEMA, "name": "ci", "keyid": pub.keyid, "public": pub.keyval["public"],
        "kdf": {"name": "argon2id", "opslimit": kdf.OPSLIMIT_MIN, "memlimit": kdf.MEMLIMIT_MIN, "salt": salt.hex()},
        "cipher": "xsalsa20poly1305",
        "box": bytes(nacl.secret.SecretBox(box_key).encrypt(bytes(signing))).hex(),
    }


def _read_and_unlock(raw: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="otactl-fuzz-key-") as tmp:
        path = Path(tmp) / "ci.key"
        path.write_bytes(raw)
        try:
            with deadline(GUARD_S):
                keyfile.read_keyfile(path).unlock(PASSPHRASE)
        except Exception as err:  # the assertion says which exceptions are allowed
            assert isinstance(err, KeyAccessError), f"{type(err).__name__} escaped: {err!r}"
            assert_clear_error(err)


def test_the_unmutated_key_file_unlocks(key_doc: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "ci.key"
    path.write_text(json.dumps(key_doc))
    assert keyfile.read_keyfile(path).unlock(PASSPHRASE).verify_key.encode().hex() == key_doc["public"]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("kdf", {"name": "argon2id", "opslimit": 2**32 - 1, "memlimit": 8192, "salt": "00" * 16},
     "kdf.opslimit: 4294967295 is outside"),
    ("kdf", {"name": "argon2id", "opslimit": 2, "memlimit": 2**40, "salt": "00" * 16}, "kdf.memlimit: 1099511627776"),
    ("kdf", {"name": "scrypt", "opslimit": 2, "memlimit": 8192, "salt": "00" * 16}, "kdf.name: 'scrypt'"),
    ("kdf", {"name": "argon2id", "opslimit": 2, "memlimit": 8192, "salt": "00"}, "kdf.salt: must be 16 bytes"),
    ("box", "zz", "box: must be hex"),
    ("name", {"a": 1}, "name: must be a string"),
], ids=["huge-opslimit", "huge-memlimit", "other-kdf", "short-salt", "box-not-hex", "name-not-text"])
def test_a_tampered_kdf_or_field_is_refused_before_any_work(key_doc: dict[str, Any], tmp_path: Path, field: str,
                                                            value: Any, message: str) -> None:
    path = tmp_path / "ci.key"
    path.write_text(json.dumps({**key_doc, field: value}))
    with deadline(GUARD_S), pytest.raises(KeyAccessError) as err:
        keyfile.read_keyfile(path)
    assert str(err.value).startswith(f"{path}: not an otactl key file ("), str(err.value)
    assert message in str(err.value)


def test_deeply_nested_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ci.key"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(KeyAccessError) as err:
        keyfile.read_keyfile(path)
    assert_clear_error(err.value)


@FUZZ
@given(data=st.data())
def test_fuzzed_key_file_reads_or_gets_one_clear_key_error(key_doc: dict[str, Any], data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["json", "bytes", "arbitrary"]), label="kind")
    if kind == "json":
        raw = json.dumps(_mutate_json(key_doc, data)).encode()
    elif kind == "bytes":
        raw = _mutate_bytes(json.dumps(key_doc).encode(), data)
    else:
        raw = data.draw(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
    _read_and_unlock(raw)


# ------------------------------------------------------------------------------- device reports
NOW = datetime(2026, 11, 27, 19, 0, 0, tzinfo=UTC)
DEVICE_KEY = nacl.signing.SigningKey(hashlib.sha256(b"trk-0001").digest())
DEVICE = EnrolledDevice("trk-0001", "t9-engine", "hp-300", "eu",  # type: ignore[arg-type]
                        bytes(DEVICE_KEY.verify_key).hex())
VERIFIER = ReportVerifier(DeviceRegistry([DEVICE]))


def _envelopes() -> list[dict[str, str]]:
    reporter = DeviceReporter(DEVICE, DEVICE_KEY)
    return [reporter.event("2.1.0", "canary", Event.COMMITTED, NOW).to_json(),
            reporter.event("2.1.0", None, Event.FAILED, NOW, reason="checksum mismatch").to_json(),
            reporter.health("2.1.0", "canary", NOW, 5400, crashes=1, errors=2,
                            metrics={"coolant_temp_c": 88, "oil_bar": "2.5"}).to_json()]


ENVELOPES = _envelopes()


def _fuzzed_envelope(data: st.DataObject) -> Any:
    kind = data.draw(st.sampled_from(["payload-json", "payload-text", "signature", "envelope", "arbitrary"]),
                     label="kind")
    envelope = dict(data.draw(st.sampled_from(ENVELOPES), label="envelope"))
    if kind == "payload-json":
        doc = _mutate_json(json.loads(envelope["payload"]), data)
        envelope["payload"] = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    elif kind == "payload-text":
        raw = _mutate_bytes(envelope["payload"].encode(), data)
        envelope["payload"] = raw.decode("utf-8", errors=data.draw(st.sampled_from(["replace", "surrogateescape"])))
    elif kind == "signature":
        envelope["signature"] = data.draw(st.one_of(st.text(max_size=140), st.binary(max_size=64).map(bytes.hex),
                                                    JSON_VALUES))
    elif kind == "envelope":
        return _mutate_json(envelope, data)
    else:
        return data.draw(JSON_VALUES)
    return envelope


def test_the_unmutated_envelopes_are_admitted() -> None:
    assert all(isinstance(VERIFIER.check(e, NOW), Verified) for e in ENVELOPES)


@FUZZ
@given(data=st.data())
def test_fuzzed_report_is_admitted_or_refused_with_a_reason(data: st.DataObject) -> None:
    raw = _fuzzed_envelope(data)
    with deadline(GUARD_S):
        verdict = VERIFIER.check(raw, NOW)  # never raises
        assert isinstance(verdict, Verified | Refused)
        if isinstance(verdict, Refused):
            assert verdict.detail and "\n" not in verdict.detail
        payload = raw.get("payload") if isinstance(raw, dict) else None
        if isinstance(payload, str):
            try:
                parse_payload(payload)
            except ReportError as err:
                assert isinstance(err, ValueError) and err.detail
