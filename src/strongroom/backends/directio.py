"""Large sequential file I/O that bypasses the page cache (O_DIRECT) where the filesystem allows it.

Packs are rarely read soon after they are written, and restored files are usually far larger than the
cache: filling fresh cache pages costs a copy and, on virtual machines, a first touch of guest memory, which
on the benchmark machine cost more CPU than compressing the data. borg drops its segments from the cache
for the same reason. Small objects go through the cache as usual.

O_DIRECT wants the buffer, file offset and length aligned to the device's block: the aligned bulk goes
through a reused page-aligned buffer and the unaligned tail through the cache.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading

DIRECT_MIN = 1 << 20  # writes below this go through the cache: the copy is cheap, alignment not worth it
DIRECT_READ_MIN = 64 << 10  # reads from this size (every chunk) go to the device
DIRECT_READ_MAX = 64 << 20  # and up to this one: a larger object is not worth a buffer that size
ALIGN = 4096  # covers every common logical block size
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_BUFFER = 16 << 20


class _AlignedBuffers(threading.local):
    """One page-aligned buffer per thread and purpose, grown as needed and reused (fresh memory costs page
    faults on every use)."""

    def __init__(self) -> None:
        self.bufs: dict[str, mmap.mmap] = {}

    def get(self, purpose: str, size: int) -> mmap.mmap:
        buf = self.bufs.get(purpose)
        if buf is None or len(buf) < size:
            if buf is not None:
                buf.close()
            # Private: an anonymous mapping is shared by default, and forked workers would write into
            # their parent's (and each other's) buffer.
            buf = self.bufs[purpose] = mmap.mmap(-1, max(size, _BUFFER) + ALIGN, flags=mmap.MAP_PRIVATE)
        return buf


_buffers = _AlignedBuffers()


def _forget_buffers() -> None:
    _buffers.bufs = {}  # a forked child makes its own (the parent's stay the parent's)


os.register_at_fork(after_in_child=_forget_buffers)


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for an open file; False where the filesystem refuses it (tmpfs, ...)."""
    if not _O_DIRECT:
        return False
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | _O_DIRECT) if on else (flags & ~_O_DIRECT))
    except OSError:
        return False
    return True


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


class SequentialWriter:
    """Writes a new file front to back. With direct=True the aligned bulk bypasses the cache (falling back
    to the cache, transparently, where the filesystem refuses O_DIRECT); close() writes the tail."""

    def __init__(self, fd: int, direct: bool) -> None:
        self.fd = fd
        self.offset = 0  # file offset of the first byte held in the buffer
        self.fill = 0
        self.direct = direct and _set_direct(fd, True)
        self._buf = _buffers.get("write", _BUFFER) if self.direct else None

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        if self._buf is None:
            _pwrite_all(self.fd, view, self.offset)
            self.offset += len(view)
            return
        while len(view):
            n = min(len(view), _BUFFER - self.fill)
            self._buf[self.fill : self.fill + n] = view[:n]
            self.fill += n
            view = view[n:]
            if self.fill == _BUFFER:
                self._flush_aligned()

    def _flush_aligned(self) -> None:
        assert self._buf is not None
        bulk = self.fill - self.fill % ALIGN
        if bulk:
            aligned = memoryview(self._buf)[:bulk]
            try:
                _pwrite_all(self.fd, aligned, self.offset)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                _set_direct(self.fd, False)  # accepted at open, refused at write: use the cache
                _pwrite_all(self.fd, aligned, self.offset)
            finally:
                aligned.release()
            self._buf.move(0, bulk, self.fill - bulk)
            self.offset += bulk
            self.fill -= bulk

    def close(self) -> None:
        """Write what is left; the file descriptor stays open, back in cached mode, positioned at the end."""
        if self._buf is None:
            os.lseek(self.fd, self.offset, os.SEEK_SET)
            return
        self._flush_aligned()
        _set_direct(self.fd, False)
        if self.fill:
            tail = memoryview(self._buf)[: self.fill]
            try:
                _pwrite_all(self.fd, tail, self.offset)
            finally:
                tail.release()
            self.offset += self.fill
            self.fill = 0
        self._buf = None
        os.lseek(self.fd, self.offset, os.SEEK_SET)  # positional writes left the file offset behind


def write_file(fd: int, data: bytes | memoryview) -> None:
    """Write data at the start of a new file, bypassing the cache when it is large."""
    writer = SequentialWriter(fd, direct=len(data) >= DIRECT_MIN)
    writer.write(data)
    writer.close()


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    """pread until length bytes or the end of the file (one pread stops at about 2 GiB)."""
    parts = []
    while length > 0:
        part = os.pread(fd, min(length, 1 << 30), offset)
        if not part:
            break
        parts.append(part)
        length -= len(part)
        offset += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_range(fd: int, offset: int, length: int) -> bytes:
    """pread, except that chunk-sized and larger ranges are read straight from the device into a reused
    aligned buffer: packs are written past the cache, so a cached read would first fill fresh cache pages.
    (Probing the cache first is not reliable: a non-blocking read that misses still starts readahead.)"""
    if not DIRECT_READ_MIN <= length <= DIRECT_READ_MAX or not _set_direct(fd, True):
        return _pread_all(fd, length, offset)
    start = offset - offset % ALIGN
    end = offset + length + (-(offset + length)) % ALIGN
    view = memoryview(_buffers.get("read", end - start))
    try:
        got = 0
        while got < end - start:
            n = os.preadv(fd, [view[got : end - start]], start + got)
            if n == 0:
                break
            got += n
        return bytes(view[offset - start : max(offset - start, min(got, offset - start + length))])
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        _set_direct(fd, False)
        return _pread_all(fd, length, offset)
    finally:
        view.release()
        _set_direct(fd, False)  # the descriptor reads through the cache again
