"""Listed files (format.md §8a): a sealed frame behind a plaintext list of the file names it depends on.

``refs`` lists the index files, and each index file lists its packs, so ``verify --structure`` — which has
no key — can tell that a file is missing or cut short, not only that a present file fails its hash. The
names are hashes of ciphertext and say nothing about content. The list is bound to the frame: the frame's
associated data ends with the BLAKE3 of the plaintext before it, so only a key holder can change the list.

    magic | count u32 LE | count × 32-byte names | frame | BLAKE3-256 of every byte before it
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from strongroom.backends.base import Backend
from strongroom.crypto.aead import VERSION, key_id_of
from strongroom.crypto.idhash import content_digest
from strongroom.errors import IntegrityError

_COUNT = struct.Struct("<I")
CHECKSUM_LEN = 32
NAME_LEN = 32
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Listed:
    names: tuple[str, ...]  # lowercase hex
    frame: bytes
    binding: bytes  # BLAKE3 of the plaintext before the frame: appended to the frame's context


def is_name(name: str) -> bool:
    """A content name (64 lowercase hex digits): what a list may hold. Anything else under ``index/`` or
    ``data/`` is junk, which `verify` reports and no list takes in."""
    return len(name) == 2 * NAME_LEN and all(c in _HEX for c in name)


def wrap(magic: bytes, names: Sequence[str], seal: Callable[[bytes], bytes]) -> bytes:
    """The file for a frame that ``seal(binding)`` makes with ``context + binding`` as its context."""
    bad = [n for n in names if not is_name(n)]
    if bad:
        raise IntegrityError(f"not a content name: {bad[0][:80]!r}")
    preamble = magic + _COUNT.pack(len(names)) + b"".join(bytes.fromhex(n) for n in names)
    body = preamble + seal(content_digest(preamble))
    return body + content_digest(body)


def unwrap(data: bytes, magic: bytes, what: str) -> Listed | None:
    """The parts of a listed file; None for a bare frame (an earlier build's file, which lists nothing).
    IntegrityError when the bytes are neither, or fail their checksum (cut short, a flipped bit)."""
    if data[:1] == bytes([VERSION]):
        return None
    if not data.startswith(magic):
        raise IntegrityError(f"{what} is in no format strongroom knows")
    body, checksum = data[:-CHECKSUM_LEN], data[-CHECKSUM_LEN:]
    if len(data) < len(magic) + _COUNT.size + CHECKSUM_LEN or content_digest(body) != checksum:
        raise IntegrityError(f"{what} does not match its checksum")
    (count,) = _COUNT.unpack_from(body, len(magic))
    start = len(magic) + _COUNT.size
    end = start + count * NAME_LEN
    if end > len(body):
        raise IntegrityError(f"{what} is malformed")
    names = tuple(body[i : i + NAME_LEN].hex() for i in range(start, end, NAME_LEN))
    return Listed(names, body[end:], content_digest(body[:end]))


def frame_key_id(backend: Backend, name: str, magic: bytes) -> int:
    """Which data key sealed a stored file's frame, listed or bare, reading only its head."""
    head = backend.get_range(name, 0, len(magic) + _COUNT.size)
    if not head.startswith(magic):
        return key_id_of(head)
    (count,) = _COUNT.unpack_from(head, len(magic))
    return key_id_of(backend.get_range(name, len(head) + count * NAME_LEN, 7))


__all__ = ["Listed", "frame_key_id", "is_name", "unwrap", "wrap"]
