"""Object ids and kinds. An id is 32 bytes: a keyed hash, never a plain hash of plaintext."""

from __future__ import annotations

import enum

from strongroom.errors import InputError

ID_LEN = 32
MIN_PREFIX = 8


class ObjectKind(enum.IntEnum):
    """What a stored object is. The kind is bound into every ciphertext (AEAD associated data)."""

    CHUNK = 1
    TREE = 2
    COMMIT = 3
    PACK_HEADER = 4
    INDEX = 5
    REFS = 6
    KEYRING = 7
    FILECACHE = 8
    COUNTERS = 9
    AUDIT_SEGMENT = 10
    AUDIT_CHECKPOINT = 11
    SIGNERS = 12
    SCOPE = 13


def to_hex(object_id: bytes) -> str:
    return object_id.hex()


def from_hex(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InputError(f"not a hex object id: {text!r}") from None
    if len(raw) != ID_LEN:
        raise InputError(f"object id must be {ID_LEN * 2} hex digits: {text!r}")
    return raw


def is_hex_prefix(text: str) -> bool:
    return len(text) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in text.lower())
