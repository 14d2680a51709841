"""S3-compatible object storage: inputs, outputs, artifacts and manifests.

One :class:`Storage` wraps a boto3 client for any S3-compatible endpoint
(AWS, SeaweedFS, MinIO...). Its contract:

- keys are validated (:func:`validate_key`) before any request;
- writes are conditional (``If-None-Match: *`` on PutObject and on
  CompleteMultipartUpload), so a redelivered task can never overwrite an
  object; :meth:`Storage.put` says whether it wrote or found the object there;
- large objects go as multipart uploads (boto3 ``TransferConfig``);
- transient errors are retried by botocore (standard mode, exponential
  backoff), and conditional-write conflicts (HTTP 409) by :meth:`Storage.put`;
- credentials come from :class:`Settings` and are never logged.

``open_storage(url)`` gives the small read interface the eval suite uses for
``s3://`` datasets: ``list(url)`` and ``get(key)``.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Iterator

from orchestration.settings import Settings, load_settings
from worker.errors import RetouchError

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024          # S3's limit on a key, UTF-8 encoded
MAX_METADATA_BYTES = 2048     # S3's limit on user metadata (names + values)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class StorageError(RetouchError):
    """A bad URL, key or metadata, or a refused write; the message names the value."""


class ObjectExists(StorageError):
    """A conditional write found an object with different content settings at the key."""


@dataclass(frozen=True)
class S3Url:
    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, rel: str) -> str:
        return validate_key(join(self.prefix, rel))


def join(*parts: str) -> str:
    """Join key parts with single slashes (empty parts dropped)."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def parse_url(url: str) -> S3Url:
    """``s3://bucket/prefix`` -> :class:`S3Url`; the prefix has no leading or
    trailing slash (may be empty). Raises :class:`StorageError`."""
    if not url.startswith("s3://"):
        raise StorageError(f"{url}: not an s3:// URL (expected s3://bucket/prefix)")
    bucket, _, prefix = url[5:].partition("/")
    if not _BUCKET.match(bucket):
        raise StorageError(f"{url}: invalid bucket name {bucket!r}")
    prefix = prefix.strip("/")
    if prefix:
        validate_key(prefix)
    return S3Url(bucket, prefix)


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe S3 key: non-empty, at most 1024 UTF-8
    bytes, no control characters, no ``.``/``..`` path segments, no leading
    slash. Raises :class:`StorageError` naming the key and the cause."""
    if not key:
        raise StorageError("empty S3 key")
    shown = key if len(key) <= 120 else key[:117] + "..."
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise StorageError(f"{shown}: S3 key longer than {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise StorageError(f"{shown!r}: S3 key contains control characters")
    if key.startswith("/"):
        raise StorageError(f"{shown}: S3 key starts with '/'")
    if any(part in (".", "..") for part in key.split("/")):
        raise StorageError(f"{shown}: S3 key contains a '.' or '..' segment")
    return key


def overlaps(a: S3Url, b: S3Url) -> bool:
    """True if one prefix contains the other (same bucket)."""
    if a.bucket != b.bucket:
        return False
    pa, pb = a.prefix + "/", b.prefix + "/"
    return not a.prefix or not b.prefix or pa.startswith(pb) or pb.startswith(pa)


def check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """S3 user metadata: ASCII names and values, 2 KB in all. Raises StorageError."""
    size = sum(len(k.encode()) + len(str(v).encode()) for k, v in metadata.items())
    if size > MAX_METADATA_BYTES:
        raise StorageError(f"object metadata is {size} bytes; S3 allows {MAX_METADATA_BYTES}")
    for k, v in metadata.items():
        if not (k.isascii() and str(v).isascii()):
            raise StorageError(f"object metadata {k}={v!r} is not ASCII")
    return {k: str(v) for k, v in metadata.items()}


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying later: connection trouble, throttling, 5xx."""
    from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

    if isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in {"SlowDown", "Throttling", "RequestTimeout", "InternalError", "ServiceUnavailable",
                        "ConditionalRequestConflict"} or status >= 500 or status == 409
    return False


def _code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def make_client(settings, conditional: bool = False):
    """A boto3 S3 client from settings. With ``conditional``, every PutObject
    and CompleteMultipartUpload it sends carries ``If-None-Match: *``."""
    import boto3
    from botocore.config import Config

    config = Config(
        request_checksum_calculation="when_required", response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": settings.s3_max_attempts},
        s3={"addressing_style": settings.s3_addressing_style},
        connect_timeout=10, read_timeout=120, max_pool_connections=16,
    )
    key_id = settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    client = boto3.session.Session().client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
        aws_access_key_id=key_id, aws_secret_access_key=secret, config=config)
    if conditional:
        def if_none_match(params, **_):
            params["IfNoneMatch"] = "*"

        client.meta.events.register("before-parameter-build.s3.PutObject", if_none_match)
        client.meta.events.register("before-parameter-build.s3.CompleteMultipartUpload", if_none_match)
    return client


class Storage:
    """Reads and conditional writes on one S3 endpoint (see module docstring)."""

    def __init__(self, client, conditional_client=None, multipart_threshold: int = 16 * 2**20,
                 conflict_retries: int = 5):
        from boto3.s3.transfer import TransferConfig

        self.client = client
        self.conditional_client = conditional_client or client
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                       multipart_chunksize=max(5 * 2**20, multipart_threshold // 2),
                                       max_concurrency=4, use_threads=True)
        self.conflict_retries = conflict_retries

    @classmethod
    def from_settings(cls, settings) -> "Storage":
        return cls(make_client(settings), make_client(settings, conditional=True),
                   multipart_threshold=settings.multipart_threshold_mb * 2**20)

    # --- reading -----------------------------------------------------------

    def list_objects(self, url: S3Url | str, page_size: int = 1000) -> Iterator[dict]:
        """Objects under a prefix, page by page (never all in memory):
        dicts with ``Key``, ``ETag`` (quotes stripped) and ``Size``."""
        url = parse_url(url) if isinstance(url, str) else url
        prefix = url.prefix + "/" if url.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=url.bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
            for obj in page.get("Contents", []):
                yield {"Key": obj["Key"], "ETag": obj.get("ETag", "").strip('"'), "Size": obj.get("Size", 0)}

    def get(self, bucket: str, key: str) -> bytes:
        validate_key(key)
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def get_capped(self, bucket: str, key: str, max_bytes: int) -> tuple[bytes | None, str]:
        """``(bytes, etag)`` of an object; bytes None when it is larger than
        ``max_bytes`` (nothing beyond the size is read)."""
        validate_key(key)
        r = self.client.get_object(Bucket=bucket, Key=key)
        etag = r.get("ETag", "").strip('"')
        if r.get("ContentLength", 0) > max_bytes:
            r["Body"].close()
            return None, etag
        return r["Body"].read(), etag

    def head(self, bucket: str, key: str) -> dict | None:
        """The object's user metadata plus ``etag`` and ``size``, or None if absent."""
        from botocore.exceptions import ClientError

        validate_key(key)
        try:
            r = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return {**r.get("Metadata", {}), "etag": r.get("ETag", "").strip('"'), "size": r.get("ContentLength", 0)}

    # --- writing -----------------------------------------------------------

    def put(self, bucket: str, key: str, data: bytes | io.IOBase, metadata: dict[str, str] | None = None,
            content_type: str | None = None, overwrite: bool = False) -> bool:
        """Write an object if none exists at ``key`` (``If-None-Match: *``;
        multipart above the threshold). Returns True if written, False if an
        object was already there (a redelivered task, a re-run). With
        ``overwrite``, write unconditionally (never used for inputs).
        Conflicts with a concurrent conditional write (409) are retried with
        backoff; other transient errors are retried by botocore."""
        from botocore.exceptions import ClientError
        from boto3.exceptions import S3UploadFailedError

        validate_key(key)
        extra = {"Metadata": check_metadata(metadata or {})}
        if content_type:
            extra["ContentType"] = content_type
        client = self.client if overwrite else self.conditional_client
        for attempt in range(self.conflict_retries + 1):
            body = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
            if attempt and hasattr(body, "seek"):
                body.seek(0)
            try:
                client.upload_fileobj(body, bucket, key, ExtraArgs=extra, Config=self.transfer)
                return True
            except (ClientError, S3UploadFailedError) as exc:
                code = _code(exc) if isinstance(exc, ClientError) else _upload_failed_code(exc)
                if code in ("PreconditionFailed", "412"):
                    return False
                if code in ("ConditionalRequestConflict", "409") and attempt < self.conflict_retries:
                    time.sleep(min(5.0, 0.2 * 2 ** attempt) * (0.5 + random.random()))
                    continue
                raise
        raise StorageError(f"s3://{bucket}/{key}: conditional write kept conflicting")  # pragma: no cover

    @staticmethod
    def json_bytes(payload) -> bytes:
        return json.dumps(payload, indent=2, default=_json_default).encode()

    def put_json(self, bucket: str, key: str, payload, metadata: dict[str, str] | None = None,
                 overwrite: bool = False) -> bool:
        return self.put(bucket, key, self.json_bytes(payload), metadata, "application/json", overwrite)

    # --- revisions (versioned buckets) -----------------------------------------

    def put_revision(self, bucket: str, key: str, data: bytes, metadata: dict[str, str], content_type: str,
                     revision: str, attempts: int = 8) -> bool:
        """Write ``data`` as the newest version of ``key`` unless the newest
        version already is ``revision`` (its ``retouch-revision`` metadata).
        Compare-and-swap: the write carries ``If-Match`` the version seen (or
        ``If-None-Match: *`` when there is none), so of two writers of the same
        revision only one makes a version. Returns True if it wrote."""
        from botocore.exceptions import ClientError

        validate_key(key)
        meta = check_metadata({**metadata, "retouch-revision": revision})
        for attempt in range(attempts):
            current = self.head(bucket, key)
            if current is not None and current.get("retouch-revision") == revision:
                return False
            cond = {"IfMatch": f'"{current["etag"]}"'} if current is not None else {"IfNoneMatch": "*"}
            try:
                self.client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=meta, ContentType=content_type,
                                       **cond)
                return True
            except ClientError as exc:
                if _code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                    raise
                time.sleep(min(2.0, 0.1 * 2 ** attempt) * (0.5 + random.random()))
        raise StorageError(f"s3://{bucket}/{key}: another writer kept replacing it; revision {revision} not written")

    def versioned(self, bucket: str) -> bool:
        """Whether object versioning is enabled on ``bucket``."""
        return self.client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"

    def versions(self, bucket: str, key: str) -> list[dict]:
        """Every version of ``key``, newest first: ``VersionId``, ``LastModified``,
        ``Size``, ``IsLatest`` (delete markers left out)."""
        validate_key(key)
        found = []
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            found += [v for v in page.get("Versions", []) if v["Key"] == key]
        return found  # S3 lists the versions of a key newest first (dates have one-second resolution)

    def head_version(self, bucket: str, key: str, version: str) -> dict | None:
        """Like :meth:`head` for one version (None if there is no such version)."""
        from botocore.exceptions import ClientError

        try:
            r = self.client.head_object(Bucket=bucket, Key=validate_key(key), VersionId=version)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound", "NoSuchVersion", "400", "InvalidArgument"):
                return None
            raise
        return {**r.get("Metadata", {}), "etag": r.get("ETag", "").strip('"'), "size": r.get("ContentLength", 0),
                "modified": r.get("LastModified")}

    def copy_version_to_top(self, bucket: str, key: str, version: str) -> str | None:
        """Copy version ``version`` of ``key`` onto ``key`` (bytes and metadata):
        a new newest version, the others kept. Returns the new version id."""
        r = self.client.copy_object(Bucket=bucket, Key=validate_key(key), MetadataDirective="COPY",
                                    CopySource={"Bucket": bucket, "Key": key, "VersionId": version})
        return r.get("VersionId")

    def delete(self, bucket: str, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": validate_key(k)} for k in keys[start:start + 1000]]
            if chunk:
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})

    def ensure_bucket(self, bucket: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError:
            self.client.create_bucket(Bucket=bucket)


def _upload_failed_code(exc) -> str:
    # boto3 wraps some ClientErrors in S3UploadFailedError; keep the code.
    cause = exc.__cause__ or exc.__context__
    if cause is not None and hasattr(cause, "response"):
        return _code(cause)
    text = str(exc)
    for code in ("PreconditionFailed", "ConditionalRequestConflict"):
        if code in text:
            return code
    return ""


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


class BucketReader:
    """What ``orchestration.evaluate.dataset`` reads s3:// datasets through:
    ``list(url)`` yields the keys under the URL (paginated), ``get(key)`` their bytes."""

    def __init__(self, storage: Storage, bucket: str):
        self.storage = storage
        self.bucket = bucket

    def list(self, url: str) -> Iterator[str]:
        parsed = parse_url(url)
        if parsed.bucket != self.bucket:
            raise StorageError(f"{url}: this reader serves bucket {self.bucket}")
        for obj in self.storage.list_objects(parsed):
            yield obj["Key"]

    def get(self, key: str) -> bytes:
        if key.startswith("s3://"):
            parsed = parse_url(key)
            return self.storage.get(parsed.bucket, parsed.prefix)
        return self.storage.get(self.bucket, key)


def open_storage(url: str, settings=None) -> BucketReader:
    """A reader for the bucket of ``s3://bucket/prefix`` (settings from the
    environment unless given)."""
    if settings is None:
        settings = load_settings()
    return BucketReader(Storage.from_settings(settings), parse_url(url).bucket)
