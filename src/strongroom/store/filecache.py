"""(size, inode, mtime_ns, ctime_ns) → chunk list per source folder, so unchanged files are not read.

Kept sealed in the user's cache folder (it names files). An entry is trusted only if the file's mtime and
ctime were older than the time its stat was recorded by more than the filesystem's timestamp step (git's
racy-clean rule): a later write then always changes one of them. A cached chunk that the index no longer
knows forces a re-read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
import time
from dataclasses import dataclass

import zstandard

from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import Sealer
from strongroom.errors import StrongroomError

RACY_WINDOW_NS = 1_000_000_000  # filesystems whose timestamps may step by whole seconds (or that we do not know)
FINE_WINDOW_MIN_NS = 10_000_000

# Local Linux filesystems that stamp files with the kernel's coarse clock at nanosecond resolution (statfs
# f_type): ext2/3/4, XFS, Btrfs, tmpfs, overlayfs (its upper layer's stamps), ZFS, F2FS. ext4 made with
# 128-byte inodes stores whole seconds; such stamps are caught per file (see window_for).
_FINE_FILESYSTEMS = frozenset({0xEF53, 0x58465342, 0x9123683E, 0x01021994, 0x794C7630, 0x2FC12FC1, 0xF2F52010})
_CLOCK_REALTIME_COARSE = 5


def racy_window_ns(folder: str) -> int:
    """How far back from the time a stat is taken a file's timestamps must be for that stat to be trusted
    later: twice the kernel's timestamp step on a known local filesystem, else a second."""
    if _fs_type(folder) not in _FINE_FILESYSTEMS:
        return RACY_WINDOW_NS
    try:
        step = int(time.clock_getres(_CLOCK_REALTIME_COARSE) * 1e9)
    except OSError:
        return RACY_WINDOW_NS
    return max(2 * step, FINE_WINDOW_MIN_NS)


def window_for(st: os.stat_result, folder_window_ns: int) -> int:
    """Whole-second stamps (an ext4 with small inodes, a mount we misjudged) get the one-second window."""
    if st.st_mtime_ns % 1_000_000_000 == 0 and st.st_ctime_ns % 1_000_000_000 == 0:
        return max(folder_window_ns, RACY_WINDOW_NS)
    return folder_window_ns


class _StatFs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 120)]  # f_type leads on every Linux ABI


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _fs_type(folder: str) -> int | None:
    try:
        libc = _libc()
        buf = _StatFs()
        if libc.statfs(os.fsencode(folder), ctypes.byref(buf)) != 0:
            return None
        return int(buf.f_type) & 0xFFFFFFFF
    except (OSError, AttributeError):
        return None  # not Linux, or no statfs: the safe window


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
            plain = zstandard.ZstdDecompressor().decompress(
                self._sealer.open(data, ObjectKind.FILECACHE, self._context), max_output_size=1 << 31
            )
            raw = json.loads(plain)
            self.entries = {
                p: CachedFile(v[0], v[1], v[2], v[3], tuple(bytes.fromhex(c) for c in v[4]), int(v[5]) if v[5:] else 0)
                for p, v in raw.items()
            }
        except (
            OSError,
            ValueError,
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
            StrongroomError,
            zstandard.ZstdError,
        ):
            self.entries = {}  # a missing or unreadable cache only costs a full read

    def lookup(
        self, rel: str, st: os.stat_result, scan_start_ns: int, window_ns: int = RACY_WINDOW_NS
    ) -> tuple[bytes, ...] | None:
        c = self.entries.get(rel)
        if c is None:
            return None
        if (c.size, c.inode, c.mtime_ns, c.ctime_ns) != (st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns):
            return None
        recorded = min(c.recorded_ns or scan_start_ns, scan_start_ns)
        if max(st.st_mtime_ns, st.st_ctime_ns) >= recorded - window_for(st, window_ns):
            return None
        return c.chunks

    def save(self, entries: dict[str, CachedFile]) -> None:
        raw = {
            p: [c.size, c.inode, c.mtime_ns, c.ctime_ns, [x.hex() for x in c.chunks], c.recorded_ns]
            for p, c in entries.items()
        }
        plain = zstandard.ZstdCompressor(level=3).compress(json.dumps(raw, separators=(",", ":")).encode())
        data = self._sealer.seal(plain, ObjectKind.FILECACHE, self._context)
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path)
