"""T19 (RELIABILITY.md): concurrent appenders on one catalog. Eight processes, started together, append
1,000 batches of events in all to the same SQLite catalog (WAL, BEGIN IMMEDIATE, busy timeout) and seal each batch
(segment and signed checkpoint) while also running real commands; nothing is lost or duplicated, sequence
numbers stay dense, every checkpoint is consistent with every other and `audit verify` passes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path
from typing import Any

from strongroom import Strongroom
from strongroom.audit.events import Event, utc_now
from tests.conftest import PASSPHRASE, make_tree

PROCS = 8
# per process: T19's 1,000 sealed batches in all, plus 248 real commands (15 s on two quiet cores);
# STRONGROOM_T19_BATCHES sets another count (read here, passed to the children)
BATCHES = int(os.environ.get("STRONGROOM_T19_BATCHES", "125"))
BATCH = 7


def _appender(repo_path: str, proc: int, batches: int, barrier: Any, out: Any) -> None:
    try:
        sr = Strongroom.open(repo_path, PASSPHRASE, user=f"p{proc}")
        s = sr._session
        repo = s.open()
        log = s.audit_log()
        assert log is not None
        got: list[list[int]] = []
        signed: list[int] = []
        barrier.wait(60)
        for b in range(batches):
            batch = [
                Event(0, utc_now(), f"p{proc}", "os", "host", "bench.append", {}, "ok", {"proc": proc, "b": b, "j": j})
                for j in range(BATCH)
            ]
            got.append([e.seq for e in log.append(batch)])
            cp = log.seal(repo)
            if cp is not None:
                signed.append(cp.size)
            if b % 4 == 3:
                sr.read("main", "a.txt")  # a real command: its own audited event, appended and sealed
        out.put((proc, got, signed, None))
    except BaseException as e:  # report, never hang the parent
        out.put((proc, [], [], f"{type(e).__name__}: {e}"))


def test_eight_processes_append_and_seal_concurrently(tmp_path: Path, repo_path: Path) -> None:
    sr = Strongroom.init(str(repo_path), PASSPHRASE, user="carol")
    sr.commit(str(make_tree(tmp_path / "src", {"a.txt": b"1"})), workers=1)
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(PROCS), ctx.Queue()
    procs = [ctx.Process(target=_appender, args=(str(repo_path), i, BATCHES, barrier, out)) for i in range(PROCS)]
    for p in procs:
        p.start()
    results = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(60)
    errors = [r[3] for r in results if r[3]]
    assert not errors, errors

    # every batch got a contiguous run of sequence numbers, and no two batches share one
    batches = [seqs for _, got, _, _ in results for seqs in got]
    assert len(batches) == PROCS * BATCHES
    assert all(seqs == list(range(seqs[0], seqs[0] + BATCH)) for seqs in batches)
    taken = sorted(s for seqs in batches for s in seqs)
    assert len(taken) == len(set(taken)) == PROCS * BATCHES * BATCH

    s = Strongroom.open(str(repo_path), PASSPHRASE)._session
    log = s.audit_log()
    assert log is not None
    events = log.query()
    # dense: 0..N-1, and exactly the events appended (each (proc, batch, j) once) plus the commands' own
    assert [e.seq for e in events] == list(range(len(events)))
    appended = [(e.details["proc"], e.details["b"], e.details["j"]) for e in events if e.action == "bench.append"]
    assert sorted(appended) == sorted((p, b, j) for p in range(PROCS) for b in range(BATCHES) for j in range(BATCH))
    reads = [e for e in events if e.action == "cat"]
    assert len(reads) == PROCS * (BATCHES // 4) and all(e.outcome == "ok" for e in reads)
    for _, got, _, _ in results:  # a process's own seqs increase: its appends are ordered in the log
        flat = [x for seqs in got for x in seqs]
        assert flat == sorted(flat)

    # checkpoints: strictly growing sizes, each signed by exactly one seal, none rolled back, all consistent
    signed = sorted(size for _, _, sizes, _ in results for size in sizes)
    assert len(signed) == len(set(signed))
    db = next((tmp_path / "state" / "catalogs").glob("*.sqlite"))
    con = sqlite3.connect(db)
    sizes = [r[0] for r in con.execute("SELECT tree_size FROM audit_checkpoints ORDER BY tree_size")]
    con.close()
    assert set(signed) <= set(sizes)
    rep = log.verify(s.open())
    assert rep.ok, (rep.first_bad, rep.reason)
    assert rep.checkpoints_repository == rep.checkpoints_catalog == len(sizes)
    assert rep.covered == sizes[-1] and rep.events >= len(events)
