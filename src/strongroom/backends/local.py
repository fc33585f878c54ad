"""A folder on a POSIX filesystem. Writes are temp file, fsync, rename, fsync of the folder. Large objects
(packs) are written and, when not already cached, read past the page cache (backends.directio)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from strongroom.backends import directio
from strongroom.backends.base import BackendError, ObjectMissing, StorageFull, validate_name

# put and put_exclusive write under <name>.tmp<pid>-<8 hex> first: the writer's PID, not its host.
TEMPORARY = re.compile(r"^.+\.tmp(?P<pid>[0-9]{1,10})-[0-9a-f]{8}$")


@dataclass(frozen=True)
class Temporary:
    """A temporary file of put or put_exclusive: a write in progress, or one whose process was killed before
    it renamed (or removed) the file."""

    name: str  # relative to the root, with "/"
    pid: int  # of the process that wrote it, on whichever host that ran
    mtime_ns: int  # when it was last written to


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: str, data: bytes) -> None:
    """Create ``path`` (FileExistsError if it exists), write ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._known_dirs: set[str] = set()

    def __repr__(self) -> str:
        return f"LocalBackend({self.root!r})"

    def describe(self) -> str:
        return self.root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, validate_name(name))

    def _ensure_dir(self, d: str) -> None:
        if d in self._known_dirs:
            return
        if not os.path.isdir(d):
            parent = os.path.dirname(d)
            self._ensure_dir(parent)
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, 0o700)
            _fsync_dir(parent)
        self._known_dirs.add(d)

    def put(self, name: str, data: bytes | memoryview) -> None:
        path = self._path(name)
        d = os.path.dirname(path)
        tmp = f"{path}.tmp{os.getpid()}-{os.urandom(4).hex()}"
        try:
            self._ensure_dir(d)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                directio.write_file(fd, data)
                # A failed fsync is never retried: the kernel may already have dropped the pages.
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(d)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _write_error(name, e) from None

    def put_exclusive(self, name: str, data: bytes) -> bool:
        """Create ``name`` unless it exists. The content is written and fsynced under a temporary name first
        and then hard-linked into place, so the name never exists empty or half-written: a lock file cut off
        by a crash would otherwise block every writer (its holder unreadable, so never found stale)."""
        path = self._path(name)
        d = os.path.dirname(path)
        tmp = f"{path}.tmp{os.getpid()}-{os.urandom(4).hex()}"
        try:
            self._ensure_dir(d)
            _write_new(tmp, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                # a filesystem without hard links: the rename would replace a lock someone holds, so create
                # the name exclusively and write into it (a crash in between can leave it empty)
                if not self._create_and_write(path, data):
                    return False
            finally:
                os.unlink(tmp)
            _fsync_dir(d)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _write_error(name, e) from None
        return True

    @staticmethod
    def _create_and_write(path: str, data: bytes) -> bool:
        try:
            _write_new(path, data)
        except FileExistsError:
            return False
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)  # never leave a half-written object under its name
            raise
        return True

    def get(self, name: str) -> bytes:
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
            try:
                return directio.read_range(fd, 0, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise ObjectMissing(name) from None
        except OSError as e:
            raise BackendError(f"reading {name}: {e.strerror or e}") from None

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectMissing(name) from None
        except OSError as e:
            raise BackendError(f"reading {name}: {e.strerror or e}") from None
        try:
            out = directio.read_range(fd, offset, length)
        except OSError as e:
            raise BackendError(f"reading {name}: {e.strerror or e}") from None
        finally:
            os.close(fd)
        return out

    def size(self, name: str) -> int | None:
        try:
            return os.stat(self._path(name)).st_size
        except (FileNotFoundError, NotADirectoryError):  # a file where the repository's folder should be
            return None

    def delete(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            return
        except OSError as e:
            raise BackendError(f"deleting {name}: {e.strerror or e}") from None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        # scandir and string joins rather than os.walk + relpath: audit sealing lists thousands of objects.
        yield from self._list_dir(os.path.join(self.root, prefix), prefix.strip("/"))

    def folder_stamps(self, prefix: str) -> dict[str, int] | None:
        stamps = {}
        try:
            with os.scandir(os.path.join(self.root, prefix)) as it:
                for e in it:
                    with contextlib.suppress(OSError):
                        if e.is_dir(follow_symlinks=False):
                            stamps[e.name] = e.stat(follow_symlinks=False).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            pass
        return stamps

    def _list_dir(self, path: str, rel: str) -> Iterator[tuple[str, int]]:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        subdirs = []
        for e in entries:
            name = f"{rel}/{e.name}" if rel else e.name
            try:
                if e.is_dir():
                    if not e.is_symlink():  # as os.walk: a link to a folder is not followed
                        subdirs.append((e.path, name))
                    continue
                validate_name(name)
                yield name, e.stat().st_size
            except (ValueError, FileNotFoundError):
                continue  # temp files of writers in flight, or foreign junk
        for sub_path, sub_rel in subdirs:
            yield from self._list_dir(sub_path, sub_rel)

    def temporaries(self) -> tuple[Temporary, ...]:
        """Every temporary file of put and put_exclusive below the root (``list`` skips them), by name."""
        found = []
        for folder, dirs, files in os.walk(self.root):  # links to folders are not followed
            dirs.sort()
            for file in sorted(files):
                match = TEMPORARY.match(file)
                if match is None:
                    continue
                path = os.path.join(folder, file)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue  # renamed into place (or removed) since the listing
                if not stat.S_ISREG(st.st_mode):
                    continue
                name = os.path.relpath(path, self.root).replace(os.sep, "/")
                found.append(Temporary(name, int(match["pid"]), st.st_mtime_ns))
        return tuple(found)

    def remove_temporary(self, name: str) -> bool:
        """Remove a temporary file ``temporaries`` listed; False when it is gone already (renamed into place)."""
        path = os.path.join(self.root, name)
        if TEMPORARY.match(os.path.basename(name)) is None or ".." in name.split("/") or os.path.isabs(name):
            raise ValueError(f"not a temporary file: {name!r}")
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise BackendError(f"deleting {name}: {e.strerror or e}") from None
        return True

    def ensure_root(self) -> None:
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise BackendError(f"creating {self.root}: {e.strerror or e}") from None


def _write_error(name: str, e: OSError) -> BackendError:
    """StorageFull for a disk or quota that is full (a reader may go on without its lock), else BackendError."""
    cls = StorageFull if e.errno in (errno.ENOSPC, errno.EDQUOT) else BackendError
    return cls(f"writing {name}: {e.strerror or e}")
