"""The backup manifest (``sr-backup-manifest/1``): a C2SP signed note, signed with the repository's
Ed25519 log key, written to the bucket as the last object of every push.

Body (every line ends with a newline)::

    sr-backup-manifest/1
    repo <repository id, 64 hex>
    created <nanoseconds since the epoch>
    objects <count>
    <sha256 hex> <size> <retain-until, unix seconds, 0 if unknown> <S3 version id> <object name>
    ...

Object lines are sorted by name. The signature covers the whole body, version ids included, so verify and
restore read exactly the versions named here: garbage versions and delete markers put on top of a key by
someone holding the bucket credentials change nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from strongroom.backends.base import validate_name
from strongroom.core.checkpoint import SignedNote
from strongroom.crypto.signing import Ed25519Verifier, Signer, sign_note, verify_note
from strongroom.errors import IntegrityError, StrongroomError

FORMAT = "sr-backup-manifest/1"
MANIFEST_NAME = "manifest"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERSION_ID = re.compile(r"[A-Za-z0-9._+=/-]{1,1024}")


@dataclass(frozen=True, slots=True)
class Entry:
    sha256: str
    size: int
    retain_until: int  # unix seconds; 0 when unknown
    version_id: str


@dataclass
class Manifest:
    repo_id: str
    created_ns: int
    entries: dict[str, Entry] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries.values())

    def to_text(self) -> str:
        lines = [FORMAT, f"repo {self.repo_id}", f"created {self.created_ns}", f"objects {len(self.entries)}"]
        for name in sorted(self.entries):
            e = self.entries[name]
            lines.append(f"{e.sha256} {e.size} {e.retain_until} {e.version_id} {name}")
        return "\n".join(lines) + "\n"

    def sign(self, signer: Signer) -> bytes:
        return sign_note(self.to_text(), signer).encode("utf-8")

    @classmethod
    def parse_text(cls, text: str) -> Manifest:
        """Parse a manifest body; any deviation is an IntegrityError."""
        try:
            lines = text.split("\n")
            if lines[-1] != "" or lines[0] != FORMAT:
                raise ValueError
            key, repo_id = lines[1].split(" ")
            key2, created = lines[2].split(" ")
            key3, count = lines[3].split(" ")
            if (key, key2, key3) != ("repo", "created", "objects") or not _HEX64.fullmatch(repo_id):
                raise ValueError
            body = lines[4:-1]
            if len(body) != int(count):
                raise ValueError
            m = cls(repo_id, int(created))
            for ln in body:
                sha, size, until, vid, name = ln.split(" ")
                if not _HEX64.fullmatch(sha) or not _VERSION_ID.fullmatch(vid) or name in m.entries:
                    raise ValueError
                if int(size) < 0 or int(until) < 0:
                    raise ValueError
                m.entries[validate_name(name)] = Entry(sha, int(size), int(until), vid)
            return m
        except (ValueError, IndexError):
            raise IntegrityError("backup manifest is malformed") from None

    @staticmethod
    def claimed_created(head: bytes) -> int | None:
        """The creation time the first lines of a manifest note claim, signature NOT checked: to order a
        key's versions before verifying them (the time is in the signed body, so it is checked with the
        signature). None when these lines are not a manifest's (such a note never parses)."""
        lines = head.split(b"\n")
        if len(lines) < 4 or lines[0] != FORMAT.encode() or not lines[1].startswith(b"repo "):
            return None
        key, _, value = lines[2].partition(b" ")
        if key != b"created" or not value.isdigit() or len(value) > 20:
            return None
        return int(value)

    @classmethod
    def parse_unverified(cls, note: bytes) -> Manifest:
        """The manifest inside a signed note, signature NOT checked (to find the keys that check it)."""
        try:
            return cls.parse_text(SignedNote.parse(note).text)
        except StrongroomError:
            raise IntegrityError("backup manifest is malformed") from None

    @classmethod
    def verified(cls, note: bytes, verifier: Ed25519Verifier, repo_id: str) -> Manifest:
        """The manifest, after checking the note's signature and that it is this repository's."""
        try:
            parsed = verify_note(note, verifier)
        except StrongroomError:
            raise IntegrityError("backup manifest signature does not verify") from None
        m = cls.parse_text(parsed.text)
        if m.repo_id != repo_id:
            raise IntegrityError("backup manifest belongs to another repository")
        return m
