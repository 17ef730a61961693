"""otactl's delta format (otactl.release.delta): it rebuilds the target exactly, chunk by chunk, and
refuses a file that would read outside the source or the file, or decode to anything else."""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
from pathlib import Path

import pytest

from otactl.release import delta as engine

CHUNK = engine.MIN_CHUNK  # 64 KiB: several chunks from small images


def records(seed: int, n: int) -> bytearray:
    r = random.Random(seed)
    return bytearray("".join(f"rec {i:06d} {r.randrange(10**6):06d} {r.choice('abc') * 5}\n"
                             for i in range(n)).encode())


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def rebuild(delta: Path, source: Path, **expect: engine.Digest) -> bytes:
    out = io.BytesIO()
    engine.apply_delta(delta, source, out, **expect)
    return out.getvalue()


def _grown(old: bytearray) -> bytes:
    new = bytearray(old)
    new[100:100] = b"inserted at the start, so every later byte moves\n"
    return bytes(new + records(9, 3000))


def _edited(old: bytearray) -> bytes:
    new = bytearray(old)
    new[len(new) // 2: len(new) // 2 + 6] = b"EDITED"  # one chunk changes, the others are copies
    return bytes(new)


CASES = {
    "same-length-edit": _edited,
    "inserted-and-grown": _grown,
    "shrunk": lambda old: bytes(old[: len(old) // 3]),
    "identical": bytes,
    "empty-target": lambda old: b"",
}


@pytest.mark.parametrize("change", list(CASES.values()), ids=list(CASES))
def test_the_delta_rebuilds_the_target_exactly(tmp_path: Path, change) -> None:
    old = records(1, 12000)  # ~300 KiB: several 64 KiB chunks
    new = change(old)
    src, tgt = write(tmp_path, "old", bytes(old)), write(tmp_path, "new", new)
    result = engine.build_delta(src, tgt, tmp_path / "d", chunk_size=CHUNK, margin=CHUNK)
    assert result.target == engine.Digest(len(new), hashlib.sha256(new).hexdigest())
    assert result.delta == engine.Digest((tmp_path / "d").stat().st_size,
                                         hashlib.sha256((tmp_path / "d").read_bytes()).hexdigest())
    assert rebuild(tmp_path / "d", src, expect_target=result.target, expect_source=result.source) == new
    if change is _edited:
        assert result.zstd_chunks == 1 and result.copied_chunks >= 3
        assert result.delta.length < 2000  # one edited chunk, not the image


def test_windows_follow_the_chunks_place_in_the_source() -> None:
    assert engine.dictionary_window(0, 100, 250, 250, margin=100) == (0, 250)  # the source fits in one window
    assert engine.dictionary_window(0, 100, 1000, 1000, margin=100) == (0, 300)
    assert engine.dictionary_window(5, 100, 1000, 1000, margin=100) == (400, 300)
    assert engine.dictionary_window(9, 100, 1000, 1000, margin=100) == (700, 300)  # clamped at the end
    assert engine.dictionary_window(5, 100, 2000, 1000, margin=100) == (900, 300)  # scaled: the image shrank


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path, bytes]:
    old = records(1, 12000)
    new = _edited(old)
    src, tgt = write(tmp_path, "old", bytes(old)), write(tmp_path, "new", new)
    engine.build_delta(src, tgt, tmp_path / "d", chunk_size=CHUNK, margin=CHUNK)
    return tmp_path / "d", src, new


def _rewrite_header(delta: Path, edit) -> Path:
    data = delta.read_bytes()
    (size,) = struct.unpack(">I", data[8:12])
    header = json.loads(data[12: 12 + size])
    edit(header)
    text = json.dumps(header).encode()
    out = delta.with_name("edited")
    out.write_bytes(data[:8] + struct.pack(">I", len(text)) + text + data[12 + size:])
    return out


def _overwrite(delta: Path, data: bytes) -> Path:
    delta.write_bytes(data)
    return delta


def _zstd_chunk(header: dict) -> list:
    return next(c for c in header["chunks"] if c[0] == "zstd")


HOSTILE = {
    "bad-magic": (lambda d: _overwrite(d, b"NOTADELT" + d.read_bytes()[8:]), "bad magic"),
    "header-longer-than-the-file": (lambda d: _overwrite(d, d.read_bytes()[:8] + struct.pack(">I", 2**31)),
                                    "too long"),
    "copy-outside-the-source": (lambda d: _rewrite_header(d, lambda h: h["chunks"][0].__setitem__(1, 10**9)),
                                "reads outside the source"),
    "dictionary-outside-the-source": (lambda d: _rewrite_header(d, lambda h: _zstd_chunk(h).__setitem__(2, 10**9)),
                                      "reads outside the source"),
    "frames-longer-than-the-file": (lambda d: _rewrite_header(d, lambda h: _zstd_chunk(h).__setitem__(3, 10**6)),
                                    "its header describes"),
    "chunks-do-not-cover-the-target": (lambda d: _rewrite_header(d, lambda h: h["chunks"].pop(0)),
                                       "do not cover the target"),
    "a-copy-where-the-bytes-differ": (
        lambda d: _rewrite_header(d, lambda h: h.update(chunks=[["copy", i * CHUNK] if c[0] == "zstd" else c
                                                                for i, c in enumerate(h["chunks"])])),
        "its header describes"),  # the frame bytes are left over
    "truncated": (lambda d: _overwrite(d, d.read_bytes()[:-5]), "its header describes"),
}


@pytest.mark.parametrize(("tamper", "says"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_malformed_delta_is_refused(built: tuple[Path, Path, bytes], tamper, says: str) -> None:
    delta, src, _ = built
    with pytest.raises(engine.DeltaError, match=says):
        rebuild(tamper(delta), src)


def test_a_frame_that_decodes_to_other_bytes_is_refused(built: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    delta, src, _ = built
    data = bytearray(delta.read_bytes())
    data[-8] ^= 0x40  # inside the zstd frame: its checksum (or the image hash) no longer matches
    tampered = write(tmp_path, "tampered", bytes(data))
    with pytest.raises(engine.DeltaError):
        rebuild(tampered, src)


def test_a_delta_for_another_source_or_target_is_refused_before_writing(built: tuple[Path, Path, bytes],
                                                                        tmp_path: Path) -> None:
    delta, src, new = built
    other = engine.Digest(len(new), "0" * 64)
    out = io.BytesIO()
    with pytest.raises(engine.DeltaError, match="another source"):
        engine.apply_delta(delta, src, out, expect_source=other)
    with pytest.raises(engine.DeltaError, match="another target"):
        engine.apply_delta(delta, src, out, expect_target=other)
    shorter = write(tmp_path, "shorter", src.read_bytes()[:-1])
    with pytest.raises(engine.DeltaError, match="another length"):
        engine.apply_delta(delta, shorter, out)
    assert out.getvalue() == b""


def test_a_header_that_claims_the_wrong_target_is_caught_by_the_output_hash(built: tuple[Path, Path, bytes]) -> None:
    delta, src, _ = built
    edited = _rewrite_header(delta, lambda h: h["target"].__setitem__("sha256", "1" * 64))
    with pytest.raises(engine.DeltaError, match="does not match the delta's declared target"):
        rebuild(edited, src)
