"""``BlobStore.digest`` on every store: the right length and SHA-256, streamed (S3 never reads a body whole)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from otactl.errors import NotFoundError
from otactl.store import BlobStore, MemoryStore
from otactl.store.directory import DirectoryStore
from otactl.store.s3 import DIGEST_CHUNK, S3Store

KEY = "targets/firmware/t9-engine/2.0.0/abc.image.bin"


class _RecordingBody:
    """A StreamingBody that records how much each read asked for (None: the whole body)."""

    def __init__(self, body: Any, reads: list[int | None]) -> None:
        self._body, self._reads = body, reads

    def read(self, amt: int | None = None) -> bytes:
        self._reads.append(amt)
        return self._body.read(amt)  # type: ignore[no-any-return]

    def iter_chunks(self, chunk_size: int) -> Any:
        while chunk := self.read(chunk_size):
            yield chunk

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> Any:  # what botocore's StreamingBody does: hand out the raw stream
        return self._body.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._body.__exit__(*exc)


class _RecordingClient:
    """A real boto3 client whose get_object bodies record their reads (passed in through the constructor)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.reads: list[int | None] = []
        self.meta = client.meta

    def get_object(self, **kwargs: Any) -> Any:
        response = self._client.get_object(**kwargs)
        response["Body"] = _RecordingBody(response["Body"], self.reads)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _image(tmp_path: Path, size: int) -> tuple[Path, tuple[int, str]]:
    path = tmp_path / "image.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    return path, (size, hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("size", [0, 1, DIGEST_CHUNK, 3 * DIGEST_CHUNK + 17], ids=["empty", "1B", "1chunk", "3chunks+"])
def test_memory_and_directory_digest(tmp_path: Path, size: int) -> None:
    path, expected = _image(tmp_path, size)
    stores: list[BlobStore] = [MemoryStore(), DirectoryStore(tmp_path / "store")]
    for store in stores:
        store.put_file(KEY, path)
        assert store.digest(KEY) == expected
        with pytest.raises(NotFoundError):
            store.digest("targets/none.bin")


@pytest.mark.integration
@pytest.mark.parametrize("size", [0, 3 * DIGEST_CHUNK + 17], ids=["empty", "3chunks+"])
def test_s3_digest_streams_in_chunks(tmp_path: Path, s3_endpoint: str, s3_bucket: str, size: int) -> None:
    path, expected = _image(tmp_path, size)
    client = _RecordingClient(boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1"))
    store = S3Store(s3_bucket, "repo/", client=client, endpoint_url=s3_endpoint)
    store.put_file(KEY, path)
    assert store.digest(KEY) == expected
    assert client.reads and None not in client.reads  # never "the whole body"
    assert max(r for r in client.reads if r is not None) <= DIGEST_CHUNK
    with pytest.raises(NotFoundError, match=r"none\.bin: not found"):
        store.digest("targets/none.bin")
