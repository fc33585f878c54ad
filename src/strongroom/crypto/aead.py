"""Authenticated encryption of framed objects (suite ``blake3k+aes256gcm/1``).

Frame: version u8 | kind u8 | flags u8 | key id u32 (big-endian) | nonce (12 random bytes from the OS) |
ciphertext+tag. Flags say how the payload is encoded (raw or zstd). Associated data: the first seven bytes
of the frame (so kind and flags cannot be changed) followed by a context (the object id, or the repository
id for singleton objects), so a valid ciphertext moved into another slot, relabelled with another kind,
or copied from another repository never decrypts.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.crypto.secret import Secret
from strongroom.errors import DecryptionFailed, IntegrityError

VERSION = 1
SUITE = "blake3k+aes256gcm/1"
_HEAD = struct.Struct(">BBBI")
HEADER_LEN = _HEAD.size + 12
OVERHEAD = HEADER_LEN + 16


class Sealer:
    """Seals and opens frames with a set of data keys; new frames use the current key."""

    def __init__(
        self,
        keys: dict[int, Secret],
        current: int,
        reload: Callable[[int], dict[int, Secret]] | None = None,
        sealed: dict[int, int] | None = None,
    ) -> None:
        if current not in keys:
            raise ValueError("current data key missing")
        self._aead = {kid: AESGCM(k.reveal()) for kid, k in keys.items()}
        self.current = current
        # Frames sealed by this process under each key id, added to the persisted count on publish. Sealers
        # that pass one dict (a repository and its scoped views) count into it together.
        self.sealed: dict[int, int] = {} if sealed is None else sealed
        # Called once for an unknown key id: another process may have rotated in a key since we opened (or
        # the key belongs to a scope: the callback may raise to say why it is not there).
        self._reload = reload

    def add_key(self, key_id: int, key: Secret) -> None:
        self._aead[key_id] = AESGCM(key.reveal())

    def key_ids(self) -> set[int]:
        return set(self._aead)

    def remove_key(self, key_id: int) -> None:
        self._aead.pop(key_id, None)

    def __repr__(self) -> str:
        return f"<Sealer keys={sorted(self._aead)} current={self.current}>"

    def seal(self, plain: bytes | memoryview, kind: int, context: bytes, flags: int = 0) -> bytes:
        head = _HEAD.pack(VERSION, kind, flags, self.current)
        nonce = os.urandom(12)
        self.sealed[self.current] = self.sealed.get(self.current, 0) + 1
        return head + nonce + self._aead[self.current].encrypt(nonce, plain, head + context)

    def open(self, frame: bytes | memoryview, kind: int, context: bytes) -> bytes:
        return self.open_flagged(frame, kind, context)[0]

    def open_flagged(self, frame: bytes | memoryview, kind: int, context: bytes) -> tuple[bytes, int]:
        """Decrypt a frame; returns (plaintext, flags)."""
        if len(frame) < OVERHEAD:
            raise IntegrityError("object is truncated")
        version, fkind, flags, kid = _HEAD.unpack_from(frame, 0)
        if version != VERSION or fkind != kind:
            raise DecryptionFailed("object kind or format does not match its slot")
        aead = self._aead.get(kid)
        if aead is None and self._reload is not None:
            self._aead.update({k: AESGCM(v.reveal()) for k, v in self._reload(kid).items() if k not in self._aead})
            aead = self._aead.get(kid)
        if aead is None:
            raise DecryptionFailed(f"object needs data key {kid}, which this repository does not have")
        mv = memoryview(frame)
        try:
            plain = aead.decrypt(bytes(mv[_HEAD.size : HEADER_LEN]), mv[HEADER_LEN:], bytes(mv[: _HEAD.size]) + context)
        except InvalidTag:
            raise DecryptionFailed("authentication failed") from None
        return plain, flags


def key_id_of(frame: bytes | memoryview) -> int:
    return int(_HEAD.unpack_from(frame, 0)[3])


def seal_with(key: Secret, plain: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """One-off AES-256-GCM for key wrapping: returns (nonce, ciphertext)."""
    nonce = os.urandom(12)
    return nonce, AESGCM(key.reveal()).encrypt(nonce, plain, aad)


def open_with(key: Secret, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key.reveal()).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise DecryptionFailed("authentication failed") from None
