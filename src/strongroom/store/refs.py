"""Branches and tags: one file, replaced atomically under the publish lock.

Every update raises ``generation`` by one, so a client that remembers the last generation it saw can tell a
repository that was rolled back to an older copy (store.clientstate). The file (``sr-refs/2``) lists the
repository's index files in plaintext before the sealed ``sr-refs/1`` record (store.listing), so a check
without the key finds a missing index file; earlier builds wrote the bare frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from strongroom.core.codec import dumps_canonical, loads_record
from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import Sealer
from strongroom.crypto.idhash import sha256_hex
from strongroom.errors import IntegrityError
from strongroom.store import listing

REFS_NAME = "refs"
MAGIC = b"sr-refs/2\n"


@dataclass(frozen=True)
class Protection:
    """A protected branch takes new versions only by merge, and only when every check command passes."""

    require_signed: bool = False
    checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class RefChange:
    time_ns: int
    ref: str  # "branch:NAME" or "tag:NAME"
    old: bytes | None
    new: bytes | None


@dataclass
class Refs:
    generation: int = 0
    branches: dict[str, bytes] = field(default_factory=dict)
    tags: dict[str, bytes] = field(default_factory=dict)
    protected: dict[str, Protection] = field(default_factory=dict)
    reflog: list[RefChange] = field(default_factory=list)
    # The plaintext these refs were read from: the digest clients remember is over the stored bytes, so a
    # newer strongroom reading an older encoding agrees with what an older client saw.
    stored: bytes | None = field(default=None, compare=False, repr=False)
    # The index files these refs list (names without ``index/``); None when read from an earlier build's
    # file, which lists none. Bound to the sealed record, but not part of it (nor of its digest).
    index_files: tuple[str, ...] | None = field(default=None, compare=False)

    def encode(self) -> bytes:
        return dumps_canonical(
            {
                "format": "sr-refs/1",
                "generation": self.generation,
                "branches": {k: v.hex() for k, v in sorted(self.branches.items())},
                "tags": {k: v.hex() for k, v in sorted(self.tags.items())},
                "protected": {
                    k: {"require_signed": p.require_signed, "checks": list(p.checks)}
                    for k, p in sorted(self.protected.items())
                },
                "reflog": [
                    [c.time_ns, c.ref, c.old.hex() if c.old else None, c.new.hex() if c.new else None]
                    for c in self.reflog
                ],
            }
        )

    def digest(self) -> str:
        return sha256_hex(self.stored if self.stored is not None else self.encode())

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
                {
                    k: Protection(bool(v["require_signed"]), tuple(str(c) for c in v["checks"]))
                    for k, v in obj.get("protected", {}).items()
                },
                [
                    RefChange(int(t), str(r), bytes.fromhex(o) if o else None, bytes.fromhex(n) if n else None)
                    for t, r, o, n in obj.get("reflog", [])
                ],
                stored=bytes(data),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            raise IntegrityError("refs are malformed") from None

    def record_changes(self, before: Refs, now_ns: int) -> None:
        """Append to the reflog every branch and tag that moved, appeared or went away since ``before``."""
        for kind, old_t, new_t in (("branch", before.branches, self.branches), ("tag", before.tags, self.tags)):
            for name in sorted(old_t.keys() | new_t.keys()):
                if old_t.get(name) != new_t.get(name):
                    self.reflog.append(RefChange(now_ns, f"{kind}:{name}", old_t.get(name), new_t.get(name)))

    def heads(self) -> list[bytes]:
        return list(dict.fromkeys([*self.branches.values(), *self.tags.values()]))


def seal_refs(sealer: Sealer, repo_ctx: bytes, refs: Refs) -> bytes:
    plain = refs.encode()
    names = refs.index_files if refs.index_files is not None else ()
    return listing.wrap(MAGIC, names, lambda binding: sealer.seal(plain, ObjectKind.REFS, repo_ctx + binding))


def open_refs(sealer: Sealer, repo_ctx: bytes, data: bytes) -> Refs:
    listed = listing.unwrap(data, MAGIC, "refs")
    if listed is None:
        return Refs.decode(sealer.open(data, ObjectKind.REFS, repo_ctx))
    refs = Refs.decode(sealer.open(listed.frame, ObjectKind.REFS, repo_ctx + listed.binding))
    refs.index_files = listed.names
    return refs


def listed_index_files(data: bytes) -> tuple[str, ...] | None:
    """The index files a refs file lists, read without the key (None: an earlier build's file lists none).
    IntegrityError for a file that fails its checksum or is not a refs file."""
    listed = listing.unwrap(data, MAGIC, "refs")
    return None if listed is None else listed.names
