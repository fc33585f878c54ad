"""Fixtures for the damage, crash and fault-injection tests.

`layered_repo` builds a repository with three versions through the library and records, before anything
is damaged, where every version's commit, trees and file chunks live. `expected_affected` is the oracle:
given the set of objects a damage destroyed, it names what `verify` must report — the whole version when
its commit or root tree is lost, ``dir/`` when a folder's tree is lost, and each file that has a lost chunk.

`small_disk` is a small filesystem of its own (a tmpfs with a size limit: root is needed to mount it) for the
full-disk tests, and `fill_disk` takes all but a few bytes of it, so that a command meets ENOSPC at a chosen step.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from strongroom import Strongroom
from strongroom.core.model import DIR, FILE
from strongroom.store.index import Index
from strongroom.store.pack import pack_path
from strongroom.store.repository import Repository
from tests import sysdeps
from tests.conftest import PASSPHRASE, make_tree

FILLER = ".filler"


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A fresh 24 MiB filesystem, unmounted and removed at the end."""
    where = Path(tempfile.mkdtemp(prefix="strongroom-full-"))
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        where.rmdir()
        sysdeps.unavailable(
            "a small filesystem (tmpfs, mounted as root) is needed",
            "no small filesystem for the full-disk tests",
            (p.stderr.strip().splitlines() or [f"mount exited {p.returncode}"])[-1],
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def fill_disk(disk: Path, leave: int = 0) -> None:
    """Take all but ``leave`` bytes of the filesystem at ``disk`` (in a file FILLER at its top), replacing an
    earlier filling; ``free_disk`` gives them back."""
    free_disk(disk)
    st = os.statvfs(disk)
    take = st.f_bavail * st.f_frsize - leave
    fd = os.open(disk / FILLER, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if take > 0:
            os.posix_fallocate(fd, 0, take)
    finally:
        os.close(fd)


def free_disk(disk: Path) -> None:
    (disk / FILLER).unlink(missing_ok=True)


FIXED_MTIME_NS = 1_700_000_000 * 10**9
WHOLE = "(the whole version)"


def write_source(root: Path, files: dict[str, bytes]) -> Path:
    """A source folder with fixed mtimes, so unchanged folders give the same tree in every version."""
    make_tree(root, files)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(FIXED_MTIME_NS, FIXED_MTIME_NS))
    os.utime(root, ns=(FIXED_MTIME_NS, FIXED_MTIME_NS))
    return root


def version_contents() -> list[dict[str, bytes]]:
    rng = random.Random(20240601)
    r1, r2, r3, r4 = (rng.randbytes(n << 10) for n in (300, 400, 200, 350))
    t1 = "\n".join(f"row {i},{rng.random():.6f}" for i in range(1500)).encode()
    t2 = "\n".join(f"row {i},{rng.random():.6f},changed" for i in range(1600)).encode()
    v1 = {"a/unique.bin": r1, "b/keep.bin": r2, "dup/copy.bin": r1, "c/text.txt": t1, "empty.txt": b""}
    v2 = dict(v1, **{"new/added.bin": r3, "c/text.txt": t2})
    v3 = dict(v2, **{"a/unique.bin": r4})
    return [v1, v2, v3]


@dataclass
class VersionLayout:
    commit: bytes
    dirs: dict[str, bytes]  # "" is the root
    files: dict[str, tuple[bytes, ...]]


@dataclass
class LayeredRepo:
    path: Path
    versions: list[str]  # ids, oldest first
    contents: list[dict[str, bytes]]
    sources: list[Path]
    layout: dict[str, VersionLayout] = field(default_factory=dict)

    def open(self) -> Repository:
        return Strongroom.open(str(self.path), PASSPHRASE)._session.open()

    def file(self, name: str) -> Path:
        return self.path / name

    def pack_of(self, object_id: bytes) -> tuple[str, int, int]:
        """(pack file name relative to the repository, offset, length) of an object."""
        loc = self.open().index.get(object_id)
        assert loc is not None
        return pack_path(loc.pack_id), loc.offset, loc.length

    def pack_entries(self, pack_name: str) -> set[bytes]:
        return {e.object_id for e in self.open().index.packs[pack_name.rsplit("/", 1)[-1]]}

    def index_file_listing(self, pack_name: str) -> tuple[str, set[bytes]]:
        """The index file that lists a pack, and every object id it lists."""
        repo = self.open()
        pid = pack_name.rsplit("/", 1)[-1]
        for name, _ in repo.backend.list("index"):
            idx = Index()
            idx.load_file(name, repo.backend.get(name), repo.sealer, repo.context)
            if pid in idx.packs:
                return name, set(idx.locations)
        raise AssertionError(f"no index file lists {pack_name}")

    def expected_affected(self, lost: set[bytes]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for vid, lay in self.layout.items():
            if lay.commit in lost or lay.dirs[""] in lost:
                out[vid] = {WHOLE}
                continue
            named: set[str] = set()
            lost_dirs = sorted(d for d, t in lay.dirs.items() if d and t in lost)
            for d in lost_dirs:
                if not any(d.startswith(o + "/") for o in lost_dirs):
                    named.add(d + "/")
            for path, chunks in lay.files.items():
                if any(path.startswith(d + "/") for d in lost_dirs):
                    continue
                if any(c in lost for c in chunks):
                    named.add(path)
            if named:
                out[vid] = named
        return out


def layout_of(repo: Repository, vid: str) -> VersionLayout:
    """Every folder's tree id and every file's chunk ids of one version (the oracle's view of it)."""
    cid = bytes.fromhex(vid)
    root = repo.load_commit(cid).tree
    lay = VersionLayout(cid, {"": root}, {})
    stack = [("", root)]
    while stack:
        prefix, tid = stack.pop()
        for e in repo.load_tree(tid).entries:
            rel = f"{prefix}/{e.name}" if prefix else e.name
            if e.type == DIR and e.subtree is not None:
                lay.dirs[rel] = e.subtree
                stack.append((rel, e.subtree))
            elif e.type == FILE:
                lay.files[rel] = e.chunks
    return lay


def build_layered_repo(tmp_path: Path) -> LayeredRepo:
    path = tmp_path / "repo"
    sr = Strongroom.init(str(path), PASSPHRASE)
    contents = version_contents()
    sources, versions = [], []
    for i, files in enumerate(contents, 1):
        src = write_source(tmp_path / f"src{i}", files)
        sources.append(src)
        versions.append(sr.commit(str(src), message=f"v{i}", workers=1).id)
    built = LayeredRepo(path, versions, contents, sources)
    repo = built.open()
    for vid in versions:
        built.layout[vid] = layout_of(repo, vid)
    # The sanity of the oracle itself: what the sources say, the layout says.
    for vid, files in zip(versions, contents, strict=True):
        assert set(built.layout[vid].files) == set(files)
    return built


@pytest.fixture
def layered(tmp_path: Path) -> LayeredRepo:
    return build_layered_repo(tmp_path)


def flip_byte(path: Path, offset: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        assert len(b) == 1, f"offset {offset} is beyond {path}"
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


@dataclass
class VerifyOutput:
    code: int
    damaged: list[tuple[str, str]]
    affected: dict[str, set[str]]
    err: str


def parse_verify(code: int, out: str, err: str) -> VerifyOutput:
    damaged: list[tuple[str, str]] = []
    affected: dict[str, set[str]] = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if parts[0] == "damaged":
            assert len(parts) == 3, line
            damaged.append((parts[1], parts[2]))
        elif parts[0] == "affected":
            assert len(parts) == 3, line
            affected.setdefault(parts[1], set()).add(parts[2])
        else:
            raise AssertionError(f"unexpected verify output line: {line!r}")
    return VerifyOutput(code, damaged, affected, err)
