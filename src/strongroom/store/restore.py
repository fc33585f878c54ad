"""Version → folder: byte-identical files with their modes and mtimes, folders, symlinks. Files are
written by forked workers; every chunk is decrypted and checked against its id on the way out."""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from strongroom.backends.directio import DIRECT_MIN, SequentialWriter
from strongroom.core.ids import ObjectKind
from strongroom.core.model import DIR, FILE, SYMLINK, Entry
from strongroom.errors import CannotWrite, DestinationNotEmpty, InputError, IntegrityError, StrongroomError
from strongroom.store import parallel
from strongroom.store.repository import Repository

Progress = Callable[[int, int], None]


def walk(repo: Repository, tree_id: bytes, prefix: str = "") -> Iterator[tuple[str, Entry]]:
    """Every entry below a tree, folders before their contents, paths relative to the version's root."""
    for e in repo.load_tree(tree_id).entries:
        rel = f"{prefix}/{e.name}" if prefix else e.name
        yield rel, e
        if e.type == DIR and e.subtree is not None:
            yield from walk(repo, e.subtree, rel)


def matches(rel: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or rel.startswith(p.rstrip("/") + "/") or rel == p for p in patterns)


@dataclass
class CheckoutResult:
    files: int
    bytes: int
    folders: int
    links: int
    failed: list[tuple[str, str]]


def _os_path(dest: str, rel: str) -> bytes:
    return os.fsencode(os.path.join(dest, rel))


class Prefetcher:
    """Fetches the frames of a sequence of chunks a few ahead on threads, so that waiting for the device
    overlaps decrypting and writing. Frames are handed out in order, file by file (frames_for)."""

    def __init__(self, repo: Repository, ids: Iterable[bytes], depth: int = 8, threads: int = 2) -> None:
        self._repo = repo
        self._ids = iter(ids)
        self._pool = ThreadPoolExecutor(max_workers=threads)
        self._ahead: deque[Future[bytes]] = deque()
        for _ in range(depth):
            self._submit()

    def _submit(self) -> None:
        cid = next(self._ids, None)
        if cid is not None:
            self._ahead.append(self._pool.submit(self._repo.fetch_frame, cid, ObjectKind.CHUNK))

    def _take(self) -> Future[bytes]:
        fut = self._ahead.popleft()
        self._submit()
        return fut

    def frames_for(self, ids: tuple[bytes, ...]) -> FileFrames:
        return FileFrames(self, len(ids))

    def close(self) -> None:
        for fut in self._ahead:
            fut.cancel()
        self._pool.shutdown(wait=True)


class FileFrames:
    """The frames of one file's chunks, in order. close() skips those not taken (a file that failed),
    so the next file starts at its own first chunk."""

    def __init__(self, prefetch: Prefetcher, count: int) -> None:
        self._prefetch = prefetch
        self._left = count

    def __iter__(self) -> FileFrames:
        return self

    def __next__(self) -> bytes:
        if self._left == 0:
            raise StopIteration
        self._left -= 1
        return self._prefetch._take().result()

    def close(self) -> None:
        while self._left:
            self._left -= 1
            self._prefetch._take().cancel()


def write_file(repo: Repository, path: bytes, entry: Entry, frames: Iterator[bytes] | None = None) -> None:
    """Restore one file (absent) at path; frames, when given, are its chunks' frames in order. A file that
    cannot be written whole (damaged data, a full disk) is removed: no file stands at its name half written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            # Large files bypass the page cache (backends.directio): it saves a copy per byte restored.
            out = SequentialWriter(fd, direct=entry.size >= DIRECT_MIN)
            if frames is None:
                for cid in entry.chunks:
                    out.write(repo.read_object(cid, ObjectKind.CHUNK))
            else:
                for cid, frame in zip(entry.chunks, frames, strict=True):
                    out.write(repo.open_frame(cid, ObjectKind.CHUNK, frame))
            out.close()
            set_owner_and_mode(fd, entry)
        finally:
            os.close(fd)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def set_owner_and_mode(fd: int, entry: Entry) -> None:
    """The entry's owner (when running as root) and mode on a restored file."""
    if os.geteuid() == 0:
        os.fchown(fd, entry.uid, entry.gid)
    os.fchmod(fd, entry.mode)  # after chown, which clears set-user-ID and set-group-ID bits


def _restore_files(
    repo: Repository, dest: str, share: list[tuple[str, Entry]], send: Callable[[tuple[Any, ...]], None]
) -> None:
    prefetch = Prefetcher(repo, (cid for _, e in share for cid in e.chunks))
    try:
        for rel, e in share:
            try:
                with contextlib.closing(prefetch.frames_for(e.chunks)) as frames:
                    write_file(repo, _os_path(dest, rel), e, frames)
            except StrongroomError as err:  # damaged or missing data
                send(("failed", rel, str(err), "damaged"))
                continue
            except OSError as err:  # the destination refused the write: a full disk, a quota, a device error
                send(("failed", rel, err.strerror or str(err), "unwritable"))
                continue
            send(("file", rel, e.size))
    finally:
        prefetch.close()


@contextlib.contextmanager
def _cannot_restore(rel: str) -> Iterator[None]:
    """A folder or link the destination cannot take (a path too long, no space, no symlinks there): one line,
    exit 2, naming it."""
    try:
        yield
    except OSError as err:
        raise InputError(f"cannot restore {rel}: {err.strerror or err}") from None


def checkout(
    repo: Repository,
    tree_id: bytes,
    dest: str,
    includes: list[str] | None = None,
    workers: int = 0,
    progress_start: Callable[[int, int], None] | None = None,
    progress: Progress | None = None,
    place: Callable[[bytes, Entry], bool] | None = None,
    own: Collection[str] = (),
) -> CheckoutResult:
    """Write the version (or the files matching includes) into dest. place(path, entry), when given, may
    put a file there by other means (a workspace's reflink) and say so; the others are written here.
    Names in ``own`` (a workspace's metadata and lock) may already be in dest. The result's bytes are the
    bytes written."""
    if os.path.lexists(dest) and (not os.path.isdir(dest) or set(os.listdir(dest)) - set(own)):
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
    try:
        os.makedirs(dest, mode=0o700, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create {dest}: {err.strerror or err}") from None
    folders = [(r, e) for r, e in entries if e.type == DIR]
    files = [(r, e) for r, e in entries if e.type == FILE]
    links = [(r, e) for r, e in entries if e.type == SYMLINK]
    for rel, _ in folders:
        with _cannot_restore(rel):
            os.mkdir(_os_path(dest, rel), 0o700)
    placed = [(r, e) for r, e in files if place is not None and place(_os_path(dest, r), e)]
    if placed:
        done = {r for r, _ in placed}
        files = [(r, e) for r, e in files if r not in done]
    total = sum(e.size for _, e in files)
    if progress_start:
        progress_start(len(files), total)
    n = workers or parallel.default_workers()
    shares = parallel.deal(files, lambda x: x[1].size, n) if total >= (32 << 20) else [files]
    failed: list[tuple[str, str]] = []
    unwritable: set[str] = set()
    done_bytes = 0

    def handle(msg: tuple[Any, ...]) -> None:
        nonlocal done_bytes
        if msg[0] == "failed":
            failed.append((msg[1], msg[2]))
            if msg[3] == "unwritable":
                unwritable.add(msg[1])
        elif msg[0] == "file":
            done_bytes += msg[2]
            if progress:
                progress(1, msg[2])

    parallel.run(shares, lambda share, send: _restore_files(repo, dest, share, send), handle)
    for rel, e in links:
        p = _os_path(dest, rel)
        with _cannot_restore(rel):
            os.symlink(os.fsencode(e.target or ""), p)
        try:
            os.utime(p, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
            if os.geteuid() == 0:
                os.lchown(p, e.uid, e.gid)
        except OSError:
            pass
    for rel, e in sorted(folders, key=lambda x: -x[0].count("/")):
        p = _os_path(dest, rel)
        with _cannot_restore(rel):
            if os.geteuid() == 0:
                os.chown(p, e.uid, e.gid)
            os.chmod(p, e.mode)
            os.utime(p, ns=(e.mtime_ns, e.mtime_ns))
    if failed:
        failed.sort()
        damaged = [f for f in failed if f[0] not in unwritable]
        if damaged:  # the repository's problem first: it is the one a retry elsewhere does not cure
            rel, why = damaged[0]
            raise IntegrityError(f"{len(damaged)} file(s) could not be restored (damaged data), first: {rel}: {why}")
        rel, why = failed[0]
        raise CannotWrite(
            f"{len(failed)} file(s) could not be written into {dest}, first: {rel}: {why}; "
            "the others were restored, and no file was left half written"
        )
    return CheckoutResult(len(files) + len(placed), done_bytes, len(folders), len(links), failed)
