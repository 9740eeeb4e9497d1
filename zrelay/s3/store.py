"""One S3 target through boto3: client settings, every call zrelay makes, errors as one line.

Why these client settings: boto3 ≥ 1.36 sends streaming checksum trailers on
uploads by default, which several S3-compatible servers reject or mangle;
``when_required`` turns that off, and zrelay sends its own per-part
checksum instead (Content-MD5, accepted everywhere, or x-amz-checksum-sha256).
Credentials come from boto3's usual chain (environment, profile, instance
role); a target's ``profile`` selects a profile. No secret is ever printed:
error messages carry the error code and the key, never request headers.

Every method is synchronous and thread-safe (boto3 clients are); the async
callers run them in threads. The client is made with botocore, boto3's
engine, when it is first needed (a fifth of a second): in a thread, while the
SSH side of a run is connecting.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from zrelay.errors import (S3AccessDenied, S3ChecksumMismatch, S3Error, S3NotFound, S3Unreachable,
                           S3UsageError)
from zrelay.inventory.endpoints import s3_endpoint_problem, s3_region_problem
from zrelay.inventory.model import S3Target
from zrelay.s3.chains import Listed
from zrelay.s3.resume import StoredPart, stored_part

if TYPE_CHECKING:
    from botocore.config import Config

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
MAX_ATTEMPTS = 5
GET_ATTEMPTS = 3        # a ranged GET whose body breaks off is read again

_ACCESS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken", "AllAccessDisabled", "AccountProblem", "403"}
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "404", "NotFound"}


@dataclass(frozen=True, slots=True)
class Upload:
    """A multipart upload in progress (or left behind)."""

    key: str
    upload_id: str
    initiated: float   # unix seconds


@dataclass(frozen=True, slots=True)
class Head:
    key: str
    size: int
    storage_class: str
    restore: str | None           # the x-amz-restore header, when the object was restored or is being restored
    metadata: dict[str, str]

    @property
    def restore_ongoing(self) -> bool:
        return self.restore is not None and 'ongoing-request="true"' in self.restore

    @property
    def restored(self) -> bool:
        return self.restore is not None and 'ongoing-request="false"' in self.restore


def client_config(target: S3Target, pool: int = 10) -> Config:
    """botocore Config for ``target`` (see module docstring for the checksum settings)."""
    from botocore.config import Config
    return Config(
        signature_version="s3v4",
        s3={"addressing_style": target.addressing_style},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=max(10, pool),
        tcp_keepalive=True,
    )


def make_client(target: S3Target, pool: int = 10) -> Any:
    """An S3 client for ``target``: its profile, region and endpoint.

    Made with botocore, which boto3 is built on: every call zrelay makes is a
    plain client call, and boto3's own session imports s3transfer (its managed
    transfers, unused here) on top, 60-100 ms of every command's start.
    """
    problem = ((target.endpoint and s3_endpoint_problem(target.endpoint))
               or (target.region and s3_region_problem(target.region)))
    if problem:  # the inventory loader refuses these already; a target made in code is asked too
        raise S3UsageError(target.name, problem)
    import botocore.exceptions
    import botocore.session
    try:
        session = botocore.session.Session(profile=target.profile or None)
        session.register_component("data_loader", s3_only_loader(session.get_config_variable("data_path")))
        return session.create_client("s3", endpoint_url=target.endpoint, region_name=target.region or None,
                                     config=client_config(target, pool))
    except botocore.exceptions.ProfileNotFound:
        raise S3UsageError(target.name, f"AWS profile {target.profile!r} not found "
                                        "(~/.aws/config, ~/.aws/credentials or $AWS_CONFIG_FILE)") from None


def s3_only_loader(data_path: str | None) -> Any:
    """botocore's data loader (search path from ``data_path``, i.e. AWS_DATA_PATH, as botocore
    makes it), except that it looks at S3's own directory when asked which services exist.

    botocore answers that question before loading a model, to check the service's name: it
    lists every service it ships (about 400 directories, once for the API model and once for
    the endpoint rules), about 50 ms of every S3 command's start. zrelay only makes S3 clients."""
    from botocore.loaders import create_loader
    # botocore's own factory reads data_path; its search paths are taken over as they are
    return _s3_only_loader_class()(extra_search_paths=create_loader(data_path).search_paths,
                                   include_default_search_paths=False)


@functools.cache
def _s3_only_loader_class() -> type:
    from botocore.loaders import Loader

    class S3OnlyLoader(Loader):
        def list_available_services(self, type_name: str) -> list[str]:
            for root in self.search_paths:
                s3 = os.path.join(root, "s3")
                if os.path.isdir(s3) and any(self.file_loader.exists(os.path.join(s3, version, type_name))
                                             for version in os.listdir(s3)):
                    return ["s3"]
            return []

    return S3OnlyLoader


@contextlib.contextmanager
def s3_errors(target: str, key: str | None = None, what: str = "") -> Iterator[None]:
    """Turn botocore's exceptions into one-line S3Errors (never with credentials in them)."""
    where = f" {key}" if key else ""
    doing = f"{what}{where}: " if what else (f"{key}: " if key else "")
    import botocore.exceptions
    try:
        yield
    except botocore.exceptions.NoCredentialsError:
        raise S3AccessDenied(target, "no S3 credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                                     "or a profile on the target)") from None
    except botocore.exceptions.PartialCredentialsError as exc:
        raise S3AccessDenied(target, f"incomplete S3 credentials: {exc.kwargs.get('cred_var', '?')} missing") from None
    except botocore.exceptions.ClientError as exc:
        err = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
        code = str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
        message = str(err.get("Message") or "").strip()
        text = f"{doing}{code}" + (f" ({message})" if message and message != code else "")
        if code in _ACCESS:
            raise S3AccessDenied(target, text, key) from None
        if code in _MISSING:
            raise S3NotFound(target, text, key) from None
        if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
            raise S3ChecksumMismatch(target, text, key) from None
        raise S3Error(target, text, key) from None
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError) as exc:
        raise S3Unreachable(target, f"{doing}cannot reach {getattr(exc, 'kwargs', {}).get('endpoint_url', 'the endpoint')}") from None
    except (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError,
            botocore.exceptions.ResponseStreamingError, botocore.exceptions.HTTPClientError) as exc:
        raise S3Unreachable(target, f"{doing}connection failed ({type(exc).__name__})", key) from None
    except botocore.exceptions.ParamValidationError as exc:
        raise S3Error(target, f"{doing}invalid request ({exc})", key) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise S3Error(target, f"{doing}{type(exc).__name__}: {exc}", key) from None


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class Store:
    """The calls zrelay makes against one S3 target."""

    def __init__(self, target: S3Target, client: Any | None = None, pool: int = 10) -> None:
        self.target = target
        self.name = target.name
        self.bucket = target.bucket
        self._client = client
        self._pool = pool
        self._making = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use (by whichever thread gets there first)."""
        if self._client is None:
            with self._making:
                if self._client is None:
                    self._client = make_client(self.target, self._pool)
        return self._client

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    # -- listing and small objects ------------------------------------------------

    def list_objects(self, prefix: str) -> list[Listed]:
        out: list[Listed] = []
        with s3_errors(self.name, self.url(prefix), "listing"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []) or []:
                    modified = item.get("LastModified")
                    out.append(Listed(item["Key"], int(item.get("Size", 0)),
                                      modified.timestamp() if modified else 0.0,
                                      str(item.get("StorageClass") or "STANDARD")))
        return out

    def get_bytes(self, key: str, limit: int = 1 << 20) -> bytes:
        with s3_errors(self.name, key, "reading"):
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
            return bytes(resp["Body"].read(limit + 1))

    def lock_arguments(self) -> dict[str, Any]:
        """The Object Lock retention a new object is written with (none without ``object_lock``):
        the target's mode, until its days from now."""
        lock = self.target.object_lock
        if lock is None:
            return {}
        until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=lock.days)
        return {"ObjectLockMode": lock.mode, "ObjectLockRetainUntilDate": until}

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json",
                  storage_class: str = "STANDARD") -> None:
        """A small object in one PUT, with Content-MD5 so the server checks it."""
        with s3_errors(self.name, key, "writing"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                                   ContentMD5=b64(hashlib.md5(data).digest()), StorageClass=storage_class,
                                   **self.lock_arguments())

    def head(self, key: str) -> Head:
        with s3_errors(self.name, key, "reading"):
            r = self.client.head_object(Bucket=self.bucket, Key=key)
        return Head(key, int(r.get("ContentLength", 0)), str(r.get("StorageClass") or "STANDARD"),
                    r.get("Restore"), dict(r.get("Metadata") or {}))

    def delete(self, key: str) -> None:
        """One object at a time: batch DeleteObjects needs a body checksum some servers reject.
        A target with ``object_lock`` is a versioned bucket: there a plain delete only hides the
        object behind a delete marker, so every version of the key is deleted instead."""
        with s3_errors(self.name, key, "deleting"):
            if self.target.object_lock is None:
                self.client.delete_object(Bucket=self.bucket, Key=key)
                return
            listed = self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
            for entry in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]:
                if entry["Key"] == key:
                    self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=entry["VersionId"])

    def retained_until(self, key: str) -> float | None:
        """When the Object Lock retention of ``key`` ends (epoch seconds); None: not locked."""
        import botocore.exceptions
        with s3_errors(self.name, key, "reading the retention of"):
            try:
                got = self.client.get_object_retention(Bucket=self.bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchObjectLockConfiguration",
                                                                  "ObjectLockConfigurationNotFoundError"):
                    return None
                raise
        until = got.get("Retention", {}).get("RetainUntilDate")
        return until.timestamp() if until is not None else None

    def check_bucket(self) -> None:
        """Fail early, with the bucket's name, when it is missing or not ours to use."""
        with s3_errors(self.name, self.url(), "opening bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    # -- multipart -------------------------------------------------------------------

    def create_upload(self, key: str, storage_class: str, metadata: dict[str, str],
                      checksum: str) -> str:
        extra: dict[str, Any] = {}
        if checksum == "sha256":
            extra["ChecksumAlgorithm"] = "SHA256"
        with s3_errors(self.name, key, "starting upload of"):
            r = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, StorageClass=storage_class,
                                                    Metadata=metadata,
                                                    ContentType="application/octet-stream", **extra,
                                                    **self.lock_arguments())
        return str(r["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, body: bytes | bytearray,
                    checksum: str) -> dict[str, Any]:
        """Upload one part with its checksum; returns the part entry for CompleteMultipartUpload."""
        extra: dict[str, Any] = {}
        entry: dict[str, Any] = {"PartNumber": number}
        if checksum == "md5":
            extra["ContentMD5"] = b64(hashlib.md5(body).digest())
        elif checksum == "sha256":
            digest = b64(hashlib.sha256(body).digest())
            extra["ChecksumAlgorithm"] = "SHA256"
            extra["ChecksumSHA256"] = digest
            entry["ChecksumSHA256"] = digest
        with s3_errors(self.name, key, f"uploading part {number} of"):
            r = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                        Body=body, **extra)
        entry["ETag"] = r["ETag"]
        return entry

    def complete_upload(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        with s3_errors(self.name, key, "completing upload of"):
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": sorted(parts, key=lambda p: p["PartNumber"])})

    def abort_upload(self, key: str, upload_id: str) -> None:
        with s3_errors(self.name, key, "aborting upload of"):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def list_uploads(self, prefix: str) -> list[Upload]:
        out: list[Upload] = []
        with s3_errors(self.name, self.url(prefix), "listing uploads under"):
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for u in page.get("Uploads", []) or []:
                    initiated = u.get("Initiated")
                    out.append(Upload(u["Key"], u["UploadId"], initiated.timestamp() if initiated else 0.0))
        return out

    def list_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        """What an unfinished upload holds (zrelay.s3.resume): number, size, ETag, SHA-256."""
        out: list[StoredPart] = []
        with s3_errors(self.name, key, "listing the parts of"):
            paginator = self.client.get_paginator("list_parts")
            for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                out.extend(stored_part(p) for p in page.get("Parts", []) or [])
        return out

    # -- reading ------------------------------------------------------------------------

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` … ``end - 1`` of ``key``; a body that breaks off is read again."""
        want = end - start
        for attempt in range(1, GET_ATTEMPTS + 1):
            try:
                with s3_errors(self.name, key, "reading"):
                    r = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
                    data = bytes(r["Body"].read())
            except S3Unreachable:
                if attempt == GET_ATTEMPTS:
                    raise
                time.sleep(0.5 * attempt)
                continue
            if len(data) == want:
                return data
            if attempt == GET_ATTEMPTS:
                raise S3Error(self.name, f"{key}: range {start}-{end - 1} returned {len(data)} of {want} bytes", key)
        raise AssertionError("unreachable")

    def restore_object(self, key: str, days: int, tier: str) -> str:
        """Ask for a readable copy of an archived object; returns "started" or "in-progress"."""
        try:
            with s3_errors(self.name, key, "restoring"):
                self.client.restore_object(Bucket=self.bucket, Key=key,
                                           RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}})
        except S3Error as exc:
            if "RestoreAlreadyInProgress" in str(exc):
                return "in-progress"
            raise
        return "started"
