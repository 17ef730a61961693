"""One contract, every blob store: MemoryStore, DirectoryStore and S3Store (a real moto server over HTTP).

Each backend is a factory of *handles* onto one backing store, so the concurrency test can give
each writer its own handle, as two operators on two machines would have.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.s3server import (
    AuthCheckingServer,
    create_bucket,
    moto_s3_server,
    moto_s3_server_checking_credentials,
    s3_client,
)

from otactl.errors import ConflictError, NotFoundError, StoreError, UsageError
from otactl.store import BlobStore, MemoryStore, open_store
from otactl.store.directory import DirectoryStore
from otactl.store.s3 import S3Store

# -- backends ------------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    open: Callable[[], BlobStore]  # a new handle onto the same objects


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    store = MemoryStore()  # one process, one dict: every handle is the same object
    return Backend("memory", lambda: store)


def _directory(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    root = tmp_path / "store"
    return Backend("directory", lambda: DirectoryStore(root))


def _s3(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return Backend("s3", lambda: S3Store.from_url(f"s3://{bucket}/repo", endpoint_url=endpoint))


BACKENDS = [
    pytest.param(_memory, id="memory"),
    pytest.param(_directory, id="directory"),
    pytest.param(_s3, id="s3", marks=pytest.mark.integration),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return request.param(request, tmp_path)


@pytest.fixture
def store(backend: Backend) -> BlobStore:
    return backend.open()


# -- the contract ----------------------------------------------------------------------------------


def test_put_then_get_returns_the_bytes(store: BlobStore) -> None:
    store.put("metadata/1.root.json", b'{"signed": 1}')
    assert store.get("metadata/1.root.json") == b'{"signed": 1}'
    assert store.exists("metadata/1.root.json")


def test_put_overwrites(store: BlobStore) -> None:
    store.put("state/rollout.json", b"old")
    store.put("state/rollout.json", b"new, and longer than the old")
    assert store.get("state/rollout.json") == b"new, and longer than the old"


def test_empty_object_round_trips(store: BlobStore) -> None:
    store.put("empty", b"")
    assert store.get_versioned("empty").data == b""


@pytest.mark.parametrize("read", ["get", "get_versioned"])
def test_get_missing_raises_not_found(store: BlobStore, read: str) -> None:
    with pytest.raises(NotFoundError, match=r"no/such\.json"):
        getattr(store, read)("no/such.json")


def test_missing_object_is_absent_not_an_error(store: BlobStore) -> None:
    assert store.get_optional("no/such.json") is None
    assert not store.exists("no/such.json")


def test_put_if_creates_once(store: BlobStore) -> None:
    etag = store.put_if("state/lock.json", b"first", None)
    assert store.get_versioned("state/lock.json") == store.get_versioned("state/lock.json")
    assert store.get_versioned("state/lock.json").etag == etag

    with pytest.raises(ConflictError, match=r"state/lock\.json"):
        store.put_if("state/lock.json", b"second", None)
    assert store.get("state/lock.json") == b"first"


def test_put_if_with_stale_etag_conflicts(store: BlobStore) -> None:
    stale = store.put_if("state/r.json", b"v1", None)
    store.put("state/r.json", b"v2 by someone else")
    with pytest.raises(ConflictError, match=r"state/r\.json"):
        store.put_if("state/r.json", b"v3", stale)
    assert store.get("state/r.json") == b"v2 by someone else"


def test_put_if_with_fresh_etag_writes(store: BlobStore) -> None:
    store.put("state/r.json", b"v1")
    current = store.get_versioned("state/r.json")
    new_etag = store.put_if("state/r.json", b"v2", current.etag)
    assert new_etag != current.etag
    assert store.get_versioned("state/r.json").etag == new_etag
    assert store.get("state/r.json") == b"v2"


def test_put_if_expecting_an_object_that_is_gone_conflicts(store: BlobStore) -> None:
    etag = store.put_if("state/r.json", b"v1", None)
    store.delete("state/r.json")
    with pytest.raises(ConflictError):
        store.put_if("state/r.json", b"v2", etag)
    assert not store.exists("state/r.json")


KEYS = [
    "metadata/2.root.json",
    "metadata/10.root.json",
    "metadata/1.root.json",
    "metadata-extra/a.json",
    "targets/firmware/t9/1.0/image.bin",
    "targets/config/t9/1.0/hp-300.json",
    "timestamp.json",
]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", sorted(KEYS)),
        ("metadata/", ["metadata/1.root.json", "metadata/10.root.json", "metadata/2.root.json"]),
        (
            "metadata",
            ["metadata-extra/a.json", "metadata/1.root.json", "metadata/10.root.json", "metadata/2.root.json"],
        ),
        ("targets/", ["targets/config/t9/1.0/hp-300.json", "targets/firmware/t9/1.0/image.bin"]),
        ("nothing/", []),
    ],
    ids=["all", "directory-prefix", "string-prefix", "nested", "none"],
)
def test_list_by_prefix_in_lexical_order(store: BlobStore, prefix: str, expected: list[str]) -> None:
    for key in KEYS:
        store.put(key, key.encode())
    assert list(store.list(prefix)) == expected


def test_list_of_an_empty_store_is_empty(store: BlobStore) -> None:
    assert list(store.list()) == []


def test_modified_is_utc_and_recent_or_unknown(store: BlobStore) -> None:
    """`repo prune` keeps what a store cannot date (decision 1204); a dated object is dated in UTC."""
    from datetime import UTC, datetime, timedelta

    assert store.modified("absent/object") is None
    store.put("dated/object", b"x")
    when = store.modified("dated/object")
    if when is None:
        assert isinstance(store, MemoryStore)
        return
    assert when.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - when) < timedelta(hours=1)


def test_delete_is_idempotent(store: BlobStore) -> None:
    store.put("a/b.json", b"x")
    store.delete("a/b.json")
    assert not store.exists("a/b.json")
    store.delete("a/b.json")  # again: not an error
    store.delete("never/was.json")
    assert list(store.list()) == []


def test_put_file_streams_a_large_file(store: BlobStore, tmp_path: Path) -> None:
    image = tmp_path / "image.bin"
    block = os.urandom(1024 * 1024)
    with image.open("wb") as fh:
        for i in range(20):
            fh.write(bytes([i]) + block[1:])
    store.put_file("targets/firmware/t9/2.0/image.bin", image)
    data = store.get("targets/firmware/t9/2.0/image.bin")
    assert len(data) == 20 * 1024 * 1024
    assert hashlib.sha256(data).digest() == hashlib.sha256(image.read_bytes()).digest()


def test_put_file_of_a_missing_file_is_a_store_error(
    backend: Backend, store: BlobStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with pytest.raises(StoreError, match=r"nope\.bin"):
        store.put_file("targets/x.bin", tmp_path / "nope.bin")


INVALID_KEYS = ["../x", "a/../../x", "/abs", "a//b", "", "a/./b", "a/"]
OPERATIONS: dict[str, Callable[[BlobStore, str, Path], object]] = {
    "get": lambda s, k, f: s.get(k),
    "get_versioned": lambda s, k, f: s.get_versioned(k),
    "put": lambda s, k, f: s.put(k, b"x"),
    "put_if": lambda s, k, f: s.put_if(k, b"x", None),
    "put_file": lambda s, k, f: s.put_file(k, f),
    "exists": lambda s, k, f: s.exists(k),
    "delete": lambda s, k, f: s.delete(k),
}


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_refused(store: BlobStore, tmp_path: Path, key: str) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"x")
    for name, operation in OPERATIONS.items():
        try:
            operation(store, key, source)
        except StoreError as exc:
            assert not isinstance(exc, NotFoundError), name
            assert str(exc) == f"invalid object key {key!r}", name
        else:
            pytest.fail(f"{name}({key!r}) was accepted")
    assert list(store.list()) == []


# -- optimistic concurrency -------------------------------------------------------------------------

INCREMENTS = 50


def _increment(store: BlobStore, key: str, times: int, conflicts: list[int]) -> None:
    for _ in range(times):
        while True:
            current = store.get_versioned(key)
            try:
                store.put_if(key, str(int(current.data) + 1).encode(), current.etag)
                break
            except ConflictError:
                conflicts.append(1)


def test_concurrent_read_modify_write_loses_no_update(backend: Backend) -> None:
    key = "state/counter"
    backend.open().put_if(key, b"0", None)
    conflicts: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            _increment(backend.open(), key, INCREMENTS, conflicts)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert backend.open().get(key) == str(2 * INCREMENTS).encode()


# -- S3 specifics: configuration and failures -----------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: nothing listens there


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://bkt/repo", "bkt", "repo/"),
        ("s3://bkt/repo/", "bkt", "repo/"),
        ("s3://bkt/a/b", "bkt", "a/b/"),
        ("s3://bkt", "bkt", ""),
        ("s3://bkt/", "bkt", ""),
    ],
)
def test_s3_url_parsing(url: str, bucket: str, prefix: str) -> None:
    store = S3Store.from_url(url, endpoint_url="http://127.0.0.1:1")
    assert (store.bucket, store.prefix, store.url) == (bucket, prefix, f"s3://{bucket}/{prefix}")


@pytest.mark.parametrize("url", ["s3://", "s3:///repo", "s3://bkt/../x", "s3://bkt/a//b"])
def test_s3_bad_url_is_refused(url: str) -> None:
    with pytest.raises(UsageError, match=f"^store URL '{url}': "):
        S3Store.from_url(url, endpoint_url="http://127.0.0.1:1")


@pytest.mark.integration
def test_s3_open_store_and_bucket_root(s3_endpoint: str, s3_bucket: str) -> None:
    store = open_store(f"s3://{s3_bucket}", endpoint_url=s3_endpoint)
    assert isinstance(store, S3Store)
    store.put("timestamp.json", b"{}")
    assert list(store.list()) == ["timestamp.json"]


@pytest.mark.integration
def test_s3_etag_is_the_s3_etag(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Store.from_url(f"s3://{s3_bucket}/repo", endpoint_url=s3_endpoint)
    etag = store.put_if("x.json", b"hello", None)
    head = s3_client(s3_endpoint).head_object(Bucket=s3_bucket, Key="repo/x.json")
    assert etag == head["ETag"] == store.get_versioned("x.json").etag
    assert etag.strip('"') == hashlib.md5(b"hello").hexdigest()  # S3's ETag of a single PUT is its MD5


@pytest.mark.integration
def test_s3_prefix_isolates_stores(s3_endpoint: str, s3_bucket: str) -> None:
    a = S3Store.from_url(f"s3://{s3_bucket}/a", endpoint_url=s3_endpoint)
    ab = S3Store.from_url(f"s3://{s3_bucket}/ab", endpoint_url=s3_endpoint)
    a.put("k", b"a")
    ab.put("k", b"ab")
    assert list(a.list()) == ["k"]
    assert a.get("k") == b"a"


@pytest.mark.integration
def test_s3_endpoint_from_environment(s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTACTL_S3_ENDPOINT_URL", s3_endpoint)
    S3Store.from_url(f"s3://{s3_bucket}/repo").put("k", b"via OTACTL_S3_ENDPOINT_URL")

    monkeypatch.delenv("OTACTL_S3_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)  # boto3's own chain
    assert S3Store.from_url(f"s3://{s3_bucket}/repo").get("k") == b"via OTACTL_S3_ENDPOINT_URL"

    # an explicit argument beats the environment
    monkeypatch.setenv("OTACTL_S3_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    assert S3Store.from_url(f"s3://{s3_bucket}/repo", endpoint_url=s3_endpoint).exists("k")


@pytest.mark.integration
@pytest.mark.parametrize("operation", ["get", "put", "put_if", "exists", "list", "delete"])
def test_s3_unreachable_endpoint_fails_fast_naming_it(operation: str, s3_endpoint: str) -> None:
    # s3_endpoint is not used, but it sets the fake credentials: without any, boto3 would fail first.
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    store = S3Store.from_url("s3://bucket/prefix", endpoint_url=endpoint)
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: store.get("k"),
        "put": lambda: store.put("k", b"x"),
        "put_if": lambda: store.put_if("k", b"x", None),
        "exists": lambda: store.exists("k"),
        "list": lambda: store.list(),
        "delete": lambda: store.delete("k"),
    }
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        calls[operation]()
    assert time.monotonic() - started < 10
    assert not isinstance(info.value, NotFoundError)
    assert str(info.value).startswith(f"s3://bucket/prefix/: cannot reach endpoint {endpoint}")
    assert isinstance(info.value.__cause__, Exception)  # translated with raise ... from


@pytest.mark.integration
@pytest.mark.parametrize("operation", ["get", "get_optional", "put", "put_if", "exists", "list", "delete"])
def test_s3_missing_bucket_is_a_store_error_naming_it(operation: str, s3_endpoint: str, tmp_path: Path) -> None:
    store = S3Store.from_url("s3://no-such-bucket-otactl/repo", endpoint_url=s3_endpoint)
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: store.get("k"),
        "get_optional": lambda: store.get_optional("k"),  # must not pass for "absent"
        "put": lambda: store.put("k", b"x"),
        "put_if": lambda: store.put_if("k", b"x", None),
        "exists": lambda: store.exists("k"),  # HEAD's 404 has no code: must not read as "absent"
        "list": lambda: store.list(),
        "delete": lambda: store.delete("k"),
    }
    with pytest.raises(StoreError) as info:
        calls[operation]()
    assert not isinstance(info.value, NotFoundError)
    assert str(info.value) == "s3://no-such-bucket-otactl/repo/: bucket 'no-such-bucket-otactl' does not exist"


@pytest.mark.integration
def test_s3_missing_credentials_is_a_store_error(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    store = S3Store.from_url(f"s3://{s3_bucket}/repo", endpoint_url=s3_endpoint)
    with pytest.raises(StoreError, match=r"^s3://.*/repo/k: no usable AWS credentials \(set AWS_ACCESS_KEY_ID"):
        store.get("k")


@pytest.mark.integration
def test_s3_server_that_ignores_conditional_writes_is_refused() -> None:
    with moto_s3_server(ignore_conditional_writes=True) as endpoint:
        bucket = create_bucket(endpoint)
        store = S3Store.from_url(f"s3://{bucket}/repo", endpoint_url=endpoint)
        store.put("state.json", b"v1")
        with pytest.raises(StoreError, match=r"ignores conditional writes \(If-None-Match\)"):
            store.put_if("state.json", b"v2", None)
        assert store.get("state.json") == b"v1"  # nothing written blindly
        assert list(store.list()) == ["state.json"]  # the probe cleaned up after itself


@pytest.fixture(scope="module")
def auth_server() -> Iterator[AuthCheckingServer]:
    with moto_s3_server_checking_credentials() as server:
        yield server


CREDENTIAL_CASES = {
    # case: (which credentials, expected message after "s3://BUCKET/repo/...: ")
    "unknown-access-key": (
        lambda srv: ("AKIAOTACTLUNKNOWN000", "whatever"),
        "the access key id is not known to the endpoint",
    ),
    "wrong-secret": (
        lambda srv: (srv.writer.access_key_id, "not-the-secret"),
        "the request signature was refused (check AWS_SECRET_ACCESS_KEY)",
    ),
    "no-permission": (
        lambda srv: (srv.nobody.access_key_id, srv.nobody.secret_access_key),
        "access denied",
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("operation", ["get", "exists", "put", "put_if", "list"])
@pytest.mark.parametrize("case", list(CREDENTIAL_CASES))
def test_s3_bad_credentials_are_a_store_error(
    auth_server: AuthCheckingServer, monkeypatch: pytest.MonkeyPatch, case: str, operation: str
) -> None:
    credentials, expected = CREDENTIAL_CASES[case]
    key_id, secret = credentials(auth_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)  # through boto3's standard chain
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)
    store = S3Store.from_url(f"s3://{auth_server.bucket}/repo", endpoint_url=auth_server.endpoint_url)
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: store.get("k"),
        "exists": lambda: store.exists("k"),
        "put": lambda: store.put("k", b"x"),
        "put_if": lambda: store.put_if("k", b"x", None),
        "list": lambda: store.list(),
    }
    with pytest.raises(StoreError) as info:
        calls[operation]()
    assert not isinstance(info.value, NotFoundError)
    assert str(info.value).startswith(f"s3://{auth_server.bucket}/repo/")
    assert expected in str(info.value)


@pytest.mark.integration
def test_s3_good_credentials_are_accepted_by_the_checking_server(
    auth_server: AuthCheckingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: the same server, the right key, everything works."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", auth_server.writer.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", auth_server.writer.secret_access_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)
    store = S3Store.from_url(f"s3://{auth_server.bucket}/good", endpoint_url=auth_server.endpoint_url)
    etag = store.put_if("k", b"x", None)
    assert store.get_versioned("k").etag == etag
    assert store.exists("k")
    assert list(store.list()) == ["k"]


SECRET = "otactl-WRONG-secret-7d41c9e0b2/aF+never-printed"  # a wrong secret, distinctive


@pytest.mark.integration
@pytest.mark.parametrize("operation", ["get", "exists", "put", "put_if", "list"])
def test_s3_errors_never_show_the_secret_access_key(
    auth_server: AuthCheckingServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    operation: str
) -> None:
    """A wrong secret: the StoreError (message, repr, whole traceback with its botocore cause), the
    store's repr and botocore's debug log name neither that secret nor the writer's real one."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", auth_server.writer.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)
    store = S3Store.from_url(f"s3://{auth_server.bucket}/repo", endpoint_url=auth_server.endpoint_url)
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: store.get("k"),
        "exists": lambda: store.exists("k"),
        "put": lambda: store.put("k", b"x"),
        "put_if": lambda: store.put_if("k", b"x", None),
        "list": lambda: store.list(),
    }
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreError) as info:
        calls[operation]()
    assert "the request signature was refused (check AWS_SECRET_ACCESS_KEY)" in str(info.value)
    assert store._client._get_credentials().secret_key == SECRET  # the control: this secret signed the requests
    assert isinstance(info.value.__cause__, Exception)  # the botocore error is in the traceback too
    printed = [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value)), repr(store),
               str(store), caplog.text]
    assert "SignatureDoesNotMatch" in printed[2]
    for text in printed:
        for secret in (SECRET, auth_server.writer.secret_access_key):
            assert secret not in text
