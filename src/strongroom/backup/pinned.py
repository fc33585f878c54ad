"""A read-only backend over exactly the object versions a manifest names.

Opening a ``Repository`` over it reads the backup as it was pushed, whatever came later: a full ``get``
also checks the bytes against the manifest's SHA-256, so a damaged object is reported by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from strongroom.backends.base import BackendError, ObjectMissing, validate_name
from strongroom.backends.s3 import S3Backend
from strongroom.backup.manifest import Manifest
from strongroom.errors import IntegrityError


class PinnedBackend:
    def __init__(self, s3: S3Backend, manifest: Manifest) -> None:
        self.s3 = s3
        self.manifest = manifest

    def describe(self) -> str:
        return f"{self.s3.describe()} (manifest of {self.manifest.created_ns})"

    def _entry(self, name: str) -> tuple[str, str]:
        e = self.manifest.entries.get(validate_name(name))
        if e is None:
            raise ObjectMissing(name)
        return e.version_id, e.sha256

    def get(self, name: str) -> bytes:
        vid, sha = self._entry(name)
        data = self.s3.get_version(name, vid)
        if hashlib.sha256(data).hexdigest() != sha:
            raise IntegrityError(f"{name}: the backup copy does not match the manifest's hash")
        return data

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        vid, _ = self._entry(name)
        return self.s3.get_range(name, offset, length, vid)

    def size(self, name: str) -> int | None:
        e = self.manifest.entries.get(validate_name(name))
        return None if e is None else e.size

    def folder_stamps(self, prefix: str) -> dict[str, int] | None:
        return None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        folder = prefix.strip("/") + "/"
        for name in sorted(self.manifest.entries):
            if name.startswith(folder):
                yield name, self.manifest.entries[name].size

    def put(self, name: str, data: bytes | memoryview) -> None:
        raise BackendError(f"{name}: a backup is read-only")

    def put_exclusive(self, name: str, data: bytes) -> bool:
        raise BackendError(f"{name}: a backup is read-only")

    def delete(self, name: str) -> None:
        raise BackendError(f"{name}: a backup is read-only")
