"""A throwaway reflink-capable filesystem for tests: a sparse 300 MiB image file formatted as XFS with
reflink=1 and loop-mounted under a fresh temporary folder, unmounted and removed at the end.

Getting it needs root (mount), a free loop device and mkfs.xfs: ``scripts/ensure-system-deps.sh xfsprogs``
finds mkfs.xfs, or installs xfsprogs with apt-get when it is missing and we are root. Under ``CI=true`` a
filesystem that cannot be had fails the tests; elsewhere they are skipped with the reason.

Also `shared_extents(path)`: the physical extents of a file that FIEMAP flags as shared, to check that two
files really share their blocks.

Use from a test module: ``from tests.xfs import reflink_fs``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from strongroom.store.reflink import FICLONE
from tests import sysdeps

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_SHARED = 0x2000
_FIEMAP_HEAD = struct.Struct("=QQLLLL")  # fm_start, fm_length, fm_flags, fm_mapped_extents, fm_extent_count, -
_FIEMAP_EXTENT = struct.Struct("=QQQQQLLLL")  # fe_logical, fe_physical, fe_length, 2 reserved, fe_flags, 3 reserved


def _unavailable(reason: str) -> NoReturn:
    sysdeps.unavailable(
        "a reflink-capable filesystem (loop-mounted XFS) is needed",
        "no reflink-capable filesystem for the reflink tests",
        reason,
    )


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _last_line(p: subprocess.CompletedProcess[str]) -> str:
    return (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or [f"exit {p.returncode}"])[-1]


def _mkfs() -> str:
    return sysdeps.ensure("xfsprogs", "mkfs", _unavailable)


def _probe(mnt: Path) -> None:
    """Clone one small file: a kernel or mkfs without reflink support makes the tests meaningless."""
    src, dst = mnt / ".probe-src", mnt / ".probe-dst"
    src.write_bytes(b"x" * 8192)
    try:
        with open(src, "rb") as s, open(dst, "wb") as d:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
    except OSError as e:
        _unavailable(f"FICLONE on the mounted XFS failed: {e.strerror}")
    finally:
        src.unlink()
        dst.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def reflink_fs() -> Iterator[Path]:
    """The root of a mounted, empty, reflink-capable XFS filesystem (one per test process)."""
    if os.geteuid() != 0:
        _unavailable("mounting a loop device needs root")
    mkfs = _mkfs()
    base = Path(tempfile.mkdtemp(prefix="strongroom-xfs-"))
    image, mnt = base / "xfs.img", base / "mnt"
    mnt.mkdir()
    mounted = False
    try:
        with open(image, "wb") as f:
            f.truncate(300 << 20)  # sparse; the smallest size mkfs.xfs accepts
        p = _run(mkfs, "-q", "-f", "-m", "reflink=1", str(image))
        if p.returncode != 0:
            _unavailable(f"mkfs.xfs failed: {_last_line(p)}")
        p = _run("mount", "-o", "loop", str(image), str(mnt))
        if p.returncode != 0:
            _unavailable(f"mount -o loop failed: {_last_line(p)}")
        mounted = True
        _probe(mnt)
        yield mnt
    finally:
        if mounted and _run("umount", str(mnt)).returncode != 0:
            _run("umount", "-l", str(mnt))
        shutil.rmtree(base, ignore_errors=True)


def shared_extents(path: Path) -> list[tuple[int, int, int]]:
    """(logical, physical, length) of each extent of ``path`` that FIEMAP flags as shared."""
    count = 64
    buf = bytearray(_FIEMAP_HEAD.size + count * _FIEMAP_EXTENT.size)
    _FIEMAP_HEAD.pack_into(buf, 0, 0, 0xFFFFFFFFFFFFFFFF, FIEMAP_FLAG_SYNC, 0, count, 0)
    with open(path, "rb") as f:
        fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
    mapped = _FIEMAP_HEAD.unpack_from(buf, 0)[3]
    out = []
    for i in range(mapped):
        logical, physical, length, _, _, flags, *_ = _FIEMAP_EXTENT.unpack_from(
            buf, _FIEMAP_HEAD.size + i * _FIEMAP_EXTENT.size
        )
        if flags & FIEMAP_EXTENT_SHARED:
            out.append((logical, physical, length))
    return out
