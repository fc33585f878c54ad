"""Content-defined chunking (``fastcdc/256K-768K-4M``) over a bounded buffer.

The cut points come from pyfastcdc's compiled FastCDC with a secret seed from the keyring, so chunk
boundaries differ from one repository to the next. pyfastcdc XORs the seed into its gear table, which
leaves part of the seed without effect (docs/threat-model.md states the residual leak); packs are also
shuffled and padded so that stored sizes reveal less.

``Chunker.cut_fd_guided`` gives the same chunks as ``cut_fd`` for a file whose previous chunk list is known,
but takes each previous chunk whose bytes are unchanged (its id matches) without running the gear hash over
it: the compare of a modified file then costs about one hashing pass instead of chunking plus hashing.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterator, Sequence
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


@dataclass(slots=True)
class GuideStats:
    """Where the bytes of the last ``cut_fd_guided`` call went."""

    cdc_bytes: int = 0  # cut by the gear hash
    verified_bytes: int = 0  # taken from the previous chunk list once their ids matched
    hashed_bytes: int = 0  # given to the hasher; beyond the file's size, spent on guesses that failed


class Chunker:
    def __init__(self, params: ChunkerParams, seed: int) -> None:
        self.params = params
        self._cdc = FastCDC(params.avg_size, min_size=params.min_size, max_size=params.max_size, seed=seed)
        self._buf: bytearray | None = (
            None  # one read buffer for every file: zeroing 12 MiB per file costs more than chunking
        )
        self.guide_stats = GuideStats()

    def __repr__(self) -> str:
        return f"<Chunker {self.params.name}>"

    def _buffer(self, least: int) -> bytearray:
        if self._buf is None or len(self._buf) < least:
            self._buf = bytearray(max(READ_SIZE + self.params.max_size, least))
        return self._buf

    def cut(self, data: bytes | memoryview) -> Iterator[memoryview]:
        """Chunks of an in-memory buffer (the whole input)."""
        mv = memoryview(data)
        for c in self._cdc.cut_buf(mv):
            yield mv[c.offset : c.offset + c.length]

    def cut_fd(self, fd: int) -> Iterator[memoryview]:
        """Chunks of an open file, read in bounded pieces. The cuts equal those of the whole file: the last
        chunk of each piece is held back and cut again with the data that follows it. A yielded view is
        valid only until the next one is asked for."""
        buf = self._buffer(self.params.max_size + 1)
        filled, eof = _refill(fd, buf, 0, 0)
        while filled:
            mv = memoryview(buf)[:filled]
            start = 0
            for c in self._cdc.cut_buf(mv):
                end = c.offset + c.length
                if end == filled and not eof:
                    break
                yield mv[c.offset : end]
                start = end
            if eof:
                return
            filled, eof = _refill(fd, buf, start, filled)

    def cut_fd_guided(
        self, fd: int, hasher: Callable[[bytes | memoryview], bytes], previous: Sequence[tuple[bytes, int]]
    ) -> Iterator[tuple[memoryview, bytes]]:
        """(chunk, id) pairs equal to ``[(c, hasher(c)) for c in self.cut_fd(fd)]``, found with less work when
        ``previous``, the ``(id, length)`` list of an earlier version of the file, still holds some of its
        chunks: a previous chunk is checked by hashing the bytes where it is expected and comparing ids, and
        taken as the next chunk when the gear hash would provably cut it the same (``_reusable``); the gear
        hash runs only where no previous chunk fits. ``previous`` must be what this chunker (same parameters
        and seed) and ``hasher`` gave for an earlier version of the file: a list that fits nothing, or none,
        only costs speed, but real ids cut elsewhere could move cut points (never change the bytes). A yielded view is
        valid only until the next pair is asked for; ``guide_stats`` counts where the bytes went.

        Guesses for the previous chunk at the current cut (each (offset, chunk) guess is tried once): the one
        after the last chunk matched; the one after a chunk that the gear hash cut and whose id is in
        ``previous`` (content moved by an insertion or a deletion); the one that starts at the same offset,
        minus the shift of the last match (content overwritten in place, appended to, truncated). Guessing
        pauses while the hashing wasted on failed guesses exceeds an eighth of the bytes done (or 4 max_size, if more),
        so that a list that fits nothing (another file, reordered content) costs little."""
        hi = self.params.max_size
        old = _Previous(previous, hi)
        stats = self.guide_stats = GuideStats()
        buf = self._buffer(2 * hi + 2)  # the longest look-ahead: two chunks and two bytes
        filled, eof = _refill(fd, buf, 0, 0)
        base = 0  # file offset of buf[0]
        cut = 0  # buffer index of the next chunk: every byte before it was yielded
        want = 1  # bytes wanted from cut on before going on (unless at the end of the file)
        shift = 0  # offset in this file minus offset in the previous one, of the last chunk matched
        last = -1  # index of that chunk in previous
        after: int | None = None  # previous chunk expected at cut, from the last match
        tried: set[tuple[int, int]] = set()
        digests: dict[tuple[int, int], bytes] = {}  # (offset, length) → id: hashed by a failed guess

        def guess(off: int) -> int | None:
            done = stats.cdc_bytes + stats.verified_bytes
            if stats.hashed_bytes - done > max(4 * hi, done >> 3):
                return None  # failed guesses wasted enough hashing: the gear hash alone, for now
            for j in (after, old.by_start.get(off - shift)):
                if j is not None and (off, j) not in tried:
                    return j
            return None

        while True:
            if filled - cut < want and not eof:
                filled, eof = _refill(fd, buf, cut, filled)
                base += cut
                cut = 0
            want = 1
            if cut == filled and eof:
                return
            off = base + cut
            if digests:
                digests = {k: d for k, d in digests.items() if k[0] >= off}
            j = guess(off)
            if j is not None:
                n = old.lengths[j]
                if 0 < n <= hi and filled - cut < n + 2 and not eof:
                    want = n + 2  # the chunk, its next byte and one more settle _reusable
                    continue
                ok, needs_next = _reusable(self.params, n, old.size - old.starts[j], filled - cut)
                nk = old.lengths[j + 1] if needs_next and j + 1 < len(old.lengths) else 0
                if ok and needs_next:
                    # the byte after chunk j is known to be unchanged once chunk j + 1 matches after it
                    if not 0 < nk <= hi:
                        ok = False
                    elif filled - cut < n + nk + 2 and not eof:
                        want = n + nk + 2
                        continue
                    elif filled - cut < n + nk:
                        ok = False
                digest = None
                if ok:
                    digest = digests.pop((off, n), None)
                    if digest is None:
                        digest = hasher(memoryview(buf)[cut : cut + n])
                        stats.hashed_bytes += n
                    ok = digest == old.ids[j]
                if ok and needs_next:
                    following = hasher(memoryview(buf)[cut + n : cut + n + nk])
                    stats.hashed_bytes += nk
                    digests[(off + n, nk)] = following
                    ok = following == old.ids[j + 1]
                    if not ok:
                        tried.add((off + n, j + 1))
                if not ok:
                    tried.add((off, j))
                    if digest is not None:
                        digests[(off, n)] = digest
                    continue
                assert digest is not None
                stats.verified_bytes += n
                yield memoryview(buf)[cut : cut + n], digest
                cut += n
                last, shift = j, off - old.starts[j]
                after = j + 1 if j + 1 < len(old.lengths) else None
                continue
            # no guess left: the gear hash, until a guess comes up
            for c in self._cdc.cut_buf(memoryview(buf)[cut:filled]):
                n = c.length
                if cut + n == filled and not eof:
                    want = n + 1  # held back, as in cut_fd
                    break
                off = base + cut
                view = memoryview(buf)[cut : cut + n]
                digest = digests.pop((off, n), None)
                if digest is None:
                    digest = hasher(view)
                    stats.hashed_bytes += n
                stats.cdc_bytes += n
                yield view, digest
                cut += n
                k = old.match(digest, last)
                after = None
                if k is not None:
                    last, shift = k, off - old.starts[k]
                    after = k + 1 if k + 1 < len(old.lengths) else None
                if guess(base + cut) is not None:
                    break


def _refill(fd: int, buf: bytearray, keep: int, filled: int) -> tuple[int, bool]:
    """Moves ``buf[keep:filled]`` to the front, then reads until the buffer is full or the file ends. Returns
    how much of the buffer is filled and whether the end of the file was read."""
    rest = filled - keep
    if keep and rest:
        mv = memoryview(buf)
        mv[:rest] = mv[keep:filled]  # one memmove
        del mv
    filled = rest
    while filled < len(buf):
        n = os.readv(fd, [memoryview(buf)[filled:]])
        if n == 0:
            return filled, True
        filled += n
    return filled, False


def _reusable(params: ChunkerParams, n: int, old_rest: int, new_rest: int) -> tuple[bool, bool]:
    """Whether FastCDC, which cut a chunk of ``n`` bytes where ``old_rest`` bytes were left, cuts the same
    where ``new_rest`` are left, given the same first ``n`` bytes; and whether that also needs the byte after
    them to be the same. ``new_rest`` may be a lower bound of at least ``n + 2``: the answer is then the same.

    From ``_cut_gear`` (pyfastcdc's py/fastcdc.py and cy/fastcdc.pyx): with ``rest <= min`` the chunk is the
    rest; otherwise the gear hash starts afresh at the chunk's start, consumes byte ``p`` and then tests for
    a cut of length ``p``, for ``p`` from ``min & ~1`` up to, not including, ``end = min(rest, max) & ~1``;
    no cut gives a chunk of ``min(rest, max)``. The mask tested at ``p`` is the small one below
    ``avg & ~1`` and the large one after, whatever ``rest`` is (a ``rest`` below avg ends the scan before
    ``avg``), so ``rest`` only decides where the scan ends. Hence, with the same bytes:
      - a chunk that was the rest (``old_rest <= min``) is cut again only if it is still the rest;
      - a chunk where the scan found no cut (``n == min(old_rest, max)``) is cut again if
        ``min(new_rest, max) == n``: the scan then covers the same positions;
      - a chunk cut by the hash at ``n`` is cut again if the new file ends right after it (no cut before
        ``n``, then the rest), or if the scan reaches ``n`` (``n < end``) and byte ``n`` is the same.
    """
    lo, hi = params.min_size, params.max_size
    if not 0 < n <= min(old_rest, new_rest, hi):
        return False, False
    if old_rest <= lo:
        return n == old_rest == new_rest, False
    if n == min(old_rest, hi):
        return n == min(new_rest, hi), False
    if lo & ~1 <= n < min(old_rest, hi) & ~1:
        if new_rest == n:
            return True, False
        return n < min(new_rest, hi) & ~1, True
    return False, False  # no FastCDC cut has this length


class _Previous:
    """A previous chunk list, with where each chunk started and where each id is."""

    __slots__ = ("by_id", "by_start", "ids", "lengths", "size", "starts")

    def __init__(self, previous: Sequence[tuple[bytes, int]], max_size: int) -> None:
        self.ids = [bytes(cid) for cid, _ in previous]
        self.lengths = [int(n) for _, n in previous]
        self.starts: list[int] = []
        self.by_start: dict[int, int] = {}
        self.by_id: dict[bytes, list[int]] = {}
        at = 0
        for j, (cid, n) in enumerate(zip(self.ids, self.lengths, strict=True)):
            self.starts.append(at)
            if 0 < n <= max_size:
                self.by_start.setdefault(at, j)
                self.by_id.setdefault(cid, []).append(j)
            at += n
        self.size = at

    def match(self, cid: bytes, last: int) -> int | None:
        """Index of a chunk with this id: the first one after ``last`` if there is one."""
        at = self.by_id.get(cid)
        if at is None:
            return None
        i = bisect.bisect_right(at, last)
        return at[i] if i < len(at) else at[0]
