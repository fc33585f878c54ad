"""Listed files (format.md §8a): `refs` list the index files and each index file lists its packs, in the
clear, so that `verify --structure` finds a missing file without the key. The lists must stay true through
commits, interrupted commits, gc and `repair index`; a lost file stays reported until repaired; and
repositories written before the lists existed (bare frames) still open, verify and upgrade."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.backends.local import LocalBackend
from strongroom.core.ids import ObjectKind
from strongroom.crypto.idhash import content_name
from strongroom.crypto.secret import Secret
from strongroom.errors import IntegrityError
from strongroom.store import check, listing
from strongroom.store import gc as store_gc
from strongroom.store.index import MAGIC as INDEX_MAGIC
from strongroom.store.index import listed_packs
from strongroom.store.pack import PackBuilder, pack_path
from strongroom.store.refs import MAGIC as REFS_MAGIC
from strongroom.store.refs import listed_index_files
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE, Cli, make_tree


def _structure(cli: Cli) -> tuple[int, list[str], list[str]]:
    """`verify --structure` without a passphrase: (exit code, damaged names, warnings)."""
    r = cli("--json", "verify", "--structure", passphrase=None)
    assert r.code in (0, 1), r.err
    doc = json.loads(r.out)
    return r.code, sorted(d["object"] for d in doc["damage"]), doc["warnings"]


def _index_files(repo: Path) -> list[str]:
    return sorted(os.listdir(repo / "index"))


def _refs_list(repo: Path) -> list[str]:
    listed = listed_index_files((repo / "refs").read_bytes())
    assert listed is not None
    return list(listed)


def _open(repo: Path) -> Repository:
    return Repository.open(LocalBackend(str(repo)), Secret(PASSPHRASE.encode()))


@pytest.fixture
def three(cli: Cli, tmp_path: Path) -> Path:
    """main with three versions, each adding a file; returns the source folder."""
    src = tmp_path / "src"
    assert cli("init").code == 0
    for v in range(3):
        make_tree(src, {f"f{v}.bin": os.urandom(200_000)})
        assert cli("commit", str(src), "-m", f"v{v}").code == 0
    return src


def test_lists_follow_commits_and_name_what_exists(cli: Cli, three: Path) -> None:
    repo = cli.repo
    assert _refs_list(repo) == _index_files(repo) and len(_index_files(repo)) == 3
    indexed = _open(repo).load_index()
    named: set[str] = set()
    for name in _index_files(repo):
        packs = listed_packs((repo / "index" / name).read_bytes())
        assert packs is not None and packs  # every commit's index file lists the packs it wrote
        named.update(packs)
    assert named == set(indexed.packs)  # the clear lists name exactly the packs the sealed index holds
    assert all((repo / pack_path(p)).is_file() for p in named)
    assert _structure(cli) == (0, [], [])


def test_lost_files_are_found_without_the_key_and_stay_reported_until_repair(cli: Cli, three: Path) -> None:
    repo = cli.repo
    lost_index = _index_files(repo)[0]
    lost_pack = sorted(listed_packs((repo / "index" / _index_files(repo)[1]).read_bytes()) or ())[0]
    (repo / "index" / lost_index).unlink()
    (repo / pack_path(lost_pack)).unlink()
    expected = sorted([f"index/{lost_index}", pack_path(lost_pack)])
    assert _structure(cli)[:2] == (1, expected)
    keyed = json.loads(cli("--json", "verify").out)
    assert f"index/{lost_index}" in {d["object"] for d in keyed["damage"]}
    # A later commit does not drop the lost index file from the refs: the damage stays visible.
    make_tree(three, {"later.bin": os.urandom(50_000)})
    cli("commit", str(three), "-m", "later")
    assert lost_index in _refs_list(repo)
    assert _structure(cli)[:2] == (1, expected)
    # `repair index` rebuilds the index from the packs there are and lists exactly that.
    assert cli("repair", "index").code == 0
    assert _refs_list(repo) == _index_files(repo) and len(_index_files(repo)) == 1
    assert _structure(cli) == (0, [], [])


def test_an_interrupted_commits_index_file_is_a_warning_then_joins_the_list(cli: Cli, three: Path) -> None:
    # What a commit killed between writing its index file and its refs leaves: an index file no refs list.
    repo = cli.repo
    r = _open(repo)
    builder = PackBuilder()
    data = os.urandom(1000)
    oid = r.hasher(data)
    builder.add(ObjectKind.CHUNK, oid, r.codec.encode(data, ObjectKind.CHUNK, oid), len(data))
    leftover = r.write_index([r.write_pack(builder)])
    assert leftover is not None and leftover not in _refs_list(repo)
    code, damaged, warnings = _structure(cli)
    assert (code, damaged) == (0, []) and any(leftover in w for w in warnings)
    assert cli("branch", "create", "b").code == 0  # any refs update lists it
    assert leftover in _refs_list(repo) and _structure(cli) == (0, [], [])


def test_gc_lists_its_one_index_file_and_an_older_one_put_back_is_caught(cli: Cli, three: Path) -> None:
    repo = cli.repo
    before = {n: (repo / "index" / n).read_bytes() for n in _index_files(repo)}
    assert cli("reset", "main", "main~2").code == 0
    gc = json.loads(cli("--json", "gc", "--keep-unreachable", "0").out)
    assert gc["packs_deleted"] + gc["packs_repacked"] > 0
    assert _refs_list(repo) == _index_files(repo) and len(_index_files(repo)) == 1
    assert _structure(cli) == (0, [], [])
    assert json.loads(cli("--json", "verify", "--full").out)["ok"]
    # An index file from before gc, put back, lists packs gc deleted: damage a keyless check names.
    gone_by_file = {
        n: {pack_path(p) for p in listed_packs(d) or () if not (repo / pack_path(p)).exists()}
        for n, d in before.items()
    }
    name = next(n for n, gone in sorted(gone_by_file.items()) if gone)  # v1's or v2's, whose packs gc deleted
    gone, data = gone_by_file[name], before[name]
    (repo / "index" / name).write_bytes(data)
    code, damaged, warnings = _structure(cli)
    assert (code, set(damaged)) == (1, gone) and any(name in w for w in warnings)


def _bare_frames(repo: Path) -> None:
    """Rewrite refs and every index file as strongroom 0.1.0 wrote them: the sealed frame alone, with the
    repository id as its context (the sealed payloads were the same)."""
    r = _open(repo)
    for name in _index_files(repo):
        listed = listing.unwrap((repo / "index" / name).read_bytes(), INDEX_MAGIC, "index")
        assert listed is not None
        plain = r.sealer.open(listed.frame, ObjectKind.INDEX, r.context + listed.binding)
        bare = r.sealer.seal(plain, ObjectKind.INDEX, r.context)
        (repo / "index" / name).unlink()
        (repo / "index" / content_name(bare)).write_bytes(bare)
    listed = listing.unwrap((repo / "refs").read_bytes(), REFS_MAGIC, "refs")
    assert listed is not None
    plain = r.sealer.open(listed.frame, ObjectKind.REFS, r.context + listed.binding)
    (repo / "refs").write_bytes(r.sealer.seal(plain, ObjectKind.REFS, r.context))


def test_a_repository_written_before_the_lists_opens_verifies_and_upgrades(cli: Cli, three: Path) -> None:
    repo = cli.repo
    log_before = cli("--json", "log").out
    _bare_frames(repo)
    assert listed_index_files((repo / "refs").read_bytes()) is None
    assert all(listed_packs((repo / "index" / n).read_bytes()) is None for n in _index_files(repo))
    assert cli("--json", "log").out == log_before  # same refs, and no rollback or swap is reported
    assert json.loads(cli("--json", "verify", "--full").out)["ok"]
    code, damaged, warnings = _structure(cli)
    assert (code, damaged) == (0, []) and any("earlier build" in w for w in warnings)
    assert cli("cat", "main", "f2.bin").out_bytes == (three / "f2.bin").read_bytes()
    make_tree(three, {"new.bin": os.urandom(30_000)})
    assert cli("commit", str(three), "-m", "after upgrade").code == 0
    assert _refs_list(repo) == _index_files(repo)  # the old bare index files are listed too
    code, damaged, warnings = _structure(cli)
    # ... but list no packs in the clear: the keyless check says so until `repair index` rewrites them.
    assert (code, damaged) == (0, []) and sum("earlier build" in w for w in warnings) == 3, warnings
    assert json.loads(cli("--json", "verify", "--full").out)["ok"]
    assert cli("repair", "index").code == 0
    assert _structure(cli) == (0, [], [])


def test_a_keyless_writer_cannot_change_a_list(cli: Cli, three: Path) -> None:
    # Drop a name from the refs' list and fix the checksum: the keyless check is fooled (only a key holder
    # is protected against a writer), but the frame no longer opens, so every keyed command refuses.
    repo = cli.repo
    data = (repo / "refs").read_bytes()
    listed = listing.unwrap(data, REFS_MAGIC, "refs")
    assert listed is not None
    forged = listing.wrap(REFS_MAGIC, listed.names[1:], lambda binding: listed.frame)
    (repo / "refs").write_bytes(forged)
    r = cli("log")
    assert r.code == 1 and "refs are damaged" in r.err


@pytest.mark.parametrize("junk", ["abcd", "00", "notes.txt", "a" * 63, "f" * 66])
def test_junk_in_the_index_folder_is_reported_and_never_listed(cli: Cli, three: Path, junk: str) -> None:
    # A keyless writer drops a file into index/: damage to report, not a name for the next refs to list
    # (a short hex name would shift the list and leave refs no build can read).
    repo = cli.repo
    (repo / "index" / junk).write_bytes(b"junk")
    assert _structure(cli)[:2] == (1, [f"index/{junk}"])
    assert cli("branch", "create", "after-junk").code == 0
    assert junk not in _refs_list(repo) and cli("log").code == 0
    (repo / "index" / junk).unlink()
    assert _structure(cli) == (0, [], [])
    assert json.loads(cli("--json", "verify", "--full").out)["ok"]


def test_wrap_refuses_a_name_that_is_not_a_content_name() -> None:
    with pytest.raises(IntegrityError):
        listing.wrap(REFS_MAGIC, ["ab" * 32, "abcd"], lambda binding: b"\x01")


class _Interleaved(LocalBackend):
    """Runs ``hook`` once, just before the first listing of ``folder``: another process's work landing in
    the middle of a keyless check, which takes no lock."""

    def __init__(self, root: str, folder: str, hook: Callable[[], object]) -> None:
        super().__init__(root)
        self.folder, self.hook = folder, hook
        self.ran = False

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        if prefix == self.folder and not self.ran:
            self.ran = True
            self.hook()
        return super().list(prefix)


def test_repair_index_waits_for_readers_like_gc(cli: Cli, three: Path) -> None:
    # Replacing the index deletes files a reader (a verify, a backup push's snapshot) may have listed.
    repo = cli.repo
    before = _index_files(repo)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (repo / "locks").mkdir(exist_ok=True)
        reader = repo / "locks" / "read-0123456789abcdef"
        record = {"pid": sleeper.pid, "host": socket.gethostname(), "time_ns": time.time_ns(), "command": "t"}
        reader.write_text(json.dumps(record))
        held = cli("repair", "index")
        assert held.code == 1 and str(sleeper.pid) in held.err
        assert _index_files(repo) == before
        reader.unlink()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cli("repair", "index").code == 0 and len(_index_files(repo)) == 1


@pytest.mark.parametrize("folder", ["index", "data"])
def test_an_index_replaced_during_the_keyless_check_is_not_damage(cli: Cli, three: Path, folder: str) -> None:
    # gc, run after the check read the refs (folder=index) or after it read the index files (folder=data),
    # deletes index files the check expects and packs they listed: the check looks again, and is clean.
    repo = cli.repo
    assert cli("reset", "main", "main~2").code == 0
    before = _index_files(repo)

    def gc() -> None:
        assert cli("gc", "--keep-unreachable", "0").code == 0

    backend = _Interleaved(str(repo), folder, gc)
    report = check.verify_structure(backend)
    assert backend.ran and not set(before) & set(_index_files(repo))  # the race happened: every file replaced
    assert report.ok, report.damage


class _Watched(LocalBackend):
    """Runs ``after(op, name)`` after every put and delete outside locks/: every state a crash can leave."""

    def __init__(self, root: str, after: Callable[[str, str], None]) -> None:
        super().__init__(root)
        self.after = after

    def put(self, name: str, data: bytes | memoryview) -> None:
        super().put(name, data)
        if not name.startswith("locks/"):
            self.after("put", name)

    def delete(self, name: str) -> None:
        super().delete(name)
        if not name.startswith("locks/"):
            self.after("delete", name)


def test_every_state_a_gc_passes_through_verifies_with_and_without_the_key(cli: Cli, three: Path) -> None:
    # gc replaces the index (new file, refs listing it alone, old files deleted, then the packs): after each
    # storage operation, as a crash would leave it, both checks must be clean.
    repo_dir = cli.repo
    assert cli("reset", "main", "main~2").code == 0
    states: list[str] = []

    def both_checks(op: str, name: str) -> None:
        keyless = check.verify_structure(LocalBackend(str(repo_dir)))
        keyed = check.verify(_open(repo_dir))
        assert keyless.ok and keyed.ok, (op, name, keyless.damage, keyed.damage)
        states.append(f"{op} {name}")

    repo = Repository.open(_Watched(str(repo_dir), both_checks), Secret(PASSPHRASE.encode()))
    now = time.time_ns()
    plan = store_gc.plan(repo, 0, now)
    assert plan.packs_dead
    store_gc.sweep(repo, plan, 0, now)
    kinds = [s.split()[0] + " " + s.split()[1].split("/")[0] for s in states]
    assert {"put index", "put refs", "delete index", "delete data"} <= set(kinds), states
    assert kinds.index("put refs") < kinds.index("delete index") < kinds.index("delete data")
    assert _structure(cli) == (0, [], [])


# ------------------------------------------------------------------------------ the envelope itself


NAMES = st.lists(st.binary(min_size=32, max_size=32).map(bytes.hex), max_size=6)


@given(names=NAMES, frame=st.binary(min_size=35, max_size=200).map(lambda b: b"\x01" + b[1:]))
def test_wrap_unwrap_round_trip(names: list[str], frame: bytes) -> None:
    seen: list[bytes] = []
    data = listing.wrap(REFS_MAGIC, names, lambda binding: seen.append(binding) or frame)
    got = listing.unwrap(data, REFS_MAGIC, "refs")
    assert got is not None and got.names == tuple(names) and got.frame == frame and got.binding == seen[0]


@given(names=NAMES, cut=st.integers(min_value=1, max_value=400), bit=st.integers(min_value=0, max_value=10_000))
def test_every_cut_and_bit_flip_is_caught_without_the_key(names: list[str], cut: int, bit: int) -> None:
    data = listing.wrap(INDEX_MAGIC, names, lambda binding: b"\x01" + bytes(60))
    cut_short = data[: max(0, len(data) - cut)]
    flipped = bytearray(data)
    flipped[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    for damaged in (cut_short, bytes(flipped)):
        with pytest.raises(IntegrityError):
            listing.unwrap(damaged, INDEX_MAGIC, "index")
