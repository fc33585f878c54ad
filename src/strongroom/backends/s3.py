"""An S3 bucket (AWS S3, MinIO, Ceph RGW) behind the backend port, plus what only S3 has: versions,
Object Lock retention and legal holds. The only module of strongroom that imports boto3.

Credentials come from boto3's standard chain (environment, shared profile, instance role); nothing here
stores or prints them. Every upload carries Content-MD5 (buckets with Object Lock refuse uploads without
an integrity header), and boto3's own checksum behaviour is pinned to "when_required" so that MinIO and
Ceph, which reject some of the newer default checksum headers, accept the requests too.

Errors: a missing key or version is ``ObjectMissing``; throttling, 5xx answers and dropped connections are
``TransientBackendError`` (after botocore's own retries); anything else is ``BackendError``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from strongroom.backends.base import (
    BackendAccessDenied,
    BackendError,
    ObjectMissing,
    TransientBackendError,
    validate_name,
)
from strongroom.backends.registry import redact

MULTIPART_THRESHOLD = 16 << 20
PART_SIZE = 8 << 20
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
_MISSING = {"NoSuchKey", "404", "NoSuchVersion", "NotFound"}
_TRANSIENT = {
    "SlowDown",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "RequestTimeTooSkewed",
    "500",
    "502",
    "503",
    "504",
}
_CONNECTION = (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError)
_SESSIONS: dict[tuple[int, str | None], Any] = {}
_SESSION_LOCK = threading.Lock()


def _new_client(profile: str | None = None, **kwargs: Any) -> Any:
    """Clients come from one boto3 session per process and profile (loading the service model once, not per
    client); sessions are not thread-safe, so clients are made under a lock. A named profile takes its
    credentials from the shared AWS config and credentials files only (boto3 then ignores the
    AWS_ACCESS_KEY_ID environment variables), so each role of a remote gets its own credential."""
    with _SESSION_LOCK:
        session = _SESSIONS.get((os.getpid(), profile))
        if session is None:
            session = boto3.session.Session(profile_name=profile)
            for key in [k for k in _SESSIONS if k[0] != os.getpid()]:
                del _SESSIONS[key]
            _SESSIONS[(os.getpid(), profile)] = session
        return session.client("s3", **kwargs)


def forget_sessions() -> None:
    """Drop the cached sessions (and the credentials they resolved): a long-lived process (the agent) runs
    each command with that command's environment, so one command's AWS credentials must not serve the next."""
    with _SESSION_LOCK:
        _SESSIONS.clear()


def md5_b64(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def expected_etag(data: bytes | memoryview, part_size: int = PART_SIZE, threshold: int = MULTIPART_THRESHOLD) -> str:
    """The ETag S3 gives an object of these bytes when this module uploads it (no SSE-KMS): the MD5, or for
    a multipart upload the MD5 of the parts' MD5s and the part count."""
    view = memoryview(data)
    if len(view) < threshold:
        return hashlib.md5(view, usedforsecurity=False).hexdigest()
    digests = [
        hashlib.md5(view[i : i + part_size], usedforsecurity=False).digest() for i in range(0, len(view), part_size)
    ]
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


@dataclass(frozen=True)
class Lock:
    """Object Lock retention to put on an object version."""

    mode: str  # GOVERNANCE or COMPLIANCE
    until: dt.datetime

    def __post_init__(self) -> None:
        if self.mode not in LOCK_MODES:
            raise ValueError(f"lock mode must be one of {LOCK_MODES}")
        if self.until.tzinfo is None:
            raise ValueError("retain-until must be timezone-aware")


@dataclass(frozen=True)
class Head:
    size: int
    version_id: str | None
    etag: str
    lock_mode: str | None
    retain_until: dt.datetime | None
    legal_hold: bool


@dataclass(frozen=True)
class Version:
    name: str
    version_id: str
    size: int
    etag: str
    latest: bool
    modified: dt.datetime


@dataclass(frozen=True)
class BucketStatus:
    versioning: str  # "Enabled", "Suspended" or "" (never enabled)
    object_lock: bool
    default_retention: str | None  # "COMPLIANCE 1 days", for example

    def missing(self, need_lock: bool) -> list[str]:
        out = []
        if self.versioning != "Enabled":
            out.append(f"versioning is {'suspended' if self.versioning else 'not enabled'}")
        if need_lock and not self.object_lock:
            out.append("Object Lock is not enabled")
        return out


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _status(err: ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


class S3Backend:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        part_size: int = PART_SIZE,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        max_connections: int = 16,
        profile: str | None = None,
        max_attempts: int = 5,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 bucket name is required")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self.profile = profile
        self.part_size = part_size
        self.multipart_threshold = max(multipart_threshold, part_size)
        self._config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=max_connections,
        )
        self._clients: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Backend({self.describe()!r})"

    @property
    def location(self) -> str:
        """``s3://BUCKET/PREFIX`` (``s3://BUCKET`` for the whole bucket)."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def describe(self) -> str:
        """The location and endpoint, never the user info of an endpoint URL."""
        return f"{self.location} at {redact(self.endpoint_url)}" if self.endpoint_url else self.location

    # ------------------------------------------------------------------ plumbing

    def _client(self) -> Any:
        """One client per process: a client must not cross a fork (its connection pool would be shared)."""
        pid = os.getpid()
        client = self._clients.get(pid)
        if client is None:
            with self._lock:
                client = self._clients.get(pid)
                if client is None:
                    try:
                        client = _new_client(
                            self.profile, endpoint_url=self.endpoint_url, region_name=self.region, config=self._config
                        )
                    except ValueError:  # botocore: "Invalid endpoint: <URL>", or a region name it refuses
                        raise BackendError(
                            f"invalid S3 endpoint or region: endpoint {redact(self.endpoint_url or '(default)')}, "
                            f"region {self.region!r}"
                        ) from None
                    self._clients = {pid: client}
        return client

    def key(self, name: str) -> str:
        return self.prefix + validate_name(name)

    def _error(self, err: Exception, what: str) -> BackendError | ObjectMissing:
        where = f"{what} (s3://{self.bucket})"
        if isinstance(err, ClientError):
            code, status = _code(err), _status(err)
            message = err.response.get("Error", {}).get("Message") or code
            if code in _MISSING or status == 404:
                return ObjectMissing(what)
            if code in _TRANSIENT or status >= 500 or status == 429:
                return TransientBackendError(f"{where}: {code} (HTTP {status})")
            if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return BackendAccessDenied(f"{where}: {code}: {message}")
            return BackendError(f"{where}: {code}: {message}")
        if isinstance(err, _CONNECTION):
            return TransientBackendError(f"{where}: connection failed: {type(err).__name__}")
        if isinstance(err, NoCredentialsError | PartialCredentialsError):
            return BackendAccessDenied(f"{where}: no S3 credentials found (environment, profile or role)")
        if isinstance(err, ProfileNotFound):
            return BackendAccessDenied(f"{where}: the AWS profile {self.profile!r} is not configured")
        text = str(err)
        if self.endpoint_url:  # botocore names the endpoint as given in some messages
            text = text.replace(self.endpoint_url, redact(self.endpoint_url))
        return BackendError(f"{where}: {type(err).__name__}: {text}")

    def _call(self, op: str, what: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client(), op)(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as err:
            raise self._error(err, what) from None

    @staticmethod
    def _lock_args(lock: Lock | None) -> dict[str, Any]:
        if lock is None:
            return {}
        return {"ObjectLockMode": lock.mode, "ObjectLockRetainUntilDate": lock.until}

    # ------------------------------------------------------------------ the Backend port

    def put(self, name: str, data: bytes | memoryview) -> None:
        self.put_object(name, data)

    def put_object(self, name: str, data: bytes | memoryview, lock: Lock | None = None) -> str | None:
        """Upload (multipart when large) with Content-MD5 on every request; return the new version id."""
        return self.put_object_counted(name, data, lock)[0]

    def put_object_counted(
        self, name: str, data: bytes | memoryview, lock: Lock | None = None
    ) -> tuple[str | None, int]:
        """As put_object; also return the body bytes this call sent (less than the object's size when it
        finished a multipart upload that an interrupted push had begun)."""
        key = self.key(name)
        view = memoryview(data)
        if len(view) >= self.multipart_threshold:
            return self._put_multipart(name, key, view, lock)
        body = bytes(view)
        r = self._call("put_object", name, Key=key, Body=body, ContentMD5=md5_b64(body), **self._lock_args(lock))
        version_id = r.get("VersionId")
        return (str(version_id) if version_id else None), len(body)

    def _unfinished(self, name: str, key: str, view: memoryview) -> tuple[str | None, dict[int, str]]:
        """An incomplete multipart upload of this key whose uploaded parts all match these bytes (same part
        size, same MD5s): its id and the ETags of its parts. (None, {}) when there is none."""
        try:
            uploads = self._call("list_multipart_uploads", name, Prefix=key).get("Uploads", [])
        except BackendAccessDenied:
            return None, {}  # a credential without s3:ListBucketMultipartUploads: start afresh
        for up in sorted((u for u in uploads if u.get("Key") == key), key=lambda u: u["Initiated"], reverse=True):
            try:
                listed = self._call("list_parts", name, Key=key, UploadId=up["UploadId"]).get("Parts", [])
            except ObjectMissing:
                continue  # completed or aborted meanwhile
            done: dict[int, str] = {}
            for p in listed:
                number, etag, size = int(p["PartNumber"]), str(p["ETag"]).strip('"'), int(p["Size"])
                start = (number - 1) * self.part_size
                chunk = view[start : start + self.part_size]
                if len(chunk) != size or hashlib.md5(chunk, usedforsecurity=False).hexdigest() != etag:
                    break
                done[number] = etag
            else:
                return str(up["UploadId"]), done
        return None, {}

    def _put_multipart(self, name: str, key: str, view: memoryview, lock: Lock | None) -> tuple[str | None, int]:
        """Multipart upload that resumes an interrupted one of the same bytes (only the missing parts are
        sent). A failed upload is left for the next attempt to resume; a lifecycle rule
        (AbortIncompleteMultipartUpload) removes those never resumed."""
        upload_id, done_parts = self._unfinished(name, key, view)
        if upload_id is None:
            upload_id = self._call("create_multipart_upload", name, Key=key, **self._lock_args(lock))["UploadId"]
        parts = []
        sent = 0
        for number, start in enumerate(range(0, len(view), self.part_size), 1):
            if number in done_parts:
                parts.append({"PartNumber": number, "ETag": f'"{done_parts[number]}"'})
                continue
            body = bytes(view[start : start + self.part_size])
            r = self._call(
                "upload_part", name, Key=key, UploadId=upload_id, PartNumber=number, Body=body, ContentMD5=md5_b64(body)
            )
            sent += len(body)
            parts.append({"PartNumber": number, "ETag": r["ETag"]})
        done = self._call(
            "complete_multipart_upload", name, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        version_id: str | None = done.get("VersionId")
        if lock is not None:
            # Some servers ignore lock headers on multipart uploads, and a resumed upload carries the lock of
            # the push that began it: check, and raise the retention when it falls short.
            head = self.head(name, version_id)
            if head.lock_mode is None or head.retain_until is None or head.retain_until < lock.until:
                self.extend_retention(name, version_id, lock)
        return version_id, sent

    def put_exclusive(self, name: str, data: bytes) -> bool:
        """Create only if absent, with ``If-None-Match: *`` (AWS since 2024, MinIO, recent Ceph). A server
        that ignores the header would make this a plain put: do not use such a server for locks."""
        try:
            self._client().put_object(
                Bucket=self.bucket, Key=self.key(name), Body=bytes(data), ContentMD5=md5_b64(data), IfNoneMatch="*"
            )
        except ClientError as err:
            if _code(err) in ("PreconditionFailed", "ConditionalRequestConflict") or _status(err) == 412:
                return False
            raise self._error(err, name) from None
        except BotoCoreError as err:
            raise self._error(err, name) from None
        return True

    def get(self, name: str) -> bytes:
        r = self._call("get_object", name, Key=self.key(name))
        return self._read_body(r, name)

    def get_current(self, name: str) -> tuple[bytes, str]:
        """The current version's bytes and version id (ObjectMissing when absent or under a delete marker)."""
        r = self._call("get_object", name, Key=self.key(name))
        return self._read_body(r, name), str(r.get("VersionId") or "null")

    def get_version(self, name: str, version_id: str) -> bytes:
        """Exactly this version, whatever versions or delete markers came after it."""
        r = self._call("get_object", name, Key=self.key(name), VersionId=version_id)
        return self._read_body(r, name)

    def get_range(self, name: str, offset: int, length: int, version_id: str | None = None) -> bytes:
        extra = {"VersionId": version_id} if version_id else {}
        if length <= 0:
            self.head(name, version_id)  # raises ObjectMissing when absent
            return b""
        try:
            r = self._client().get_object(
                Bucket=self.bucket, Key=self.key(name), Range=f"bytes={offset}-{offset + length - 1}", **extra
            )
        except ClientError as err:
            if _code(err) == "InvalidRange" or _status(err) == 416:
                return b""  # past the end: as a file read there
            raise self._error(err, name) from None
        except BotoCoreError as err:
            raise self._error(err, name) from None
        return self._read_body(r, name)[:length]

    def _read_body(self, response: dict[str, Any], name: str) -> bytes:
        try:
            return bytes(response["Body"].read())
        except (BotoCoreError, OSError) as err:
            raise TransientBackendError(f"{name} (s3://{self.bucket}): read failed: {type(err).__name__}") from None

    def size(self, name: str) -> int | None:
        try:
            return self.head(name).size
        except ObjectMissing:
            return None

    def delete(self, name: str) -> None:
        """In a versioned bucket this adds a delete marker; the versions stay."""
        self._call("delete_object", name, Key=self.key(name))

    def folder_stamps(self, prefix: str) -> dict[str, int] | None:
        return None  # a bucket has no folders

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        folder = self.prefix + prefix.strip("/") + "/" if prefix.strip("/") else self.prefix
        try:
            pages = self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder)
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix) :]
                    try:
                        validate_name(name)
                    except ValueError:
                        continue  # no crap out
                    yield name, int(obj["Size"])
        except (ClientError, BotoCoreError) as err:
            raise self._error(err, f"list {prefix}") from None

    # ------------------------------------------------------------------ S3 only

    def status(self) -> BucketStatus:
        """Versioning and Object Lock state of the bucket (raises BackendError when it cannot be read)."""
        v = self._call("get_bucket_versioning", "bucket versioning")
        try:
            cfg = self._client().get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
        except ClientError as err:
            if _code(err) != "ObjectLockConfigurationNotFoundError":
                raise self._error(err, "bucket Object Lock configuration") from None
            cfg = {}
        except BotoCoreError as err:
            raise self._error(err, "bucket Object Lock configuration") from None
        rule = cfg.get("Rule", {}).get("DefaultRetention")
        default = None
        if rule:
            n, unit = (rule["Days"], "days") if "Days" in rule else (rule.get("Years"), "years")
            default = f"{rule.get('Mode')} {n} {unit}"
        return BucketStatus(str(v.get("Status", "")), cfg.get("ObjectLockEnabled") == "Enabled", default)

    def head(self, name: str, version_id: str | None = None) -> Head:
        """Size, ETag and Object Lock state (read here: some servers cannot answer GetObjectRetention)."""
        extra = {"VersionId": version_id} if version_id else {}
        r = self._call("head_object", name, Key=self.key(name), **extra)
        until = r.get("ObjectLockRetainUntilDate")
        return Head(
            size=int(r["ContentLength"]),
            version_id=r.get("VersionId"),
            etag=str(r.get("ETag", "")).strip('"'),
            lock_mode=r.get("ObjectLockMode"),
            retain_until=until.astimezone(dt.UTC) if until else None,
            legal_hold=r.get("ObjectLockLegalHoldStatus") == "ON",
        )

    def extend_retention(self, name: str, version_id: str | None, lock: Lock) -> dt.datetime:
        """Raise a version's retain-until date to ``lock.until``; never shortens it (a later date stays)."""
        head = self.head(name, version_id)
        if head.retain_until is not None and head.retain_until >= lock.until:
            return head.retain_until
        mode = head.lock_mode or lock.mode
        extra = {"VersionId": version_id} if version_id else {}
        self._call(
            "put_object_retention",
            name,
            Key=self.key(name),
            Retention={"Mode": mode, "RetainUntilDate": lock.until},
            **extra,
        )
        return lock.until

    def set_legal_hold(self, name: str, version_id: str | None, on: bool) -> None:
        extra = {"VersionId": version_id} if version_id else {}
        self._call(
            "put_object_legal_hold", name, Key=self.key(name), LegalHold={"Status": "ON" if on else "OFF"}, **extra
        )

    def delete_version(self, name: str, version_id: str) -> None:
        """Delete one version (refused by the server while it is locked)."""
        self._call("delete_object", name, Key=self.key(name), VersionId=version_id)

    def folders(self, prefix: str) -> Iterator[str]:
        """The folders directly below ``prefix`` (which ends with ``/``), as names relative to the store's
        prefix ending with ``/``: one listing of versions with S3's delimiter, so no key below them is listed."""
        try:
            pages = (
                self._client()
                .get_paginator("list_object_versions")
                .paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, Delimiter="/")
            )
            for page in pages:
                for p in page.get("CommonPrefixes", []):
                    yield str(p["Prefix"])[len(self.prefix) :]
        except (ClientError, BotoCoreError) as err:
            raise self._error(err, f"list folders {prefix}") from None

    def versions(self, prefix: str = "", *, top: bool = False) -> Iterator[Version]:
        """Every version (not delete markers) of every key under ``prefix`` (a folder or an exact name).
        ``top``: only the keys at the top of ``prefix``, none below a further ``/`` (S3's delimiter)."""
        extra = {"Delimiter": "/"} if top else {}
        try:
            pages = (
                self._client()
                .get_paginator("list_object_versions")
                .paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, **extra)
            )
            for page in pages:
                for v in page.get("Versions", []):
                    name = v["Key"][len(self.prefix) :]
                    try:
                        validate_name(name)
                    except ValueError:
                        continue
                    yield Version(
                        name,
                        str(v.get("VersionId") or "null"),
                        int(v["Size"]),
                        str(v.get("ETag", "")).strip('"'),
                        bool(v.get("IsLatest")),
                        v["LastModified"].astimezone(dt.UTC),
                    )
        except (ClientError, BotoCoreError) as err:
            raise self._error(err, f"list versions {prefix}") from None
