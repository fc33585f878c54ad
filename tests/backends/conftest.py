"""moto S3 server fixtures for the backend tests (see tests/s3server.py)."""

from tests.s3server import make_bucket, moto_endpoint, s3_env

__all__ = ["make_bucket", "moto_endpoint", "s3_env"]
