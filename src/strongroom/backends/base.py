"""The backend port: a store of opaque, named, immutable-once-written blobs.

Backends know nothing of chunks, keys or packs. Names are validated here, on the way in and on the way
out ("no crap in, no crap out"): relative, lowercase ASCII, no ``..``, no temp suffixes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

from strongroom.errors import IntegrityError, StrongroomError

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")


class BackendError(StrongroomError):
    """The storage failed (a full disk, a device error, a server down after retries): the command found a
    problem, exit 1, and nothing published refers to what could not be written. Not a bug."""

    exit_code = 1
    http_status = 503
    template = "storage error: {}"


class StorageFull(BackendError):
    """No space left (or the quota reached) where the repository lives."""


class TransientBackendError(BackendError):
    """May succeed if tried again (a dropped connection, a busy server)."""


class BackendAccessDenied(BackendError):
    """The store refused the request: bad credentials, a missing permission, or an Object Lock."""

    template = "storage refused: {}"


class ObjectMissing(IntegrityError):
    template = "missing from storage: {}"


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name or ".tmp" in name or len(name) > 512:
        raise ValueError(f"invalid object name: {name!r}")
    return name


class Backend(Protocol):
    def put(self, name: str, data: bytes | memoryview) -> None:
        """Store durably and atomically: readers see all of it or nothing."""

    def put_exclusive(self, name: str, data: bytes) -> bool:
        """Create only if absent; False when it already exists."""

    def get(self, name: str) -> bytes: ...

    def get_range(self, name: str, offset: int, length: int) -> bytes: ...

    def size(self, name: str) -> int | None:
        """Size in bytes, or None when absent."""

    def delete(self, name: str) -> None: ...

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(name, size) of every object under prefix (a folder name such as ``data``)."""

    def folder_stamps(self, prefix: str) -> dict[str, int] | None:
        """The modification time (ns) of each folder directly under prefix, by name: while a folder's stamp
        is unchanged, so are the names in it. None where the store has no such stamps (then list it all)."""

    def describe(self) -> str:
        """Where this is, with any secret removed: safe for logs and errors."""
