"""A moto S3 server over real HTTP on 127.0.0.1 (a random free port), one per test process, and factory
fixtures for buckets with versioning and Object Lock. Nothing in strongroom knows it is moto.

Use from a conftest or test module: ``from tests.s3server import moto_endpoint, s3_env, make_bucket``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_counter = itertools.count()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # it logs every request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> dict[str, str]:
    """Test credentials through boto3's standard chain (the environment); no profile files are read."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    env = dict(CREDENTIALS, AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"), AWS_EC2_METADATA_DISABLED="true")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


_raw: dict[str, Any] = {}


def raw_client(endpoint: str) -> Any:
    """A plain boto3 client (the attacker's, or the test's own hands on the bucket)."""
    if endpoint in _raw:
        return _raw[endpoint]
    import boto3
    from botocore.config import Config

    _raw[endpoint] = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(request_checksum_calculation="when_required", response_checksum_validation="when_required"))
    return _raw[endpoint]


MakeBucket = Callable[..., str]


@pytest.fixture
def make_bucket(moto_endpoint: str, s3_env: dict[str, str]) -> MakeBucket:
    """make_bucket(versioning=True, lock=True, default_days=None) → a fresh bucket's name."""
    client = raw_client(moto_endpoint)

    def make(versioning: bool = True, lock: bool = True, default_days: int | None = None) -> str:
        name = f"sr-test-{os.getpid()}-{next(_counter)}"
        if lock:
            client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
            if default_days:
                client.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": default_days}}})
        else:
            client.create_bucket(Bucket=name)
            if versioning:
                client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    return make
