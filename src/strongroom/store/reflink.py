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

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass

from strongroom.core.model import FILE, Entry
from strongroom.store.chunker import Chunker
from strongroom.store.filecache import RACY_WINDOW_NS, CachedFile
from strongroom.store.repository import Repository
from strongroom.store.restore import CheckoutResult, checkout, set_owner_and_mode

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
            recorded = min(c.recorded_ns or cache_saved_ns, cache_saved_ns)
            racy = max(c.mtime_ns, c.ctime_ns) >= recorded - RACY_WINDOW_NS
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
        self.dest = dest
        self._dest_dev: int | None = None  # dest is made by the checkout that calls place()
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
            return self._try_clone(donor, path, entry)
        except OSError:
            # No room, no inode, a folder that went away: nothing is left at path (or it is removed
            # here), and the file is written from the repository, where such an error is reported.
            with contextlib.suppress(OSError):
                if os.path.lexists(path):
                    os.unlink(path)
            return False

    def _try_clone(self, donor: Donor, path: bytes, entry: Entry) -> bool | None:
        try:
            src = os.open(donor.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False  # gone, replaced by a symlink, unreadable: not a donor
        try:
            st = os.fstat(src)
            if self._dest_dev is None:
                self._dest_dev = os.stat(self.dest).st_dev
            if (st.st_dev, self._dest_dev) in _no_reflink:
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
                set_owner_and_mode(dst, entry)
                done = True
            finally:
                os.close(dst)
                if not done:
                    os.unlink(path)
        finally:
            os.close(src)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
        return True


def checkout_shared(
    repo: Repository, tree_id: bytes, dest: str, includes: list[str] | None, donors: Donors, own: Collection[str] = ()
) -> tuple[CheckoutResult, int]:
    """restore.checkout for a workspace: files a donor holds are reflinked, the others written. Returns the
    result (its ``bytes`` are the bytes written) and the bytes reflinked."""
    sharer = Sharer(repo, donors, dest)
    return checkout(repo, tree_id, dest, includes, place=sharer.place, own=own), sharer.reflinked
