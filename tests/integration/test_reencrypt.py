"""Data-key rotation and re-encryption: rotate is instant and rewrites nothing; reencrypt rewrites every pack
under the current key, leaves a repository that verifies after every single storage operation, resumes
after SIGKILL, and destroys the retired key only when nothing needs it. Two processes rotating at once keep
both keys; a process that opened before a key was retired publishes nothing under it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from strongroom import Strongroom
from strongroom.backends.local import LocalBackend
from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import key_id_of
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
from strongroom.crypto.secret import Secret
from strongroom.errors import KeyUnavailable
from strongroom.store import check
from strongroom.store import reencrypt as store_reencrypt
from strongroom.store.index import MAGIC as INDEX_MAGIC
from strongroom.store.listing import frame_key_id
from strongroom.store.pack import PackBuilder
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE, Cli, injected_kill, make_tree, tree_snapshot
from tests.faults.test_crash import kill_group, trial_env

SECRET = Secret(PASSPHRASE.encode())
SMALL_PACKS = 64 << 10


class Watched(LocalBackend):
    """A local backend that runs a check after every put and delete."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.after = lambda op, name: None
        self.ops = 0

    def put(self, name: str, data: bytes | memoryview) -> None:
        super().put(name, data)
        self.ops += 1
        self.after("put", name)

    def delete(self, name: str) -> None:
        super().delete(name)
        self.ops += 1
        self.after("delete", name)


def _repo_with_history(root: Path, src: Path, versions: int = 3) -> Path:
    backend = LocalBackend(str(root))
    backend.ensure_root()
    Repository.create(backend, SECRET, UNSAFE_TEST_ONLY, pack_size=SMALL_PACKS)
    lib = Strongroom.open(str(root), PASSPHRASE)
    rng = random.Random(7)
    for v in range(versions):
        make_tree(src, {f"part{v}/f{i}.bin": rng.randbytes(100_000) for i in range(6)})
        lib.commit(str(src), message=f"v{v}")
    return root


def _full_verify(root: Path) -> check.VerifyReport:
    return check.verify(Repository.open(LocalBackend(str(root)), SECRET), full=True)


def test_verify_passes_after_every_storage_operation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _repo_with_history(tmp_path / "repo", tmp_path / "src")
    repo = Repository.open(LocalBackend(str(root)), SECRET)
    repo.rotate_key()
    monkeypatch.setattr(store_reencrypt, "BATCH_PACKS", 2)  # several batches, several index rewrites
    watched = Watched(str(root))
    failures: list[str] = []

    def check_now(op: str, name: str) -> None:
        report = _full_verify(root)
        if not report.ok:
            failures.append(f"after {op} {name}: {[d.reason for d in report.damage]}")

    watched.after = check_now
    repo = Repository.open(watched, SECRET)
    before = len(repo.index.packs)
    report = store_reencrypt.reencrypt(repo, retire=1)
    assert failures == []
    assert report.packs_rewritten == before and report.index_rewrites >= 3 and watched.ops > 10
    # Replacing the index publishes refs that list the new index file: refs and counters are resealed too.
    assert store_reencrypt.still_needed(repo, 1) == []
    store_reencrypt.destroy_key(repo, 1)
    assert sorted(Repository.open(LocalBackend(str(root)), SECRET).keyring.data_keys) == [2]
    assert _full_verify(root).ok


def test_destroy_is_refused_while_anything_needs_the_key(tmp_path: Path) -> None:
    root = _repo_with_history(tmp_path / "repo", tmp_path / "src", versions=1)
    repo = Repository.open(LocalBackend(str(root)), SECRET)
    repo.rotate_key()
    needed = store_reencrypt.still_needed(repo, 1)
    assert "packs" in needed and "index files" in needed
    with pytest.raises(Exception, match="still seals packs"):
        store_reencrypt.destroy_key(repo, 1)
    assert 1 in Repository.open(LocalBackend(str(root)), SECRET).keyring.data_keys


def test_two_processes_rotating_keep_both_keys(tmp_path: Path) -> None:
    root = _repo_with_history(tmp_path / "repo", tmp_path / "src", versions=1)
    a = Repository.open(LocalBackend(str(root)), SECRET)
    b = Repository.open(LocalBackend(str(root)), SECRET)
    assert b.rotate_key() == 2
    lib = Strongroom.open(str(root), PASSPHRASE)  # seals a new version under key 2
    make_tree(tmp_path / "src", {"new.bin": os.urandom(20_000)})
    head = lib.commit(str(tmp_path / "src")).id
    assert a.rotate_key() == 3  # not a second "key 2" that would orphan b's data
    fresh = Repository.open(LocalBackend(str(root)), SECRET)
    assert sorted(fresh.keyring.data_keys) == [1, 2, 3]
    # a, opened before key 2 existed, reads what was sealed under it.
    assert a.load_commit(bytes.fromhex(head)).message == ""
    assert _full_verify(root).ok


def test_a_process_that_opened_before_retirement_publishes_nothing(tmp_path: Path) -> None:
    root = _repo_with_history(tmp_path / "repo", tmp_path / "src", versions=1)
    stale = Repository.open(LocalBackend(str(root)), SECRET)  # current key 1, in memory
    admin = Repository.open(LocalBackend(str(root)), SECRET)
    admin.rotate_key()
    store_reencrypt.reencrypt(admin, retire=1)
    admin.edit_refs(lambda refs: None, "test")
    store_reencrypt.destroy_key(admin, 1)
    with pytest.raises(KeyUnavailable, match="retired while this command ran"):
        stale.edit_refs(lambda refs: None, "stale")
    # The refusal still stores the frames it counted: under the current key, where they stay readable.
    assert key_id_of(LocalBackend(str(root)).get("counters")) == 2
    assert _full_verify(root).ok


def test_a_long_lived_handle_follows_the_current_key_after_a_retirement(tmp_path: Path) -> None:
    """A training job's library handle opened before `key reencrypt --retire 1` keeps working, and what it
    stores afterwards (its audit events, the frame counts, a new version) is sealed under the current key,
    never under the destroyed one: nothing it writes becomes unreadable."""
    root = _repo_with_history(tmp_path / "repo", tmp_path / "src", versions=1)
    held = Strongroom.open(str(root), PASSPHRASE)
    admin = Repository.open(LocalBackend(str(root)), SECRET)
    admin.rotate_key()
    store_reencrypt.reencrypt(admin, retire=1)
    admin.edit_refs(lambda refs: None, "test")
    store_reencrypt.destroy_key(admin, 1)

    assert [c.message for c in held.log()] == ["v0"]  # seals its audit events as it ends
    audit = list(LocalBackend(str(root)).list("audit"))
    assert audit and all(key_id_of(LocalBackend(str(root)).get(name)) != 1 for name, _ in audit)
    make_tree(tmp_path / "src", {"later.bin": os.urandom(200_000)})
    held.commit(str(tmp_path / "src"), message="after the retirement")
    backend = LocalBackend(str(root))
    bare = [name for name, _ in [*backend.list("audit"), *backend.list("data"), ("counters", 0)]]
    under_retired = [name for name in bare if key_id_of(backend.get(name)) == 1] + [
        name for name, _ in backend.list("index") if frame_key_id(backend, name, INDEX_MAGIC) == 1
    ]
    assert under_retired == []
    fresh = Strongroom.open(str(root), PASSPHRASE)
    assert [c.message for c in fresh.log()] == ["after the retirement", "v0"]
    assert fresh.verify("full").ok
    assert Repository.open(backend, SECRET).message_count().get(2, 0) > 0  # the counts are still readable


def _data_files(root: Path) -> set[str]:
    return {name for name, _ in LocalBackend(str(root)).list("data")}


def test_sigkill_during_reencrypt_then_resume(tmp_path: Path) -> None:
    src = tmp_path / "src"
    root = _repo_with_history(tmp_path / "repo", src, versions=8)
    expected = tree_snapshot(src)
    env = trial_env(tmp_path / "client")
    base = [sys.executable, "-m", "strongroom", "--repo", str(root)]
    assert subprocess.run([*base, "key", "rotate"], env=env, capture_output=True).returncode == 0
    cmd = [*base, "key", "reencrypt", "--retire", "1"]
    rng = random.Random(11)
    killed = 0
    for _ in range(4):
        before = _data_files(root)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        # Kill once the rewrite is under way: a new pack has appeared (or the run ended).
        while proc.poll() is None and _data_files(root) == before:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is not None:
            proc.communicate()
            break
        kill_group(proc)
        killed += 1
        assert _full_verify(root).ok  # the locks of a dead process on this host are stale and cleared
    assert killed >= 2
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr  # also when the run before had destroyed key 1: "already retired"
    repo = Repository.open(LocalBackend(str(root)), SECRET)
    assert sorted(repo.keyring.data_keys) == [2]
    backend = LocalBackend(str(root))
    assert all(frame_key_id(backend, n, INDEX_MAGIC) == 2 for n, _ in backend.list("index"))
    out = tmp_path / "out"
    Strongroom.open(str(root), PASSPHRASE).checkout("main", str(out))
    assert tree_snapshot(out) == expected
    assert _full_verify(root).ok


def test_reencrypt_killed_once_the_key_is_destroyed_then_run_again(cli: Cli, tmp_path: Path) -> None:
    """SIGKILL just after `key reencrypt --retire 1` destroyed key 1 (its last step, with the locks still held
    and no report yet): the same command again says key 1 is already retired and exits 0, changing nothing;
    an id that was never a data key is still bad input."""
    src = make_tree(tmp_path / "src", {"a.bin": os.urandom(100_000)})
    assert cli("init").code == 0
    assert cli("commit", str(src), "-m", "v1").code == 0
    assert cli("key", "rotate").code == 0
    hook = injected_kill(tmp_path / "hook", "strongroom.store.reencrypt:destroy_key", when="after")
    killed = cli("key", "reencrypt", "--retire", "1", extra_env=hook)
    assert killed.code == -signal.SIGKILL, killed.err
    assert sorted(Repository.open(LocalBackend(str(cli.repo)), SECRET).keyring.data_keys) == [2]
    packs = _data_files(cli.repo)
    res = cli("key", "reencrypt", "--retire", "1")
    assert res.code == 0, res.err
    assert res.out.strip() == "data key 1 is already retired (destroyed); nothing left to do"
    res = cli("--json", "key", "reencrypt", "--retire", "1")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert (out["already_retired"], out["retired_key"], out["packs_rewritten"]) == (True, 1, 0)
    assert _data_files(cli.repo) == packs
    for never in ("3", "0"):
        res = cli("key", "reencrypt", "--retire", never)
        assert res.code == 2 and f"no data key {never}" in res.err, res.err
    assert cli("verify", "--full").code == 0
    assert cli("checkout", "main", str(tmp_path / "out")).code == 0
    assert tree_snapshot(tmp_path / "out") == tree_snapshot(src)


def test_reencrypt_cli_refusals(cli: Cli, tmp_path: Path) -> None:
    assert cli("init").code == 0
    assert cli("commit", str(make_tree(tmp_path / "s", {"a": b"x" * 1000}))).code == 0
    res = cli("key", "reencrypt", "--retire", "1")
    assert res.code == 2 and "current key" in res.err and "key rotate" in res.err
    res = cli("key", "reencrypt", "--retire", "7")
    assert res.code == 2 and "no data key 7" in res.err
    assert cli("key", "rotate").code == 0
    res = cli("--json", "key", "reencrypt")  # rewrite, keep key 1
    assert res.code == 0, res.err
    assert cli("--json", "key", "list").out.count('"current"') == 2


def test_frames_gc_carried_into_a_new_pack_are_reencrypted_too(cli: Cli, tmp_path: Path) -> None:
    """gc copies live frames into a new pack as they are, under a header sealed with the current key: the
    pack header alone does not tell which keys its frames need."""
    rng = random.Random(3)
    kept = {f"k{i}.bin": rng.randbytes(30_000) for i in range(4)}
    both = make_tree(tmp_path / "both", {**kept, **{f"d{i}.bin": rng.randbytes(30_000) for i in range(4)}})
    keep = make_tree(tmp_path / "keep", kept)
    backend = LocalBackend(str(cli.repo))
    backend.ensure_root()
    Repository.create(backend, SECRET, UNSAFE_TEST_ONLY)
    lib = Strongroom.open(str(cli.repo), PASSPHRASE)
    lib.commit(str(both), message="both", branch="scratch")  # one pack holds the kept and the dropped files
    lib.commit(str(keep), message="keep")  # reuses the kept files' chunks from that pack
    assert cli("key", "rotate").code == 0
    assert cli("branch", "delete", "scratch").code == 0
    res = cli("--json", "gc", "--keep-unreachable", "0")
    assert res.code == 0 and json.loads(res.out)["packs_repacked"] >= 1, res.out  # live key-1 frames moved
    res = cli("key", "reencrypt", "--retire", "1")
    assert res.code == 0, res.err
    assert cli("verify", "--full").code == 0
    out = tmp_path / "out"
    assert cli("checkout", "main", str(out)).code == 0
    assert tree_snapshot(out) == tree_snapshot(keep)


def test_gc_removes_packs_left_under_a_key_destroyed_meanwhile(cli: Cli, tmp_path: Path) -> None:
    """A commit that was storing data when `key reencrypt --retire` destroyed its key is refused at publish;
    the packs it wrote are sealed under that key and could never be read: verify --full names them, gc
    removes them, and nothing else."""
    src = make_tree(tmp_path / "src", {"a.bin": os.urandom(100_000)})
    assert cli("init").code == 0
    assert cli("commit", str(src), "-m", "v1").code == 0
    stale = Repository.open(LocalBackend(str(cli.repo)), SECRET)  # a commit under way, sealing under key 1
    assert cli("key", "rotate").code == 0
    assert cli("key", "reencrypt", "--retire", "1").code == 0
    builder = PackBuilder()
    oid = os.urandom(32)
    builder.add(ObjectKind.CHUNK, oid, stale.codec.encode(os.urandom(5000), ObjectKind.CHUNK, oid), 5000)
    left = stale.write_pack(builder)
    assert cli("verify", "--full").code == 1
    packs_before = _data_files(cli.repo)
    res = cli("gc")
    assert res.code == 0, res.err
    assert packs_before - _data_files(cli.repo) == {f"data/{left[:2]}/{left}"}
    assert cli("verify", "--full").code == 0
    assert cli("checkout", "main", str(tmp_path / "out")).code == 0
    assert tree_snapshot(tmp_path / "out") == tree_snapshot(src)
