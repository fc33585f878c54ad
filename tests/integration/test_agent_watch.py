"""Watched folders (`strongroom agent watch`, docs/agent.md): the agent reads what changes ahead of the
commit, and the commit is the same version it would have been without it, whatever happened in between."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, make_tree, tree_snapshot
from tests.integration.conftest import Agent

RNG = __import__("random").Random(7)


def noise(n: int) -> bytes:
    return RNG.randbytes(n)


def _status(cli: Cli, agent: Agent) -> dict[str, object]:
    res = cli("--json", "agent", "status", extra_env=agent.env)
    assert res.code == 0, res.err
    return json.loads(res.out)  # type: ignore[no-any-return]


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _read_ahead(cli: Cli, agent: Agent) -> int:
    watches = _status(cli, agent)["watches"]
    assert isinstance(watches, list)
    return sum(int(w["files_read"]) for w in watches)


def _commit(cli: Cli, agent: Agent, folder: Path, *extra: str) -> dict[str, object]:
    res = cli("--json", "commit", str(folder), "-m", "m", *extra, extra_env=agent.env)
    assert res.code == 0, res.err
    return json.loads(res.out)  # type: ignore[no-any-return]


def _same_as_folder(cli: Cli, version: str, folder: Path, tmp_path: Path, ignore: tuple[str, ...] = ()) -> None:
    out = tmp_path / f"out-{version[:8]}"
    assert cli("checkout", version, str(out)).code == 0
    want = {k: v for k, v in tree_snapshot(folder).items() if not k.startswith(ignore or ("\0",))}
    assert tree_snapshot(out) == want


@pytest.fixture
def watched(cli: Cli, agent: Agent, tmp_path: Path) -> Path:
    data = make_tree(tmp_path / "data", {"a.bin": noise(300_000), "sub/b.csv": b"x,y\n" * 50_000, "c.txt": b"c"})
    assert cli("init").code == 0
    time.sleep(1.1)  # older than the racy-clean second when committed, so that their cache entries hold
    assert _commit(cli, agent, data)["files_read"] == 3
    res = cli("agent", "watch", str(data), extra_env=agent.env)
    assert res.code == 0, res.err
    assert res.out.startswith(f"watching folder {data} for repository ")
    return data


def test_what_changes_is_read_ahead_and_the_commit_is_the_same_version(
    cli: Cli, agent: Agent, watched: Path, tmp_path: Path
) -> None:
    with open(watched / "sub/b.csv", "ab") as f:
        f.write(b"1,2\n" * 1000)
    (watched / "new.bin").write_bytes(noise(200_000))
    (watched / "c.txt").unlink()
    _wait_for(lambda: _read_ahead(cli, agent) == 2, "the two changed files to be read ahead")
    out = _commit(cli, agent, watched)
    assert out["files_read"] == 0  # both came from what the agent read ahead
    _same_as_folder(cli, str(out["id"]), watched, tmp_path)
    assert cli("verify", "--full").code == 0


def test_a_change_after_the_read_ahead_is_never_missed(cli: Cli, agent: Agent, watched: Path, tmp_path: Path) -> None:
    """Rewritten in place with the same size and its old mtime put back: only the ctime tells, and the commit
    must read the file again rather than trust what the agent read before."""
    target = watched / "a.bin"
    target.write_bytes(noise(300_000))
    _wait_for(lambda: _read_ahead(cli, agent) == 1, "the first change to be read ahead")
    before = os.stat(target)
    cli("agent", "unwatch", str(watched), extra_env=agent.env)  # so that the agent cannot catch the next one
    target.write_bytes(noise(300_000))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    out = _commit(cli, agent, watched)
    assert out["files_read"] == 1
    _same_as_folder(cli, str(out["id"]), watched, tmp_path)


def test_excluded_and_ignored_files_are_not_read_ahead(cli: Cli, agent: Agent, tmp_path: Path) -> None:
    data = make_tree(tmp_path / "d", {"keep.bin": b"k", "secret.env": b"TOKEN=1", ".strongroomignore": b"tmp/\n"})
    assert cli("init").code == 0
    time.sleep(1.1)
    assert _commit(cli, agent, data, "--exclude", "*.env")["files_read"] == 2
    assert cli("agent", "watch", str(data), "--exclude", "*.env", extra_env=agent.env).code == 0
    (data / "secret.env").write_bytes(b"TOKEN=2")
    (data / "tmp").mkdir()
    (data / "tmp" / "scratch.bin").write_bytes(noise(10_000))
    (data / "keep.bin").write_bytes(b"kept")
    _wait_for(lambda: _read_ahead(cli, agent) >= 1, "the kept file to be read ahead")
    time.sleep(2)  # time enough for the others (a second to age, then a read), were they read
    assert _read_ahead(cli, agent) == 1
    assert _commit(cli, agent, data, "--exclude", "*.env")["files_read"] == 0


def test_a_watched_workspace_commits_onto_its_branch(cli: Cli, agent: Agent, tmp_path: Path) -> None:
    data = make_tree(tmp_path / "data", {"a.bin": noise(100_000), "b.txt": b"b"})
    assert cli("init").code == 0
    assert _commit(cli, agent, data)["files_read"] == 2
    ws = tmp_path / "ws"
    assert cli("workspace", "create", str(ws), "--branch", "clean", extra_env=agent.env).code == 0
    assert cli("agent", "watch", str(ws), extra_env=agent.env).out.startswith("watching workspace")
    time.sleep(1.1)  # the workspace's own files are older than the file cache's window
    (ws / "b.txt").write_bytes(b"cleaned")
    _wait_for(lambda: _read_ahead(cli, agent) == 1, "the edited file to be read ahead")
    out = _commit(cli, agent, ws)
    assert (out["branch"], out["files_read"]) == ("clean", 0)
    _same_as_folder(cli, "clean", ws, tmp_path, ignore=(".strongroom",))


def test_gc_between_the_read_ahead_and_the_commit_only_costs_a_read(
    cli: Cli, agent: Agent, watched: Path, tmp_path: Path
) -> None:
    """gc adopts the agent's unpublished packs, finds nothing refers to them and deletes them: the cache
    entries then name chunks the index no longer has, and the commit reads the file itself."""
    (watched / "new.bin").write_bytes(noise(200_000))
    _wait_for(lambda: _read_ahead(cli, agent) == 1, "the new file to be read ahead")
    assert cli("gc", "--keep-unreachable", "0").code == 0  # not through the agent: another process's gc
    out = _commit(cli, agent, watched)
    assert out["files_read"] == 1
    _same_as_folder(cli, str(out["id"]), watched, tmp_path)
    assert cli("verify", "--full").code == 0


def test_watch_needs_an_agent_and_a_folder(cli: Cli, agent: Agent, tmp_path: Path) -> None:
    assert cli("init").code == 0
    alone = cli("agent", "watch", str(tmp_path))
    assert alone.code == 2
    assert alone.err.startswith("strongroom: error: this command runs in an agent")
    missing = cli("agent", "watch", str(tmp_path / "nope"), extra_env=agent.env)
    assert (missing.code, missing.err) == (2, f"strongroom: error: not a folder: {tmp_path / 'nope'}\n")
    wrong = cli("agent", "watch", str(tmp_path), passphrase="wrong", extra_env=agent.env)
    assert (wrong.code, wrong.err) == (2, "strongroom: error: wrong passphrase\n")
    assert _status(cli, agent)["watches"] == []
    gone = cli("agent", "unwatch", str(tmp_path), extra_env=agent.env)
    assert (gone.code, gone.err) == (2, f"strongroom: error: not watched: {tmp_path}\n")


def test_a_file_stamped_in_the_future_neither_spins_the_watch_nor_holds_a_commit(
    cli: Cli, agent: Agent, watched: Path
) -> None:
    future = watched / "future.bin"
    future.write_bytes(b"f" * 1000)
    in_an_hour = time.time_ns() + 3600 * 10**9
    os.utime(future, ns=(in_an_hour, in_an_hour))
    time.sleep(1.5)
    watches = _status(cli, agent)["watches"]
    assert isinstance(watches, list)
    assert watches[0]["backlog"] == 0  # it waits apart, backing off, and is not counted
    out = _commit(cli, agent, watched)
    assert out["files_read"] == 1  # the commit reads it itself
    log = (Path(os.environ["STRONGROOM_STATE_DIR"]) / "logs" / "agent.log").read_text().splitlines()
    last = [line for line in log if " commit exit 0 " in line][-1]
    assert "for watched folders" not in last or float(last.split("(of which ")[1].split()[0]) < 0.5


def test_a_folder_committed_to_a_scope_is_read_ahead_under_the_scope_s_keys(
    cli: Cli, agent: Agent, tmp_path: Path
) -> None:
    """Read ahead under the repository's keys, a scoped folder's new rows outlived `key shred` (unindexed, until
    gc). Watched with --scope, the read-ahead is sealed and named under the scope's keys, and the commit
    uses it."""
    from strongroom.backends.local import LocalBackend
    from strongroom.crypto.aead import key_id_of
    from strongroom.crypto.secret import Secret
    from strongroom.store.pack import pack_path
    from strongroom.store.repository import Repository
    from strongroom.store.scopes import load_scopes
    from tests.conftest import PASSPHRASE

    env = {**agent.env, "STRONGROOM_KEYSTORE": str(tmp_path / "keystore")}
    data = make_tree(tmp_path / "data", {"patients.csv": b"id,name\n" * 1000})
    assert cli("init").code == 0
    time.sleep(1.1)
    res = cli("--json", "commit", str(data), "-m", "m", "--scope", "alice", "-b", "alice", extra_env=env)
    assert res.code == 0, res.err
    res = cli("agent", "watch", str(data), "--scope", "alice", extra_env=env)
    assert res.code == 0, res.err
    with open(data / "patients.csv", "ab") as f:
        f.write(b"ALICE-PERSONAL-ROW\n" * 5000)
    _wait_for(lambda: _read_ahead(cli, agent) == 1, "the changed file to be read ahead")
    res = cli("--json", "commit", str(data), "-m", "m", "--scope", "alice", "-b", "alice", extra_env=env)
    assert res.code == 0, res.err
    assert json.loads(res.out)["files_read"] == 0  # taken from the read-ahead: it was made with the scope's keys

    repo = Repository.open(LocalBackend(str(cli.repo)), Secret(PASSPHRASE.encode()))
    load_scopes(repo, env["STRONGROOM_KEYSTORE"])
    repo.adopt_orphan_packs()
    main_keys = set(repo.keyring.data_keys)
    for cid in _version_chunks(repo, "alice"):
        loc = repo.index.get(cid)
        assert loc is not None
        assert key_id_of(repo.backend.get_range(pack_path(loc.pack_id), loc.offset, 7)) not in main_keys


def _version_chunks(repo: object, branch: str) -> set[bytes]:
    r: Any = repo
    out: set[bytes] = set()
    stack = [r.load_commit(r.read_refs().branches[branch]).tree]
    while stack:
        for e in r.load_tree(stack.pop()).entries:
            out.update(e.chunks)
            if e.subtree:
                stack.append(e.subtree)
    return out


def test_an_overflow_of_the_event_queue_is_shown_and_the_folder_looked_at_again(
    cli: Cli, agent: Agent, watched: Path
) -> None:
    """With the agent stopped, more files appear than inotify queues events for (16,384 by default): the
    events lost are counted in `agent status`, and the watch looks at the whole folder again."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 20_000:
        pytest.skip("the inotify queue is larger than this test fills")
    many = watched / "many"
    many.mkdir()
    time.sleep(0.5)  # the watch on the new folder is in place before the agent stops
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(limit + 4000):
            (many / f"{i}.txt").write_bytes(b"%d\n" % i)
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    _wait_for(lambda: int(_status(cli, agent)["watches"][0]["overflows"]) >= 1, "the overflow to be counted")  # type: ignore[index]
    deadline = time.monotonic() + 180
    while _read_ahead(cli, agent) < limit + 4000:  # asked seldom: each command pauses the watch while it runs
        assert time.monotonic() < deadline, "timed out waiting for every new file to be read ahead"
        time.sleep(2)
    assert _commit(cli, agent, watched)["files_read"] == 0
