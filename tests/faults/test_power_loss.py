"""Simulated power loss during a commit (RELIABILITY T02, the ALICE approach: Pillai et al., OSDI 2014).

A repository with one version is snapshotted: the repository, the client state folder and the file cache
folder (the cache is client-held state the next commit trusts, so it is in the model too). A second commit
(a changed folder: new chunk packs from the ingest's pack thread, a tree and commit pack, an index file,
counters, refs, the file cache, the client state, audit objects, lock files) then runs in a forked process
under `tests.faults.fsrecorder.Recorder`, which records every create, write (offset and bytes), truncate,
fsync of a file or a folder, rename, link, unlink and mkdir made below those folders. Replaying the whole
trace must give the folders exactly as the commit left them (nothing was missed). `CrashModel` then replays
it under a conservative model: at a crash point, an operation is kept if it was made durable (a file's
bytes by an fsync of that file, a folder entry by an fsync of that folder) and any subset of the others
may persist too, out of order, writes possibly torn.

Checked at every crash point, from the model alone: once the new refs may have reached the disk, every
pack and index file of the new version is durable ("every ref points at fsynced objects"); once the client
state may record the new generation, the new refs are durable (the client never remembers refs that the
repository can lose, which would make the next command report a rollback).

Checked on every distinct crash state (at least 200; at every crash point every subset of the pending
operations, and each pending write torn, alone and with the rest), laid out as real folders at the paths
the commit used: the repository opens with the passphrase and the client state (no rollback or swap is
reported), `verify` and `verify --structure` find no damage, and main names the old or the new version
with its whole history. The states that differ in what strongroom reads (not only in temporary files) are
then followed by a commit of a small folder, which must complete on top of main, and `verify`; on a sample
of them the next commit re-commits the whole changed folder instead, `verify --full` passes and every file
reads back. A failure names the state: its crash point and the non-durable operations that persisted.

Not modelled: the SQLite audit catalog in the state folder (SQLite makes its own writes and fsyncs, in C).
Each state gets the catalog as the recorded commit left it, the worst case for the repository: the catalog
may remember the commit's event and audit checkpoint while the repository lost them. The crashed process is
dead and its PID is not reused (`DeadPidOs`), so the locks it left are stale, as after a reboot in which no
process happens to get that PID again.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import os
import pickle
import random
import re
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from strongroom import Strongroom
from strongroom.backends.local import LocalBackend
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
from strongroom.crypto.secret import Secret
from strongroom.store import check, lock
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE, make_tree
from tests.faults.fsrecorder import (
    CrashModel,
    CrashState,
    Op,
    Recorder,
    snapshot,
    write_state,
)
from tests.faults.test_crash import trial_env

SEED = 20250202
PACK_SIZE = 1 << 20  # the changed folder fills a few chunk packs, written by the ingest's pack thread
MIN_STATES = 200
MAX_STATES = 400  # distinct states laid out and checked, at most (the time budget)
FULL_SAMPLE = 20  # of them, those where the whole folder is committed again and verify --full runs
EXHAUSTIVE = 8  # pending operations at a crash point up to which every subset is tried
MAX_REPORTED = 12
DEAD_PID = (1 << 22) + 1  # above PID_MAX_LIMIT: no process can have it


def datasets(root: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """Version 1, and version 2: one file changed, one kept, new files (new chunks, so new packs)."""
    rng = random.Random(SEED)
    table = "".join(f"{i},{rng.random():.6f}\n" for i in range(4000)).encode()
    v1 = {"kept.bin": rng.randbytes(600 << 10), "labels/table.csv": table}
    v2 = dict(
        v1,
        **{
            "labels/table.csv": table + b"4000,0.5\n",
            "new/a.bin": rng.randbytes(1200 << 10),
            "new/b.bin": rng.randbytes(900 << 10),
            "new/sub/c.txt": b"power loss\n" * 3000,
        },
    )
    return make_tree(root / "src1", v1), make_tree(root / "src2", v2), v2


def roots_of(root: Path) -> dict[str, str]:
    return {"repo": str(root / "repo"), "state": str(root / "state"), "cache": str(root / "cache")}


def close(sr: Strongroom) -> None:
    """Let go of the audit catalog (an SQLite engine per state would pile up open files)."""
    log = sr._session._audit_log
    if log is not None:
        log.close()


class DeadPidOs:
    """``os`` as the lock module of the recorded commit sees it, except that its PID is one no process can
    have. The commit's real PID is dead after it, as a process that lost power is, but this system recycles
    PIDs, and a state checked later could find its locks held by an unrelated live process."""

    def getpid(self) -> int:
        return DEAD_PID

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def run_forked(fn: Callable[[], Any], out: Path) -> Any:
    """Run fn in a forked child and return what it returned. The child's PID is dead afterwards, as the
    PID of a process that lost power is: the locks it left are stale."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            result: Any = ("ok", fn())
        except BaseException:
            result, code = ("error", traceback.format_exc()), 1
        try:
            with open(out, "wb") as f:
                pickle.dump(result, f)
        finally:
            os._exit(code)
    os.waitpid(pid, 0)
    with open(out, "rb") as f:
        status, value = pickle.load(f)
    assert status == "ok", f"the recorded commit failed:\n{value}"
    return value


def generate(model: CrashModel, rng: random.Random) -> list[CrashState]:
    """Candidate crash states: at every crash point, every subset of the operations not yet durable (they
    are few: the commit makes each write durable before its rename, and each rename before the next step),
    or random subsets where there are many; and each pending write torn at a random length, alone and with
    every other pending operation persisted."""
    ops = model.ops
    states: list[CrashState] = []
    for p in range(len(ops) + 1):
        pending = model.pending(p)
        if len(pending) <= EXHAUSTIVE:
            subsets = [c for r in range(len(pending) + 1) for c in itertools.combinations(pending, r)]
        else:
            subsets = [(), tuple(pending)]
            subsets += [tuple(i for i in pending if rng.random() < 0.5) for _ in range(2**EXHAUSTIVE)]
        for sub in subsets:
            label = "durable only" if not sub else "everything persisted" if len(sub) == len(pending) else "subset"
            states.append(CrashState(p, tuple((i, None) for i in sub), label))
        for w in pending:
            if ops[w].kind == "write" and len(ops[w].data) > 1:
                cut = rng.randrange(1, len(ops[w].data))
                rest = tuple((i, cut if i == w else None) for i in pending)
                states.append(CrashState(p, rest, "torn write, the rest persisted"))
                states.append(CrashState(p, ((w, cut),), "torn write alone"))
    return states


def guarantees(model: CrashModel, final: Mapping[str, bytes], snap: Mapping[str, bytes], client: str) -> list[str]:
    """The ordering guarantees, at every crash point, from the model alone (no folders laid out)."""
    ops = model.ops
    new_refs = final["repo/refs"]
    needed = {k: v for k, v in final.items() if k.startswith(("repo/data/", "repo/index/")) and k not in snap}
    assert needed, "the recorded commit wrote no pack or index file"
    problems = []
    for p in range(len(ops) + 1):
        issued = [op for op in ops[:p] if op.kind == "rename"]
        refs_may_be_new = any(op.dest == "repo/refs" for op in issued)
        state_may_be_new = any(op.dest == client for op in issued)
        if not (refs_may_be_new or state_may_be_new):
            continue
        durable = model.materialise(CrashState(p, (), "durable only")).files
        where = f"crash after op #{p - 1} ({ops[p - 1].describe()})"
        if refs_may_be_new:
            lost = sorted(k for k, v in needed.items() if durable.get(k) != v)
            if lost:
                problems.append(f"{where}: the new refs may be on disk, but not yet durable: {lost}")
        if state_may_be_new and durable.get("repo/refs") != new_refs:
            problems.append(f"{where}: the client state may record the new refs, which are not yet durable")
    return problems


def check_state(
    root: Path, versions: tuple[str, str], follow: Path | None, full: bool, files: Mapping[str, bytes]
) -> None:
    """What the next commands see after the power loss; raises AssertionError (or the command's error).
    With ``follow``, a commit of that folder follows (and ``verify``, ``--full`` when ``full``)."""
    v1, v2 = versions
    env = trial_env(root)
    sr = Strongroom.open(str(root / "repo"), PASSPHRASE, env=env)  # refuses a rollback or a swap
    try:
        result = sr.verify()
        assert result.ok, f"verify found damage: {result.damage}"
        head = sr.resolve("main")
        assert (head, result.versions) in ((v1, 1), (v2, 2)), f"main is {head} with {result.versions} versions"
    finally:
        close(sr)
    structure = check.verify_structure(LocalBackend(str(root / "repo")))  # every pack and index file whole
    assert structure.ok, f"verify --structure found damage: {structure.damage}"
    if follow is None:
        return
    after = Strongroom.open(str(root / "repo"), PASSPHRASE, env=env)
    try:
        new = after.commit(str(follow), message="after the power loss", workers=1)
        assert new.parent == head, f"the next commit's parent is {new.parent}, main was {head}"
        result = after.verify("full" if full else "default")
        assert result.ok, f"verify {'--full ' if full else ''}after the next commit found damage: {result.damage}"
        if full:
            for name, data in files.items():
                assert after.read(new.id, name) == data, f"{name} reads back wrong from the next commit"
            assert after.read(v1, "kept.bin") == files["kept.bin"]
            if head == v2:
                assert after.read(v2, "new/a.bin") == files["new/a.bin"]
    finally:
        close(after)


def is_temp(key: str) -> bool:
    """A writer's temporary file (``<name>.tmp<pid>-<hex>``, ``.<name>.<pid>.tmp``): strongroom never reads one."""
    return ".tmp" in key.rsplit("/", 1)[-1]


def distinct(model: CrashModel, candidates: list[CrashState]) -> tuple[list[CrashState], list[CrashState]]:
    """The candidates that give distinct folders: first those that differ in what strongroom reads, then
    those that differ only in temporary files."""
    full: set[str] = set()
    visible: set[str] = set()
    first: list[CrashState] = []
    rest: list[CrashState] = []
    for state in candidates:
        layout = model.materialise(state)
        key = layout.digest()
        if key in full:
            continue
        full.add(key)
        seen = layout.digest(ignore=is_temp)
        (rest if seen in visible else first).append(state)
        visible.add(seen)
    return first, rest


@contextlib.contextmanager
def scratch(tmp_path: Path) -> Iterator[Path]:
    """Where the test runs: a RAM file system when there is one (the commands run on each crash state fsync
    their own writes, which on a disk costs more than the checks themselves), else tmp_path. The recorded
    trace is the same on any file system: it is taken above the kernel."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(prefix="strongroom-t02-", dir=shm) as d:
            yield Path(d)
    else:
        yield tmp_path


@pytest.mark.slow
def test_power_loss_during_commit(tmp_path: Path) -> None:
    with scratch(tmp_path) as work:
        power_loss_during_commit(work)


def power_loss_during_commit(work: Path) -> None:
    t0 = time.monotonic()
    src1, src2, files2 = datasets(work)
    small = make_tree(work / "small", {"note.txt": b"written after the power loss\n"})
    base = work / "base"
    backend = LocalBackend(str(base / "repo"))
    backend.ensure_root()
    Repository.create(backend, Secret(PASSPHRASE.encode()), UNSAFE_TEST_ONLY, pack_size=PACK_SIZE)
    first = Strongroom.open(str(base / "repo"), PASSPHRASE, env=trial_env(base))
    v1 = first.commit(str(src1), message="v1", workers=1).id
    close(first)

    # The state before the second commit, then the second commit, recorded in a child process.
    roots = roots_of(base)
    catalogs = str(base / "state" / "catalogs")
    snap_files, snap_dirs = snapshot(roots, (catalogs,))
    recorder = Recorder(roots, (catalogs,))

    def second_commit() -> tuple[list[Op], dict[int, str], list[str], str]:
        setattr(lock, "os", DeadPidOs())  # in the child only
        with recorder.recording():
            sr = Strongroom.open(str(base / "repo"), PASSPHRASE, env=trial_env(base))
            v2 = sr.commit(str(src2), message="v2", workers=1).id
            close(sr)
        return recorder.ops, recorder.initial, recorder.unsupported, v2

    ops, initial, unsupported, v2 = run_forked(second_commit, work / "trace.pickle")
    assert not unsupported, f"operations the crash model cannot replay: {unsupported}"
    final_files, final_dirs = snapshot(roots, (catalogs,))
    final_catalogs = work / "catalogs"
    shutil.copytree(catalogs, final_catalogs, ignore=shutil.ignore_patterns("*-shm"))
    repo_id = json.loads(final_files["repo/config"])["id"]
    client = f"state/repos/{repo_id}.json"
    assert json.loads(final_files[client])["generation"] == 2

    # The recorder saw every change: replaying every operation gives the folders exactly as they are now.
    model = CrashModel(ops, initial, snap_files, snap_dirs)
    replayed = model.materialise(CrashState(len(ops), tuple((i, None) for i in model.pending(len(ops))), "all"))
    assert (replayed.files, replayed.dirs) == (final_files, final_dirs), "the recorder missed file operations"
    kinds = {op.kind for op in ops}
    assert kinds >= {"create", "write", "fsync", "fsync_dir", "rename", "unlink", "mkdir"}, kinds
    assert any(op.kind == "write" and op.thread != "MainThread" for op in ops), "no pack came from the pack thread"

    problems = guarantees(model, final_files, snap_files, client)
    assert not problems, "ordering guarantees broken:\n" + "\n".join(problems)

    # Lay out every distinct crash state where the commit ran (same paths: anything keyed by a path, such as
    # the catalog's URL, is as it was) and run the next commands on it. The states that differ in what
    # strongroom reads are followed by another commit; a sample of them by a commit of the whole folder.
    first_states, temp_only = distinct(model, generate(model, random.Random(SEED)))
    states = (first_states + temp_only)[:MAX_STATES]
    full_sample = {len(first_states) * (2 * k + 1) // (2 * FULL_SAMPLE) for k in range(FULL_SAMPLE)}
    store = work / "blobs"
    store.mkdir()
    failures: list[str] = []
    for n, state in enumerate(states):
        for folder in roots.values():
            shutil.rmtree(folder)
        write_state(model.materialise(state), roots, str(store))
        shutil.copytree(final_catalogs, catalogs)
        follow = (src2 if n in full_sample else small) if n < len(first_states) else None
        try:
            check_state(base, (v1, v2), follow, n in full_sample, files2)
        except Exception as e:
            failures.append(f"state {n}: {state.describe(ops)}\n    -> {type(e).__name__}: {e}")
    # No command wrote through a hard link into the shared file bodies (the states would not be the ones
    # described).
    for blob in store.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, f"{blob.name} was written to"

    print(
        f"power loss: {len(ops)} operations recorded; {len(states)} distinct crash states at "
        f"{len({s.point for s in states})} crash points checked, {len(first_states)} of them differing in what "
        f"strongroom reads and followed by another commit ({len(full_sample)} by a commit of the whole folder "
        f"and verify --full); {len(failures)} failed; {time.monotonic() - t0:.1f} s"
    )
    if failures:
        causes = collections.Counter(
            re.sub(r"(?<![0-9a-f])\d+(?![0-9a-f])", "N", f.rsplit("\n    -> ", 1)[1]) for f in failures
        )
        summary = "\n".join(f"  {n} x {why}" for why, n in causes.most_common())
        detail = "\n".join(failures[:MAX_REPORTED])
        raise AssertionError(
            f"{len(failures)} of {len(states)} crash states failed (seed {SEED}):\n{summary}\nthe first ones:\n{detail}"
        )
    assert len(states) >= MIN_STATES, f"only {len(states)} distinct crash states"
