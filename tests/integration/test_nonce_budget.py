"""T11, nonce uniqueness and key caps.

Frames carry a random 96-bit nonce from ``os.urandom`` (crypto/aead.py) and the key id that sealed them. Each
process counts the frames it seals per key id (forked workers report theirs to the parent) and adds them to
the sealed ``counters`` file at every publish; at ``ROTATE_AFTER_MESSAGES`` = 2^30 frames the data key is
replaced (store/repository.py ``_account_messages``; format.md §14).

* 10^6 frames, not RELIABILITY.md's 10^7: sealing is about 2.2 µs of CPU per frame, os.urandom does not
  scale across processes on the 2-core test machine (10^6 take 3-5 s of wall time there), and a set of 10^7
  pairs needs about 1 GB. What a duplicate would come from (a nonce source copied into forked children or
  shared between processes) shows at any count, and 10^6 random 96-bit nonces collide by chance with
  probability 10^12 / 2^97, about 6e-18. The frames are sealed by 16 processes: the parent, 13 children
  forked after the keys were loaded (through ``store.parallel``, the way ingest runs its workers) and 2
  independent processes that open the repository themselves; then every frame stored by a real commit
  whose chunks are sealed in 4 forked ingest workers is added. 0 duplicate (key id, nonce) pairs; every
  frame sealed before a publish is counted.
* The cap has no configuration or environment knob: it is the constant ``ROTATE_AFTER_MESSAGES``
  (crypto/keys.py), which store/repository.py imports by name. The tests lower it to 10^4 (10^3 in the
  SIGKILL test, to keep the killed commit small) by patching that name in the test process only, and check
  the real 2^30, unpatched, by storing a count just below it.
* SIGKILL: a count that was published survives; frames sealed by a commit that was killed before it
  published must still count against the key once the next commit adopts its packs. The same holds for a
  commit refused with "branch moved", whose retry reuses what it stored.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import types
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from strongroom import Strongroom
from strongroom.backends.local import LocalBackend
from strongroom.core.ids import ObjectKind
from strongroom.crypto import aead
from strongroom.crypto.aead import key_id_of
from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
from strongroom.crypto.keys import ROTATE_AFTER_MESSAGES
from strongroom.crypto.secret import Secret
from strongroom.errors import BranchMoved
from strongroom.service import versions as ver_svc
from strongroom.store import ingest, listing, lock, parallel
from strongroom.store import repository as repository_mod
from strongroom.store.chunker import ChunkerParams
from strongroom.store.index import MAGIC as INDEX_MAGIC
from strongroom.store.pack import TRAILER_LEN, header_location, pack_path
from strongroom.store.refs import MAGIC as REFS_MAGIC
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE, make_tree

PARENT_FRAMES = 20_000
FORKED = 13
PER_FORKED = 60_000
SPAWNED = 2
PER_SPAWNED = 100_000
TOTAL = PARENT_FRAMES + FORKED * PER_FORKED + SPAWNED * PER_SPAWNED  # 10^6
LOWER_CAP = 10_000
KILL_CAP = 1_000  # the SIGKILL test's cap: a killed commit of ~860 frames stays quick
SMALL_CHUNKS = ChunkerParams(1 << 10, 1 << 10, 2 << 10)  # about 700 frames per MiB

# An independent process: opens the repository itself (passphrase on stdin, never in argv), seals frames
# with its own key copy, writes their (key id, nonce) pairs to a file and publishes its count.
SEALER_SCRIPT = """
import sys
from strongroom.backends.local import LocalBackend
from strongroom.crypto.secret import Secret
from strongroom.store.repository import Repository
root, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
repo = Repository.open(LocalBackend(root), Secret(sys.stdin.readline().rstrip("\\n").encode()))
seal, ctx = repo.sealer.seal, repo.context
with open(out, "wb") as f:
    f.write(b"".join(seal(b"", 1, ctx)[3:19] for _ in range(count)))
repo.edit_refs(lambda refs: None, "t11 sealer", wait=60)
"""

# A commit killed after its packs are written and before it publishes (the hook stands in for the moment a
# SIGKILL lands: everything is sealed and stored, nothing is counted yet).
KILLED_COMMIT_SCRIPT = """
import sys, time
from strongroom import Strongroom
from strongroom.store.repository import Repository
root, src = sys.argv[1], sys.argv[2]
sr = Strongroom.open(root, sys.stdin.readline().rstrip("\\n"))
def stop(self, pack_ids):
    print("packs-written", sum(self.sealer.sealed.values()), flush=True)
    time.sleep(600)
Repository.write_index = stop
sr.commit(src, "killed")
"""


# ------------------------------------------------------------------------------ helpers


def create(root: Path, chunker: ChunkerParams | None = None, pack_size: int = 1 << 20) -> Repository:
    backend = LocalBackend(str(root))
    backend.ensure_root()
    Repository.create(backend, Secret(PASSPHRASE.encode()), UNSAFE_TEST_ONLY, chunker=chunker, pack_size=pack_size)
    return Repository.open(backend, Secret(PASSPHRASE.encode()))


def open_repo(root: Path) -> Repository:
    return Repository.open(LocalBackend(str(root)), Secret(PASSPHRASE.encode()))


def pair(frame: bytes | memoryview) -> bytes:
    """(key id, nonce) of a frame: header bytes 3..19 (key id u32 big-endian, then the 12-byte nonce)."""
    return bytes(frame[3:19])


def duplicates(pairs: list[bytes]) -> int:
    return len(pairs) - len(set(pairs))


def stored_frames(root: Path) -> tuple[list[bytes], Counter[int], Counter[int]]:
    """Every frame stored in the repository: its (key id, nonce) pairs; per key id, the frames a publish
    must have counted by then (pack frames, pack headers, index files: all sealed before the publish);
    and per key id, every stored frame."""
    repo = open_repo(root)
    pairs: list[bytes] = []
    before_publish: Counter[int] = Counter()
    every: Counter[int] = Counter()
    for name, size in repo.backend.list("data"):
        data = repo.backend.get(name)
        pid = name.rsplit("/", 1)[-1]
        start, _ = header_location(size, data[size - TRAILER_LEN :])
        frames = [data[e.offset : e.offset + 19] for e in repo.read_pack_header(pid, size)] + [data[start:]]
        for f in frames:
            pairs.append(pair(f))
            before_publish[key_id_of(f)] += 1
    for name, _ in repo.backend.list("index"):
        f = sealed_frame(repo.backend.get(name), INDEX_MAGIC)
        pairs.append(pair(f))
        before_publish[key_id_of(f)] += 1
    every.update(before_publish)
    singles = ["refs", "counters", "signers"]
    for folder in ("scopes", "audit"):
        singles += [n for n, _ in repo.backend.list(folder)]
    for name in singles:
        if repo.backend.size(name) is not None:
            f = sealed_frame(repo.backend.get(name), REFS_MAGIC)  # other singletons are bare frames
            assert f[0] == aead.VERSION, name
            pairs.append(pair(f))
            every[key_id_of(f)] += 1
    return pairs, before_publish, every


def sealed_frame(data: bytes, magic: bytes) -> bytes:
    """The frame of a stored file: a listed file's (format.md §8a), or the file itself when it is a bare frame."""
    listed = listing.unwrap(data, magic, "file")
    return data if listed is None else listed.frame


def frame_keys(repo: Repository, object_ids: Iterable[bytes]) -> set[int]:
    """The key ids of the stored frames of these objects (each pack read once)."""
    wanted: dict[str, list[int]] = {}
    for oid in object_ids:
        loc = repo.index.get(oid)
        assert loc is not None
        wanted.setdefault(loc.pack_id, []).append(loc.offset)
    keys = set()
    for pid, offsets in wanted.items():
        data = repo.backend.get(pack_path(pid))
        keys.update(key_id_of(data[o : o + 7]) for o in offsets)
    return keys


def seal_in_forked_children(repo: Repository, children: int, per_child: int) -> tuple[list[bytes], set[int]]:
    """Fork ``children`` workers after the keys are loaded, through store.parallel as ingest does; each seals
    ``per_child`` frames. Their counts go into the parent's sealer, as ingest's "done" messages do."""
    pairs: list[bytes] = []
    pids: set[int] = set()

    def body(share: list[int], send: Callable[[tuple[Any, ...]], None]) -> None:
        seal, ctx = repo.sealer.seal, repo.context
        before = dict(repo.sealer.sealed)
        for _ in share:
            send(("pairs", os.getpid(), b"".join(seal(b"", ObjectKind.CHUNK, ctx)[3:19] for _ in range(per_child))))
        send(("done", {k: n - before.get(k, 0) for k, n in repo.sealer.sealed.items()}))

    def handle(msg: tuple[Any, ...]) -> None:
        if msg[0] == "pairs":
            pids.add(msg[1])
            blob = msg[2]
            pairs.extend(blob[i : i + 16] for i in range(0, len(blob), 16))
        elif msg[0] == "done":
            for kid, n in msg[1].items():
                repo.sealer.sealed[kid] = repo.sealer.sealed.get(kid, 0) + n

    parallel.run([[i] for i in range(children)], body, handle)
    return pairs, pids


def publish(repo: Repository) -> None:
    repo.edit_refs(lambda refs: None, "t11", wait=60)


# ------------------------------------------------------------------------------ nonce uniqueness


def test_no_nonce_repeats_across_processes_forks_and_ingest_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repo"
    repo = create(root, SMALL_CHUNKS, pack_size=256 << 10)
    key = repo.sealer.current
    # The independent processes start first and run alongside the forked children.
    spawned = []
    for i in range(SPAWNED):
        out = tmp_path / f"spawned-{i}.bin"
        proc = subprocess.Popen(
            [sys.executable, "-c", SEALER_SCRIPT, str(root), str(PER_SPAWNED), str(out)],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(PASSPHRASE.encode() + b"\n")
        proc.stdin.close()
        spawned.append((proc, out))

    ctx = repo.context
    pairs = [repo.sealer.seal(b"", ObjectKind.CHUNK, ctx)[3:19] for _ in range(PARENT_FRAMES)]
    forked, pids = seal_in_forked_children(repo, FORKED, PER_FORKED)
    assert len(pids) == FORKED and os.getpid() not in pids
    pairs += forked
    publish(repo)
    for proc, out in spawned:
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode() if proc.stderr else ""
        blob = out.read_bytes()
        assert len(blob) == 16 * PER_SPAWNED
        pairs.extend(blob[i : i + 16] for i in range(0, len(blob), 16))
    assert len(pairs) == TOTAL
    assert {p[:4] for p in pairs} == {key.to_bytes(4, "big")}
    # Every frame sealed before a publish is in the persisted count: parent, children and other processes.
    assert open_repo(root).message_count() == {key: TOTAL}

    # A real commit whose chunks are sealed in forked ingest workers (the inline threshold is lowered in this
    # process so that 2 MiB are spread over 4 workers).
    forks = 0
    real_fork = os.fork

    def counting_fork() -> int:
        nonlocal forks
        forks += 1
        return real_fork()

    monkeypatch.setattr(os, "fork", counting_fork)
    monkeypatch.setattr(ingest, "INLINE_BYTES", 0)
    rnd = random.Random(11)
    # Sizes differ: ingest deals files of one size to one worker.
    src = make_tree(tmp_path / "src", {f"part-{i}.bin": rnd.randbytes((512 << 10) + i) for i in range(4)})
    Strongroom.open(str(root), PASSPHRASE).commit(str(src), "ingest", workers=4)
    monkeypatch.setattr(os, "fork", real_fork)
    assert forks >= 4
    stored, before_publish, _ = stored_frames(root)
    assert before_publish[key] > 1000  # chunks and pack headers of the commit, and its index file
    pairs += stored

    dups = duplicates(pairs)
    print(f"T11: {len(pairs)} (key id, nonce) pairs from {1 + FORKED + SPAWNED} processes + ingest workers: {dups}")
    assert dups == 0
    assert open_repo(root).message_count()[key] >= TOTAL + before_publish[key]


def test_the_duplicate_check_catches_a_nonce_source_copied_into_forked_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check can fail: with a user-space generator seeded before the fork (as a nonce counter or PRNG in
    process memory would be), every child repeats the same nonces."""
    repo = create(tmp_path / "repo")
    rng = random.Random(1)
    monkeypatch.setattr(aead, "os", types.SimpleNamespace(urandom=rng.randbytes))
    pairs, _ = seal_in_forked_children(repo, 4, 1000)
    assert duplicates(pairs) == 3000


# ------------------------------------------------------------------------------ the cap


def test_rotation_is_forced_at_a_lowered_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cap lowered to 10^4 frames per key in this process. Eight rounds, each 2,500 frames sealed through the
    session's sealer (as a long writer would seal them) and then a real commit of 256 KiB (about 180 frames
    with 1 KiB chunks) whose publish counts them all: the key is replaced at the first publish whose count
    reaches the cap, never before; frames sealed from then on carry the new key id; old frames still open;
    the persisted counts never fall behind what is stored."""
    monkeypatch.setattr(repository_mod, "ROTATE_AFTER_MESSAGES", LOWER_CAP)
    root = tmp_path / "repo"
    create(root, SMALL_CHUNKS)
    sr = Strongroom.open(str(root), PASSPHRASE)
    rnd = random.Random(12)
    src = tmp_path / "src"
    history: list[tuple[int, dict[int, int]]] = []
    for i in range(8):
        live = sr._session.open()
        for _ in range(2500):
            live.sealer.seal(b"", ObjectKind.CHUNK, live.context)
        make_tree(src, {f"batch-{i}.bin": rnd.randbytes(256 << 10)})
        sr.commit(str(src), f"batch {i}", workers=1)
        fresh = open_repo(root)
        history.append((fresh.keyring.current, fresh.message_count()))
    _, before_publish, _ = stored_frames(root)
    for kid, n in before_publish.items():
        assert history[-1][1].get(kid, 0) >= n, kid  # the counts never fall behind what is stored
    currents = [c for c, _ in history]
    assert currents[0] == 1 and currents[-1] == 3, currents  # about 2,700 frames a round: 2 rotations
    final = history[-1][1]
    totals = [0] + [sum(counts.values()) for _, counts in history]
    per_commit = max(b - a for a, b in itertools.pairwise(totals))  # the most one publish added
    for kid in range(1, currents[-1]):
        assert LOWER_CAP <= final[kid] < LOWER_CAP + per_commit, (kid, final[kid], per_commit)  # at the cap
    assert final.get(currents[-1], 0) < LOWER_CAP
    assert history[0][1][1] < LOWER_CAP
    for (before, _), (after, counts) in itertools.pairwise(history):
        assert (after != before) == (counts[before] >= LOWER_CAP)  # rotated exactly when the cap was reached
    # Each commit's chunks are sealed under the key that was current when it started: the new key from the
    # commit after a rotation on. Every version still reads, and the repository verifies.
    repo = open_repo(root)
    tree = repo.load_tree(repo.load_commit(repo.read_refs().branches["main"]).tree)
    chunks = {e.name: e.chunks for e in tree.entries}
    for i in range(8):
        assert frame_keys(repo, chunks[f"batch-{i}.bin"]) == {currents[i - 1] if i else 1}, i
    assert sorted(repo.keyring.data_keys) == list(range(1, currents[-1] + 1))
    assert sr.read("main~7", "batch-0.bin") == (src / "batch-0.bin").read_bytes()
    assert sr.verify("full").ok


def test_rotation_at_the_real_cap_of_2_to_the_30(tmp_path: Path) -> None:
    """Unpatched: a count stored just below 2^30 makes the next commit's publish replace the key, and the
    commit after it seals under the new one. 2^30 is well below the 2^32 random-nonce limit of SP 800-38D
    §8.3: at 2^30 frames the chance of any repeated nonce is about 2^60 / 2^97 = 2^-37."""
    assert ROTATE_AFTER_MESSAGES == 1 << 30 and ROTATE_AFTER_MESSAGES * 4 <= 1 << 32
    assert repository_mod.ROTATE_AFTER_MESSAGES == ROTATE_AFTER_MESSAGES
    root = tmp_path / "repo"
    src = make_tree(tmp_path / "src", {"a.bin": os.urandom(50_000)})
    sr = Strongroom.init(str(root), PASSPHRASE)
    sr.commit(str(src), "one")
    repo = open_repo(root)
    with lock.publish_lock(repo.backend, "test", 5.0):
        repo._write_counters({**repo.message_count(), 1: ROTATE_AFTER_MESSAGES - 1})
    (src / "b.bin").write_bytes(os.urandom(50_000))
    sr = Strongroom.open(str(root), PASSPHRASE)
    sr.commit(str(src), "two")  # sealed under key 1, which reaches the cap at this publish
    repo = open_repo(root)
    assert (sorted(repo.keyring.data_keys), repo.keyring.current) == ([1, 2], 2)
    assert repo.message_count()[1] >= ROTATE_AFTER_MESSAGES and repo.message_count()[2] == 0
    (src / "c.bin").write_bytes(os.urandom(50_000))
    Strongroom.open(str(root), PASSPHRASE).commit(str(src), "three")
    repo = open_repo(root)
    assert (sorted(repo.keyring.data_keys), repo.keyring.current) == ([1, 2], 2)  # no second rotation
    _, before_publish, _ = stored_frames(root)
    assert 0 < before_publish[2] <= repo.message_count()[2] < 1000
    sr = Strongroom.open(str(root), PASSPHRASE)
    assert sr.read("main~2", "a.bin") == (src / "a.bin").read_bytes()  # under key 1, still opens
    assert sr.verify("full").ok


# ------------------------------------------------------------------------------ SIGKILL


def _run_killed_commit(root: Path, src: Path) -> int:
    """Run a commit in another process, SIGKILL it once its packs are written; return what it had sealed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_COMMIT_SCRIPT, str(root), str(src)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(PASSPHRASE.encode() + b"\n")
    proc.stdin.close()
    line = proc.stdout.readline().decode()
    try:
        assert line.startswith("packs-written"), line + (proc.stderr.read().decode() if proc.stderr else "")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return int(line.split()[1])


def test_a_published_count_survives_sigkill(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    create(root, SMALL_CHUNKS)
    rnd = random.Random(13)
    first = make_tree(tmp_path / "first", {"a.bin": rnd.randbytes(2 << 20)})
    Strongroom.open(str(root), PASSPHRASE).commit(str(first), "published", workers=1)
    published = open_repo(root).message_count()[1]
    assert published >= stored_frames(root)[1][1] > 500
    second = make_tree(tmp_path / "second", {"b.bin": rnd.randbytes(2 << 20)})
    _run_killed_commit(root, second)  # a later commit in another process, killed
    assert open_repo(root).message_count()[1] == published  # what was published is still there


def test_frames_of_a_commit_killed_before_publishing_still_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed after sealing N frames must not let the next one reuse that budget. The next commit
    adopts the killed commit's packs (format.md §17), so the frames in them are under the key for good; they
    must reach the persisted count, and with the cap lowered (to 10^3 here) the next publish must rotate."""
    monkeypatch.setattr(repository_mod, "ROTATE_AFTER_MESSAGES", KILL_CAP)
    root = tmp_path / "repo"
    create(root, SMALL_CHUNKS)
    rnd = random.Random(14)
    killed_src = make_tree(tmp_path / "killed", {"big.bin": rnd.randbytes(1200 << 10)})  # ~860 chunks
    sealed_by_killed = _run_killed_commit(root, killed_src)
    assert 0.7 * KILL_CAP < sealed_by_killed < KILL_CAP
    assert open_repo(root).message_count().get(1, 0) < 10  # only the signer set it made before its commit

    next_src = make_tree(tmp_path / "next", {"small.bin": rnd.randbytes(500 << 10)})  # ~360 chunks
    (next_src / "big.bin").write_bytes((killed_src / "big.bin").read_bytes())  # reused from the adopted packs
    sr = Strongroom.open(str(root), PASSPHRASE)
    sr.commit(str(next_src), "next", workers=1)
    assert sr.read("main", "big.bin") == (killed_src / "big.bin").read_bytes()

    repo = open_repo(root)
    _, before_publish, _ = stored_frames(root)
    counted = repo.message_count().get(1, 0)
    print(f"T11 SIGKILL: killed commit sealed {sealed_by_killed}; key 1 has {before_publish[1]}; counted {counted}")
    assert before_publish[1] >= KILL_CAP
    assert counted >= before_publish[1], (
        f"key 1 has sealed {before_publish[1]} stored frames but its persisted count is {counted}: the "
        f"{sealed_by_killed} frames of the killed commit were never counted"
    )
    assert repo.keyring.current == 2  # the cap was passed: the next publish must have rotated


def test_frames_of_a_commit_refused_with_branch_moved_still_count(tmp_path: Path) -> None:
    """The same leak without a crash: a commit that loses the race for its branch ("branch moved; retry",
    exit 1) has sealed and stored its packs and its index file, then exits without publishing its count. Its
    retry, in a new process, reuses those chunks (they are indexed) and seals nothing for them."""
    root = tmp_path / "repo"
    create(root, SMALL_CHUNKS)
    rnd = random.Random(15)
    first = Strongroom.open(str(root), PASSPHRASE)
    v0 = first.commit(str(make_tree(tmp_path / "v0", {"a.txt": b"first\n"})), "v0", workers=1).id
    first.commit(str(make_tree(tmp_path / "v1", {"a.txt": b"second\n"})), "v1", workers=1)  # main moves on
    src = make_tree(tmp_path / "big", {"big.bin": rnd.randbytes(1200 << 10)})
    loser = Strongroom.open(str(root), PASSPHRASE)  # read main at v0, before the other commit published
    with pytest.raises(BranchMoved):
        ver_svc.commit(loser._session, str(src), "lost the race", workers=1, pinned_parent=bytes.fromhex(v0))
    lost = sum(loser._session.open().sealer.sealed.values())
    del loser  # the command exits 1: its in-memory count goes with it

    Strongroom.open(str(root), PASSPHRASE).commit(str(src), "retry", workers=1)
    _, before_publish, _ = stored_frames(root)
    counted = open_repo(root).message_count().get(1, 0)
    print(f"T11 branch moved: the refused commit sealed {lost}; key 1 has {before_publish[1]}; counted {counted}")
    assert counted >= before_publish[1], (
        f"key 1 has sealed {before_publish[1]} stored frames but its persisted count is {counted}: the {lost} "
        "frames of the commit refused with 'branch moved' were never counted"
    )
