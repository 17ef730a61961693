"""An S3 (or S3-compatible) store: ``s3://BUCKET/PREFIX``.

The endpoint comes from the caller, else ``OTACTL_S3_ENDPOINT_URL``, else boto3's own chain
(``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, the config file); credentials and region always
come from boto3's chain. ``put_if`` is an S3 conditional write (``If-None-Match: *`` to create,
``If-Match: <etag>`` to replace). A server that ignores those headers would turn every
compare-and-swap into a blind overwrite, so the first ``put_if`` on a store probes that the server
refuses a conditional write it must refuse, and fails loudly if it does not.

Every botocore error is translated into a :class:`~otactl.errors.StoreError` whose one line names
the bucket or object and what is wrong. Timeouts are short and retries few, so an unreachable
endpoint fails within seconds instead of minutes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import boto3
import botocore.exceptions
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError, PartialCredentialsError

from otactl.errors import ConflictError, NotFoundError, StoreError, UsageError
from otactl.store.base import BlobStore, Versioned, check_key

ENDPOINT_ENV = "OTACTL_S3_ENDPOINT_URL"
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 60
MAX_ATTEMPTS = 2  # one retry: transient errors are retried, a dead endpoint fails in seconds
DIGEST_CHUNK = 1024 * 1024  # digest() streams objects in pieces of this size

# Objects the store writes for itself (the conditional-write probe); never listed.
_INTERNAL_PREFIX = ".otactl-probe-"

_TRANSFER = TransferConfig(
    multipart_threshold=16 * 1024 * 1024,
    multipart_chunksize=16 * 1024 * 1024,
    max_concurrency=4,
)

_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}
_AUTH_PROBLEMS = {
    "AccessDenied": "access denied (check the credentials' permissions and the bucket policy)",
    "AllAccessDisabled": "access to the bucket is disabled",
    "403": "access denied (check the credentials' permissions and the bucket policy)",
    "Forbidden": "access denied (check the credentials' permissions and the bucket policy)",
    "InvalidAccessKeyId": "the access key id is not known to the endpoint (check AWS_ACCESS_KEY_ID / AWS_PROFILE)",
    "SignatureDoesNotMatch": "the request signature was refused (check AWS_SECRET_ACCESS_KEY)",
    "ExpiredToken": "the session token has expired (refresh the credentials)",
    "InvalidToken": "the session token is invalid (refresh the credentials)",
    "TokenRefreshRequired": "the session token has expired (refresh the credentials)",
}


def _parse_url(url: str) -> tuple[str, str]:
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise UsageError(f"store URL {url!r}: no bucket (use s3://BUCKET/PREFIX)")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise UsageError(f"store URL {url!r}: invalid key prefix {prefix!r}")
    return bucket, f"{prefix}/" if prefix else ""


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _error_text(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "")) or "unknown"
    message = str(error.get("Message", "")).strip()
    return f"{code}: {message}" if message else code


class S3Store(BlobStore):
    """A bucket and a key prefix on S3 or an S3-compatible server."""

    def __init__(self, bucket: str, prefix: str = "", *, client: Any, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}"
        self.endpoint_url = endpoint_url or getattr(getattr(client, "meta", None), "endpoint_url", None)
        self._client = client
        self._probe_lock = threading.Lock()
        self._conditional_writes_verified = False
        self._bucket_verified = False

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None) -> S3Store:
        bucket, prefix = _parse_url(url)
        endpoint_url = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
        config = Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            # An explicit endpoint is nearly always MinIO, Ceph, moto or similar on a plain host name
            # or IP address, where virtual-hosted bucket names do not resolve.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        where = f"s3://{bucket}/{prefix}"
        try:
            client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
        except ValueError as exc:  # a malformed endpoint URL
            raise UsageError(f"{where}: invalid S3 endpoint URL {endpoint_url!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"{where}: cannot set up the S3 client: {exc}") from exc
        return cls(bucket, prefix, client=client, endpoint_url=endpoint_url)

    # -- helpers ----------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _where(self, key: str | None) -> str:
        return self.url if key is None else f"{self.url}{key}"

    def _fail(self, exc: BaseException, key: str | None = None) -> NoReturn:
        """Translate a boto3/botocore error into one clear StoreError (never returns)."""
        where = self._where(key)
        if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, BaseException):
            exc = exc.__context__  # boto3 wraps the real ClientError in a string-only error
        if isinstance(exc, ClientError):
            code = _error_code(exc)
            if code == "NoSuchBucket":
                raise StoreError(f"{self.url}: bucket {self.bucket!r} does not exist") from exc
            if code in _AUTH_PROBLEMS:
                raise StoreError(f"{where}: {_AUTH_PROBLEMS[code]}") from exc
            if code in _MISSING_KEY_CODES and key is not None:
                raise NotFoundError(f"{where}: not found") from exc
            raise StoreError(f"{where}: S3 error {_error_text(exc)}") from exc
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            raise StoreError(
                f"{where}: no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                f"or AWS_PROFILE): {exc}"
            ) from exc
        endpoint = self.endpoint_url or "the S3 endpoint"
        if isinstance(exc, botocore.exceptions.ConnectionError):  # EndpointConnectionError, connect timeout, proxy
            raise StoreError(f"{self.url}: cannot reach endpoint {endpoint}: {exc}") from exc
        if isinstance(exc, HTTPClientError):  # read timeout, connection closed mid-request
            raise StoreError(f"{where}: no complete answer from endpoint {endpoint}: {exc}") from exc
        if isinstance(exc, BotoCoreError):
            raise StoreError(f"{where}: S3 request failed: {exc}") from exc
        raise exc

    def _check_bucket(self) -> None:
        """A 404 from HEAD carries no error code: tell a missing bucket from a missing key."""
        if self._bucket_verified:
            return
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _error_code(exc) in {"404", "NoSuchBucket", "NotFound"}:
                raise StoreError(f"{self.url}: bucket {self.bucket!r} does not exist") from exc
            self._fail(exc)
        except BotoCoreError as exc:
            self._fail(exc)
        self._bucket_verified = True

    # -- the BlobStore interface --------------------------------------------------------------

    def get(self, key: str) -> bytes:
        return self.get_versioned(key).data

    def get_versioned(self, key: str) -> Versioned:
        name = self._key(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=name)
            with response["Body"] as body:
                data = body.read()
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, key)
        return Versioned(bytes(data), str(response["ETag"]))

    def digest(self, key: str) -> tuple[int, str]:
        """Length and SHA-256 of an object, streamed in 1 MiB chunks: memory does not grow with the object."""
        name = self._key(key)
        sha = hashlib.sha256()
        length = 0
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=name)
            # closing(), not `with body`: StreamingBody.__enter__ returns the raw urllib3 stream, which
            # skips botocore's check that the whole Content-Length arrived
            with contextlib.closing(response["Body"]) as body:
                for chunk in body.iter_chunks(DIGEST_CHUNK):
                    sha.update(chunk)
                    length += len(chunk)
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, key)
        return length, sha.hexdigest()

    def put(self, key: str, data: bytes) -> None:
        name = self._key(key)
        try:
            self._client.put_object(Bucket=self.bucket, Key=name, Body=bytes(data))
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, key)

    def put_if(self, key: str, data: bytes, expected_etag: str | None) -> str:
        name = self._key(key)
        self._verify_conditional_writes()
        condition = {"IfNoneMatch": "*"} if expected_etag is None else {"IfMatch": expected_etag}
        try:
            response = self._client.put_object(Bucket=self.bucket, Key=name, Body=bytes(data), **condition)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _CONFLICT_CODES:
                raise ConflictError(f"{self._where(key)}: changed by another writer") from exc
            if code in _MISSING_KEY_CODES and expected_etag is not None:
                raise ConflictError(f"{self._where(key)}: deleted by another writer") from exc
            self._fail(exc, key)
        except BotoCoreError as exc:
            self._fail(exc, key)
        return str(response["ETag"])

    def put_file(self, key: str, path: Path) -> None:
        name = self._key(key)
        if not Path(path).is_file():
            raise StoreError(f"{path}: not found")
        try:
            self._client.upload_file(str(path), self.bucket, name, Config=_TRANSFER)
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            self._fail(exc, key)
        except OSError as exc:
            raise StoreError(f"{path}: cannot read: {exc.strerror or exc}") from exc

    def exists(self, key: str) -> bool:
        name = self._key(key)
        try:
            self._client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _error_code(exc) in _MISSING_KEY_CODES:
                self._check_bucket()
                return False
            if _error_code(exc) == "403":
                return self._exists_by_get(key)  # a HEAD answer has no body to say which 403 it is
            self._fail(exc, key)
        except BotoCoreError as exc:
            self._fail(exc, key)
        return True

    def _exists_by_get(self, key: str) -> bool:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key), Range="bytes=0-0")
            response["Body"].close()
        except ClientError as exc:
            if _error_code(exc) == "InvalidRange":  # an empty object
                return True
            self._fail(exc, key)
        except BotoCoreError as exc:
            self._fail(exc, key)
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        # Collected eagerly so that errors surface at the call, not half-way through iteration.
        keys: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", ()):
                    rel = str(item["Key"])[len(self.prefix) :]
                    if not rel.startswith(_INTERNAL_PREFIX):
                        keys.append(rel)
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
        return iter(sorted(keys))  # S3 already lists in UTF-8 binary order; sorted() states the contract

    def modified(self, key: str) -> datetime | None:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _error_code(exc) in _MISSING_KEY_CODES:
                return None
            self._fail(exc, key)
        except BotoCoreError as exc:
            self._fail(exc, key)
        when = head.get("LastModified")
        return when.astimezone(UTC) if isinstance(when, datetime) else None

    def delete(self, key: str) -> None:
        name = self._key(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _error_code(exc) in _MISSING_KEY_CODES:
                return
            self._fail(exc, key)
        except BotoCoreError as exc:
            self._fail(exc, key)

    # -- conditional-write support ---------------------------------------------------------------

    def _verify_conditional_writes(self) -> None:
        """Prove once per store that the server enforces If-None-Match and If-Match.

        Older S3-compatible servers accept the headers and ignore them; writing through such a
        server would silently lose concurrent updates, so we refuse to use it for ``put_if``.
        """
        if self._conditional_writes_verified:
            return
        with self._probe_lock:
            if self._conditional_writes_verified:
                return
            probe = f"{self.prefix}{_INTERNAL_PREFIX}{uuid.uuid4().hex}"
            try:
                self._client.put_object(Bucket=self.bucket, Key=probe, Body=b"1", IfNoneMatch="*")
            except ClientError as exc:
                self._refuse_unsupported(exc)
                self._fail(exc)
            except BotoCoreError as exc:
                self._fail(exc)
            try:
                for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"otactl-stale-etag"'}):
                    try:
                        self._client.put_object(Bucket=self.bucket, Key=probe, Body=b"2", **condition)
                    except ClientError as exc:
                        if _error_code(exc) in _CONFLICT_CODES:
                            continue
                        self._refuse_unsupported(exc)
                        self._fail(exc)
                    except BotoCoreError as exc:
                        self._fail(exc)
                    header = "If-None-Match" if "IfNoneMatch" in condition else "If-Match"
                    raise StoreError(
                        f"{self._server()} ignores conditional writes ({header}); otactl needs them for "
                        f"safe concurrent updates (use AWS S3 or a server that supports them)"
                    )
            finally:
                with contextlib.suppress(ClientError, BotoCoreError):
                    self._client.delete_object(Bucket=self.bucket, Key=probe)  # hidden from list() anyway
            self._conditional_writes_verified = True

    def _server(self) -> str:
        return f"{self.url}: the S3 server at {self.endpoint_url or 'the default endpoint'}"

    def _refuse_unsupported(self, exc: ClientError) -> None:
        if _error_code(exc) in {"NotImplemented", "501"}:
            raise StoreError(
                f"{self._server()} does not support conditional writes ({_error_text(exc)}); "
                f"otactl needs them for safe concurrent updates"
            ) from exc
