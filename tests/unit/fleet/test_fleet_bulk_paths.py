"""The two shortcuts a million-device import relies on, each checked against the slow original.

- ``DirectoryStore.put_many``: one durability barrier for a batch of record files.
- ``otactl.repo.canonical``: the signed bytes of TUF metadata, byte for byte as securesystemslib's
  ``encode_canonical`` writes them (what python-tuf clients verify against), only faster.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from securesystemslib.exceptions import FormatError
from securesystemslib.formats import encode_canonical
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.api.serialization.json import CanonicalJSONSerializer

from otactl.repo.canonical import CANONICAL, canonical_json
from otactl.store.directory import DirectoryStore
from otactl.store.memory import MemoryStore


# ------------------------------------------------------------------------------------ put_many
@pytest.mark.parametrize("make", [lambda p: DirectoryStore(p), lambda p: MemoryStore()], ids=["directory", "memory"])
def test_put_many_writes_new_keeps_identical_and_replaces_different(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    store = make(tmp_path / "store")
    store.put("a/same", b"same bytes")
    store.put("a/old", b"old bytes")
    store.put_many(iter([("a/new", b"new"), ("b/c/deep", b"deep"), ("a/same", b"same bytes"), ("a/old", b"new bytes"),
                         ("a/empty", b"")]))
    assert {k: store.get(k) for k in store.list()} == {
        "a/empty": b"", "a/new": b"new", "a/old": b"new bytes", "a/same": b"same bytes", "b/c/deep": b"deep"}


def test_put_many_repairs_a_partial_file_left_by_a_crash(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "rec.json").write_bytes(b'{"dev')  # the crash: created, half written
    store.put_many([("targets/rec.json", b'{"device_id":"d1"}')])
    assert store.get("targets/rec.json") == b'{"device_id":"d1"}'


def test_put_many_refuses_keys_outside_the_store(tmp_path: Path) -> None:
    from otactl.errors import StoreError

    with pytest.raises(StoreError, match="invalid object key"):
        DirectoryStore(tmp_path / "s").put_many([("../escape", b"x")])
    assert not (tmp_path / "escape").exists()


def test_digest_streams_the_same_hash(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    data = bytes(range(256)) * 9000
    store.put("big.bin", data)
    assert store.digest("big.bin") == (len(data), hashlib.sha256(data).hexdigest())
    assert MemoryStore.digest(store, "big.bin") == store.digest("big.bin")  # the base class's default


# ------------------------------------------------------------------------------- canonical JSON
JSON_SCALARS = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=12)
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def _sslib(obj: Any) -> bytes | type[Exception]:
    try:
        out = encode_canonical(obj)
        assert out is not None
        return out.encode("utf-8")
    except Exception as exc:
        return type(exc)


def _ours(obj: Any) -> bytes | type[Exception]:
    try:
        return canonical_json(obj)
    except Exception as exc:
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_canonical_json_is_byte_for_byte_encode_canonical(obj: Any) -> None:
    assert _ours(obj) == _sslib(obj)


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"a": 'quote " inside'}, id="quote"),
        pytest.param({"a": "back\\slash"}, id="backslash"),
        pytest.param({"a": "new\nline\ttab\x00nul"}, id="control-characters"),
        pytest.param({"a": "ünïcödé ✓ 𝄞"}, id="non-ascii"),
        pytest.param({"b": 1, "a": {"d": [True, False, None], "c": -0}}, id="nested-sorted"),
        pytest.param({"1.5": "2.5e3", "x": "1e9"}, id="float-looking-strings"),
        pytest.param({"a": 1.5}, id="float-refused"),
        pytest.param({"a": [1, 2, 3.0]}, id="float-in-list-refused"),
        pytest.param({"a": float("nan")}, id="nan-refused"),
        pytest.param({"a": 10**30}, id="big-int"),
    ],
)
def test_canonical_json_edge_cases(obj: Any) -> None:
    assert _ours(obj) == _sslib(obj)
    if isinstance(_sslib(obj), type):
        assert _sslib(obj) is FormatError


def test_signatures_made_with_the_fast_serializer_verify_with_python_tuf_defaults() -> None:
    from securesystemslib.signer import CryptoSigner

    signer = CryptoSigner.generate_ed25519()
    targets = Targets()
    for i in range(50):
        tf = TargetFile(100 + i, {"sha256": hashlib.sha256(str(i).encode()).hexdigest()}, f"devices/d{i}.json")
        tf.unrecognized_fields["custom"] = {"otactl": {"model": "m", "variant": "v\"q" if i == 7 else "v"}}
        targets.targets[tf.path] = tf
    md = Metadata(targets)
    md.sign(signer, signed_serializer=CANONICAL)
    assert CANONICAL.serialize(md.signed) == CanonicalJSONSerializer().serialize(md.signed)
    signer.public_key.verify_signature(md.signatures[signer.public_key.keyid], md.signed_bytes)
