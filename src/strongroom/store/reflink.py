"""Reflink sharing between workspaces: a file whose content another workspace of the same repository
already holds, unchanged, is cloned (FICLONE: both files share their blocks, copy-on-write, until either
is written) instead of being decrypted and written again. Never hard-linked: an in-place edit through a
hard link would change every copy.

A donor is a file of another workspace whose file-cache entry has the same chunk list and whose stat, on
the opened descriptor, still matches that entry (size, inode, mtime, ctime): unchanged since it was written
or committed. The stat is checked again after the clone; a donor changed within the racy window before its
cache was saved is also re-hashed after cloning (git's racy-clean rule), since an edit in the same clock
tick leaves its stat as cached. Where the filesystem has no reflinks (ext4, or the donor on another
filesystem) the file is written from the repository, and the pair of filesystems is remembered for the
life of the process so the ioctl is not tried again for every file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strongroom.core.model import DIR, FILE, SYMLINK, Entry
from strongroom.errors import DestinationNotEmpty, InputError, IntegrityError, StrongroomError
from strongroom.store import parallel
from strongroom.store.chunker import Chunker
from strongroom.store.filecache import RACY_WINDOW_NS, CachedFile
from strongroom.store.repository import Repository
from strongroom.store.restore import CheckoutResult, matches, walk, write_file

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
NO_REFLINK_ERRNOS = frozenset({errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EBADF})
_no_reflink: set[tuple[int, int]] = set()  # (donor st_dev, destination st_dev) pairs that refused FICLONE


@dataclass(frozen=True, slots=True)
class Donor:
    path: bytes
    cached: CachedFile
    racy: bool  # changed within the racy window before its cache was saved: hash the clone


class Donors:
    """Files of other workspaces by content (chunk list)."""

    def __init__(self) -> None:
        self._by_content: dict[tuple[bytes, ...], list[Donor]] = {}

    def add_folder(self, folder: str, entries: dict[str, CachedFile], cache_saved_ns: int) -> None:
        for rel, c in entries.items():
            if c.size == 0:
                continue  # nothing to share
            racy = max(c.mtime_ns, c.ctime_ns) >= cache_saved_ns - RACY_WINDOW_NS
            donor = Donor(os.fsencode(os.path.join(folder, rel)), c, racy)
            self._by_content.setdefault(c.chunks, []).append(donor)

    def __bool__(self) -> bool:
        return bool(self._by_content)

    def for_entry(self, entry: Entry) -> list[Donor]:
        if entry.type != FILE or not entry.size:
            return []
        return [d for d in self._by_content.get(entry.chunks, []) if d.cached.size == entry.size]


def _unchanged(st: os.stat_result, c: CachedFile) -> bool:
    return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns) == (
        c.size,
        c.inode,
        c.mtime_ns,
        c.ctime_ns,
    )


class Sharer:
    """Places files into one destination folder by reflink from donors, counting what it cloned."""

    def __init__(self, repo: Repository, donors: Donors, dest: str) -> None:
        self.repo = repo
        self.donors = donors
        self.dest_dev = os.stat(dest).st_dev
        self.reflinked = 0
        self._chunker: Chunker | None = None

    def _same_content(self, fd: int, chunks: tuple[bytes, ...]) -> bool:
        if self._chunker is None:
            self._chunker = Chunker(self.repo.chunker_params, self.repo.chunker_seed)
        os.lseek(fd, 0, os.SEEK_SET)
        return tuple(self.repo.hasher(c) for c in self._chunker.cut_fd(fd)) == chunks

    def place(self, path: bytes, entry: Entry) -> bool:
        """Create ``path`` (absent) as a clone of a donor with ``entry``'s owner, mode and mtime. False, with
        nothing left at ``path``, when no donor is unchanged or the filesystem cannot clone it."""
        for donor in self.donors.for_entry(entry):
            cloned = self._clone(donor, path, entry)
            if cloned is None:
                return False  # this filesystem pair has no reflinks: no use trying other donors
            if cloned:
                self.reflinked += entry.size
                return True
        return False

    def _clone(self, donor: Donor, path: bytes, entry: Entry) -> bool | None:
        try:
            src = os.open(donor.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False  # gone, replaced by a symlink, unreadable: not a donor
        try:
            st = os.fstat(src)
            if (st.st_dev, self.dest_dev) in _no_reflink:
                return None
            if not _unchanged(st, donor.cached):
                return False
            dst = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            done = False
            try:
                try:
                    fcntl.ioctl(dst, FICLONE, src)
                except OSError as e:
                    if e.errno in NO_REFLINK_ERRNOS:
                        _no_reflink.add((st.st_dev, os.fstat(dst).st_dev))
                        return None
                    return False
                if not _unchanged(os.fstat(src), donor.cached):
                    return False  # the donor changed while it was cloned
                if donor.racy and not self._same_content(dst, entry.chunks):
                    return False
                if os.geteuid() == 0:
                    os.fchown(dst, entry.uid, entry.gid)
                os.fchmod(dst, entry.mode)  # after chown, which clears set-user-ID and set-group-ID bits
                done = True
            finally:
                os.close(dst)
                if not done:
                    os.unlink(path)
        finally:
            os.close(src)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
        return True


def _write_files(repo: Repository, dest: str, share: list[tuple[str, Entry]], send: Callable[[Any], None]) -> None:
    for rel, e in share:
        try:
            write_file(repo, os.fsencode(os.path.join(dest, rel)), e)
        except (StrongroomError, OSError) as err:
            send(("failed", rel, str(err) if isinstance(err, StrongroomError) else (err.strerror or str(err))))
            continue
        send(("file", rel, e.size))


def checkout_shared(
    repo: Repository, tree_id: bytes, dest: str, includes: list[str] | None, donors: Donors
) -> tuple[CheckoutResult, int]:
    """restore.checkout for a workspace: files a donor holds are reflinked, the others written (by forked
    workers above 32 MiB). Returns the result (its ``bytes`` are the bytes written) and the bytes reflinked."""
    if os.path.lexists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise DestinationNotEmpty(dest)
    entries = list(walk(repo, tree_id))
    if includes:
        wanted = [(r, e) for r, e in entries if e.type != DIR and matches(r, includes)]
        if not wanted:
            raise InputError(f"no path in the version matches {' '.join(includes)}")
        dirs = {"/".join(r.split("/")[:i]) for r, _ in wanted for i in range(1, r.count("/") + 1)}
        entries = [
            (r, e) for r, e in entries if (e.type == DIR and r in dirs) or (e.type != DIR and matches(r, includes))
        ]
    os.makedirs(dest, mode=0o700, exist_ok=True)
    folders = [(r, e) for r, e in entries if e.type == DIR]
    files = [(r, e) for r, e in entries if e.type == FILE]
    for rel, _ in folders:
        os.mkdir(os.path.join(dest, rel), 0o700)
    sharer = Sharer(repo, donors, dest)
    rest = [(r, e) for r, e in files if not sharer.place(os.fsencode(os.path.join(dest, r)), e)]
    total = sum(e.size for _, e in rest)
    shares = parallel.deal(rest, lambda x: x[1].size, parallel.default_workers()) if total >= (32 << 20) else [rest]
    failed: list[tuple[str, str]] = []
    written = 0

    def handle(msg: tuple[Any, ...]) -> None:
        nonlocal written
        if msg[0] == "failed":
            failed.append((msg[1], msg[2]))
        elif msg[0] == "file":
            written += msg[2]

    parallel.run(shares, lambda share, send: _write_files(repo, dest, share, send), handle)
    links = [(r, e) for r, e in entries if e.type == SYMLINK]
    for rel, e in links:
        p = os.fsencode(os.path.join(dest, rel))
        os.symlink(os.fsencode(e.target or ""), p)
        try:
            os.utime(p, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
            if os.geteuid() == 0:
                os.lchown(p, e.uid, e.gid)
        except OSError:
            pass
    for rel, e in sorted(folders, key=lambda x: -x[0].count("/")):
        p = os.fsencode(os.path.join(dest, rel))
        if os.geteuid() == 0:
            os.chown(p, e.uid, e.gid)
        os.chmod(p, e.mode)
        os.utime(p, ns=(e.mtime_ns, e.mtime_ns))
    if failed:
        failed.sort()
        raise IntegrityError(f"{len(failed)} file(s) could not be restored, first: {failed[0][0]}: {failed[0][1]}")
    return CheckoutResult(len(files), written, len(folders), len(links), failed), sharer.reflinked
