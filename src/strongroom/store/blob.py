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
# Objects from this size are first probed: three 8 KiB samples (start, middle, end) compressed together. When
# even they do not gain 2 %, the object is sealed raw without compressing the rest, as btrfs's compression
# heuristic and ZFS's early abort do. On the benchmark set this skipped every image chunk (515 MiB, which zstd
# had passed through at 3.4 GB/s for nothing) and no chunk that compresses.
PROBE_FROM = 128 << 10
_SAMPLE = 8 << 10


class BlobCodec:
    def __init__(self, sealer: Sealer, level: int) -> None:
        self.sealer = sealer
        self.level = level
        self._cctx = zstandard.ZstdCompressor(level=level) if level > 0 else None
        self._dctx = zstandard.ZstdDecompressor()

    def for_another_thread(self) -> BlobCodec:
        """The same codec with its own zstd contexts (a context must not be used by two threads at once)."""
        return BlobCodec(self.sealer, self.level)

    def encode(self, plain: bytes | memoryview, kind: int, object_id: bytes) -> bytes:
        if self._cctx is not None and len(plain) > 64 and self._may_compress(plain):
            packed = self._cctx.compress(plain)
            if len(packed) * _MIN_GAIN < len(plain):
                return self.sealer.seal(packed, kind, object_id, ZSTD)
        return self.sealer.seal(plain, kind, object_id, RAW)

    def _may_compress(self, plain: bytes | memoryview) -> bool:
        n = len(plain)
        if n < PROBE_FROM:
            return True
        assert self._cctx is not None
        mid = n // 2
        sample = b"".join((plain[:_SAMPLE], plain[mid : mid + _SAMPLE], plain[n - _SAMPLE :]))
        return len(self._cctx.compress(sample)) * _MIN_GAIN < len(sample)

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
