"""One object ⇄ one framed ciphertext: compress with zstd when it helps, then seal.

Plaintext inside the frame: a one-byte tag (0 raw, 1 zstd) and the payload. The frame binds its kind and
object id as associated data (crypto.aead).
"""

from __future__ import annotations

import zstandard

from strongroom.crypto.aead import Sealer
from strongroom.errors import IntegrityError

RAW = b"\x00"
ZSTD = b"\x01"
_MIN_GAIN = 1.02


class BlobCodec:
    def __init__(self, sealer: Sealer, level: int) -> None:
        self.sealer = sealer
        self.level = level
        self._cctx = zstandard.ZstdCompressor(level=level) if level > 0 else None
        self._dctx = zstandard.ZstdDecompressor()

    def __getstate__(self) -> dict[str, object]:
        return {"sealer": self.sealer, "level": self.level}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["sealer"], state["level"])  # type: ignore[misc,arg-type]

    def encode(self, plain: bytes | memoryview, kind: int, object_id: bytes) -> bytes:
        body: bytes | memoryview = plain
        tag = RAW
        if self._cctx is not None and len(plain) > 64:
            packed = self._cctx.compress(plain)
            if len(packed) * _MIN_GAIN < len(plain):
                body, tag = packed, ZSTD
        return self.sealer.seal(tag + bytes(body), kind, object_id)

    def decode(self, frame: bytes | memoryview, kind: int, object_id: bytes) -> bytes:
        plain = self.sealer.open(frame, kind, object_id)
        tag, body = plain[:1], memoryview(plain)[1:]
        if tag == RAW:
            return bytes(body)
        if tag == ZSTD:
            try:
                return bytes(self._dctx.decompress(body))
            except zstandard.ZstdError:
                raise IntegrityError("compressed payload is corrupt") from None
        raise IntegrityError("unknown payload encoding")
