"""Branches and tags (``sr-refs/1``): one sealed file, replaced atomically under the publish lock.

Every update raises ``generation`` by one, so a client that remembers the last generation it saw can tell a
repository that was rolled back to an older copy (store.clientstate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from strongroom.core.codec import dumps_canonical, loads_record
from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import Sealer
from strongroom.crypto.idhash import sha256_hex
from strongroom.errors import IntegrityError

REFS_NAME = "refs"


@dataclass
class Refs:
    generation: int = 0
    branches: dict[str, bytes] = field(default_factory=dict)
    tags: dict[str, bytes] = field(default_factory=dict)

    def encode(self) -> bytes:
        return dumps_canonical(
            {
                "format": "sr-refs/1",
                "generation": self.generation,
                "branches": {k: v.hex() for k, v in sorted(self.branches.items())},
                "tags": {k: v.hex() for k, v in sorted(self.tags.items())},
            }
        )

    def digest(self) -> str:
        return sha256_hex(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Refs:
        obj = loads_record(data, "refs")
        try:
            if obj["format"] != "sr-refs/1":
                raise IntegrityError("unsupported refs format")
            return cls(
                int(obj["generation"]),
                {k: bytes.fromhex(v) for k, v in obj["branches"].items()},
                {k: bytes.fromhex(v) for k, v in obj["tags"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            raise IntegrityError("refs are malformed") from None

    def heads(self) -> list[bytes]:
        return list(dict.fromkeys([*self.branches.values(), *self.tags.values()]))


def seal_refs(sealer: Sealer, repo_ctx: bytes, refs: Refs) -> bytes:
    return sealer.seal(refs.encode(), ObjectKind.REFS, repo_ctx)


def open_refs(sealer: Sealer, repo_ctx: bytes, data: bytes) -> Refs:
    return Refs.decode(sealer.open(data, ObjectKind.REFS, repo_ctx))
