"""Keyed BLAKE3 object ids: an id says nothing about content to anyone without the id key."""

from __future__ import annotations

import hashlib

import blake3

from strongroom.crypto.secret import Secret


class IdHasher:
    __slots__ = ("_key",)

    def __init__(self, key: Secret) -> None:
        self._key = key.reveal()

    def __repr__(self) -> str:
        return "<IdHasher redacted>"

    def __call__(self, data: bytes | memoryview) -> bytes:
        return bytes(blake3.blake3(data, key=self._key).digest())


def content_name(data: bytes | memoryview) -> str:
    """Name of a stored file: unkeyed BLAKE3 of its ciphertext, so anyone can re-hash it without a key
    (`b3sum`); BLAKE3 rather than SHA-256 because it runs several times faster on the ingest path."""
    return str(blake3.blake3(data).hexdigest())


def content_digest(data: bytes | memoryview) -> bytes:
    """The 32 raw bytes of ``content_name``: checksums and bindings of plaintext lists of such names."""
    return bytes(blake3.blake3(data).digest())


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
