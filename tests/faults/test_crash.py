"""SIGKILL a commit at 20+ moments spread over its run (RELIABILITY T01). After every kill the repository
verifies clean, its refs name only complete versions, and the next commit completes, reusing the packs
the killed one had written."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from strongroom import Strongroom
from strongroom.backends.local import LocalBackend
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
from strongroom.crypto.secret import Secret
from strongroom.store import check
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE, make_tree

TRIALS = 23
EARLY = 3
MIN_KILLED = 20
PACK_SIZE = 4 << 20  # small packs: most kill points fall after some packs are complete
FILES = 24
FILE_SIZE = 2 << 20  # 48 MiB in all


def dataset(root: Path) -> dict[str, bytes]:
    rng = random.Random(4242)
    files: dict[str, bytes] = {}
    for i in range(FILES):
        if i % 5 == 4:  # some compressible text, the rest incompressible
            line = f"{i},{rng.random():.9f},label_{rng.randrange(100)}\n".encode()
            files[f"tables/t{i:02d}.csv"] = (line * (FILE_SIZE // len(line) + 1))[:FILE_SIZE]
        else:
            files[f"images/c{i % 3}/img{i:02d}.bin"] = rng.randbytes(FILE_SIZE)
    make_tree(root, files)
    return files


def group_alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the commit and the workers it forked, as a crash would, and wait until none runs."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while group_alive(proc.pid):
        assert time.monotonic() < deadline, "killed processes are still running"
        time.sleep(0.01)


def trial_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(
        STRONGROOM_STATE_DIR=str(root / "state"),
        STRONGROOM_CACHE_DIR=str(root / "cache"),
        STRONGROOM_UNSAFE_TEST_WEAK_KDF="1",
        STRONGROOM_PASSPHRASE=PASSPHRASE,
        PYTEST_CURRENT_TEST=os.environ.get("PYTEST_CURRENT_TEST", "crash"),
    )
    return env


def start_commit(repo: Path, src: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "strongroom", "--json", "--repo", str(repo), "commit", str(src), "-m", "big"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


def indexed_packs(repo: Path) -> set[str]:
    return set(Repository.open(LocalBackend(str(repo)), Secret(PASSPHRASE.encode())).load_index().packs)


def bytes_in_data(repo: Path) -> int:
    """Bytes under data/, temp files of writes in flight included."""
    total = 0
    for dirpath, _, filenames in os.walk(repo / "data"):
        for fn in filenames:
            with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
                total += os.stat(os.path.join(dirpath, fn)).st_size
    return total


def packs_on_disk(repo: Path) -> set[str]:
    return {name.rsplit("/", 1)[-1] for name, _ in LocalBackend(str(repo)).list("data")}


@pytest.mark.slow
def test_sigkill_during_commit_at_random_moments(tmp_path: Path) -> None:
    src = tmp_path / "dataset"
    files = dataset(src)
    small = make_tree(tmp_path / "small", {"readme.txt": b"version zero\n"})

    # A repository with one version already in it: the kills must never cost it anything.
    base = tmp_path / "base"
    backend = LocalBackend(str(base))
    backend.ensure_root()
    Repository.create(backend, Secret(PASSPHRASE.encode()), UNSAFE_TEST_ONLY, pack_size=PACK_SIZE)
    v0 = Strongroom.open(str(base), PASSPHRASE, env=trial_env(tmp_path / "base-client")).commit(str(small)).id
    base_bytes = bytes_in_data(base)

    # Uninterrupted runs: how long the start (imports, key derivation, scan) lasts before the first pack
    # lands, and what a fresh commit stores (the faster of two runs; the first warms the caches).
    first_packs = []
    for attempt in range(2):
        fresh = tmp_path / f"fresh{attempt}"
        shutil.copytree(base, fresh)
        t0 = time.monotonic()
        proc = start_commit(fresh, src, trial_env(tmp_path / f"fresh-client{attempt}"))
        first_pack = None
        while proc.poll() is None:
            if first_pack is None and bytes_in_data(fresh) > base_bytes:
                first_pack = time.monotonic() - t0
            time.sleep(0.002)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        first_packs.append(first_pack or time.monotonic() - t0)
        fresh_stored = json.loads(out)["bytes_stored"]
        assert fresh_stored > len(files) * FILE_SIZE // 2
        shutil.rmtree(fresh)
    data_starts = min(first_packs)

    # Kill points: a few by time while the process starts; the rest by bytes written to the repository
    # (RELIABILITY T01), spread from the first pack to the publishing of index and refs.
    rng = random.Random(99)
    points: list[tuple[str, float]] = [
        ("time", data_starts * (0.1 + 0.8 * (i + rng.random()) / EARLY)) for i in range(EARLY)
    ]
    late = TRIALS - EARLY
    points += [("bytes", fresh_stored * (0.02 + 0.98 * (i + rng.random()) / late)) for i in range(late)]
    rng.shuffle(points)
    killed = reused = 0
    for n, (how, at) in enumerate(points):
        root = tmp_path / f"trial{n}"
        repo = root / "repo"
        shutil.copytree(base, repo)
        env = trial_env(root)

        proc = start_commit(repo, src, env)
        if how == "time":
            time.sleep(at)
        else:
            while proc.poll() is None and bytes_in_data(repo) - base_bytes < at:
                time.sleep(0.001)
            time.sleep(rng.random() * 0.02)  # and a little after: the rename, the index, the refs
        if proc.poll() is None:
            kill_group(proc)
            killed += 1
            completed: set[str] = set()
        else:  # it finished first: then it is a complete version
            assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
            completed = {json.loads(proc.stdout.read() if proc.stdout else b"")["id"]}
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()

        where = f"trial {n}, killed at {how} {at:.2f}"
        lib = Strongroom.open(str(repo), PASSPHRASE, env=env)
        assert lib.verify().ok, where
        assert check.verify_structure(LocalBackend(str(repo))).ok, where
        log = [e.id for e in lib.log()]
        assert log[-1] == v0, where
        for vid in log[:-1]:  # a version published by the killed commit must hold the whole dataset
            listed = {e.path: e.size for e in lib.ls(vid) if e.type == "file"}
            assert listed == {p: len(d) for p, d in files.items()}, where
            completed.add(vid)
        assert set(log) == completed | {v0}, where

        orphans = packs_on_disk(repo) - indexed_packs(repo)
        follow = Strongroom.open(str(repo), PASSPHRASE, env=env).commit(str(src), message="after the crash")
        assert follow.files == FILES, where
        if orphans:
            reused += 1
            assert orphans <= indexed_packs(repo), f"{where}: packs of the killed commit were not indexed"
            assert follow.bytes_stored < fresh_stored, where
        after = Strongroom.open(str(repo), PASSPHRASE, env=env)
        assert after.verify().ok, where
        name = sorted(files)[n % FILES]
        assert after.read(follow.id, name) == files[name], where
        assert after.read(v0, "readme.txt") == b"version zero\n", where
        shutil.rmtree(root)

    print(f"crash test: {killed} of {TRIALS} killed, {reused} left packs that the next commit reused")
    assert killed >= MIN_KILLED, f"only {killed} of {TRIALS} commits were still running at their kill point"
    assert reused >= TRIALS // 4, f"only {reused} kills left packs for the next commit to reuse"
