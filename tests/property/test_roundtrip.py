"""Random folder trees through the library API: a checkout reproduces every file's bytes, every mode, every
symlink target and every mtime (files, folders and links), including empty files and folders, files that
span several chunks, unicode and non-UTF-8 names and deep nesting. `ls`, `read` and `diff` agree."""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from strongroom import Strongroom
from tests.conftest import PASSPHRASE, tree_snapshot

MIB = 1 << 20
NS = 1_000_000_000

# ------------------------------------------------------------------------------------------ strategies


def _ok_name(raw: bytes) -> bool:
    return (0 < len(raw) <= 60 and b"/" not in raw and b"\0" not in raw and raw not in (b".", b"..")
            and raw != b".strongroomignore")


text_names = st.text(min_size=1, max_size=12).map(os.fsencode)
odd_names = st.sampled_from([b"\xff\xfe", b"caf\xe9", b"\xed\xa0\x80", b"-rf", b" lead", b"trail ", b"a\nb", b"*",
                             b"\\", b".hidden", b"..x", b"~", b"#x"])
names = st.one_of(text_names, odd_names, st.binary(min_size=1, max_size=10)).filter(_ok_name)
mtimes = st.integers(0, 4_000_000_000 * NS)  # 1970 … 2096, any nanosecond


@dataclass
class File:
    size: int
    seed: int
    mode: int
    mtime: int


@dataclass
class Link:
    target: bytes
    mtime: int


@dataclass
class Dir:
    children: dict[bytes, File | Link | Dir] = field(default_factory=dict)
    mode: int = 0o755
    mtime: int = 0


small_sizes = st.one_of(st.just(0), st.integers(1, 64), st.integers(65, 70_000))
files = st.builds(File, size=small_sizes, seed=st.integers(0, 2**32), mode=st.sampled_from([0o644, 0o600, 0o755,
                  0o444, 0o640, 0o4755, 0o2750]), mtime=mtimes)
links = st.builds(Link, target=st.one_of(names, st.just(b"../up"), st.just(b"/abs/path"), st.just(b"a/b/c")),
                  mtime=mtimes)


def dirs(children: st.SearchStrategy[File | Link | Dir]) -> st.SearchStrategy[Dir]:
    return st.builds(Dir, children=st.dictionaries(names, children, max_size=5),
                     mode=st.sampled_from([0o755, 0o700, 0o750, 0o711, 0o1777]), mtime=mtimes)


nodes = st.recursive(st.one_of(files, links), dirs, max_leaves=20)


@st.composite
def trees(draw: st.DrawFn) -> Dir:
    root = Dir(children=draw(st.dictionaries(names, nodes, max_size=6)))
    # sometimes a deep chain of folders, sometimes big files that span several chunks
    if draw(st.booleans()):
        depth = draw(st.integers(5, 25))
        d = root
        for i in range(depth):
            nxt = Dir(mtime=draw(mtimes))
            d.children[f"deep{i}".encode()] = nxt
            d = nxt
        d.children[b"bottom.bin"] = draw(files)
    for i in range(draw(st.integers(0, 2))):
        root.children[f"big{i}.bin".encode()] = File(draw(st.integers(1 * MIB + 1, 3 * MIB)),
                                                     draw(st.integers(0, 2**32)), 0o644, draw(mtimes))
    return root


def content(f: File) -> bytes:
    rnd = random.Random(f.seed)
    if f.size > 4096 and f.seed % 3 == 0:  # compressible, with some repetition inside
        block = rnd.randbytes(1000)
        return (block * (f.size // 1000 + 1))[: f.size]
    return rnd.randbytes(f.size)


def build(path: bytes, d: Dir, depth: int = 0) -> None:
    if not d.children:
        event("empty folder")
    for name, node in d.children.items():
        p = os.path.join(path, name)
        try:
            name.decode()
        except UnicodeDecodeError:
            event("non-UTF-8 name")
        if isinstance(node, Dir):
            if depth >= 5:
                event("nested 6+ deep")
            os.mkdir(p)
            build(p, node, depth + 1)
            os.chmod(p, node.mode)
            os.utime(p, ns=(node.mtime, node.mtime))
        elif isinstance(node, Link):
            event("symlink")
            os.symlink(node.target, p)
            os.utime(p, ns=(node.mtime, node.mtime), follow_symlinks=False)
        else:
            event("file > 1 MiB" if node.size > MIB else "empty file" if node.size == 0 else "file")
            with open(p, "wb") as fh:
                fh.write(content(node))
            os.chmod(p, node.mode)
            os.utime(p, ns=(node.mtime, node.mtime))


# ------------------------------------------------------------------------------------------ checks


def mtimes_of(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root)] = os.lstat(full).st_mtime_ns
    return out


def assert_same_tree(src: Path, dest: Path) -> None:
    expected, actual = tree_snapshot(src), tree_snapshot(dest)
    assert actual.keys() == expected.keys()
    for rel in expected:
        assert actual[rel] == expected[rel], rel
    assert mtimes_of(dest) == mtimes_of(src)


SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@SETTINGS
@given(tree=trees())
def test_commit_checkout_round_trip(tmp_path: Path, tree: Dir) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:
        src, dest = Path(work) / "src", Path(work) / "dest"
        src.mkdir()
        build(os.fsencode(src), tree)
        repo = Strongroom.init(str(Path(work) / "repo"), PASSPHRASE)
        summary = repo.commit(str(src), message="v1")
        snap = tree_snapshot(src)
        n_files = sum(1 for kind, _, _ in snap.values() if kind == "f")
        assert summary.files == n_files
        assert summary.bytes == sum(len(c) for kind, c, _ in snap.values() if kind == "f")

        repo.checkout(summary.id, str(dest))
        assert_same_tree(src, dest)

        # ls lists exactly the same paths, kinds, sizes and link targets; read returns the bytes
        listing = {e.path: e for e in repo.ls(summary.id)}
        assert listing.keys() == snap.keys()
        for rel, (kind, data, _mode) in snap.items():
            e = listing[rel]
            assert e.type == {"f": "file", "d": "dir", "l": "symlink"}[kind]
            if kind == "f":
                assert e.size == len(data)
            if kind == "l":
                assert e.target == data
        for rel, (kind, data, _mode) in list(snap.items())[:10]:
            if kind == "f":
                assert repo.read(summary.id, rel) == data

        # a second, reopened handle checks out the same bytes (nothing lives only in memory)
        reopened = Strongroom.open(str(Path(work) / "repo"), PASSPHRASE)
        dest2 = Path(work) / "dest2"
        reopened.checkout("main", str(dest2))
        assert_same_tree(src, dest2)


@st.composite
def mutations(draw: st.DrawFn, paths: list[str]) -> tuple[set[str], set[str], list[str]]:
    chosen = draw(st.lists(st.sampled_from(paths), unique=True, max_size=len(paths))) if paths else []
    split = draw(st.integers(0, len(chosen)))
    new = draw(st.lists(st.integers(0, 10**6), max_size=4, unique=True))
    return set(chosen[:split]), set(chosen[split:]), [f"added-{n}.dat" for n in new]


@SETTINGS
@given(tree=trees(), data=st.data())
def test_diff_between_two_versions(tmp_path: Path, tree: Dir, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:
        src = Path(work) / "src"
        src.mkdir()
        build(os.fsencode(src), tree)
        before = tree_snapshot(src)
        repo = Strongroom.init(str(Path(work) / "repo"), PASSPHRASE)
        v1 = repo.commit(str(src), message="v1").id

        leaves = sorted(rel for rel, (kind, _, _) in before.items() if kind != "d")
        modify, remove, add = data.draw(mutations(leaves))
        modify = {p for p in modify if before[p][0] == "f"}
        for rel in modify:
            p = src / rel
            os.chmod(p, 0o644)
            p.write_bytes(before[rel][1] + b"\0changed " + rel.encode("utf-8", "surrogateescape"))
        for rel in remove:
            os.unlink(src / rel)
        for rel in add:
            (src / rel).write_bytes(b"new file " + rel.encode())
        after = tree_snapshot(src)
        v2 = repo.commit(str(src), message="v2").id

        changes = {(c.status, c.path) for c in repo.diff(v1, v2)}
        expected = ({("modified", p) for p in modify} | {("removed", p) for p in remove}
                    | {("added", p) for p in add})
        assert changes == expected
        assert repo.diff(v1, v1) == []
        assert {(c.status, c.path) for c in repo.diff(v2, v1)} == {
            ({"added": "removed", "removed": "added"}.get(s, s), p) for s, p in expected}

        # both versions still check out exactly
        d1, d2 = Path(work) / "d1", Path(work) / "d2"
        repo.checkout(v1, str(d1))
        repo.checkout("main", str(d2))
        assert tree_snapshot(d1) == before
        assert tree_snapshot(d2) == after
        assert repo.resolve("main~1") == v1
