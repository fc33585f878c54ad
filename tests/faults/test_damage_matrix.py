"""RELIABILITY T04 (damage matrix) and T05 (context and type confusion), table-driven.

T04: for each of the eight object kinds (pack data, pack header, index, tree, commit, ref, config, key) and
each damage (flip one bit, truncate, delete, swap two objects of the kind, put back an older valid copy),
`verify` must exit 1 — never 0, never 3 — and name exactly the versions and paths the damage truly reaches.
The oracle is independent of verify: it compares the bytes every indexed object occupied before and after
the damage, and maps the objects that changed through the layout recorded before anything was damaged
(tests/faults/conftest.py, `expected_affected`), so both precision and recall are checked. The keyless
`verify --structure` must catch every delete, truncate and index cell: the refs list the index files and each
index file lists its packs in the clear (format.md §8a), so a missing or cut-short file shows without a key.

T05: a writer without the key moves valid frames into other slots (a tree into a chunk slot, a commit
into a tree slot, a chunk that has a tree's very id into that tree's slot, one file's chunk into another's),
relabels a frame's clear header (kind, flags, key id), renames, moves or re-forges packs, swaps pack headers,
and copies index files, refs, key slots and keyrings from other repositories. Nothing of it may be accepted:
the associated data binds kind and id (and flags and key id), so every read refuses, and verify says so.

Every repository here is a copy of one built once per module: the three `layered` versions and tags on v1
and v2, so every version is reachable from a ref of its own (a lost commit object hides no other version,
and the affected set is knowable in every cell). Some T05 moves add a version on branch `side` whose one
file holds the exact bytes of a tree, so that a chunk exists with that tree's id: only the kind tells them
apart.

Pack-internal damage is made frame-aligned (a frame moved into a slot is cut or zero-padded to the slot's
length, a deleted object is a zeroed slot) so that every damaged slot starts with a real or a zeroed frame
header; damage that shifts later frames would leave random bytes in their clear headers and, through the
key-id bug that `test_keyless_move_is_refused[key-id-unknown-scope-*]` shows, make cells flaky.

Commands run in-process through `strongroom.cli.main.main` (the `python -m strongroom` entry point minus
the process exit) to keep the module's run time within budget; `cat` reads go through a real subprocess.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pytest

from strongroom import Strongroom
from strongroom.cli.main import main
from strongroom.core.ids import ObjectKind
from strongroom.crypto.idhash import content_name
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
from strongroom.crypto.keyslot import KekRequest, PassphraseOnly
from strongroom.crypto.secret import Secret
from strongroom.errors import DecryptionFailed
from strongroom.service import branches
from strongroom.store.pack import TRAILER_LEN, PackEntry, pack_path
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE, Cli
from tests.faults.conftest import (
    WHOLE,
    LayeredRepo,
    VerifyOutput,
    build_layered_repo,
    flip_byte,
    layout_of,
    parse_verify,
    write_source,
)

OTHER_PASSPHRASE = "a second way in, 0b5e"
KINDS = ("pack data", "pack header", "index", "tree", "commit", "ref", "config", "key")
DAMAGES = ("flip", "truncate", "delete", "swap", "older")
UNKNOWN_SCOPE_KEY = 0x8000_0001  # a key id in the scope range (>= 2^31) that no scope of the repository has


# ------------------------------------------------------------------------------ repositories


@dataclass
class Pristine:
    layered: LayeredRepo
    foreign: Path  # another repository, created with the same passphrase
    signing: Path  # the config folder holding the signing key that init made the repository's trusted root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    base = tmp_path_factory.mktemp("pristine")
    with pytest.MonkeyPatch.context() as mp:  # what tests/conftest.py's clean_env does, for a module fixture
        for key in list(os.environ):
            if key.startswith("STRONGROOM_"):
                mp.delenv(key)
        mp.setenv("HOME", str(base / "home"))
        mp.setenv("STRONGROOM_STATE_DIR", str(base / "state"))
        mp.setenv("STRONGROOM_CACHE_DIR", str(base / "cache"))
        mp.setenv("STRONGROOM_CONFIG_DIR", str(base / "config"))
        mp.setenv("STRONGROOM_UNSAFE_TEST_WEAK_KDF", "1")
        built = build_layered_repo(base)
        session = Strongroom.open(str(built.path), PASSPHRASE)._session
        for i, vid in enumerate(built.versions[:2], 1):
            branches.tag_create(session, f"t{i}", vid)
        foreign = base / "foreign"
        Strongroom.init(str(foreign), PASSPHRASE).commit(
            str(write_source(base / "foreign-src", {"x.bin": os.urandom(5000)})), workers=1
        )
    return Pristine(built, foreign, base / "config")


@pytest.fixture
def lay(pristine: Pristine, tmp_path: Path) -> LayeredRepo:
    dest = tmp_path / "repo"  # where the `cli` fixture looks
    shutil.copytree(pristine.layered.path, dest)
    # The trusted signing key, so that versions a case commits are validly signed (STRONGROOM_CONFIG_DIR).
    shutil.copytree(pristine.signing, tmp_path / "config")
    return dataclasses.replace(pristine.layered, path=dest, layout=dict(pristine.layered.layout))


@dataclass
class Run:
    code: int
    out: str
    err: str


class InProcess:
    """`strongroom --repo REPO ARGS` through the CLI's own entry point, in this process."""

    def __init__(self, repo: Path, capsys: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
        self.repo = repo
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, *args: str, passphrase: str | None = PASSPHRASE) -> Run:
        with self.monkeypatch.context() as m:
            if passphrase is None:
                m.delenv("STRONGROOM_PASSPHRASE", raising=False)
            else:
                m.setenv("STRONGROOM_PASSPHRASE", passphrase)
            self.capsys.readouterr()
            code = main(["--repo", str(self.repo), *args])
            cap = self.capsys.readouterr()
        return Run(code, cap.out.decode("utf-8", "replace"), cap.err.decode("utf-8", "replace"))

    def verify(self, *flags: str, passphrase: str | None = PASSPHRASE) -> VerifyOutput:
        r = self("verify", *flags, passphrase=passphrase)
        assert "Traceback" not in r.err and "internal error" not in r.err, r.err
        return parse_verify(r.code, r.out, r.err)


@pytest.fixture
def sr(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch) -> InProcess:
    return InProcess(tmp_path / "repo", capsysbinary, monkeypatch)


@dataclass
class Ctx:
    lay: LayeredRepo
    sr: InProcess
    cli: Cli
    tmp: Path
    pristine: Pristine
    side_files: dict[str, dict[str, bytes]] = field(default_factory=dict)

    @cached_property
    def repo(self) -> Repository:
        """The repository as it was before the damage (its index is loaded once)."""
        return self.lay.open()

    def entries(self, pack: str) -> list[PackEntry]:
        return sorted(self.repo.index.packs[pack.rsplit("/", 1)[-1]], key=lambda e: e.offset)

    def entry(self, object_id: bytes, kind: int | None = None) -> tuple[str, PackEntry]:
        loc = self.repo.index.get(object_id, kind)
        assert loc is not None
        pack = pack_path(loc.pack_id)
        return pack, next(e for e in self.entries(pack) if e.object_id == object_id and e.offset == loc.offset)

    def vid(self, version: int) -> str:
        return self.lay.versions[version]

    def chunk(self, version: int, path: str) -> bytes:
        return self.lay.layout[self.vid(version)].files[path][0]

    def chunk_pack(self, version: int, path: str) -> str:
        return self.entry(self.chunk(version, path), ObjectKind.CHUNK)[0]

    def tree(self, version: int, folder: str) -> bytes:
        return self.lay.layout[self.vid(version)].dirs[folder]

    def commit(self, version: int) -> bytes:
        return self.lay.layout[self.vid(version)].commit

    def original(self, vid: str, path: str) -> bytes:
        if vid in self.side_files:
            return self.side_files[vid][path]
        return self.lay.contents[self.lay.versions.index(vid)][path]

    def add_side_version(self) -> str:
        """A version on branch `side` whose one file holds the exact bytes of the tree of dup/: a chunk then
        exists with that tree's id, told apart from it only by its kind. It joins the oracle's layout."""
        dup = self.tree(0, "dup")
        files = {"spoof.bin": self.repo.read_object(dup, ObjectKind.TREE)}
        src = write_source(self.tmp / "side-src", files)
        vid = Strongroom.open(str(self.lay.path), PASSPHRASE).commit(str(src), branch="side", workers=1).id
        self.side_files[vid] = files
        del self.__dict__["repo"]  # reload: the index has grown
        self.lay.layout[vid] = layout_of(self.repo, vid)
        assert self.lay.layout[vid].files["spoof.bin"] == (dup,)
        assert self.entry(dup, ObjectKind.CHUNK)[0] != self.entry(dup, ObjectKind.TREE)[0]
        return vid

    def index_listing(self, version: int) -> tuple[str, set[bytes]]:
        """The index file that lists a version's metadata pack, and every object id it lists."""
        return self.lay.index_file_listing(self.entry(self.commit(version))[0])


# ------------------------------------------------------------------------------ the oracle and byte surgery


def lost_by_bytes(entries: list[PackEntry], before: bytes, after: bytes | None) -> set[bytes]:
    """The objects whose frame bytes, where the index says they are, are no longer what was written."""
    if after is None:
        return {e.object_id for e in entries}
    return {e.object_id for e in entries if frame_of(after, e) != frame_of(before, e)}


def rewrite(ctx: Ctx, changes: dict[str, Callable[[bytes], bytes | None]]) -> set[bytes]:
    """Apply byte-level changes to pack files (None deletes the file); the objects they destroyed."""
    plans = [(name, fn, ctx.entries(name), ctx.lay.file(name).read_bytes()) for name, fn in changes.items()]
    lost: set[bytes] = set()
    for name, fn, entries, before in plans:
        after = fn(before)
        lost |= lost_by_bytes(entries, before, after)
        if after is None:
            ctx.lay.file(name).unlink()
        else:
            ctx.lay.file(name).write_bytes(after)
    return lost


def frame_of(data: bytes, e: PackEntry) -> bytes:
    return data[e.offset : e.offset + e.length]


def put_in_slot(data: bytes, slot: PackEntry, frame: bytes) -> bytes:
    """A frame written where another was, cut or zero-padded to that slot: nothing after it moves."""
    body = frame[: slot.length].ljust(slot.length, b"\0")
    return data[: slot.offset] + body + data[slot.offset + slot.length :]


def flip_at(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1 :]


def set_byte(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1 :]


def header_span(data: bytes) -> int:
    """Bytes taken by the sealed header and its trailer at the end of a pack."""
    return int.from_bytes(data[-TRAILER_LEN:], "little") + TRAILER_LEN


# ------------------------------------------------------------------------------ what a case expects


@dataclass
class Expect:
    modes: tuple[str, ...] = ("default", "full")  # keyed verify modes that must catch it (exit 1)
    affected: dict[str, set[str]] | None = None  # exactly what every mode names; None: not knowable
    damaged: set[str] = field(default_factory=set)  # what the full check must name among its damage lines
    why: dict[str, str] = field(default_factory=dict)  # damaged object -> what the full check's reason says
    err: str = ""  # the refusal on stderr, when opening the repository already refuses it
    structure: set[str] | None = None  # exactly what `verify --structure` names (exit 1); None: not asserted
    reads: tuple[tuple[str, str], ...] = ()  # (version, path) whose `cat` must fail rather than return bytes
    intact: tuple[tuple[str, str, bytes], ...] = ()  # (version, path, bytes) that `cat` must still return


def check(ctx: Ctx, label: str, exp: Expect) -> None:
    modes = ("default", "full") if exp.err else exp.modes
    for mode in modes:
        v = ctx.sr.verify(*(("--full",) if mode == "full" else ()))
        assert v.code == 1, f"{label}: verify ({mode}) exited {v.code}, not 1: {v.err.strip()}"
        assert "wrong passphrase" not in v.err, f"{label}: damage reported as a wrong passphrase"
        assert exp.err in v.err, f"{label}: {v.err.strip()}"
        assert exp.err or v.damaged, f"{label}: verify ({mode}) exited 1 without naming any damage"
        if exp.affected is not None:
            assert v.affected == exp.affected, f"{label}: verify ({mode}) named other versions or paths"
        if mode == modes[-1]:  # the full check reads every pack: it names the damaged files themselves
            assert exp.damaged <= {what for what, _ in v.damaged}, f"{label}: {v.damaged}"
            for name, why in exp.why.items():
                assert any(what == name and why in reason for what, reason in v.damaged), (label, v.damaged)
    for vid, path in exp.reads:
        r = ctx.cli("cat", vid, path)
        assert r.code == 1, f"{label}: cat {path} of {vid[:12]} exited {r.code}: {r.err.strip()}"
        assert r.out_bytes != ctx.original(vid, path) and "Traceback" not in r.err
    for vid, path, data in exp.intact:
        r = ctx.cli("cat", vid, path)
        assert (r.code, r.out_bytes == data) == (0, True), f"{label}: intact {path} unreadable: {r.err.strip()}"
    if exp.structure is not None:
        s = ctx.sr.verify("--structure", passphrase=None)
        assert s.code == 1, f"{label}: verify --structure exited {s.code}"
        assert {what for what, _ in s.damaged} == exp.structure, f"{label}: {s.damaged}"


# ------------------------------------------------------------------------------ T04: pack data (chunk frames)


def pack_data_flip(ctx: Ctx) -> Expect:
    pack, e = ctx.entry(ctx.chunk(0, "a/unique.bin"))
    lost = rewrite(ctx, {pack: lambda d: flip_at(d, e.offset + e.length // 2, 0x04)})
    expected = ctx.lay.expected_affected(lost)
    # The same content is at two paths, and v3 replaced one of them.
    assert expected == {
        ctx.vid(0): {"a/unique.bin", "dup/copy.bin"},
        ctx.vid(1): {"a/unique.bin", "dup/copy.bin"},
        ctx.vid(2): {"dup/copy.bin"},
    }
    # The default mode does not read chunk contents (format.md §19): only decrypting finds it.
    return Expect(("full",), expected, {pack}, structure={pack}, reads=((ctx.vid(2), "dup/copy.bin"),))


def pack_data_truncate(ctx: Ctx) -> Expect:
    pack = ctx.chunk_pack(0, "b/keep.bin")
    lost = rewrite(ctx, {pack: lambda d: d[: len(d) // 2]})
    expected = ctx.lay.expected_affected(lost)
    assert expected, "the cut must reach at least one chunk"
    return Expect(("default", "full"), expected, {pack}, structure={pack})


def pack_data_delete(ctx: Ctx) -> Expect:
    pack = ctx.chunk_pack(0, "c/text.txt")
    lost = rewrite(ctx, {pack: lambda d: None})
    expected = ctx.lay.expected_affected(lost)
    assert expected[ctx.vid(2)] == {"b/keep.bin", "dup/copy.bin"}  # later versions lose what they kept of v1
    return Expect(("default", "full"), expected, {pack}, {pack: "missing"}, structure={pack})


def pack_data_swap(ctx: Ctx) -> Expect:
    # Two chunk frames of one pack trade slots (each cut or padded to the slot it lands in).
    pack = ctx.chunk_pack(0, "a/unique.bin")
    entries = ctx.entries(pack)
    a, b = entries[0], entries[-1]
    assert a != b
    lost = rewrite(ctx, {pack: lambda d: put_in_slot(put_in_slot(d, a, frame_of(d, b)), b, frame_of(d, a))})
    return Expect(("full",), ctx.lay.expected_affected(lost), {pack}, structure={pack})


def pack_data_older(ctx: Ctx) -> Expect:
    # Not applicable as worded: a pack is written once under the hash of its bytes, so an "older copy" of a
    # pack is the same bytes. Nearest meaningful case: an older version's chunk pack copied over a newer
    # version's (v1's bytes at the name of v3's pack, which holds only v3's new a/unique.bin).
    old, new = ctx.chunk_pack(0, "a/unique.bin"), ctx.chunk_pack(2, "a/unique.bin")
    assert old != new
    older = ctx.lay.file(old).read_bytes()
    lost = rewrite(ctx, {new: lambda d: older})
    expected = ctx.lay.expected_affected(lost)
    assert expected == {ctx.vid(2): {"a/unique.bin"}}
    return Expect(("full",), expected, {new}, structure={new})


# ------------------------------------------------------------------------------ T04: pack header


def pack_header_flip(ctx: Ctx) -> Expect:
    pack = ctx.chunk_pack(0, "b/keep.bin")
    assert not rewrite(ctx, {pack: lambda d: flip_at(d, len(d) - TRAILER_LEN - 8)})
    # The blobs are intact and the index still finds them: no file is lost.
    return Expect(("full",), {}, {pack}, {pack: "header"}, structure={pack})


def pack_header_truncate(ctx: Ctx) -> Expect:
    pack = ctx.chunk_pack(0, "b/keep.bin")
    assert not rewrite(ctx, {pack: lambda d: d[:-10]})
    return Expect(("full",), {}, {pack}, structure={pack})


def pack_header_delete(ctx: Ctx) -> Expect:
    # The sealed header and its trailer cut off: the pack ends with its padding (or its last frame).
    pack = ctx.chunk_pack(0, "b/keep.bin")
    assert not rewrite(ctx, {pack: lambda d: d[: len(d) - header_span(d)]})
    return Expect(("full",), {}, {pack}, structure={pack})


def pack_header_swap(ctx: Ctx) -> Expect:
    # Two packs trade sealed headers. A header's associated data is the repository id, not its pack, so
    # each still decrypts: only the comparison with the index (and the content hash) can catch it.
    a, b = ctx.chunk_pack(0, "b/keep.bin"), ctx.chunk_pack(1, "new/added.bin")
    da, db = ctx.lay.file(a).read_bytes(), ctx.lay.file(b).read_bytes()
    ha, hb = da[len(da) - header_span(da) :], db[len(db) - header_span(db) :]
    assert not rewrite(ctx, {a: lambda d: d[: len(d) - len(ha)] + hb, b: lambda d: d[: len(d) - len(hb)] + ha})
    return Expect(("full",), {}, {a, b}, structure={a, b})


def pack_header_older(ctx: Ctx) -> Expect:
    # Not applicable as worded: a pack's header is written once, with it. Nearest meaningful case: a valid
    # header of another repository's pack (sealed under that repository's keys and id) on this pack.
    pack = ctx.chunk_pack(0, "b/keep.bin")
    foreign = next(p for p in sorted((ctx.pristine.foreign / "data").rglob("*")) if p.is_file()).read_bytes()
    fh = foreign[len(foreign) - header_span(foreign) :]
    assert not rewrite(ctx, {pack: lambda d: d[: len(d) - header_span(d)] + fh})
    return Expect(("full",), {}, {pack}, structure={pack})


# ------------------------------------------------------------------------------ T04: index files


def index_flip(ctx: Ctx) -> Expect:
    name, listed = ctx.index_listing(0)
    flip_byte(ctx.lay.file(name), ctx.lay.file(name).stat().st_size // 2)
    expected = ctx.lay.expected_affected(listed)
    assert expected[ctx.vid(0)] == {WHOLE}
    return Expect(("default", "full"), expected, {name}, structure={name})


def index_truncate(ctx: Ctx) -> Expect:
    name, listed = ctx.index_listing(1)
    path = ctx.lay.file(name)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return Expect(("default", "full"), ctx.lay.expected_affected(listed), {name}, structure={name})


def index_delete(ctx: Ctx) -> Expect:
    name, listed = ctx.index_listing(0)
    ctx.lay.file(name).unlink()
    return Expect(("default", "full"), ctx.lay.expected_affected(listed), {name}, structure={name})


def index_swap(ctx: Ctx) -> Expect:
    (a, la), (b, lb) = ctx.index_listing(0), ctx.index_listing(2)
    da, db = ctx.lay.file(a).read_bytes(), ctx.lay.file(b).read_bytes()
    ctx.lay.file(a).write_bytes(db)
    ctx.lay.file(b).write_bytes(da)
    return Expect(("default", "full"), ctx.lay.expected_affected(la | lb), {a, b}, structure={a, b})


def _save_state(ctx: Ctx, saved: Path) -> None:
    for part in ("repo", "state"):
        shutil.copytree(ctx.tmp / part, saved / part)


def _restore_state(ctx: Ctx, saved: Path) -> None:
    for part in ("repo", "state"):
        shutil.rmtree(ctx.tmp / part)
        shutil.copytree(saved / part, ctx.tmp / part)


def index_older(ctx: Ctx) -> Expect:
    # Index files are content-named and never rewritten in place, but gc replaces them all: the index/
    # folder put back from before a gc (here one file of it) names packs gc deleted, among them one whose
    # live object gc repacked elsewhere. Nothing is lost; the stale entries must not hide the live ones.
    # (An index file that `repair index` replaced lists the same entries as its successor: not damage.)
    x = os.urandom(100_000)
    before, known = set(os.listdir(ctx.lay.path / "index")), set(ctx.repo.index.packs)
    side = write_source(ctx.tmp / "tmp-src", {"x.bin": x, "y.bin": os.urandom(120_000)})
    # The stale file must load before gc's new one, whose name is random: a stale name in the lower half
    # gives each gc below an even chance (a name drawn near ffff... would leave the retries almost none).
    _save_state(ctx, ctx.tmp / "before-tmp")
    for _ in range(40):
        assert ctx.sr("commit", str(side), "-b", "tmp").code == 0
        (stale,) = set(os.listdir(ctx.lay.path / "index")) - before
        if stale < "8":
            break
        _restore_state(ctx, ctx.tmp / "before-tmp")
    else:
        raise AssertionError("the tmp commit never drew an index name in the lower half")
    stale_bytes = (ctx.lay.path / "index" / stale).read_bytes()
    tmp_packs = {pack_path(pid) for pid in ctx.lay.open().index.packs if pid not in known}
    assert len(tmp_packs) == 2  # the tmp version's chunk pack and its metadata pack
    v4 = ctx.sr("commit", str(write_source(ctx.tmp / "src4", dict(ctx.lay.contents[2], **{"x.bin": x}))))
    assert v4.code == 0 and ctx.sr("branch", "delete", "tmp").code == 0
    # Index files load in name order and the first entry of an id wins: make the stale file load first
    # (gc names its new index file by the hash of fresh ciphertext, so a rerun draws another name).
    _save_state(ctx, ctx.tmp / "before-gc")
    for _ in range(40):
        gc = ctx.sr("gc", "--keep-unreachable", "0")
        assert gc.code == 0 and "1 repacked" in gc.out, gc.out + gc.err
        if all(stale < name for name in os.listdir(ctx.lay.path / "index")):
            break
        _restore_state(ctx, ctx.tmp / "before-gc")
    else:
        raise AssertionError("gc never named its index file after the stale one")
    assert not any(ctx.lay.file(p).exists() for p in tmp_packs)
    (ctx.lay.path / "index" / stale).write_bytes(stale_bytes)
    missing = {p: "missing" for p in tmp_packs}
    return Expect(("full",), {}, set(missing), missing, structure=set(missing), intact=((v4.out.strip(), "x.bin", x),))


# ------------------------------------------------------------------------------ T04: trees


def tree_flip(ctx: Ctx) -> Expect:
    tree = ctx.tree(0, "dup")
    assert all(ctx.lay.layout[v].dirs["dup"] == tree for v in ctx.lay.versions)  # one tree, three versions
    pack, e = ctx.entry(tree, ObjectKind.TREE)
    lost = rewrite(ctx, {pack: lambda d: flip_at(d, e.offset + e.length - 3, 0x10)})  # inside the GCM tag
    expected = ctx.lay.expected_affected(lost)
    assert expected == {v: {"dup/"} for v in ctx.lay.versions}
    return Expect(("default", "full"), expected, structure={pack}, reads=((ctx.vid(1), "dup/copy.bin"),))


def tree_truncate(ctx: Ctx) -> Expect:
    pack, e = ctx.entry(ctx.tree(0, "dup"), ObjectKind.TREE)
    lost = rewrite(ctx, {pack: lambda d: d[: e.offset + e.length // 2]})
    return Expect(("default", "full"), ctx.lay.expected_affected(lost), structure={pack})


def tree_delete(ctx: Ctx) -> Expect:
    # One object deleted from its pack: its slot zeroed (a punched-out block), nothing else moved.
    pack, e = ctx.entry(ctx.tree(0, "b"))
    lost = rewrite(ctx, {pack: lambda d: put_in_slot(d, e, b"")})
    expected = ctx.lay.expected_affected(lost)
    assert expected == {v: {"b/"} for v in ctx.lay.versions}
    return Expect(("default", "full"), expected, structure={pack})


def tree_swap(ctx: Ctx) -> Expect:
    (pa, a), (pb, b) = ctx.entry(ctx.tree(0, "a")), ctx.entry(ctx.tree(1, "c"))
    fa, fb = frame_of(ctx.lay.file(pa).read_bytes(), a), frame_of(ctx.lay.file(pb).read_bytes(), b)
    lost = rewrite(ctx, {pa: lambda d: put_in_slot(d, a, fb), pb: lambda d: put_in_slot(d, b, fa)})
    expected = ctx.lay.expected_affected(lost)
    assert expected[ctx.vid(0)] == {"a/"} and expected[ctx.vid(1)] == {"a/", "c/"}
    return Expect(("default", "full"), expected, structure={pa, pb})


def tree_older(ctx: Ctx) -> Expect:
    # Trees are written once, under their id. "An older valid copy" of a folder is the tree an older
    # version had for it: v1's tree of a/ in the slot of v3's (v3 changed a/unique.bin).
    old, new = ctx.tree(0, "a"), ctx.tree(2, "a")
    assert old != new
    (po, eo), (pn, en) = ctx.entry(old), ctx.entry(new)
    older = frame_of(ctx.lay.file(po).read_bytes(), eo)
    lost = rewrite(ctx, {pn: lambda d: put_in_slot(d, en, older)})
    expected = ctx.lay.expected_affected(lost)
    assert expected == {ctx.vid(2): {"a/"}}
    return Expect(("default", "full"), expected, structure={pn}, reads=((ctx.vid(2), "a/unique.bin"),))


# ------------------------------------------------------------------------------ T04: commits


def commit_flip(ctx: Ctx) -> Expect:
    pack, e = ctx.entry(ctx.commit(1))
    lost = rewrite(ctx, {pack: lambda d: flip_at(d, e.offset + e.length // 2, 0x80)})
    expected = ctx.lay.expected_affected(lost)
    assert expected == {ctx.vid(1): {WHOLE}}
    return Expect(("default", "full"), expected, structure={pack})


def commit_truncate(ctx: Ctx) -> Expect:
    pack, e = ctx.entry(ctx.commit(2))
    lost = rewrite(ctx, {pack: lambda d: d[: e.offset + e.length - 1]})
    expected = ctx.lay.expected_affected(lost)
    assert expected[ctx.vid(2)] == {WHOLE}
    return Expect(("default", "full"), expected, structure={pack})


def commit_delete(ctx: Ctx) -> Expect:
    pack, e = ctx.entry(ctx.commit(1))
    lost = rewrite(ctx, {pack: lambda d: put_in_slot(d, e, b"")})
    assert ctx.lay.expected_affected(lost) == {ctx.vid(1): {WHOLE}}
    return Expect(("default", "full"), {ctx.vid(1): {WHOLE}}, structure={pack})


def commit_swap(ctx: Ctx) -> Expect:
    (pa, a), (pb, b) = ctx.entry(ctx.commit(0)), ctx.entry(ctx.commit(1))
    fa, fb = frame_of(ctx.lay.file(pa).read_bytes(), a), frame_of(ctx.lay.file(pb).read_bytes(), b)
    lost = rewrite(ctx, {pa: lambda d: put_in_slot(d, a, fb), pb: lambda d: put_in_slot(d, b, fa)})
    expected = ctx.lay.expected_affected(lost)
    assert expected == {ctx.vid(0): {WHOLE}, ctx.vid(1): {WHOLE}}
    return Expect(("default", "full"), expected, structure={pa, pb})


def commit_older(ctx: Ctx) -> Expect:
    # The head's commit slot gets the previous version's (valid) commit frame: a rollback of one object.
    (po, eo), (pn, en) = ctx.entry(ctx.commit(1)), ctx.entry(ctx.commit(2))
    older = frame_of(ctx.lay.file(po).read_bytes(), eo)
    lost = rewrite(ctx, {pn: lambda d: put_in_slot(d, en, older)})
    expected = ctx.lay.expected_affected(lost)
    assert expected == {ctx.vid(2): {WHOLE}}
    return Expect(("default", "full"), expected, structure={pn}, reads=((ctx.vid(2), "b/keep.bin"),))


# ------------------------------------------------------------------------------ T04: refs


def ref_flip(ctx: Ctx) -> Expect:
    flip_byte(ctx.lay.file("refs"), ctx.lay.file("refs").stat().st_size // 2)
    return Expect(err="refs are damaged", structure={"refs"})


def ref_truncate(ctx: Ctx) -> Expect:
    refs = ctx.lay.file("refs")
    refs.write_bytes(refs.read_bytes()[:-7])
    return Expect(err="refs are damaged", structure={"refs"})


def ref_delete(ctx: Ctx) -> Expect:
    ctx.lay.file("refs").unlink()
    return Expect(err="refs are missing", structure={"refs"})


def ref_swap(ctx: Ctx) -> Expect:
    # Not applicable as worded: there is one refs file. Nearest meaningful case: the refs of a copy of this
    # repository that went on without it (same keys and id: they decrypt, and their generation is newer),
    # naming a version whose objects this copy does not have.
    other = ctx.tmp / "diverged"
    shutil.copytree(ctx.lay.path, other)
    src = write_source(ctx.tmp / "src4", dict(ctx.lay.contents[2], **{"v4.txt": b"only in the copy\n"}))
    v4 = Strongroom.open(str(other), PASSPHRASE).commit(str(src), workers=1).id
    shutil.copyfile(other / "refs", ctx.lay.file("refs"))
    return Expect(("default", "full"), {v4: {WHOLE}}, {f"version {v4[:12]}"})


def ref_older(ctx: Ctx) -> Expect:
    old_refs = ctx.lay.file("refs").read_bytes()
    src = write_source(ctx.tmp / "src4", dict(ctx.lay.contents[2], **{"more.txt": b"a fourth version\n"}))
    r = ctx.sr("commit", str(src), "-m", "v4")  # this client now knows the newer generation
    assert r.code == 0, r.err
    ctx.lay.file("refs").write_bytes(old_refs)
    return Expect(err="rolled back")


# ------------------------------------------------------------------------------ T04: config


def config_flip(ctx: Ctx) -> Expect:
    # One bit in the MAC. (A bit in the repository id is reported as "key slot is damaged", the slot being
    # bound to the id: exit 1 as well, but it points at the wrong file; every byte is flipped in
    # test_damage.py's test_every_flipped_byte_in_config_is_refused.)
    cfg = ctx.lay.file("config")
    flip_byte(cfg, cfg.read_bytes().index(b'"mac": "') + 20)
    return Expect(err="config")


def config_truncate(ctx: Ctx) -> Expect:
    cfg = ctx.lay.file("config")
    cfg.write_bytes(cfg.read_bytes()[:-9])
    return Expect(err="config is damaged", structure={"config"})


def config_delete(ctx: Ctx) -> Expect:
    # Keys, keyring, refs and packs are all there: a damaged repository, not "not a repository" (exit 2).
    # `verify --structure` already says so: config missing.
    ctx.lay.file("config").unlink()
    return Expect(err="config", structure={"config"})


def config_swap(ctx: Ctx) -> Expect:
    # Not applicable as worded: there is one config. Nearest meaningful case: another repository's config
    # (valid, authenticated under that repository's master key, same passphrase). It names another
    # repository id, so the refusal comes from the key slot bound to this one ("key slot is damaged").
    shutil.copyfile(ctx.pristine.foreign / "config", ctx.lay.file("config"))
    return Expect(err="damaged")


def config_older(ctx: Ctx) -> Expect:
    # Not applicable as worded: the config is written once, at init. Nearest meaningful case: the config
    # set back to what an older build wrote (`zstd/2`, format.md §3) by a writer without the key.
    cfg = ctx.lay.file("config")
    body = json.loads(cfg.read_bytes())
    assert body["compression"] == "zstd/1"
    body["compression"] = "zstd/2"
    cfg.write_bytes(json.dumps(body, indent=1, sort_keys=True).encode())
    return Expect(err="config was modified")


# ------------------------------------------------------------------------------ T04: keys


def _only_slot(ctx: Ctx) -> Path:
    (slot,) = sorted((ctx.lay.path / "keys").iterdir())
    return slot


def _add_slot(ctx: Ctx) -> tuple[Path, Path]:
    """A second key slot (another passphrase); returns (the original slot, the new one)."""
    first = _only_slot(ctx)
    new = PassphraseOnly(Secret(OTHER_PASSPHRASE.encode()))
    ctx.repo.add_key_slot([KekRequest("passphrase")], new, UNSAFE_TEST_ONLY)
    (second,) = [p for p in (ctx.lay.path / "keys").iterdir() if p != first]
    return first, second


def key_flip(ctx: Ctx) -> Expect:
    slot = _only_slot(ctx)
    flip_byte(slot, slot.stat().st_size // 3)
    return Expect(err="key slot is damaged", structure={f"keys/{slot.name}"})


def key_flip_spare(ctx: Ctx) -> Expect:
    # A second slot damaged while the first still opens: the repository opens, but a way in (a recovery
    # passphrase, a key file) is lost. A keyed verify must not call that clean.
    _, spare = _add_slot(ctx)
    flip_byte(spare, spare.stat().st_size // 3)
    return Expect(("default", "full"), {}, {f"keys/{spare.name}"}, structure={f"keys/{spare.name}"})


def key_flip_first_of_two(ctx: Ctx) -> Expect:
    # The slot this passphrase opens is damaged, and another slot (another passphrase) refuses it: that is
    # damage, not "wrong passphrase" (test_damage.py asks the same of a repository with one slot).
    first, _ = _add_slot(ctx)
    flip_byte(first, first.stat().st_size // 3)
    return Expect(err="key slot is damaged", structure={f"keys/{first.name}"})


def key_truncate(ctx: Ctx) -> Expect:
    slot = _only_slot(ctx)
    slot.write_bytes(slot.read_bytes()[:-20])
    return Expect(err="key slot is damaged", structure={f"keys/{slot.name}"})


def key_delete(ctx: Ctx) -> Expect:
    _only_slot(ctx).unlink()
    return Expect(err="no key slots", structure={"keys"})


def key_swap(ctx: Ctx) -> Expect:
    # Two slots trade file names: each one's name no longer equals its id (format.md §10: damaged).
    a, b = _add_slot(ctx)
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    return Expect(err="key slot is damaged")


def key_older(ctx: Ctx) -> Expect:
    # A key slot is never rewritten: change-passphrase writes a new slot and removes the old one, and putting
    # the old one back is the documented non-revocation (threat-model.md), not damage. Nearest meaningful
    # case: the keyring from before `key rotate`, put back once something was sealed under the new data key.
    old = ctx.lay.file("keyring").read_bytes()
    ctx.repo.rotate_key()
    head = bytes.fromhex(ctx.vid(2))
    ctx.repo.edit_refs(lambda refs: refs.tags.__setitem__("after-rotate", head), "tag create")
    ctx.lay.file("keyring").write_bytes(old)
    return Expect(err="damaged")


# ------------------------------------------------------------------------------ T04: the matrix


@dataclass(frozen=True)
class Cell:
    kind: str
    damage: str
    what: str  # the exact damage, or the substitute where the cell cannot apply as worded
    apply: Callable[[Ctx], Expect]

    @property
    def structure_required(self) -> bool:
        return self.damage in ("delete", "truncate") or self.kind == "index"


CELLS = [
    Cell("pack data", "flip", "one bit in a chunk frame", pack_data_flip),
    Cell("pack data", "truncate", "a chunk pack cut in half", pack_data_truncate),
    Cell("pack data", "delete", "a chunk pack deleted", pack_data_delete),
    Cell("pack data", "swap", "two chunk frames of one pack trade slots", pack_data_swap),
    Cell("pack data", "older", "substitute: an older version's chunk pack at a newer pack's name", pack_data_older),
    Cell("pack header", "flip", "one bit in a sealed pack header", pack_header_flip),
    Cell("pack header", "truncate", "the last 10 bytes of a pack cut", pack_header_truncate),
    Cell("pack header", "delete", "a pack's sealed header and trailer cut off", pack_header_delete),
    Cell("pack header", "swap", "two packs trade sealed headers", pack_header_swap),
    Cell("pack header", "older", "substitute: another repository's pack header", pack_header_older),
    Cell("index", "flip", "one bit in an index file", index_flip),
    Cell("index", "truncate", "an index file cut in half", index_truncate),
    Cell("index", "delete", "an index file deleted", index_delete),
    Cell("index", "swap", "two index files trade contents", index_swap),
    Cell("index", "older", "an index file from before gc put back (packs gone, one repacked)", index_older),
    Cell("tree", "flip", "one bit in the tag of a tree three versions share", tree_flip),
    Cell("tree", "truncate", "a metadata pack cut inside a tree frame", tree_truncate),
    Cell("tree", "delete", "a tree's slot zeroed in its pack", tree_delete),
    Cell("tree", "swap", "two trees of two packs trade slots", tree_swap),
    Cell("tree", "older", "v1's tree of a/ in the slot of v3's", tree_older),
    Cell("commit", "flip", "one bit in a middle version's commit", commit_flip),
    Cell("commit", "truncate", "a metadata pack cut inside the head commit", commit_truncate),
    Cell("commit", "delete", "a commit's slot zeroed in its pack", commit_delete),
    Cell("commit", "swap", "v1's and v2's commit frames trade slots", commit_swap),
    Cell("commit", "older", "v2's commit frame in the slot of v3's", commit_older),
    Cell("ref", "flip", "one bit in refs", ref_flip),
    Cell("ref", "truncate", "refs cut by 7 bytes", ref_truncate),
    Cell("ref", "delete", "refs deleted", ref_delete),
    Cell("ref", "swap", "substitute: the refs of a diverged copy of this repository", ref_swap),
    Cell("ref", "older", "the refs of the generation before put back (rollback)", ref_older),
    Cell("config", "flip", "one bit in the config's MAC", config_flip),
    Cell("config", "truncate", "config cut by 9 bytes", config_truncate),
    Cell("config", "delete", "config deleted", config_delete),
    Cell("config", "swap", "substitute: another repository's config", config_swap),
    Cell("config", "older", "substitute: compression set back to an older build's zstd/2", config_older),
    Cell("key", "flip", "one bit in the only key slot", key_flip),
    Cell("key", "flip", "one bit in a second, spare key slot", key_flip_spare),
    Cell("key", "flip", "one bit in the first of two slots (the other refuses)", key_flip_first_of_two),
    Cell("key", "truncate", "the only key slot cut by 20 bytes", key_truncate),
    Cell("key", "delete", "the only key slot deleted", key_delete),
    Cell("key", "swap", "two key slots trade file names", key_swap),
    Cell("key", "older", "substitute: the keyring from before `key rotate`", key_older),
]
# Cells the format leaves without a meaningful damage case (each would name why).
NOT_APPLICABLE: dict[tuple[str, str], str] = {}


def _ids(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return out


@pytest.mark.parametrize("cell", CELLS, ids=_ids([f"{c.kind.replace(' ', '-')}-{c.damage}" for c in CELLS]))
def test_damage_cell(cell: Cell, lay: LayeredRepo, sr: InProcess, cli: Cli, tmp_path: Path, pristine: Pristine) -> None:
    ctx = Ctx(lay, sr, cli, tmp_path, pristine)
    exp = cell.apply(ctx)
    assert not cell.structure_required or exp.structure is not None, "a keyless check must catch this cell"
    check(ctx, f"{cell.kind}/{cell.damage}", exp)


def test_the_matrix_covers_every_kind_and_damage() -> None:
    """The table itself: every kind x damage has a cell, or a reason it cannot apply; every delete, truncate
    and index cell asks `verify --structure` to catch it (the cell's test asserts it does). Run with -s to print it
    (each cell's own test asserts verify exits 1, never 0: a passing module means 0 false clean results)."""
    grid = {(k, d) for k in KINDS for d in DAMAGES}
    covered = {(c.kind, c.damage) for c in CELLS}
    assert covered <= grid
    assert grid - covered == set(NOT_APPLICABLE)
    rows = [f"{'kind':<12} {'damage':<9} {'keyed':<14} {'--structure':<12} what"]
    for c in CELLS:
        rows.append(
            f"{c.kind:<12} {c.damage:<9} {'exit 1':<14} {'required' if c.structure_required else '-':<12} {c.what}"
        )
    for (k, d), why in NOT_APPLICABLE.items():
        rows.append(f"{k:<12} {d:<9} {'n/a':<14} {'n/a':<12} {why}")
    rows.append(
        f"{len(CELLS)} cells, {len(CELLS)} must be detected (false clean results allowed: 0); "
        f"--structure required in {sum(c.structure_required for c in CELLS)}"
    )
    print("\n".join(rows))


# ------------------------------------------------------------------------------ T05: what a keyless writer can do


def _aad_refuses(ctx: Ctx, frame: bytes, slot_kind: int, slot_id: bytes) -> None:
    """The moved frame, read as the slot's object, is refused by the AEAD (or by the kind check before it)."""
    with pytest.raises(DecryptionFailed):
        ctx.repo.open_frame(slot_id, slot_kind, frame)


def _move(ctx: Ctx, src: tuple[bytes, int], dst: tuple[bytes, int], relabel: bool) -> set[bytes]:
    """Put the frame of object src=(id, kind) in the slot of dst=(id, kind), relabelling its kind byte to the
    slot's kind when asked; the frame must open in its own place and be refused in the new one."""
    (ps, es), (pd, ed) = ctx.entry(*src), ctx.entry(*dst)
    frame = frame_of(ctx.lay.file(ps).read_bytes(), es)
    ctx.repo.open_frame(src[0], src[1], frame)  # a valid frame ...
    if relabel:
        frame = set_byte(frame, 1, dst[1])
    _aad_refuses(ctx, frame, dst[1], dst[0])  # ... refused in another slot
    return rewrite(ctx, {pd: lambda d: put_in_slot(d, ed, frame)})


def move_tree_into_chunk_slot(ctx: Ctx) -> Expect:
    lost = _move(ctx, (ctx.tree(0, "b"), ObjectKind.TREE), (ctx.chunk(0, "b/keep.bin"), ObjectKind.CHUNK), False)
    return Expect(("full",), ctx.lay.expected_affected(lost), reads=((ctx.vid(0), "b/keep.bin"),))


def move_tree_into_chunk_slot_relabelled(ctx: Ctx) -> Expect:
    lost = _move(ctx, (ctx.tree(0, "b"), ObjectKind.TREE), (ctx.chunk(0, "b/keep.bin"), ObjectKind.CHUNK), True)
    return Expect(("full",), ctx.lay.expected_affected(lost), reads=((ctx.vid(2), "b/keep.bin"),))


def move_commit_into_tree_slot(ctx: Ctx) -> Expect:
    lost = _move(ctx, (ctx.commit(2), ObjectKind.COMMIT), (ctx.tree(0, "c"), ObjectKind.TREE), True)
    return Expect(("default", "full"), ctx.lay.expected_affected(lost), reads=((ctx.vid(0), "c/text.txt"),))


def move_same_id_chunk_into_tree_slot(ctx: Ctx) -> Expect:
    # The side version's one chunk has exactly the id of the tree of dup/ (its bytes are that tree's
    # encoding). Relabelled TREE and put in the tree's slot, only the kind in the associated data differs.
    ctx.add_side_version()
    dup = ctx.tree(0, "dup")
    assert _move(ctx, (dup, ObjectKind.CHUNK), (dup, ObjectKind.TREE), True) == {dup}
    # The oracle's ids carry no kind: what is lost is the tree, and the side version (holding the chunk) is fine.
    expected = {v: {"dup/"} for v in ctx.lay.versions}
    return Expect(("default", "full"), expected, reads=((ctx.vid(0), "dup/copy.bin"),))


def move_same_id_tree_into_chunk_slot(ctx: Ctx) -> Expect:
    # The other way: the tree of dup/, relabelled CHUNK, in the slot of the chunk that has its id.
    side = ctx.add_side_version()
    dup = ctx.tree(0, "dup")
    assert _move(ctx, (dup, ObjectKind.TREE), (dup, ObjectKind.CHUNK), True) == {dup}
    # What is lost is the chunk: the versions holding the tree are fine.
    return Expect(("full",), {side: {"spoof.bin"}}, reads=((side, "spoof.bin"),))


def move_chunk_into_other_chunk_slot(ctx: Ctx) -> Expect:
    # Relabelling an object under another id: one file's chunk served as another file's.
    src, dst = ctx.chunk(1, "new/added.bin"), ctx.chunk(0, "b/keep.bin")
    lost = _move(ctx, (src, ObjectKind.CHUNK), (dst, ObjectKind.CHUNK), False)
    return Expect(("full",), ctx.lay.expected_affected(lost), reads=((ctx.vid(1), "b/keep.bin"),))


def _relabel(ctx: Ctx, oid: bytes, kind: int, at: int, value: int, aad: bool = True) -> set[bytes]:
    pack, e = ctx.entry(oid, kind)
    frame = set_byte(frame_of(ctx.lay.file(pack).read_bytes(), e), at, value)
    if aad:
        _aad_refuses(ctx, frame, kind, oid)
    return rewrite(ctx, {pack: lambda d: put_in_slot(d, e, frame)})


def relabel_flags(ctx: Ctx) -> Expect:
    # The text chunk was stored zstd (flags 1): relabelled raw.
    text = ctx.chunk(0, "c/text.txt")
    pack, e = ctx.entry(text, ObjectKind.CHUNK)
    assert ctx.lay.file(pack).read_bytes()[e.offset + 2] == 1
    lost = _relabel(ctx, text, ObjectKind.CHUNK, 2, 0)
    return Expect(("full",), ctx.lay.expected_affected(lost), reads=((ctx.vid(0), "c/text.txt"),))


def relabel_key_id_unknown_data_key(ctx: Ctx) -> Expect:
    lost = _relabel(ctx, ctx.tree(0, "c"), ObjectKind.TREE, 6, 2)  # data key 2: not in the keyring
    return Expect(("default", "full"), ctx.lay.expected_affected(lost))


def relabel_key_id_unknown_scope_tree(ctx: Ctx) -> Expect:
    # A key id in the scope range that no scope of this repository has: nothing can open it, and nothing
    # sealed it. It is damage, not "a scope whose key is not in this keystore" (a warning, not checked).
    # (No AEAD is even tried: a key id nobody holds; the library refuses it as KeyUnavailable, exit 2.)
    lost = _relabel(ctx, ctx.tree(0, "dup"), ObjectKind.TREE, 3, UNKNOWN_SCOPE_KEY >> 24, aad=False)
    return Expect(("default", "full"), ctx.lay.expected_affected(lost), reads=((ctx.vid(0), "dup/copy.bin"),))


def relabel_key_id_unknown_scope_chunk(ctx: Ctx) -> Expect:
    lost = _relabel(ctx, ctx.chunk(0, "b/keep.bin"), ObjectKind.CHUNK, 3, UNKNOWN_SCOPE_KEY >> 24, aad=False)
    return Expect(("full",), ctx.lay.expected_affected(lost), reads=((ctx.vid(0), "b/keep.bin"),))


def packs_trade_names(ctx: Ctx) -> Expect:
    # v3's chunk pack and the side version's chunk pack trade names: every index lookup lands on the other
    # pack's bytes (the first slot of each on the other's first frame). Both files still hash to a name,
    # just not their own.
    # The oracle's expected_affected() maps bare ids, so it would also name dup/ (the tree whose id the lost
    # side chunk shares); the tree itself is intact. What is lost: v3's a/unique.bin and the side's spoof.bin.
    side = ctx.add_side_version()
    a, b = ctx.chunk_pack(2, "a/unique.bin"), ctx.entry(ctx.tree(0, "dup"), ObjectKind.CHUNK)[0]
    assert len(ctx.entries(b)) == 1
    da, db = ctx.lay.file(a).read_bytes(), ctx.lay.file(b).read_bytes()
    rewrite(ctx, {a: lambda d: db, b: lambda d: da})
    lost = {ctx.vid(2): {"a/unique.bin"}, side: {"spoof.bin"}}
    return Expect(("full",), lost, {a, b}, structure={a, b}, reads=((ctx.vid(2), "a/unique.bin"), (side, "spoof.bin")))


def pack_reforged_under_new_name(ctx: Ctx) -> Expect:
    # Another chunk frame copied into the first slot of v3's chunk pack, which is then renamed by the hash of
    # its new bytes: every file matches its name, but the index file lists a pack that is gone, which the
    # keyless check sees; the forged one is an orphan whose header still lists the old entries.
    pack = ctx.chunk_pack(2, "a/unique.bin")
    slots = ctx.entries(pack)
    ps, es = ctx.entry(ctx.chunk(0, "b/keep.bin"))
    forged = put_in_slot(ctx.lay.file(pack).read_bytes(), slots[0], frame_of(ctx.lay.file(ps).read_bytes(), es))
    name = pack_path(content_name(forged))
    ctx.lay.file(name).parent.mkdir(exist_ok=True)
    ctx.lay.file(name).write_bytes(forged)
    ctx.lay.file(pack).unlink()
    expected = ctx.lay.expected_affected({e.object_id for e in slots})
    assert expected == {ctx.vid(2): {"a/unique.bin"}}
    return Expect(("default", "full"), expected, {pack, name}, structure={pack})


def forged_orphan_pack(ctx: Ctx) -> Expect:
    # A copy of an intact pack with one bit flipped, stored under the hash of its bytes (so a keyless check
    # passes) and named by no index: junk. The intact pack still serves every object, so no file is lost.
    pack = ctx.chunk_pack(0, "c/text.txt")
    e = ctx.entries(pack)[0]
    forged = flip_at(ctx.lay.file(pack).read_bytes(), e.offset + e.length // 2)
    name = pack_path(content_name(forged))
    ctx.lay.file(name).parent.mkdir(exist_ok=True)
    ctx.lay.file(name).write_bytes(forged)
    return Expect(("full",), {}, {name})


def pack_moved_to_other_folder(ctx: Ctx) -> Expect:
    # A pack moved to another fan-out folder (data/00/ instead of data/<first two digits>/): it still hashes
    # to its file name, but no read finds it where the format puts it.
    pack = ctx.chunk_pack(0, "b/keep.bin")
    pid = pack.rsplit("/", 1)[-1]
    moved = ctx.lay.path / "data" / ("ff" if pid.startswith("00") else "00") / pid
    moved.parent.mkdir(exist_ok=True)
    ctx.lay.file(pack).rename(moved)
    lost = {e.object_id for e in ctx.entries(pack)}
    return Expect(("default", "full"), ctx.lay.expected_affected(lost), reads=((ctx.vid(0), "b/keep.bin"),))


def headers_swapped_then_repair(ctx: Ctx) -> Expect:
    # Two packs trade sealed headers (each decrypts: its context is the repository id), then the user runs
    # `repair index`, which rebuilds the index from pack headers. That must not make the intact frames of
    # either pack unreadable: verify --full still reports the two damaged headers, and names no file.
    a, b = ctx.chunk_pack(0, "b/keep.bin"), ctx.chunk_pack(1, "new/added.bin")
    da, db = ctx.lay.file(a).read_bytes(), ctx.lay.file(b).read_bytes()
    ha, hb = da[len(da) - header_span(da) :], db[len(db) - header_span(db) :]
    assert not rewrite(ctx, {a: lambda d: d[: len(d) - len(ha)] + hb, b: lambda d: d[: len(d) - len(hb)] + ha})
    r = ctx.sr("repair", "index")
    assert r.code == 0, r.err
    kept = ctx.original(ctx.vid(0), "b/keep.bin")
    return Expect(("full",), {}, {a, b}, intact=((ctx.vid(0), "b/keep.bin", kept),))


def foreign_index_file(ctx: Ctx) -> Expect:
    name = next(iter(sorted((ctx.pristine.foreign / "index").iterdir())))
    shutil.copyfile(name, ctx.lay.path / "index" / name.name)
    return Expect(("default", "full"), {}, {f"index/{name.name}"})


def foreign_refs(ctx: Ctx) -> Expect:
    shutil.copyfile(ctx.pristine.foreign / "refs", ctx.lay.file("refs"))
    return Expect(err="refs are damaged")


def foreign_keyring(ctx: Ctx) -> Expect:
    shutil.copyfile(ctx.pristine.foreign / "keyring", ctx.lay.file("keyring"))
    return Expect(err="keyring is damaged")


def foreign_key_slot(ctx: Ctx) -> Expect:
    # Another repository's key slot, same passphrase, in place of this one's: it belongs to that
    # repository's id and master key.
    ours = _only_slot(ctx)
    (theirs,) = (ctx.pristine.foreign / "keys").iterdir()
    ours.unlink()
    shutil.copyfile(theirs, ctx.lay.path / "keys" / theirs.name)
    return Expect(err="key slot is damaged")


MOVES = [
    ("tree-into-chunk-slot", move_tree_into_chunk_slot),
    ("tree-into-chunk-slot-relabelled", move_tree_into_chunk_slot_relabelled),
    ("commit-into-tree-slot-relabelled", move_commit_into_tree_slot),
    ("same-id-chunk-into-tree-slot", move_same_id_chunk_into_tree_slot),
    ("same-id-tree-into-chunk-slot", move_same_id_tree_into_chunk_slot),
    ("chunk-under-another-id", move_chunk_into_other_chunk_slot),
    ("flags-relabelled", relabel_flags),
    ("key-id-unknown-data-key", relabel_key_id_unknown_data_key),
    ("key-id-unknown-scope-tree", relabel_key_id_unknown_scope_tree),
    ("key-id-unknown-scope-chunk", relabel_key_id_unknown_scope_chunk),
    ("packs-trade-names", packs_trade_names),
    ("pack-reforged-under-new-name", pack_reforged_under_new_name),
    ("forged-orphan-pack", forged_orphan_pack),
    ("pack-in-other-fanout-folder", pack_moved_to_other_folder),
    ("headers-swapped-then-repair-index", headers_swapped_then_repair),
    ("foreign-index-file", foreign_index_file),
    ("foreign-refs", foreign_refs),
    ("foreign-keyring", foreign_keyring),
    ("foreign-key-slot", foreign_key_slot),
]


@pytest.mark.parametrize("move", [m for _, m in MOVES], ids=[n for n, _ in MOVES])
def test_keyless_move_is_refused(
    move: Callable[[Ctx], Expect], lay: LayeredRepo, sr: InProcess, cli: Cli, tmp_path: Path, pristine: Pristine
) -> None:
    """T05: 0 accepted. Each move is refused by every read, and verify reports it as damage (exit 1)."""
    ctx = Ctx(lay, sr, cli, tmp_path, pristine)
    check(ctx, move.__name__, move(ctx))


def test_key_slot_relabelled_to_this_repository_is_not_accepted(
    lay: LayeredRepo, sr: InProcess, pristine: Pristine
) -> None:
    """T05, the keyless writer's best try with a key slot: another repository's slot (same passphrase) with its
    repository id rewritten to this one's and its checksum recomputed (the checksum is not a secret). The id
    is in every layer's associated data, so the unwrap fails; as threat-model.md documents, that reads as a
    wrong passphrase (exit 2): the slot is consistent, and only the key could tell it from a mistyped one."""
    ours = next((lay.path / "keys").iterdir())
    (theirs,) = (pristine.foreign / "keys").iterdir()
    body = json.loads(theirs.read_bytes())
    body["repo_id"] = json.loads(ours.read_bytes())["repo_id"]
    body.pop("checksum")
    canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["checksum"] = hashlib.sha256(canon).hexdigest()
    ours.unlink()
    (lay.path / "keys" / theirs.name).write_text(json.dumps(body, indent=1, sort_keys=True))
    assert sr.verify("--structure", passphrase=None).code == 0  # consistent, as far as a keyless check goes
    for flags in ((), ("--full",)):
        v = sr.verify(*flags)
        assert v.code == 2 and "wrong passphrase" in v.err, v.err
