"""(size, inode, mtime_ns, ctime_ns) → chunk list per source folder, so unchanged files are not read.

Kept sealed in the user's cache folder (it names files). An entry is trusted only if the file's mtime and
ctime were more than a second older than the time its stat was recorded (git's racy-clean rule, measured
from the recording rather than from the scan): a later write then changes one of them. A file that some
process had open for writing when it was read (``has_writers``) gets no entry: through a shared writable
mapping (``numpy.memmap``) its bytes keep changing without its stamps. A cached chunk that the index no
longer knows forces a re-read.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import threading
from dataclasses import dataclass

import zstandard

from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import Sealer
from strongroom.crypto.idhash import content_name
from strongroom.errors import StrongroomError

# A second, not the kernel's clock step: a file's stamps are set when a write() starts, and a large or stalled
# write can still be copying well after that; an entry recorded within this long of the stamps could hold
# part of it under a stat that the end of the write will not change.
RACY_WINDOW_NS = 1_000_000_000


_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)  # Linux's F_LINUX_SPECIFIC_BASE + 0


def ignore_lease_breaks() -> None:
    """Let ``has_writers`` work in this process: a writer opening the file in the instant a read lease is held
    makes the kernel signal the lease's owner with SIGIO, whose default action ends the process. Settable only
    from the main thread; elsewhere ``has_writers`` then does not ask."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGIO, signal.SIG_IGN)


def has_writers(fd: int) -> bool:
    """Whether a process has the file of ``fd`` (opened read-only) open for writing, or mapped shared and
    writable, right now: the kernel refuses a read lease then. False also when it cannot be told (not the
    file's owner without CAP_LEASE, a filesystem without leases, SIGIO not ignored here): as before, the
    stamps alone decide."""
    if signal.getsignal(signal.SIGIO) != signal.SIG_IGN:
        return False
    try:
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
    except OSError as e:
        return e.errno == errno.EAGAIN
    fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
    return False


@dataclass(frozen=True, slots=True)
class CachedFile:
    size: int
    inode: int
    mtime_ns: int
    ctime_ns: int
    chunks: tuple[bytes, ...]
    recorded_ns: int = 0  # when the stat was taken (0: unknown, an older cache: the scan's start stands in)


class FileCache:
    def __init__(self, path: str, sealer: Sealer, context: bytes) -> None:
        self.path = path
        self._sealer = sealer
        self._context = context
        self.entries: dict[str, CachedFile] = {}

    def load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError:
            self.entries = {}  # a missing or unreadable cache only costs a full read
            return
        key = (self.path, self._context)
        kept = _loaded.get(key) if _loaded is not None else None
        if kept is not None and kept[0] == content_name(data):
            self.entries = dict(kept[1])
            return
        try:
            plain = zstandard.ZstdDecompressor().decompress(
                self._sealer.open(data, ObjectKind.FILECACHE, self._context), max_output_size=1 << 31
            )
            raw = json.loads(plain)
            self.entries = {
                p: CachedFile(v[0], v[1], v[2], v[3], tuple(bytes.fromhex(c) for c in v[4]), int(v[5]) if v[5:] else 0)
                for p, v in raw.items()
            }
        except (
            ValueError,
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
            StrongroomError,
            zstandard.ZstdError,
        ):
            self.entries = {}
            return
        self._keep(data, self.entries)

    def lookup(self, rel: str, st: os.stat_result, scan_start_ns: int) -> tuple[bytes, ...] | None:
        c = self.entries.get(rel)
        if c is None:
            return None
        if (c.size, c.inode, c.mtime_ns, c.ctime_ns) != (st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns):
            return None
        recorded = min(c.recorded_ns or scan_start_ns, scan_start_ns)
        if max(st.st_mtime_ns, st.st_ctime_ns) >= recorded - RACY_WINDOW_NS:
            return None
        return c.chunks

    def save(self, entries: dict[str, CachedFile]) -> None:
        """Replace the cache file (a temporary file, renamed). A write that fails leaves the file as it was
        (its entries are checked against each file's stamps, so an older cache only costs reads) and the
        temporary file removed; the error goes to the caller, which says so (a commit: in a note)."""
        raw = {
            p: [c.size, c.inode, c.mtime_ns, c.ctime_ns, [x.hex() for x in c.chunks], c.recorded_ns]
            for p, c in entries.items()
        }
        plain = zstandard.ZstdCompressor(level=3).compress(json.dumps(raw, separators=(",", ":")).encode())
        data = self._sealer.seal(plain, ObjectKind.FILECACHE, self._context)
        tmp = f"{self.path}.tmp{os.getpid()}"
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._keep(data, entries)

    def _keep(self, data: bytes, entries: dict[str, CachedFile]) -> None:
        if _loaded is not None:
            key, kept = (self.path, self._context), (content_name(data), dict(entries))
            with _loaded_lock:  # an agent's watch threads and its command thread keep caches at once
                _loaded.pop(key, None)
                _loaded[key] = kept
                while len(_loaded) > KEPT_CACHES:  # the least recently kept go first
                    _loaded.pop(next(iter(_loaded)), None)


# The last cache read or written per (path, repository context), kept by a long-lived process (keep_loaded):
# a file whose bytes hash to the same name holds the same entries, so it is not opened and parsed again.
_loaded: dict[tuple[str, bytes], tuple[str, dict[str, CachedFile]]] | None = None
_loaded_lock = threading.Lock()
KEPT_CACHES = 16


def keep_loaded() -> None:
    global _loaded
    if _loaded is None:
        _loaded = {}
