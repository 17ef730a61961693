"""Delta images: otactl's chunked zstd patch-from format, its encoder and its streaming decoder.

Decision 1201 says why this format; docs/benchmarks.md#delta-updates has the figures. A delta file::

    b"OTADLT01"  header length (4 bytes, big-endian)  header (canonical JSON)  frames, back to back

    header = {"schema": "otactl/delta/1",
              "source": {"length": L, "sha256": H}, "target": {"length": L, "sha256": H},
              "chunk_size": C,
              "chunks": [["copy", src_offset] | ["zstd", dict_offset, dict_length, frame_length], ...]}

Chunk ``i`` is ``target[i*C : (i+1)*C]`` (the last one shorter). A ``copy`` chunk is the same bytes
of the source from ``src_offset``; a ``zstd`` chunk is one zstd frame compressed with the source
bytes ``[dict_offset, dict_offset + dict_length)`` as a raw-content dictionary (zstd's patch-from,
but per chunk, over a window of the source around the chunk's place in it). So the decoder holds
one window and one chunk at a time, whatever the image size: memory is bounded by
``MAX_DICT + chunk_size``, never by the image. Sources and targets are read with ``pread``-style
reads, not mapped, so resident memory stays at that bound too.

The decoder trusts nothing in the file beyond what it can bound: the header is at most 1 MiB, every
range lies inside the source, every frame inside the file, every chunk decodes to exactly its
length, and the caller compares the whole output's length and SHA-256 with the signed image.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import zstandard

from otactl.errors import VerificationError

MAGIC = b"OTADLT01"
SCHEMA = "otactl/delta/1"
FORMAT = "otactl-zstd-chunked/1"  # the name in a delta target's custom metadata
CHUNK_SIZE = 4 * 1024 * 1024
MARGIN = 4 * 1024 * 1024  # source bytes on each side of a chunk's place that its dictionary covers
LEVEL = 12  # levels 6-12 give about the same bytes; 15 and above are 20-80x slower with a dictionary
MAX_HEADER = 1024 * 1024
MIN_CHUNK, MAX_CHUNK = 64 * 1024, 16 * 1024 * 1024
MAX_DICT = 3 * MAX_CHUNK  # the largest dictionary window a decoder accepts (48 MiB)
MAX_WINDOW_LOG = 26  # 64 MiB: bounds the decoder's window even for a hostile (signed) frame
IO_PIECE = 1024 * 1024


class DeltaError(VerificationError):
    """A delta file that cannot be applied (malformed, for another source, or decoding wrongly)."""


@dataclass(frozen=True)
class Digest:
    length: int
    sha256: str


@dataclass(frozen=True)
class DeltaResult:
    source: Digest
    target: Digest
    delta: Digest  # the delta file itself
    copied_chunks: int
    zstd_chunks: int


def _pread(fh: BinaryIO, offset: int, length: int) -> bytes:
    data = os.pread(fh.fileno(), length, offset)
    if len(data) != length:
        raise DeltaError(f"short read: {len(data)} of {length} bytes at offset {offset}")
    return data


def _digest_file(path: Path) -> Digest:
    with open(path, "rb") as fh:
        h = hashlib.file_digest(fh, "sha256")
    return Digest(path.stat().st_size, h.hexdigest())


def dictionary_window(index: int, chunk_size: int, source_length: int, target_length: int,
                      margin: int = MARGIN) -> tuple[int, int]:
    """(offset, length) of the source window chunk ``index`` is compressed against: its place in the
    source scaled by the two lengths (an image that grows keeps its layout), widened by ``margin``."""
    if source_length <= chunk_size + 2 * margin:
        return 0, source_length
    centre = index * chunk_size * source_length // max(target_length, 1)
    start = max(0, min(centre - margin, source_length - chunk_size - 2 * margin))
    return start, chunk_size + 2 * margin


def _window_log(size: int) -> int:
    return max(zstandard.WINDOWLOG_MIN, min(MAX_WINDOW_LOG, math.ceil(math.log2(max(size, 2)))))


def build_delta(source: Path, target: Path, out: Path, *, chunk_size: int = CHUNK_SIZE, margin: int = MARGIN,
                level: int = LEVEL, progress: Callable[[int], None] | None = None) -> DeltaResult:
    """Write the delta that turns ``source`` into ``target`` to ``out``; ``progress`` gets target bytes done."""
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK or chunk_size + 2 * margin > MAX_DICT or margin < 0:
        raise ValueError(f"chunk size {chunk_size} or margin {margin} out of range")
    src_digest, tgt_digest = _digest_file(source), _digest_file(target)
    slen, tlen = src_digest.length, tgt_digest.length
    chunks: list[list[Any]] = []
    frames_path = out.with_name(out.name + ".frames")
    copied = 0
    try:
        with open(source, "rb") as src, open(target, "rb") as tgt, open(frames_path, "wb") as frames:
            for index in range(math.ceil(tlen / chunk_size)):
                offset = index * chunk_size
                piece = _pread(tgt, offset, min(chunk_size, tlen - offset))
                if offset + len(piece) <= slen and _pread(src, offset, len(piece)) == piece:
                    chunks.append(["copy", offset])
                    copied += 1
                else:
                    d_off, d_len = dictionary_window(index, chunk_size, slen, tlen, margin)
                    window = _pread(src, d_off, d_len)
                    params = zstandard.ZstdCompressionParameters.from_level(
                        level, window_log=_window_log(d_len + len(piece)), enable_ldm=True, write_checksum=1)
                    cdict = zstandard.ZstdCompressionDict(window, dict_type=zstandard.DICT_TYPE_RAWCONTENT) \
                        if d_len else None
                    frame = zstandard.ZstdCompressor(dict_data=cdict, compression_params=params).compress(piece)
                    del cdict, window
                    frames.write(frame)
                    chunks.append(["zstd", d_off, d_len, len(frame)])
                if progress:
                    progress(len(piece))
        header = _canonical({"schema": SCHEMA, "source": vars(src_digest), "target": vars(tgt_digest),
                             "chunk_size": chunk_size, "chunks": chunks})
        if len(header) > MAX_HEADER:
            raise ValueError(f"delta header of {len(header)} bytes: use a larger chunk size")
        with open(out, "wb") as fh, open(frames_path, "rb") as frames:
            fh.write(MAGIC + struct.pack(">I", len(header)) + header)
            while block := frames.read(IO_PIECE):
                fh.write(block)
    finally:
        frames_path.unlink(missing_ok=True)
    return DeltaResult(src_digest, tgt_digest, _digest_file(out), copied, len(chunks) - copied)


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------- decoder
@dataclass(frozen=True)
class Header:
    source: Digest
    target: Digest
    chunk_size: int
    chunks: tuple[tuple[Any, ...], ...]
    frames_at: int  # file offset of the first frame


def _digest_field(doc: dict[str, Any], key: str) -> Digest:
    raw = doc.get(key)
    if not isinstance(raw, dict) or type(raw.get("length")) is not int or raw["length"] < 0 \
            or not isinstance(raw.get("sha256"), str) or len(raw["sha256"]) != 64:
        raise DeltaError(f"delta header: {key} must be {{length, sha256}}")
    return Digest(raw["length"], raw["sha256"])


def read_header(fh: BinaryIO, file_length: int) -> Header:
    """The header, checked so that applying it reads only inside the source and the file."""
    lead = fh.read(len(MAGIC) + 4)
    if len(lead) != len(MAGIC) + 4 or lead[: len(MAGIC)] != MAGIC:
        raise DeltaError("not an otactl delta (bad magic)")
    (size,) = struct.unpack(">I", lead[len(MAGIC):])
    if size > MAX_HEADER or size > file_length - len(lead):
        raise DeltaError(f"delta header of {size} bytes is too long")
    try:
        doc = json.loads(fh.read(size))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DeltaError(f"delta header is not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise DeltaError(f"delta header is not {SCHEMA}")
    source, target = _digest_field(doc, "source"), _digest_field(doc, "target")
    chunk_size, chunks = doc.get("chunk_size"), doc.get("chunks")
    if type(chunk_size) is not int or not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise DeltaError("delta header: chunk_size out of range")
    if not isinstance(chunks, list) or len(chunks) != math.ceil(target.length / chunk_size):
        raise DeltaError("delta header: the chunks do not cover the target")
    frames_at = len(lead) + size
    frame_total = 0
    checked = []
    for i, chunk in enumerate(chunks):
        length = min(chunk_size, target.length - i * chunk_size)
        ok = isinstance(chunk, list) and chunk and all(type(v) is int and v >= 0 for v in chunk[1:])
        if ok and chunk[0] == "copy" and len(chunk) == 2:
            ok = chunk[1] + length <= source.length
        elif ok and chunk[0] == "zstd" and len(chunk) == 4:
            ok = chunk[1] + chunk[2] <= source.length and chunk[2] <= MAX_DICT
            frame_total += chunk[3] if ok else 0
        else:
            ok = False
        if not ok:
            raise DeltaError(f"delta header: chunk {i} is malformed or reads outside the source")
        checked.append(tuple(chunk))
    if frames_at + frame_total != file_length:
        raise DeltaError(f"delta file is {file_length} bytes, its header describes {frames_at + frame_total}")
    return Header(source, target, chunk_size, tuple(checked), frames_at)


class _Limited:
    """A file-like view of the next ``n`` bytes of ``fh`` (zstd must not read past its frame)."""

    def __init__(self, fh: BinaryIO, n: int) -> None:
        self._fh, self._left = fh, n

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._fh.read(size)
        self._left -= len(data)
        return data


def apply_delta(delta: Path, source: Path, out: BinaryIO, *, expect_source: Digest | None = None,
                expect_target: Digest | None = None) -> Digest:
    """Write the target ``delta`` makes from ``source`` to ``out``, streamed; its length and SHA-256.

    ``expect_source``/``expect_target``: what the signed metadata says; a header naming others is
    refused before anything is written. The caller compares the result with the signed image.
    """
    with open(delta, "rb") as fh, open(source, "rb") as src:
        header = read_header(fh, os.fstat(fh.fileno()).st_size)
        if expect_source is not None and header.source != expect_source:
            raise DeltaError("the delta is for another source image")
        if expect_target is not None and header.target != expect_target:
            raise DeltaError("the delta declares another target image than the signed one")
        if os.fstat(src.fileno()).st_size != header.source.length:
            raise DeltaError("the source image has another length than the delta's source")
        sha = hashlib.sha256()
        written = 0
        fh.seek(header.frames_at)
        for i, chunk in enumerate(header.chunks):
            length = min(header.chunk_size, header.target.length - i * header.chunk_size)
            produced = 0
            if chunk[0] == "copy":
                for at in range(0, length, IO_PIECE):
                    piece = _pread(src, chunk[1] + at, min(IO_PIECE, length - at))
                    sha.update(piece)
                    out.write(piece)
                    produced += len(piece)
            else:
                _, d_off, d_len, f_len = chunk
                ddict = zstandard.ZstdCompressionDict(_pread(src, d_off, d_len),
                                                      dict_type=zstandard.DICT_TYPE_RAWCONTENT) if d_len else None
                dctx = zstandard.ZstdDecompressor(dict_data=ddict, max_window_size=1 << MAX_WINDOW_LOG)
                frame_end = fh.tell() + f_len
                try:
                    with dctx.stream_reader(cast(BinaryIO, _Limited(fh, f_len)), read_across_frames=False) as reader:
                        while produced <= length and (piece := reader.read(min(IO_PIECE, length + 1 - produced))):
                            produced += len(piece)
                            if produced <= length:
                                sha.update(piece)
                                out.write(piece)
                except zstandard.ZstdError as exc:
                    raise DeltaError(f"chunk {i}: {exc}") from None
                del dctx, ddict  # freed before the next chunk's window is read: one window at a time
                fh.seek(frame_end)
            if produced != length:
                raise DeltaError(f"chunk {i} decodes to {produced} bytes, not {length}")
            written += length
        result = Digest(written, sha.hexdigest())
    if result != header.target:
        raise DeltaError("the reconstructed image does not match the delta's declared target")
    return result
