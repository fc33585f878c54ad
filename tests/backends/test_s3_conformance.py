"""The backend conformance suite (tests/unit/backends/test_conformance.py, the same test functions) run
against S3Backend over real HTTP to a moto server, plus what only the S3 backend has: multipart uploads,
versions, Object Lock retention (read back with HeadObject), legal holds and error mapping."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator

import pytest

from strongroom.backends.base import Backend, BackendAccessDenied, ObjectMissing, TransientBackendError
from strongroom.backends.registry import open_location, parse_s3, redact
from strongroom.backends.s3 import Lock, S3Backend, expected_etag
from strongroom.errors import InputError
from tests.s3server import MakeBucket, raw_client
from tests.unit.backends.test_conformance import (  # noqa: F401  (collected here, with the S3 fixtures below)
    Inject,
    test_bad_names_refused_on_every_operation,
    test_delete,
    test_describe_is_safe_to_log,
    test_get_missing,
    test_get_range,
    test_large_object,
    test_list_sees_deletes_and_replacements,
    test_list_skips_junk_and_temp_files,
    test_list_under_a_prefix,
    test_put_accepts_memoryview_and_empty,
    test_put_exclusive,
    test_put_get,
    test_put_replaces,
)


@pytest.fixture
def store(moto_endpoint: str, make_bucket: MakeBucket) -> Iterator[tuple[Backend, Inject]]:
    bucket = make_bucket(lock=False, versioning=True)
    backend = S3Backend(bucket, "team/repo1", endpoint_url=moto_endpoint, region="us-east-1")
    client = raw_client(moto_endpoint)

    def inject(name: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        # The server itself may refuse such a key (a newline in it): then it cannot show up in a listing.
        with contextlib.suppress(ClientError):
            client.put_object(Bucket=bucket, Key=backend.prefix + name, Body=data)

    yield backend, inject


@pytest.fixture
def backend(store: tuple[Backend, Inject]) -> Backend:
    return store[0]


@pytest.fixture
def locked(moto_endpoint: str, make_bucket: MakeBucket) -> S3Backend:
    return S3Backend(make_bucket(lock=True), "p", endpoint_url=moto_endpoint, region="us-east-1",
                     part_size=5 << 20, multipart_threshold=5 << 20)


def _until(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=days)


def test_multipart_upload_with_lock_and_etag(locked: S3Backend) -> None:
    data = os.urandom(11 << 20)
    vid = locked.put_object("data/ab/big", data, Lock("GOVERNANCE", _until(2)))
    assert vid
    head = locked.head("data/ab/big", vid)
    assert head.size == len(data) and head.etag == expected_etag(data, 5 << 20, 5 << 20)
    assert head.lock_mode == "GOVERNANCE" and head.retain_until is not None and head.retain_until >= _until(1.9)
    assert locked.get_version("data/ab/big", vid) == data
    assert locked.get_range("data/ab/big", (5 << 20) - 3, 6, vid) == data[(5 << 20) - 3 : (5 << 20) + 3]


def test_versions_survive_overwrite_and_delete_marker(locked: S3Backend) -> None:
    v1 = locked.put_object("refs", b"good", Lock("COMPLIANCE", _until(1)))
    assert v1 is not None
    locked.put("refs", b"garbage")
    locked.delete("refs")
    assert locked.size("refs") is None
    assert locked.get_version("refs", v1) == b"good"
    versions = list(locked.versions("refs"))
    assert {v.version_id for v in versions} >= {v1} and len(versions) == 2
    with pytest.raises(BackendAccessDenied):
        locked.delete_version("refs", v1)
    assert locked.get_version("refs", v1) == b"good"


def test_retention_is_extended_never_shortened(locked: S3Backend) -> None:
    vid = locked.put_object("index/x", b"i", Lock("GOVERNANCE", _until(10)))
    assert locked.extend_retention("index/x", vid, Lock("GOVERNANCE", _until(3))) >= _until(9.9)
    head = locked.head("index/x", vid)
    assert head.retain_until is not None and head.retain_until >= _until(9.9)
    locked.extend_retention("index/x", vid, Lock("GOVERNANCE", _until(20)))
    head = locked.head("index/x", vid)
    assert head.retain_until is not None and head.retain_until >= _until(19.9)


def test_legal_hold(locked: S3Backend) -> None:
    vid = locked.put_object("keys/k", b"k", Lock("GOVERNANCE", _until(1)))
    locked.set_legal_hold("keys/k", vid, True)
    assert locked.head("keys/k", vid).legal_hold
    locked.set_legal_hold("keys/k", vid, False)
    assert not locked.head("keys/k", vid).legal_hold


def test_bucket_status(moto_endpoint: str, make_bucket: MakeBucket) -> None:
    plain = S3Backend(make_bucket(lock=False, versioning=False), endpoint_url=moto_endpoint).status()
    assert plain.missing(need_lock=True) == ["versioning is not enabled", "Object Lock is not enabled"]
    versioned = S3Backend(make_bucket(lock=False), endpoint_url=moto_endpoint).status()
    assert versioned.missing(need_lock=False) == [] and versioned.missing(need_lock=True)
    lockb = S3Backend(make_bucket(lock=True, default_days=1), endpoint_url=moto_endpoint).status()
    assert lockb.missing(need_lock=True) == [] and lockb.default_retention == "GOVERNANCE 1 days"


def test_missing_version_and_bucket(locked: S3Backend, moto_endpoint: str) -> None:
    with pytest.raises(ObjectMissing):
        locked.get_version("refs", "no-such-version")
    nobucket = S3Backend("sr-no-such-bucket", endpoint_url=moto_endpoint)
    with pytest.raises(ObjectMissing):
        nobucket.get("refs")


def test_unreachable_endpoint_is_transient(s3_env: dict[str, str]) -> None:
    b = S3Backend("bucket", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    b._config = b._config.merge(__import__("botocore.config").config.Config(retries={"max_attempts": 1},
                                                                           connect_timeout=1))
    with pytest.raises(TransientBackendError):
        b.get("refs")


def test_describe_has_no_secrets(backend: Backend) -> None:
    assert "testing" not in backend.describe() and backend.describe().startswith("s3://")


def test_registry_and_redact(moto_endpoint: str) -> None:
    assert redact("s3://key:secret@bkt/p?X-Amz-Signature=abc") == "s3://bkt/p"
    assert redact("/srv/repo") == "/srv/repo"
    assert parse_s3("s3://my-bucket/team/a").prefix == "team/a"
    for bad in ("s3://AB/x", "s3://bk", "s3://user:pw@bucket/x", "s3://bucket/../x", "s3://bucket/x?y=1"):
        with pytest.raises(InputError) as e:
            parse_s3(bad)
        assert "pw" not in str(e.value)
    b = open_location("s3://my-bucket/team", endpoint=moto_endpoint)
    assert isinstance(b, S3Backend) and b.prefix == "team/"
    with pytest.raises(InputError):
        open_location("ftp://host/x")
