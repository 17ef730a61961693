"""Streaming image hashing: same digest as hashlib at every chunk boundary, progress adds up, clear errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from otactl.errors import UsageError
from otactl.release.hashing import CHUNK, hash_file


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(0, id="empty"),
        pytest.param(1, id="one-byte"),
        pytest.param(CHUNK - 1, id="chunk-minus-one"),
        pytest.param(CHUNK, id="one-chunk"),
        pytest.param(CHUNK + 1, id="chunk-plus-one"),
        pytest.param(3 * CHUNK + 12345, id="several-chunks"),
    ],
)
def test_digest_and_progress_match_hashlib(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    image = tmp_path / "fw.bin"
    image.write_bytes(data)
    ticks: list[int] = []
    assert hash_file(image, ticks.append) == (size, hashlib.sha256(data).hexdigest())
    assert sum(ticks) == size
    assert all(0 < t <= CHUNK for t in ticks)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda p: None, "image not found", id="missing"),
        pytest.param(lambda p: p.mkdir(), "is a directory, not an image", id="directory"),
    ],
)
def test_unreadable_images_are_usage_errors(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    image = tmp_path / "fw.bin"
    make(image)
    with pytest.raises(UsageError, match=message) as caught:
        hash_file(image)
    assert str(image) in str(caught.value)


def test_read_error_is_a_usage_error() -> None:
    # a file that opens but cannot be read, even by root: /proc/self/mem at offset 0 fails with EIO
    image = Path("/proc/self/mem")
    with pytest.raises(UsageError, match="cannot read image: Input/output error") as caught:
        hash_file(image)
    assert str(image) in str(caught.value)
