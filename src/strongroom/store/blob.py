"""One object ⇄ one framed ciphertext: compress with zstd when it helps, then seal.

The frame's flags (authenticated, in the clear) say whether the payload is raw or zstd; the frame binds its
kind, flags and object id as associated data (crypto.aead). Raw chunks are sealed without being copied.
"""

from __future__ import annotations

import zstandard

from strongroom.crypto.aead import Sealer
from strongroom.errors import IntegrityError

RAW = 0
ZSTD = 1
_MIN_GAIN = 1.02


class BlobCodec:
    def __init__(self, sealer: Sealer, level: int) -> None:
        self.sealer = sealer
        self.level = level
        self._cctx = zstandard.ZstdCompressor(level=level) if level > 0 else None
        self._dctx = zstandard.ZstdDecompressor()

    def encode(self, plain: bytes | memoryview, kind: int, object_id: bytes) -> bytes:
        if self._cctx is not None and len(plain) > 64:
            packed = self._cctx.compress(plain)
            if len(packed) * _MIN_GAIN < len(plain):
                return self.sealer.seal(packed, kind, object_id, ZSTD)
        return self.sealer.seal(plain, kind, object_id, RAW)

    def decode(self, frame: bytes | memoryview, kind: int, object_id: bytes) -> bytes:
        body, flags = self.sealer.open_flagged(frame, kind, object_id)
        if flags == RAW:
            return body
        if flags == ZSTD:
            try:
                return bytes(self._dctx.decompress(body))
            except zstandard.ZstdError:
                raise IntegrityError("compressed payload is corrupt") from None
        raise IntegrityError("unknown payload encoding")
