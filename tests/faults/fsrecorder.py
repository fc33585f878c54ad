"""Record the file-system operations a process makes under a few folders, then build the states a power loss
could leave behind (RELIABILITY T02, after ALICE: Pillai et al., "All File Systems Are Not Created Equal",
OSDI 2014).

`Recorder` monkeypatches the Python-level calls that change files (``os.open`` with ``O_CREAT``/``O_TRUNC``,
``os.write``, ``os.pwrite``, ``os.writev``/``pwritev``, ``os.ftruncate``, ``os.fsync``/``fdatasync`` of a
file or of a folder, ``os.replace``/``rename``, ``os.link``, ``os.unlink``/``remove``, ``os.mkdir``/``rmdir``,
and binary file objects from ``open``/``io.open``/``os.fdopen``, whose writes reach the kernel through a
recording ``FileIO``) and records them in the order they ran (one lock orders the threads), with the bytes
written. Calls it cannot model under a recorded folder (symbolic links, a folder renamed, ``O_TMPFILE``,
text-mode writes, ``dir_fd``) are listed in ``unsupported`` rather than silently missed. Files are tracked
by identity (a rename or a link carries the identity), so a write is attributed to its file whatever name
the file has when the write persists. It does not see what C code writes by itself (SQLite: exclude its
folder), nor the calls of processes forked while it records (run the work in one process): a test should
check that replaying the whole trace gives the folders as they ended up, which catches anything missed.

`CrashModel` replays that trace under a conservative persistence model (ALICE's abstract model for a
journaling file system, without its ordering guarantees):

* the bytes of a write (or a truncate) are durable once an ``fsync`` of that file has completed;
* a folder entry change (create, rename, link, unlink, mkdir, rmdir) is durable once an ``fsync`` of that
  folder has completed (of both folders, for a rename between two); an ``fsync`` of the file is not enough;
* anything not yet durable at the crash may be lost, may persist, or may persist out of order (a later
  rename without an earlier write, say); a write may persist as a prefix of itself (a torn write), and a
  write past the end of what persisted leaves a hole of zeros;
* each entry change is atomic (a rename is never half done), and a persisted rename or link names the file
  it carries even when the creation of its first name was lost;
* a file or folder whose parent folder's creation was lost is not reachable.

A crash state is a crash point (the number of operations that ran) and a choice of the non-durable
operations that persisted (with a torn length for some writes).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import os
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

BARRIERS = frozenset({"fsync", "fsync_dir"})
ENTRY_OPS = frozenset({"create", "rename", "link", "unlink", "mkdir", "rmdir"})
DATA_OPS = frozenset({"write", "truncate"})
NEVER = 1 << 62


def parent(key: str) -> str:
    return key.rsplit("/", 1)[0] if "/" in key else ""


@dataclass(frozen=True)
class Op:
    """One recorded operation. Paths are keys: ``<root name>/<path relative to that root>``."""

    kind: str  # create | write | truncate | fsync | fsync_dir | rename | link | unlink | mkdir | rmdir
    path: str  # the file or folder the operation names (for write/truncate/fsync: the name it was opened as)
    dest: str = ""  # rename, link: the new name
    ino: int = 0  # file identity (create, write, truncate, fsync, rename, link)
    offset: int = 0  # write
    data: bytes = b""  # write
    size: int = 0  # truncate
    thread: str = ""

    def describe(self) -> str:
        if self.kind == "write":
            return f"write {self.path} [{self.offset}, {self.offset + len(self.data)})"
        if self.kind == "truncate":
            return f"truncate {self.path} to {self.size}"
        if self.kind in ("rename", "link"):
            return f"{self.kind} {self.path} -> {self.dest}"
        return f"{self.kind} {self.path}"


# ------------------------------------------------------------------------------------------ recording

_real_open = os.open
_real_close = os.close
_real_write = os.write
_real_pwrite = os.pwrite
_real_writev = os.writev
_real_pwritev = os.pwritev
_real_ftruncate = os.ftruncate
_real_truncate = os.truncate
_real_fsync = os.fsync
_real_fdatasync = os.fdatasync
_real_replace = os.replace
_real_rename = os.rename
_real_unlink = os.unlink
_real_remove = os.remove
_real_mkdir = os.mkdir
_real_rmdir = os.rmdir
_real_link = os.link
_real_symlink = os.symlink
_real_io_open = io.open


def _fileno(fd: Any) -> int:
    return fd if isinstance(fd, int) else int(fd.fileno())


class _RecordingFileIO(io.FileIO):
    """A FileIO whose writes and close are seen by the recorder (buffered file objects call these)."""

    _recorder: Recorder

    def write(self, b: Any) -> int:
        fd = self.fileno()
        return self._recorder._record_write(fd, lambda: io.FileIO.write(self, b) or 0, b, None)

    def close(self) -> None:
        if not self.closed and self.closefd:
            self._recorder._forget(self.fileno())
        super().close()


@dataclass
class Recorder:
    """Records the operations made under ``roots`` (name → folder), except below ``exclude`` (folders
    whose files are changed by C code the recorder cannot see, such as SQLite databases)."""

    roots: Mapping[str, str]
    exclude: tuple[str, ...] = ()
    ops: list[Op] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    initial: dict[int, str] = field(default_factory=dict)  # identity → key of a file present at the start

    def __post_init__(self) -> None:
        self._roots = [(name, os.path.abspath(p)) for name, p in self.roots.items()]
        self._exclude = [os.path.abspath(p) for p in self.exclude]
        self._names: dict[str, int] = {}
        self._fds: dict[int, tuple[str, int | None]] = {}  # fd → (key, identity; None for a folder)
        self._next = 1
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- bookkeeping

    def key(self, path: Any) -> str | None:
        """The key of a path under a recorded root, or None."""
        if isinstance(path, int):
            return None
        p = os.path.abspath(os.fsdecode(os.fspath(path)))
        for ex in self._exclude:
            if p == ex or p.startswith(ex + os.sep):
                return None
        for name, root in self._roots:
            if p == root:
                return name
            if p.startswith(root + os.sep):
                return f"{name}/{p[len(root) + 1 :]}"
        return None

    def _add(self, op: Op) -> None:
        self.ops.append(Op(**{**op.__dict__, "thread": threading.current_thread().name}))

    def _identity(self, key: str) -> int:
        """The identity of the file at ``key`` (a file present when recording started gets one now)."""
        ino = self._names.get(key)
        if ino is None:
            ino = self._new(key)
            self.initial[ino] = key
        return ino

    def _new(self, key: str) -> int:
        ino = self._next
        self._next += 1
        self._names[key] = ino
        return ino

    def _forget(self, fd: int) -> None:
        with self._lock:
            self._fds.pop(fd, None)

    def _record_write(self, fd: int, do: Callable[[], int], data: Any, offset: int | None) -> int:
        ent = self._fds.get(fd)
        if ent is None or ent[1] is None:
            return do()
        with self._lock:
            n = do()
            at = os.lseek(fd, 0, os.SEEK_CUR) - n if offset is None else offset
            written = bytes(memoryview(data).cast("B")[:n])
            self._add(Op("write", ent[0], ino=ent[1], offset=at, data=written))
        return n

    # ---------------------------------------------------------------- the patched calls

    def _open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        key = self.key(path) if dir_fd is None or os.path.isabs(os.fsdecode(os.fspath(path))) else None
        if dir_fd is not None and dir_fd in self._fds:
            self.unsupported.append(f"os.open with dir_fd of {self._fds[dir_fd][0]}")
        if key is None:
            return _real_open(path, flags, mode, dir_fd=dir_fd)
        tmpfile = getattr(os, "O_TMPFILE", 0)
        if tmpfile and flags & tmpfile == tmpfile:
            self.unsupported.append(f"an O_TMPFILE file in {key}")
        with self._lock:
            existed = os.path.lexists(path)
            fd = _real_open(path, flags, mode, dir_fd=dir_fd)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                self._fds[fd] = (key, None)
                return fd
            if existed:
                ino = self._identity(key)
                if flags & os.O_TRUNC and flags & (os.O_WRONLY | os.O_RDWR):
                    self._add(Op("truncate", key, ino=ino, size=0))
            else:
                ino = self._new(key)
                self._add(Op("create", key, ino=ino))
            self._fds[fd] = (key, ino)
            return fd

    def _close(self, fd: int) -> None:
        self._forget(fd)
        _real_close(fd)

    def _write(self, fd: int, data: Any) -> int:
        return self._record_write(fd, lambda: _real_write(fd, data), data, None)

    def _pwrite(self, fd: int, data: Any, offset: int) -> int:
        return self._record_write(fd, lambda: _real_pwrite(fd, data, offset), data, offset)

    def _writev(self, fd: int, buffers: Any) -> int:
        bufs = list(buffers)
        joined = b"".join(bytes(memoryview(b).cast("B")) for b in bufs)
        return self._record_write(fd, lambda: _real_writev(fd, bufs), joined, None)

    def _pwritev(self, fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
        bufs = list(buffers)
        joined = b"".join(bytes(memoryview(b).cast("B")) for b in bufs)
        return self._record_write(fd, lambda: _real_pwritev(fd, bufs, offset, flags), joined, offset)

    def _ftruncate(self, fd: int, length: int) -> None:
        ent = self._fds.get(fd)
        with self._lock:
            _real_ftruncate(fd, length)
            if ent is not None and ent[1] is not None:
                self._add(Op("truncate", ent[0], ino=ent[1], size=length))

    def _truncate(self, path: Any, length: int) -> None:
        if isinstance(path, int):
            self._ftruncate(path, length)
            return
        key = self.key(path)
        with self._lock:
            ino = self._identity(key) if key is not None else 0
            _real_truncate(path, length)
            if key is not None:
                self._add(Op("truncate", key, ino=ino, size=length))

    def _sync(self, real: Callable[[Any], None], fd: Any) -> None:
        ent = self._fds.get(_fileno(fd))
        if ent is None:
            real(fd)
            return
        with self._lock:
            real(fd)  # recorded only once it has succeeded
            key, ino = ent
            self._add(Op("fsync_dir", key) if ino is None else Op("fsync", key, ino=ino))

    def _fsync(self, fd: Any) -> None:
        self._sync(_real_fsync, fd)

    def _fdatasync(self, fd: Any) -> None:
        self._sync(_real_fdatasync, fd)

    def _move(self, real: Callable[..., None], src: Any, dst: Any, **kw: Any) -> None:
        ks, kd = self.key(src), self.key(dst)
        if ks is None and kd is None:
            real(src, dst, **kw)
            return
        with self._lock:
            if ks is None or kd is None or kw.get("src_dir_fd") is not None or kw.get("dst_dir_fd") is not None:
                self.unsupported.append(f"rename {src} -> {dst} across the recorded folders")
            elif os.path.isdir(src):
                self.unsupported.append(f"rename of the folder {ks}")
            real(src, dst, **kw)
            if ks is not None and kd is not None:
                ino = self._names.pop(ks, None)
                if ino is None:
                    ino = self._new(kd)
                    self.initial[ino] = ks
                self._names[kd] = ino
                self._add(Op("rename", ks, dest=kd, ino=ino))

    def _replace(self, src: Any, dst: Any, **kw: Any) -> None:
        self._move(_real_replace, src, dst, **kw)

    def _rename(self, src: Any, dst: Any, **kw: Any) -> None:
        self._move(_real_rename, src, dst, **kw)

    def _entry(self, kind: str, real: Callable[..., None], path: Any, *args: Any, **kw: Any) -> None:
        key = self.key(path)
        if key is None:
            real(path, *args, **kw)
            return
        with self._lock:
            if kw.get("dir_fd") is not None:
                self.unsupported.append(f"{kind} of {key} with dir_fd")
            real(path, *args, **kw)  # raises (nothing recorded) when it fails
            if kind == "unlink":
                self._names.pop(key, None)
            self._add(Op(kind, key))

    def _unlink(self, path: Any, *, dir_fd: int | None = None) -> None:
        self._entry("unlink", _real_unlink, path, dir_fd=dir_fd)

    def _remove(self, path: Any, *, dir_fd: int | None = None) -> None:
        self._entry("unlink", _real_remove, path, dir_fd=dir_fd)

    def _mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        self._entry("mkdir", _real_mkdir, path, mode, dir_fd=dir_fd)

    def _rmdir(self, path: Any, *, dir_fd: int | None = None) -> None:
        self._entry("rmdir", _real_rmdir, path, dir_fd=dir_fd)

    def _link(self, src: Any, dst: Any, **kw: Any) -> None:
        ks, kd = self.key(src), self.key(dst)
        if ks is None and kd is None:
            _real_link(src, dst, **kw)
            return
        with self._lock:
            if ks is None or kd is None or kw.get("src_dir_fd") is not None or kw.get("dst_dir_fd") is not None:
                self.unsupported.append(f"hard link {src} -> {dst} across the recorded folders")
            _real_link(src, dst, **kw)  # raises (nothing recorded) when dst exists
            if ks is not None and kd is not None:
                ino = self._identity(ks)
                self._names[kd] = ino
                self._add(Op("link", ks, dest=kd, ino=ino))

    def _symlink(self, src: Any, dst: Any, *args: Any, **kw: Any) -> None:
        if self.key(dst) is not None:
            self.unsupported.append(f"symbolic link {dst}")
        _real_symlink(src, dst, *args, **kw)

    def _io_open(
        self,
        file: Any,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        closefd: bool = True,
        opener: Callable[[str, int], int] | None = None,
    ) -> Any:
        writing = any(c in mode for c in "wax+")
        tracked = (file in self._fds) if isinstance(file, int) else self.key(file) is not None
        if not tracked or not (writing or isinstance(file, int)):
            return _real_io_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        if "b" not in mode or opener is not None:
            self.unsupported.append(f"open({file!r}, {mode!r}) (text mode or a custom opener)")
            return _real_io_open(file, mode, buffering, encoding, errors, newline, closefd, opener)

        def via_os_open(path: str, flags: int) -> int:
            return os.open(path, flags, 0o666)  # the patched os.open: creation and truncation are recorded

        # A file object over a recorded descriptor, even one that only reads, must close through the
        # recorder, or the descriptor's number would stay attributed to the file after it is reused.
        opened = None if isinstance(file, int) else via_os_open
        raw = _RecordingFileIO(file, mode.replace("b", ""), closefd, opener=opened)
        raw._recorder = self
        if buffering == 0:
            return raw
        size = buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE
        if "+" in mode:
            return io.BufferedRandom(raw, size)
        return io.BufferedWriter(raw, size) if writing else io.BufferedReader(raw, size)

    # ---------------------------------------------------------------- install

    @contextlib.contextmanager
    def recording(self) -> Iterator[Recorder]:
        patches: dict[tuple[Any, str], Any] = {
            (os, "open"): self._open,
            (os, "close"): self._close,
            (os, "write"): self._write,
            (os, "pwrite"): self._pwrite,
            (os, "writev"): self._writev,
            (os, "pwritev"): self._pwritev,
            (os, "ftruncate"): self._ftruncate,
            (os, "truncate"): self._truncate,
            (os, "fsync"): self._fsync,
            (os, "fdatasync"): self._fdatasync,
            (os, "replace"): self._replace,
            (os, "rename"): self._rename,
            (os, "unlink"): self._unlink,
            (os, "remove"): self._remove,
            (os, "mkdir"): self._mkdir,
            (os, "rmdir"): self._rmdir,
            (os, "link"): self._link,
            (os, "symlink"): self._symlink,
            (io, "open"): self._io_open,
            (builtins, "open"): self._io_open,
        }
        saved = {target: getattr(*target) for target in patches}
        for (mod, name), fn in patches.items():
            setattr(mod, name, fn)
        try:
            yield self
        finally:
            for (mod, name), fn in saved.items():
                setattr(mod, name, fn)


# ------------------------------------------------------------------------------------------ crash states


@dataclass(frozen=True)
class CrashState:
    """Crash before ``ops[point]`` (every earlier operation ran); of the operations that were not durable
    then, those in ``persisted`` reached the disk, each whole (None) or as a prefix of that many bytes."""

    point: int
    persisted: tuple[tuple[int, int | None], ...]
    label: str

    def describe(self, ops: list[Op]) -> str:
        after = f"op #{self.point - 1}: {ops[self.point - 1].describe()}" if self.point else "before op #0"
        chosen = "; ".join(
            f"#{i} {ops[i].describe()}" + ("" if t is None else f" torn after {t} bytes") for i, t in self.persisted
        )
        return f"{self.label}: crash after {after}; of the ops not yet durable, these persisted: [{chosen}]"


class CrashModel:
    def __init__(
        self,
        ops: list[Op],
        initial: Mapping[int, str],
        snapshot_files: Mapping[str, bytes],
        snapshot_dirs: set[str],
    ) -> None:
        self.ops = ops
        self.snapshot_files = snapshot_files
        self.snapshot_dirs = snapshot_dirs
        # Files present at the start: those the recorder met keep its identity, the others get their own.
        self.start_entries: dict[str, int] = {}
        self.source: dict[int, str] = dict(initial)
        by_key = {k: i for i, k in initial.items()}
        for n, key in enumerate(sorted(snapshot_files)):
            ino = by_key.get(key, -(n + 1))
            self.start_entries[key] = ino
            self.source.setdefault(ino, key)
        self.durable_at = [self._first_barrier(i) for i in range(len(ops))]
        self._bodies: dict[tuple[int, tuple[tuple[int, int | None], ...]], tuple[bytes, str]] = {}

    def _first_barrier(self, i: int) -> int:
        """The index of the operation after which ops[i] is durable (NEVER if it never becomes durable)."""
        op = self.ops[i]
        if op.kind in BARRIERS:
            return i
        if op.kind in DATA_OPS:
            return next(
                (j for j in range(i + 1, len(self.ops)) if self.ops[j].kind == "fsync" and self.ops[j].ino == op.ino),
                NEVER,
            )
        if op.kind == "link":
            folders = {parent(op.dest)}
        else:
            folders = {parent(op.path)} | ({parent(op.dest)} if op.kind == "rename" else set())
        return max(
            next(
                (j for j in range(i + 1, len(self.ops)) if self.ops[j].kind == "fsync_dir" and self.ops[j].path == d),
                NEVER,
            )
            for d in folders
        )

    def durable(self, i: int, point: int) -> bool:
        return self.durable_at[i] < point

    def pending(self, point: int) -> list[int]:
        """The operations that ran before the crash point and were not durable at it."""
        return [i for i in range(point) if self.ops[i].kind not in BARRIERS and not self.durable(i, point)]

    def materialise(self, state: CrashState) -> Layout:
        """The files and folders reachable in a crash state."""
        chosen = dict(state.persisted)
        entries = dict(self.start_entries)
        dirs = set(self.snapshot_dirs)
        applied: dict[int, list[tuple[int, int | None]]] = {}  # identity → the data operations that persisted
        for i in range(state.point):
            op = self.ops[i]
            if op.kind in BARRIERS:
                continue
            if self.durable(i, state.point):
                torn = None
            elif i in chosen:
                torn = chosen[i]
            else:
                continue
            if op.kind in DATA_OPS:
                applied.setdefault(op.ino, []).append((i, torn))
            elif op.kind == "create":
                entries[op.path] = op.ino
            elif op.kind == "rename":
                if entries.get(op.path) == op.ino:
                    del entries[op.path]
                entries[op.dest] = op.ino  # a persisted rename names the file it moved
            elif op.kind == "link":
                entries[op.dest] = op.ino
            elif op.kind == "unlink":
                entries.pop(op.path, None)
            elif op.kind == "mkdir":
                dirs.add(op.path)
            elif op.kind == "rmdir":
                dirs.discard(op.path)

        def reachable(key: str) -> bool:
            p = parent(key)
            while p:
                if p not in dirs:
                    return False
                p = parent(p)
            return True

        layout = Layout({d for d in dirs if reachable(d)})
        for key, ino in entries.items():
            if reachable(key):
                layout.files[key], layout.hashes[key] = self._body(ino, tuple(applied.get(ino, ())))
        return layout

    def _body(self, ino: int, applied: tuple[tuple[int, int | None], ...]) -> tuple[bytes, str]:
        """A file's bytes (and their SHA-256) after its start content and the data operations that persisted;
        memoised, since most crash states share most files."""
        memo = self._bodies.get((ino, applied))
        if memo is None:
            src = self.source.get(ino)
            buf = bytearray(self.snapshot_files.get(src, b"") if src is not None else b"")
            for i, torn in applied:
                op = self.ops[i]
                if op.kind == "truncate":
                    del buf[op.size :]
                    buf.extend(bytes(op.size - len(buf)))
                    continue
                data = op.data if torn is None else op.data[:torn]
                if op.offset > len(buf):
                    buf.extend(bytes(op.offset - len(buf)))  # a hole: an earlier write was lost
                buf[op.offset : op.offset + len(data)] = data
            body = bytes(buf)
            memo = self._bodies[(ino, applied)] = (body, hashlib.sha256(body).hexdigest())
        return memo


@dataclass
class Layout:
    """A crash state's folders and files (key → bytes, and their SHA-256)."""

    dirs: set[str]
    files: dict[str, bytes] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)

    def digest(self, ignore: Callable[[str], bool] = lambda key: False) -> str:
        """One hash of the whole state (of the paths ``ignore`` does not pick)."""
        h = hashlib.sha256()
        for k in sorted(self.dirs):
            if not ignore(k):
                h.update(b"d\0" + k.encode() + b"\0")
        for k in sorted(self.files):
            if not ignore(k):
                h.update(b"f\0" + k.encode() + b"\0" + self.hashes[k].encode())
        return h.hexdigest()


def snapshot(roots: Mapping[str, str], exclude: tuple[str, ...] = ()) -> tuple[dict[str, bytes], set[str]]:
    """Every file (key → bytes) and folder under the roots, as the crash model's starting point."""
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    excluded = [os.path.abspath(p) for p in exclude]
    for name, root in roots.items():
        root = os.path.abspath(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in excluded]
            rel = os.path.relpath(dirpath, root)
            base = name if rel == "." else f"{name}/{rel}"
            dirs.add(base)
            for fn in filenames:
                with open(os.path.join(dirpath, fn), "rb") as f:
                    files[f"{base}/{fn}"] = f.read()
    return files, dirs


def write_state(layout: Layout, dest: Mapping[str, str], store: str) -> None:
    """Lay a crash state out under ``dest`` (root name → folder). File bodies are hard links into ``store``,
    a folder of files named by their SHA-256 (written once each; every write the program makes replaces a
    file by rename, so the links are never written through, which the test checks at the end)."""
    for key in sorted(layout.dirs, key=lambda k: k.count("/")):
        name, _, rel = key.partition("/")
        os.makedirs(os.path.join(dest[name], rel), mode=0o700, exist_ok=True)
    for key, data in layout.files.items():
        name, _, rel = key.partition("/")
        blob = os.path.join(store, layout.hashes[key])
        if not os.path.exists(blob):
            tmp = f"{blob}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o400)
            os.replace(tmp, blob)
        os.link(blob, os.path.join(dest[name], rel))
