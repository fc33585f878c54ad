"""One conformance suite for every backend (borgstore's and restic's idea): the same behaviour from the
memory store and from a local folder. LocalBackend-only tests at the end cover atomic writes."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from strongroom.backends.base import Backend, BackendError, ObjectMissing, validate_name
from strongroom.backends.local import LocalBackend
from strongroom.backends.memory import MemoryBackend

# Injecting junk that did not come through put(): a foreign file in the folder, or a raw dict entry.
Inject = Callable[[str, bytes], None]


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Backend, Inject]]:
    if request.param == "memory":
        mem = MemoryBackend()

        def inject_mem(name: str, data: bytes) -> None:
            mem.objects[name] = data

        yield mem, inject_mem
    else:
        root = tmp_path / "repo"
        local = LocalBackend(str(root))
        local.ensure_root()

        def inject_local(name: str, data: bytes) -> None:
            p = root / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)

        yield local, inject_local


@pytest.fixture
def backend(store: tuple[Backend, Inject]) -> Backend:
    return store[0]


def test_put_get(backend: Backend) -> None:
    backend.put("data/ab/abcdef", b"payload")
    assert backend.get("data/ab/abcdef") == b"payload"
    assert backend.size("data/ab/abcdef") == 7


def test_put_accepts_memoryview_and_empty(backend: Backend) -> None:
    buf = bytearray(b"0123456789")
    backend.put("a", memoryview(buf)[2:5])
    backend.put("empty", b"")
    assert backend.get("a") == b"234"
    assert backend.get("empty") == b"" and backend.size("empty") == 0


def test_put_replaces(backend: Backend) -> None:
    backend.put("refs", b"old contents, longer")
    backend.put("refs", b"new")
    assert backend.get("refs") == b"new"
    assert backend.size("refs") == 3


def test_large_object(backend: Backend) -> None:
    data = os.urandom(3 << 20)
    backend.put("data/00/big", data)
    assert backend.get("data/00/big") == data


def test_get_missing(backend: Backend) -> None:
    with pytest.raises(ObjectMissing):
        backend.get("nothing")
    with pytest.raises(ObjectMissing):
        backend.get_range("nothing", 0, 1)
    assert backend.size("nothing") is None


@pytest.mark.parametrize("offset,length", [(0, 10), (0, 3), (3, 4), (9, 1), (9, 5), (10, 1), (50, 3), (4, 0)])
def test_get_range(backend: Backend, offset: int, length: int) -> None:
    data = b"0123456789"
    backend.put("p", data)
    assert backend.get_range("p", offset, length) == data[offset : offset + length]


def test_delete(backend: Backend) -> None:
    backend.put("locks/read-1", b"x")
    backend.delete("locks/read-1")
    assert backend.size("locks/read-1") is None
    with pytest.raises(ObjectMissing):
        backend.get("locks/read-1")
    backend.delete("locks/read-1")  # deleting what is gone is fine
    backend.delete("never/existed")


def test_list_under_a_prefix(backend: Backend) -> None:
    objects = {"data/ab/ab1": b"1", "data/ab/ab22": b"22", "data/cd/cd333": b"333", "data/z": b"",
               "index/i1": b"iiii", "database/x": b"no", "refs": b"r"}
    for name, data in objects.items():
        backend.put(name, data)
    assert sorted(backend.list("data")) == [("data/ab/ab1", 1), ("data/ab/ab22", 2), ("data/cd/cd333", 3),
                                            ("data/z", 0)]
    assert sorted(backend.list("index")) == [("index/i1", 4)]
    assert sorted(backend.list("data/ab")) == [("data/ab/ab1", 1), ("data/ab/ab22", 2)]
    assert list(backend.list("keys")) == []


def test_list_sees_deletes_and_replacements(backend: Backend) -> None:
    backend.put("index/a", b"1")
    backend.put("index/b", b"1")
    backend.delete("index/a")
    backend.put("index/b", b"123")
    assert list(backend.list("index")) == [("index/b", 3)]


def test_put_exclusive(backend: Backend) -> None:
    assert backend.put_exclusive("locks/publish", b"first") is True
    assert backend.put_exclusive("locks/publish", b"second") is False
    assert backend.get("locks/publish") == b"first"
    backend.delete("locks/publish")
    assert backend.put_exclusive("locks/publish", b"third") is True
    assert backend.get("locks/publish") == b"third"


def test_put_exclusive_never_shows_a_partial_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The name appears (by a hard link) only once its whole content is durable, and no temporary file is
    left behind; on a filesystem without hard links it falls back to an exclusive create."""
    backend = LocalBackend(str(tmp_path))
    seen: list[bytes] = []
    real_link = os.link

    def link(src: str, dst: str) -> None:
        seen.append(Path(src).read_bytes())  # what the name will hold the moment it exists
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    assert backend.put_exclusive("locks/publish", b'{"pid": 1}') is True
    assert seen == [b'{"pid": 1}'] and os.listdir(tmp_path / "locks") == ["publish"]
    assert backend.put_exclusive("locks/publish", b"other") is False
    assert os.listdir(tmp_path / "locks") == ["publish"]

    def no_links(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    assert backend.put_exclusive("locks/publish", b"third") is False
    backend.delete("locks/publish")
    assert backend.put_exclusive("locks/publish", b"fourth") is True
    assert backend.get("locks/publish") == b"fourth" and os.listdir(tmp_path / "locks") == ["publish"]


BAD_NAMES = ["", "..", "../x", "data/../config", "a/..", "/etc/passwd", "/abs", "Config", "data/AB/x", "a.tmp",
             "data/ab/x.tmp123-abcd", "a/.tmp", ".hidden", "data/.x", "a//b", "a/", "a b", "é", "a\nb", "data\n",
             "data/ab\n", "a\0b", "a\\b", "-a", "x" * 513]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_refused_on_every_operation(backend: Backend, name: str) -> None:
    ops: list[Callable[[], object]] = [
        lambda: backend.put(name, b"x"), lambda: backend.put_exclusive(name, b"x"), lambda: backend.get(name),
        lambda: backend.get_range(name, 0, 1), lambda: backend.size(name), lambda: backend.delete(name),
    ]
    for op in ops:
        with pytest.raises(ValueError):
            op()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_validate_name_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        validate_name(name)


@pytest.mark.parametrize("name", ["config", "keys/0123abcd", "data/ab/" + "ab" * 32, "locks/read-00ff", "a.b_c-d",
                                  "x" * 512])
def test_validate_name_accepts(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("junk", ["data/ab/x.tmp1234-beef", "data/ab/README", "data/ab/.DS_Store", "data/ab/a b",
                                  "data/Thumbs.db", "data/ab/x\n"])
def test_list_skips_junk_and_temp_files(store: tuple[Backend, Inject], junk: str) -> None:
    backend, inject = store
    backend.put("data/ab/good", b"123")
    inject(junk, b"junk")
    assert list(backend.list("data")) == [("data/ab/good", 3)]


def test_describe_is_safe_to_log(backend: Backend) -> None:
    assert isinstance(backend.describe(), str) and backend.describe()


# ----------------------------------------------------------------------------------- LocalBackend only


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_local_put_leaves_no_temp_file(tmp_path: Path) -> None:
    b = LocalBackend(str(tmp_path / "r"))
    for i in range(5):
        b.put(f"data/0{i}/obj{i}", os.urandom(1000))
    b.put("refs", b"1")
    b.put("refs", b"2")
    assert all_files(tmp_path / "r") == ["data/00/obj0", "data/01/obj1", "data/02/obj2", "data/03/obj3",
                                         "data/04/obj4", "refs"]


def test_local_files_are_private(tmp_path: Path) -> None:
    b = LocalBackend(str(tmp_path / "r"))
    b.put("data/ab/x", b"1")
    assert b.put_exclusive("locks/publish", b"1")
    assert os.stat(tmp_path / "r" / "data" / "ab" / "x").st_mode & 0o077 == 0
    assert os.stat(tmp_path / "r" / "data" / "ab").st_mode & 0o077 == 0
    assert os.stat(tmp_path / "r" / "locks" / "publish").st_mode & 0o077 == 0


def test_local_failed_put_leaves_no_partial_object(tmp_path: Path) -> None:
    root = tmp_path / "r"
    b = LocalBackend(str(root))
    b.ensure_root()
    (root / "data").write_bytes(b"a file where a folder should be")
    with pytest.raises(BackendError):
        b.put("data/ab/x", b"payload")
    assert all_files(root) == ["data"]


@pytest.mark.parametrize("size", [10_000, (3 << 20) + 123])  # through the page cache, and past it (O_DIRECT)
def test_local_failed_write_keeps_the_old_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """Disk full in the middle of replacing an object: readers still see the old object, whole."""
    root = tmp_path / "r"
    b = LocalBackend(str(root))
    b.put("refs", b"old refs")
    real_pwrite = os.pwrite
    calls = {"n": 0}

    def failing_pwrite(fd: int, data: bytes, offset: int) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_pwrite(fd, bytes(memoryview(data)[:4096]), offset)  # a short write first
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", failing_pwrite)
    with pytest.raises(BackendError, match="No space left"):
        b.put("refs", os.urandom(size))
    monkeypatch.undo()
    assert b.get("refs") == b"old refs"
    assert all_files(root) == ["refs"]


def test_local_failed_fsync_keeps_the_old_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "r"
    b = LocalBackend(str(root))
    b.put("data/ab/x", b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(BackendError):
        b.put("data/ab/x", b"new contents")
    monkeypatch.undo()
    assert b.get("data/ab/x") == b"old"
    assert all_files(root) == ["data/ab/x"]


@pytest.mark.parametrize("size", [10_000, (3 << 20) + 123])
@pytest.mark.parametrize("step", [777, 8192])  # unaligned short writes end O_DIRECT for the file; aligned keep it
def test_local_short_writes_are_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, step: int
) -> None:
    real_pwrite = os.pwrite

    def dribble(fd: int, data: bytes, offset: int) -> int:
        return real_pwrite(fd, bytes(memoryview(data)[:step]), offset)

    b = LocalBackend(str(tmp_path / "r"))
    payload = os.urandom(size)
    monkeypatch.setattr(os, "pwrite", dribble)
    b.put("data/ab/x", payload)
    monkeypatch.undo()
    assert b.get("data/ab/x") == payload


def test_local_failed_put_exclusive_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock record that could not be written whole must not stay behind as a held lock."""
    root = tmp_path / "r"
    b = LocalBackend(str(root))
    b.put("config", b"c")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(BackendError):
        b.put_exclusive("locks/publish", b"pid 1")
    monkeypatch.undo()
    assert b.size("locks/publish") is None
    assert b.put_exclusive("locks/publish", b"pid 2") is True


def test_local_put_exclusive_completes_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def dribble(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(memoryview(data)[:3]))

    b = LocalBackend(str(tmp_path / "r"))
    monkeypatch.setattr(os, "write", dribble)
    assert b.put_exclusive("locks/publish", b"a lock record of some length")
    monkeypatch.undo()
    assert b.get("locks/publish") == b"a lock record of some length"
