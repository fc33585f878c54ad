"""Location strings to backends (restic's location registry): ``s3://BUCKET/PREFIX`` or a folder path.

``redact(url)`` strips anything secret-looking (user info, query strings) before a location reaches a log,
an error or a settings file. Credentials never travel in locations: S3 takes them from boto3's chain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from strongroom.backends.base import Backend
from strongroom.errors import InputError

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def redact(url: str) -> str:
    """``url`` without user info (``KEY:SECRET@``), query or fragment, for errors, logs and reprs. Plain string
    work, so it never raises and keeps what it does not understand (an IPv6 host in brackets, a bad port)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not shown: it holds '@')" if "@" in url else url
    rest = rest.rpartition("@")[2]  # whatever stood before the last '@' (a password may hold '/' or '#')
    return f"{scheme}://{rest.split('?', 1)[0].split('#', 1)[0]}"


def parse_s3(url: str) -> S3Location:
    parts = urlsplit(url)
    if parts.scheme != "s3" or parts.query or parts.fragment or "@" in parts.netloc:
        raise InputError(f"not an S3 location (s3://BUCKET/PREFIX, no credentials in it): {redact(url)}")
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InputError(f"invalid S3 bucket name {bucket!r} in {redact(url)}")
    if prefix and (not _PREFIX.fullmatch(prefix) or ".." in prefix):
        raise InputError(f"invalid S3 prefix {prefix!r}: lowercase letters, digits, '.', '_', '-' and '/'")
    return S3Location(bucket, prefix)


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def open_location(url: str, *, endpoint: str | None = None, region: str | None = None) -> Backend:
    """A backend for ``url``: an S3 bucket and prefix, or a local folder."""
    if is_s3(url):
        from strongroom.backends.s3 import S3Backend

        loc = parse_s3(url)
        return S3Backend(loc.bucket, loc.prefix, endpoint_url=endpoint, region=region)
    if "://" in url:
        raise InputError(f"unsupported location {redact(url)}: use s3://BUCKET/PREFIX or a folder path")
    from strongroom.backends.local import LocalBackend

    return LocalBackend(url)
