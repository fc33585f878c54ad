"""A folder on a POSIX filesystem. Writes are temp file, fsync, rename, fsync of the folder."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from strongroom.backends.base import BackendError, ObjectMissing, validate_name


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
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
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                # A failed fsync is never retried: the kernel may already have dropped the pages.
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(d)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise BackendError(f"writing {name}: {e.strerror or e}") from None

    def put_exclusive(self, name: str, data: bytes) -> bool:
        path = self._path(name)
        d = os.path.dirname(path)
        try:
            self._ensure_dir(d)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        except OSError as e:
            raise BackendError(f"creating {name}: {e.strerror or e}") from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(d)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(path)  # never leave a half-written object under its name
            raise BackendError(f"writing {name}: {e.strerror or e}") from None
        return True

    def get(self, name: str) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
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
            out = os.pread(fd, length, offset)
        except OSError as e:
            raise BackendError(f"reading {name}: {e.strerror or e}") from None
        finally:
            os.close(fd)
        return out

    def size(self, name: str) -> int | None:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            return
        except OSError as e:
            raise BackendError(f"deleting {name}: {e.strerror or e}") from None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = os.path.join(self.root, prefix)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for fn in sorted(filenames):
                full = os.path.join(dirpath, fn)
                rel = os.path.relpath(full, self.root)
                try:
                    validate_name(rel)
                    yield rel, os.stat(full).st_size
                except (ValueError, FileNotFoundError):
                    continue  # temp files of writers in flight, or foreign junk

    def ensure_root(self) -> None:
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise BackendError(f"creating {self.root}: {e.strerror or e}") from None
