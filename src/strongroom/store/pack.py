"""Pack files (``sr-pack/1``): many framed blobs, padding, an encrypted header, a 4-byte trailer.

    blob frame 0 | blob frame 1 | ... | random padding | sealed header | header length (u32 LE)

The header lists (kind, id, offset, length, plaintext length) for each blob, sealed with the repository id
as context.
Blobs are shuffled before writing and packs are padded (Padmé, or 64 KiB steps for full packs), so sizes
and order reveal less. A pack's
name is the SHA-256 of its bytes: anyone can check it without a key.
"""

from __future__ import annotations

import math
import os
import random
import struct
from dataclasses import dataclass

from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import Sealer
from strongroom.crypto.idhash import content_name
from strongroom.errors import IntegrityError

_ENTRY = struct.Struct("<B32sQII")
_TRAILER = struct.Struct("<I")
FORMAT = b"sr-pack/1"


@dataclass(frozen=True, slots=True)
class PackEntry:
    kind: int
    object_id: bytes
    offset: int
    length: int
    raw_length: int


def pack_path(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


COARSE_STEP = 64 << 10  # full packs pad to a multiple of this instead of to their Padmé length


def padded_length(length: int, full: bool = False) -> int:
    """Padmé for every pack but a full one: a pack closed early (the last of a commit, a metadata pack)
    may hold a single file, whose size it would otherwise show. A full pack, closed because it reached
    the pack size, holds at least four chunks in a shuffled order and pads to a multiple of 64 KiB, about
    0.4 % at most at 16 MiB where Padmé costs about 1.5 %."""
    if full:
        return -(-length // COARSE_STEP) * COARSE_STEP
    return padme(length)


def padme(length: int) -> int:
    """Padmé padding (Nikitin et al., PETS 2019): at most ~12 % overhead, ~1 % for pack sizes."""
    if length < 2:
        return length
    e = math.floor(math.log2(length))
    s = math.floor(math.log2(e)) + 1
    last_bits = e - s
    mask = (1 << last_bits) - 1
    return (length + mask) & ~mask


class PackBuilder:
    """Collects frames in memory, then finalizes them into pack bytes."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes, bytes, int]] = []
        self.size = 0

    def add(self, kind: int, object_id: bytes, frame: bytes, raw_length: int) -> None:
        self.frames.append((kind, object_id, frame, raw_length))
        self.size += len(frame)

    def __len__(self) -> int:
        return len(self.frames)

    def finish(self, sealer: Sealer, repo_ctx: bytes, full: bool = False) -> tuple[str, bytes, list[PackEntry]]:
        """The pack's name, bytes and entries; full says it was closed because it reached the pack size."""
        frames = list(self.frames)
        random.SystemRandom().shuffle(frames)
        parts: list[bytes] = []
        entries: list[PackEntry] = []
        offset = 0
        for kind, oid, frame, raw in frames:
            entries.append(PackEntry(kind, oid, offset, len(frame), raw))
            parts.append(frame)
            offset += len(frame)
        header_plain = FORMAT + b"".join(
            _ENTRY.pack(e.kind, e.object_id, e.offset, e.length, e.raw_length) for e in entries
        )
        header = sealer.seal(header_plain, ObjectKind.PACK_HEADER, repo_ctx)
        unpadded = offset + len(header) + _TRAILER.size
        pad = padded_length(unpadded, full) - unpadded
        parts.append(os.urandom(pad))
        parts.append(header)
        parts.append(_TRAILER.pack(len(header)))
        data = b"".join(parts)
        self.frames.clear()
        self.size = 0
        return content_name(data), data, entries


def header_location(pack_size: int, trailer: bytes) -> tuple[int, int]:
    if len(trailer) != _TRAILER.size:
        raise IntegrityError("pack is truncated")
    (hlen,) = _TRAILER.unpack(trailer)
    start = pack_size - _TRAILER.size - hlen
    if hlen == 0 or start < 0:
        raise IntegrityError("pack header is damaged")
    return start, hlen


def parse_header(sealer: Sealer, repo_ctx: bytes, sealed: bytes) -> list[PackEntry]:
    plain = sealer.open(sealed, ObjectKind.PACK_HEADER, repo_ctx)
    if not plain.startswith(FORMAT) or (len(plain) - len(FORMAT)) % _ENTRY.size:
        raise IntegrityError("pack header is malformed")
    out = []
    for off in range(len(FORMAT), len(plain), _ENTRY.size):
        out.append(PackEntry(*_ENTRY.unpack_from(plain, off)))
    return out


def read_header_from(data: bytes, sealer: Sealer, repo_ctx: bytes) -> list[PackEntry]:
    start, hlen = header_location(len(data), data[-_TRAILER.size :])
    return parse_header(sealer, repo_ctx, data[start : start + hlen])


TRAILER_LEN = _TRAILER.size
