"""Concurrent writers and locks: two commits racing on one branch (one wins, the other exits 1 with
`branch moved; retry` and loses nothing), a held publish lock (exit 1 naming PID and host, `--wait`), stale
locks cleared automatically or by `strongroom unlock`, and git's racy-clean rule for the file cache."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom import Strongroom
from strongroom.store.filecache import CachedFile, FileCache
from strongroom.store.process import boot_id
from tests.conftest import PASSPHRASE, Cli, make_tree


def write_lock(
    repo: Path, name: str, pid: int, host: str, age_s: int = 5, boot: str | None = None, pid_ns: str | None = None
) -> Path:
    path = repo / "locks" / name
    path.parent.mkdir(exist_ok=True)
    record = {"pid": pid, "host": host, "time_ns": time.time_ns() - age_s * 10**9, "command": "commit"}
    if boot is not None:
        record["boot"] = boot
    if pid_ns is not None:
        record["pid_ns"] = pid_ns
    path.write_text(json.dumps(record))
    return path


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.fixture
def sleeper() -> Iterator[int]:
    """A live process of ours whose PID can stand for another writer's."""
    p = subprocess.Popen(["sleep", "120"])
    yield p.pid
    p.kill()
    p.wait()


def popen_commit(cli: Cli, src: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(cli.env, STRONGROOM_PASSPHRASE=PASSPHRASE)
    return subprocess.Popen(
        [sys.executable, "-m", "strongroom", "--json", "--repo", str(cli.repo), "commit", str(src), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def test_two_commits_racing_on_one_branch(cli: Cli, tmp_path: Path, sleeper: int) -> None:
    assert cli("init").code == 0
    base = make_tree(tmp_path / "base", {"base.txt": b"base\n"})
    assert cli("commit", str(base)).code == 0
    rng = random.Random(3)
    srcs = [make_tree(tmp_path / f"w{i}", {"base.txt": b"base\n", f"mine{i}.bin": rng.randbytes(2 << 20)})
            for i in range(2)]
    def packs() -> int:
        return sum(1 for p in (cli.repo / "data").rglob("*") if p.is_file() and ".tmp" not in p.name)

    packs_before = packs()

    # Both read the branch head (then take their reader's lock) and write their packs while a third party
    # holds the publish lock, under which they would write their index; then the lock goes and both try
    # to move the branch.
    lock = write_lock(cli.repo, "publish", sleeper, socket.gethostname())
    procs = [popen_commit(cli, s, "--wait", "60") for s in srcs]
    deadline = time.monotonic() + 60
    while (
        len(list((cli.repo / "locks").glob("read-*"))) < 2
        or packs() < packs_before + 4  # a chunk pack and a tree pack each
    ):
        assert time.monotonic() < deadline, "the commits never reached the publish step"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.02)
    time.sleep(0.2)
    lock.unlink()
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]

    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    (winner,) = [json.loads(out) for code, out, _ in results if code == 0]
    (loser_err,) = [err.decode() for code, _, err in results if code == 1]
    (loser_src,) = [s for s, (code, _, _) in zip(srcs, results, strict=True) if code == 1]
    assert "branch moved; retry" in loser_err and "Traceback" not in loser_err
    assert len(loser_err.strip().splitlines()) == 1

    # Nothing is lost: the retry succeeds on top of the winner and reuses the packs it already wrote.
    r = cli("--json", "commit", str(loser_src))
    assert r.code == 0, r.err
    retry = json.loads(r.out)
    assert retry["parent"] == winner["id"]
    assert retry["bytes_stored"] < 64 << 10, "the retry stored its data again"
    log = json.loads(cli("--json", "log").out)
    assert [e["id"] for e in log][:2] == [retry["id"], winner["id"]]
    assert cli("verify", "--full").code == 0
    assert not (cli.repo / "locks" / "publish").exists()


def test_a_held_lock_names_its_holder_and_wait_waits(cli: Cli, tmp_path: Path, sleeper: int) -> None:
    assert cli("init").code == 0
    src = make_tree(tmp_path / "src", {"a.txt": b"a\n"})
    host = socket.gethostname()
    lock = write_lock(cli.repo, "publish", sleeper, host, age_s=42)
    r = cli("commit", str(src))
    assert r.code == 1
    (line,) = r.err.strip().splitlines()
    assert f"PID {sleeper}" in line and host in line
    assert re.search(r"\b4\ds ago", line), line  # its age (42 s when written)
    assert cli("--json", "log").out.strip() == "[]"

    threading.Timer(1.0, lock.unlink).start()
    t0 = time.monotonic()
    r = cli("commit", str(src), "--wait", "30")
    assert r.code == 0, r.err
    assert time.monotonic() - t0 >= 1.0
    assert len(json.loads(cli("--json", "log").out)) == 1


def test_a_lock_of_a_dead_process_on_this_host_is_cleared(cli: Cli, tmp_path: Path) -> None:
    assert cli("init").code == 0
    src = make_tree(tmp_path / "src", {"a.txt": b"a\n"})
    lock = write_lock(cli.repo, "publish", dead_pid(), socket.gethostname())
    r = cli("commit", str(src))
    assert r.code == 0, r.err
    assert not lock.exists()


def test_a_lock_taken_before_this_host_last_booted_is_cleared(cli: Cli, tmp_path: Path, sleeper: int) -> None:
    """A power loss can bring back a lock whose removal was not yet on disk; after the reboot its PID may
    name an unrelated live process (here: a sleeper of ours). The boot id in the record tells them apart."""
    assert cli("init").code == 0
    src = make_tree(tmp_path / "src", {"a.txt": b"a\n"})
    host = socket.gethostname()
    write_lock(cli.repo, "publish", sleeper, host, boot="00000000-0000-0000-0000-000000000000")
    r = cli("commit", str(src))
    assert r.code == 0, r.err
    write_lock(cli.repo, "publish", sleeper, host, boot=boot_id())  # same boot, live PID: held
    r = cli("commit", str(src), "-m", "again")
    assert r.code == 1 and f"PID {sleeper}" in r.err, r.err


def test_a_lock_taken_in_another_pid_namespace_is_never_judged_stale(cli: Cli, tmp_path: Path) -> None:
    """Two containers on one host share its name and boot id, but a PID of one means nothing in the other:
    the holder may be alive, so its lock is left alone (only `unlock --force` clears it)."""
    assert cli("init").code == 0
    src = make_tree(tmp_path / "src", {"a.txt": b"a\n"})
    host, gone = socket.gethostname(), dead_pid()
    write_lock(cli.repo, "publish", gone, host, boot=boot_id(), pid_ns="pid:[4026539999]")
    r = cli("commit", str(src))
    assert r.code == 1 and f"PID {gone}" in r.err, r.err
    assert cli("unlock").code == 0 and (cli.repo / "locks" / "publish").exists()
    write_lock(cli.repo, "publish", gone, host, boot=boot_id(), pid_ns=os.readlink("/proc/self/ns/pid"))
    r = cli("commit", str(src))  # the same dead PID in our own namespace: stale, cleared
    assert r.code == 0, r.err


def test_unlock_removes_stale_locks_only(cli: Cli, tmp_path: Path, sleeper: int) -> None:
    assert cli("init").code == 0
    src = make_tree(tmp_path / "src", {"a.txt": b"a\n"})
    host = socket.gethostname()
    stale = [write_lock(cli.repo, "publish", dead_pid(), host), write_lock(cli.repo, "read-00aa", dead_pid(), host)]
    live = write_lock(cli.repo, "read-00bb", sleeper, host)
    remote = write_lock(cli.repo, "read-00cc", 4242, "elsewhere.example")  # cannot tell: not stale
    r = cli("unlock")
    assert r.code == 0, r.err
    assert not any(p.exists() for p in stale)
    assert live.exists() and remote.exists()
    assert {line.split(":")[0] for line in r.out.splitlines()} == {"removed locks/publish", "removed locks/read-00aa"}

    remote.unlink()
    write_lock(cli.repo, "publish", 4242, "elsewhere.example")
    r = cli("commit", str(src))
    assert r.code == 1 and "elsewhere.example" in r.err and "PID 4242" in r.err
    r = cli("unlock", "--force")
    assert r.code == 0 and not any((cli.repo / "locks").iterdir())
    assert cli("commit", str(src)).code == 0


def test_file_changed_in_the_same_second_with_the_same_size_is_reread(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"weights.bin": b"A" * 4096, "other.txt": b"other\n"})
    f = src / "weights.bin"
    assert cli("init").code == 0
    assert cli("commit", str(src)).code == 0
    st = f.stat()
    with open(f, "r+b") as fh:  # same inode, same size, mtime put back: only the content changed
        fh.write(b"B" * 4096)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = cli("--json", "commit", str(src))
    assert r.code == 0, r.err
    assert cli("cat", "main", "weights.bin").out_bytes == b"B" * 4096


def test_racy_clean_rule_distrusts_a_matching_cache_entry_younger_than_a_second(repo_path: Path,
                                                                               tmp_path: Path) -> None:
    """On a filesystem with coarse timestamps a change can leave size, inode, mtime and ctime as they were.
    Emulate that by writing the new stat into the file cache: within a second of the change the file is
    read anyway; later, a matching entry is trusted (which shows the emulation does reach the cache)."""
    sr = Strongroom.init(str(repo_path), PASSPHRASE)
    src = make_tree(tmp_path / "src", {"weights.bin": b"A" * 4096})
    f = src / "weights.bin"
    sr.commit(str(src), workers=1)
    session = sr._session
    repo = session.open()
    cache = FileCache(session.file_cache_path(repo, str(src)), repo.sealer, repo.context)

    def change_without_a_trace(content: bytes) -> None:
        cache.load()
        old = cache.entries["weights.bin"]
        with open(f, "r+b") as fh:
            fh.write(content)
        st = f.stat()
        cache.save({"weights.bin": CachedFile(st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, old.chunks)})

    change_without_a_trace(b"B" * 4096)
    res = sr.commit(str(src), workers=1)
    assert res.files_read == 1
    assert sr.read(res.id, "weights.bin") == b"B" * 4096

    change_without_a_trace(b"C" * 4096)
    time.sleep(1.1)
    res = sr.commit(str(src), workers=1)
    # A second later the same matching entry is trusted: the file is not read (so this version holds the
    # cached content) — the emulation reaches the cache, and only the racy-clean rule made the first read.
    assert res.files_read == 0
    assert sr.read(res.id, "weights.bin") == b"B" * 4096


def _add_branch_under_the_lock(repo_path: str, i: int, head: bytes, start: Any, results: Any) -> None:
    from strongroom.backends.local import LocalBackend
    from strongroom.crypto.secret import Secret
    from strongroom.store.repository import Repository

    repo = Repository.open(LocalBackend(repo_path), Secret(PASSPHRASE.encode()))
    start.wait()

    def add(refs: Any) -> None:
        refs.branches[f"b{i}"] = head

    try:
        repo.edit_refs(add, "race", wait=30)
        results.put((i, "ok"))
    except Exception as e:  # reported, and the test fails on it
        results.put((i, repr(e)))


def test_waiters_clearing_one_stale_lock_never_publish_at_once(tmp_path: Path) -> None:
    """Many writers find the same dead holder's publish lock. Each clears it only if it is still that dead
    record, one at a time, so no two of them hold the lock together and every ref change survives."""
    import multiprocessing

    from strongroom.backends.local import LocalBackend
    from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
    from strongroom.crypto.secret import Secret
    from strongroom.store.repository import Repository

    path = str(tmp_path / "repo")
    repo = Repository.create(LocalBackend(path), Secret(PASSPHRASE.encode()), UNSAFE_TEST_ONLY)
    head = b"\1" * 32
    repo.update_refs("main", None, head, "init")
    ctx = multiprocessing.get_context("fork")
    n = 24
    for _ in range(6):
        write_lock(Path(path), "publish", dead_pid(), socket.gethostname())
        start, results = ctx.Barrier(n), ctx.Queue()
        procs = [
            ctx.Process(target=_add_branch_under_the_lock, args=(path, i, head, start, results)) for i in range(n)
        ]
        for p in procs:
            p.start()
        outcome = dict(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        assert all(v == "ok" for v in outcome.values()), outcome
        refs = Repository.open(LocalBackend(path), Secret(PASSPHRASE.encode())).read_refs()
        assert {f"b{i}" for i in range(n)} <= set(refs.branches)  # no change lost
        repo.edit_refs(lambda r: [r.branches.pop(f"b{i}") for i in range(n)], "reset")  # type: ignore[func-returns-value]
    assert not any(p.name.startswith("publish") for p in (Path(path) / "locks").iterdir())


@pytest.mark.parametrize("clearing", ["", '{"pid": 1, "host": "HOST", "time_ns": 0, "command": "x"}'])
def test_a_clearing_lock_left_behind_never_blocks_writers(cli: Cli, tmp_path: Path, clearing: str) -> None:
    """A clearer that died (an empty record, or a PID now used by a live process) must not leave every writer
    spinning: a clearing older than a minute expires."""
    assert cli("init").code == 0
    src = make_tree(tmp_path / "src", {"a.txt": b"a\n"})
    write_lock(cli.repo, "publish", dead_pid(), socket.gethostname())
    (cli.repo / "locks" / "publish.clearing").write_text(clearing.replace("HOST", socket.gethostname()))
    r = cli("commit", str(src), timeout=60)
    assert r.code == 0, r.err
    assert not list((cli.repo / "locks").iterdir())


def test_verify_with_an_index_older_than_the_refs_reports_no_damage(tmp_path: Path) -> None:
    """A library session that verified once keeps its index; another process's commits since then are
    listed by the refs the next verify reads, and their objects must be found, not reported missing."""
    repo = str(tmp_path / "repo")
    src = make_tree(tmp_path / "src", {"a": os.urandom(50_000)})
    watcher = Strongroom.init(repo, PASSPHRASE)
    watcher.commit(str(src), message="v1", workers=1)
    assert watcher.verify().ok
    other = Strongroom.open(repo, PASSPHRASE)
    for i in range(3):
        (src / f"b{i}").write_bytes(os.urandom(50_000))
        other.commit(str(src), message=f"v{i + 2}", workers=1)
    result = watcher.verify()
    assert result.ok and result.versions == 4, result.damage
