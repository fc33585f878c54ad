"""Content-defined chunking (``fastcdc/256K-768K-4M``) over a bounded buffer.

The cut points come from pyfastcdc's compiled FastCDC with a secret seed from the keyring, so chunk
boundaries differ from one repository to the next. pyfastcdc XORs the seed into its gear table, which
leaves part of the seed without effect (docs/threat-model.md states the residual leak); packs are also
shuffled and padded so that stored sizes reveal less.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from pyfastcdc import FastCDC

READ_SIZE = 8 << 20


@dataclass(frozen=True, slots=True)
class ChunkerParams:
    min_size: int = 256 << 10
    avg_size: int = 768 << 10
    max_size: int = 4 << 20

    @property
    def name(self) -> str:
        return f"fastcdc/{self.min_size >> 10}K-{self.avg_size >> 10}K-{self.max_size >> 10}K"

    @classmethod
    def parse(cls, name: str) -> ChunkerParams:
        try:
            algo, sizes = name.split("/")
            lo, avg, hi = (int(s.rstrip("K")) << 10 for s in sizes.split("-"))
        except ValueError:
            raise ValueError(f"unknown chunker {name!r}") from None
        if algo != "fastcdc":
            raise ValueError(f"unknown chunker {name!r}")
        return cls(lo, avg, hi)


class Chunker:
    def __init__(self, params: ChunkerParams, seed: int) -> None:
        self.params = params
        self._cdc = FastCDC(params.avg_size, min_size=params.min_size, max_size=params.max_size, seed=seed)
        self._buf: bytearray | None = (
            None  # one read buffer for every file: zeroing 12 MiB per file costs more than chunking
        )

    def __repr__(self) -> str:
        return f"<Chunker {self.params.name}>"

    def cut(self, data: bytes | memoryview) -> Iterator[memoryview]:
        """Chunks of an in-memory buffer (the whole input)."""
        mv = memoryview(data)
        for c in self._cdc.cut_buf(mv):
            yield mv[c.offset : c.offset + c.length]

    def cut_fd(self, fd: int) -> Iterator[memoryview]:
        """Chunks of an open file, read in bounded pieces. The cuts equal those of the whole file: the last
        chunk of each piece is held back and cut again with the data that follows it. A yielded view is
        valid only until the next one is asked for."""
        if self._buf is None:
            self._buf = bytearray(READ_SIZE + self.params.max_size)
        buf = self._buf
        filled = 0
        eof = False
        while True:
            while not eof and filled < len(buf):
                view = memoryview(buf)[filled:]
                n = os.readv(fd, [view])
                if n == 0:
                    eof = True
                filled += n
            if filled == 0:
                return
            mv = memoryview(buf)[:filled]
            start = 0
            for c in self._cdc.cut_buf(mv):
                end = c.offset + c.length
                if end == filled and not eof:
                    start = c.offset
                    break
                yield mv[c.offset : end]
                start = end
            else:
                start = filled
            if eof and start >= filled:
                return
            rest = filled - start
            del mv
            buf[:rest] = buf[start:filled]
            filled = rest
