"""The domain objects of a repository: file entries, trees, commits. Frozen and pure."""

from __future__ import annotations

from dataclasses import dataclass, field

FILE = "f"
DIR = "d"
SYMLINK = "l"


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a directory. ``chunks`` for files, ``subtree`` for folders, ``target`` for links."""

    name: str
    type: str
    mode: int
    mtime_ns: int
    size: int = 0
    uid: int = 0
    gid: int = 0
    chunks: tuple[bytes, ...] = ()
    subtree: bytes | None = None
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Tree:
    entries: tuple[Entry, ...]

    def find(self, name: str) -> Entry | None:
        for entry in self.entries:
            if entry.name == name:
                return entry
        return None


@dataclass(frozen=True, slots=True)
class Signature:
    """A commit's signature: who signed, with which algorithm and key, and the signature bytes.

    ``alg`` is ``ed25519`` or ``ecdsa-p256`` (raw r ‖ s over SHA-256); ``fingerprint`` is the OpenSSH
    ``SHA256:...`` fingerprint of the public key. The signed message is ``codec.commit_signing_message``.
    """

    signer: str
    alg: str
    fingerprint: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    tree: bytes
    parents: tuple[bytes, ...]
    author: str
    host: str
    time_ns: int
    message: str
    branch: str
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    signature: Signature | None = None
