#!/usr/bin/env python3
"""Audit log benchmark (issue 5, RELIABILITY.md T19): batch append rate, `audit verify` over 10^6 events,
proof sizes at 10^3 and 10^6 events.

    .venv/bin/python bench/audit_log.py            # 1,000,000 events in batches of 1,000
    AUDIT_EVENTS=100000 AUDIT_BATCH=500 .venv/bin/python bench/audit_log.py

Everything runs against a real repository (Argon2id passphrase, Ed25519 log key) and the default SQLite
catalog (WAL, synchronous=FULL) in a scratch folder (BENCH_DIR, default $TMPDIR/strongroom-bench):

- append: each batch is one `AuditLog.append` transaction followed by `AuditLog.seal` (the sealed
  segment and the signed checkpoint written to the repository), which is what a command does at its end;
  the rate is reported for the append transactions alone and for append + seal together. Every event has
  its own increasing time, as in real use (an earlier version gave all events one time, and 10^6 equal keys
  in the time index made SQLite's inserts twice as slow by the end).
- verify: `AuditLog.verify` in process (every row's columns checked against its recorded canonical bytes,
  every leaf hashed, the tree rebuilt, every checkpoint of the catalog and the repository checked, the
  repository's sealed copy compared), then `strongroom audit verify` as a whole command (startup, passphrase
  KDF and its own audit event included). Then one event's column is edited with plain SQL and verify must
  fail naming it (a benchmark of a verifier that checks nothing would be worthless).
- proofs: `strongroom audit prove` and `audit consistency` documents at 10^3 events (a second log) and at
  10^6: hashes, bytes of the path, bytes of the whole JSON document.

Results: bench/results/audit-latest.md and bench/results/audit-<date>.json (kept apart from the
tool-comparison results of bench/run.py, which runs this file last).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procmon

from strongroom import Strongroom
from strongroom.audit.events import Event, utc_now
from strongroom.audit.log import AuditLog
from strongroom.store.repository import Repository

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")
PASSPHRASE = "audit bench passphrase, not a secret"
ACTORS = ["carol", "dave", "erin", "svc-train"]
ACTIONS = ["commit", "checkout", "cat", "ls", "workspace.create", "verify", "branch.create", "merge"]


def log(msg: str) -> None:
    print(msg, flush=True)


def templates(n: int) -> list[Event]:
    """A batch of varied, realistic events (about 330 bytes of canonical JSON each)."""
    out = []
    for i in range(n):
        out.append(
            Event(
                seq=0,
                time=utc_now(),
                actor=ACTORS[i % len(ACTORS)],
                os_user="mlops",
                host="trainer-07.example.internal",
                action=ACTIONS[i % len(ACTIONS)],
                targets={
                    "repository": "ab" * 32,
                    "branch": "main",
                    "version": f"{i:064x}",
                    "paths": [f"images/train/{i % 97:03d}/img-{i:06d}.jpg", "tables/part-0003.csv"],
                },
                outcome="ok" if i % 50 else "denied",
                details={"message": f"batch {i}: augment and re-split", "workers": 2},
            )
        )
    return out


class OtherLoad:
    """CPU the rest of the machine used while a block ran (other engineers' tests on a shared 2-core box):
    busy CPU seconds of the whole machine minus this process's own and its children's."""

    def __enter__(self) -> OtherLoad:
        self.b0, self.t0, self.o0 = procmon.cpu_busy_seconds(), time.perf_counter(), self._own()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        foreign = procmon.cpu_busy_seconds() - self.b0 - (self._own() - self.o0)
        self.seconds = wall
        self.cores = round(max(foreign, 0.0) / wall, 2) if wall > 0 else 0.0

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system


def quiet(label: str, max_wait: float = 45) -> float:
    waited, cores = procmon.wait_quiet(max_wait, 0.25, window=0.5)
    if waited > 2:
        log(f"  (waited {waited:.0f} s for other load to stop before {label}; now {cores:.2f} cores busy)")
    return cores


def open_pair(env: dict[str, str], repo_path: str) -> tuple[AuditLog, Repository]:
    sr = Strongroom.open(repo_path, PASSPHRASE, env=env)
    s = sr._session
    repo = s.open()
    alog = s.audit_log()
    assert alog is not None
    return alog, repo


def fill(alog: AuditLog, repo: Repository, n: int, batch: int, report_every: int = 100_000) -> dict[str, float]:
    proto = templates(batch)
    t_append = t_seal = c_append = c_seal = 0.0
    done = 0
    cpu = time.process_time
    t_all = time.perf_counter()
    load = OtherLoad().__enter__()
    while done < n:
        k = min(batch, n - done)
        events = [dataclasses.replace(e, time=utc_now()) for e in proto[:k]]  # each its own time (not timed)
        t0, c0 = time.perf_counter(), cpu()
        alog.append(events)
        t1, c1 = time.perf_counter(), cpu()
        alog.seal(repo)
        t_seal += time.perf_counter() - t1
        c_seal += cpu() - c1
        t_append += t1 - t0
        c_append += c1 - c0
        done += k
        if done % report_every == 0:
            log(f"  {done:,} events: {done / (time.perf_counter() - t_all):,.0f} events/s so far")
    wall = time.perf_counter() - t_all
    load.__exit__()
    return {
        "other_load_cores": load.cores,
        "events": n,
        "batch": batch,
        "append_seconds": round(t_append, 3),
        "seal_seconds": round(t_seal, 3),
        "append_cpu_seconds": round(c_append, 3),
        "seal_cpu_seconds": round(c_seal, 3),
        "wall_seconds": round(wall, 3),
        "append_events_per_s": round(n / t_append),
        "append_and_seal_events_per_s": round(n / wall),
    }


def proof_sizes(env: dict[str, str], repo_path: str, size: int) -> dict[str, Any]:
    cli = [sys.executable, "-m", "strongroom", "--repo", repo_path]
    env = dict(env, STRONGROOM_PASSPHRASE=PASSPHRASE)
    seq = size // 3
    t0 = time.perf_counter()
    prove = subprocess.run([*cli, "audit", "prove", str(seq)], env=env, capture_output=True, text=True, check=True)
    prove_s = time.perf_counter() - t0
    doc = json.loads(prove.stdout)
    tree_size = doc["tree_size"]
    old = tree_size // 2
    cons = subprocess.run(
        [*cli, "audit", "consistency", str(old), str(tree_size)], env=env, capture_output=True, text=True, check=True
    )
    cdoc = json.loads(cons.stdout)
    return {
        "tree_size": tree_size,
        "inclusion_leaf": seq,
        "inclusion_hashes": len(doc["audit_path"]),
        "inclusion_path_bytes": 32 * len(doc["audit_path"]),
        "inclusion_document_bytes": len(prove.stdout.encode()),
        "prove_command_seconds": round(prove_s, 2),
        "consistency_old_size": old,
        "consistency_hashes": len(cdoc["consistency_path"]),
        "consistency_path_bytes": 32 * len(cdoc["consistency_path"]),
        "consistency_document_bytes": len(cons.stdout.encode()),
    }


def cli_verify(env: dict[str, str], repo_path: str) -> tuple[float, int, str]:
    argv = [sys.executable, "-m", "strongroom", "--repo", repo_path, "audit", "verify"]
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=dict(env, STRONGROOM_PASSPHRASE=PASSPHRASE), capture_output=True, text=True)
    return time.perf_counter() - t0, p.returncode, (p.stdout + p.stderr).strip().splitlines()[-1]


def catalog_file(state: str) -> str:
    found = [f for f in os.listdir(os.path.join(state, "catalogs")) if f.endswith(".sqlite")]
    assert len(found) == 1, found
    return os.path.join(state, "catalogs", found[0])


def one_log(work: str, name: str, n: int, batch: int) -> tuple[dict[str, str], str, dict[str, Any]]:
    state = os.path.join(work, name, "state")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(
        STRONGROOM_STATE_DIR=state,
        STRONGROOM_CACHE_DIR=os.path.join(work, name, "cache"),
        STRONGROOM_CONFIG_DIR=os.path.join(work, name, "config"),
        STRONGROOM_KEYSTORE=os.path.join(work, name, "keystore"),
    )
    repo_path = os.path.join(work, name, "repo")
    Strongroom.init(repo_path, PASSPHRASE, env=env, user="bench")
    alog, repo = open_pair(env, repo_path)
    res = fill(alog, repo, n, batch)
    alog.close()
    return env, repo_path, res


def render(doc: dict[str, Any]) -> str:
    a, v, m = doc["append"], doc["verify"], doc["meta"]
    p3, p6 = doc["proofs"]["small"], doc["proofs"]["large"]
    n = a["events"]
    note = (
        f"Other load on the machine (CPU used by other processes, in cores): {a['other_load_cores']:.2f} during "
        f"the appends, {', '.join(f'{c:.2f}' for _, c in v['in_process_runs_seconds_other_load'])} during the "
        f"in-process verifies, {v['command_other_load_cores']:.2f} during the command."
    )
    lines = [
        f"# strongroom audit log benchmark: {n:,} events",
        "",
        f"Run {m['started']}; {m['machine']}; Python {m['python']}; strongroom at {m['git']}; "
        f"SQLite catalog (WAL, synchronous=FULL), local repository; `bench/audit_log.py`.",
        "",
        "| measure | result | target |",
        "|---|---|---|",
        f"| append, batches of {a['batch']:,} (append transactions alone) | {a['append_events_per_s']:,} events/s | |",
        f"| process CPU per event: append / seal | {1e6 * a['append_cpu_seconds'] / n:.1f} µs / "
        f"{1e6 * a['seal_cpu_seconds'] / n:.1f} µs (wall: {1e6 * a['append_seconds'] / n:.1f} µs / "
        f"{1e6 * a['seal_seconds'] / n:.1f} µs) | |",
        f"| append + seal per batch (segment and signed checkpoint stored, as a command does) | "
        f"{a['append_and_seal_events_per_s']:,} events/s ({a['wall_seconds']:.1f} s for {n:,}) | ≥ 20,000 events/s |",
        f"| `audit verify` of {v['events']:,} events, in process (best of 3) | {v['in_process_seconds']:.2f} s "
        f"(runs: {', '.join(f'{s:.2f} s' for s, _ in v['in_process_runs_seconds_other_load'])}) | < 10 s |",
        f"| `strongroom audit verify` as a command (startup and KDF included) | {v['command_seconds']:.2f} s "
        f"(exit {v['command_exit']}) | < 10 s |",
        f"| verify after one event's column edited with SQL | exit {v['tampered_exit']}: {v['tampered_message']} "
        f"| exit 1 |",
        f"| inclusion proof at {p3['tree_size']:,} events | {p3['inclusion_hashes']} hashes = "
        f"{p3['inclusion_path_bytes']} bytes (JSON document {p3['inclusion_document_bytes']:,} bytes) | log2(n) |",
        f"| inclusion proof at {p6['tree_size']:,} events | {p6['inclusion_hashes']} hashes = "
        f"{p6['inclusion_path_bytes']} bytes (JSON document {p6['inclusion_document_bytes']:,} bytes; "
        f"`audit prove` {p6['prove_command_seconds']:.1f} s) | log2(n) |",
        f"| consistency proof {p3['consistency_old_size']:,} → {p3['tree_size']:,} | {p3['consistency_hashes']} "
        f"hashes = {p3['consistency_path_bytes']} bytes | |",
        f"| consistency proof {p6['consistency_old_size']:,} → {p6['tree_size']:,} | {p6['consistency_hashes']} "
        f"hashes = {p6['consistency_path_bytes']} bytes | |",
        f"| catalog size | {v['catalog_bytes'] / 2**20:,.0f} MiB "
        f"({v['catalog_bytes'] / v['events']:.0f} bytes/event) | |",
        "",
        "The tree sizes include the benchmark's own `audit.*` events (each command appends one). " + note,
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    if "PYTEST_CURRENT_TEST" in os.environ:
        raise SystemExit("the benchmark never runs inside the test suite")
    n = int(os.environ.get("AUDIT_EVENTS", "1000000"))
    batch = int(os.environ.get("AUDIT_BATCH", "1000"))
    bench_dir = os.path.abspath(os.environ.get("BENCH_DIR") or os.path.join(tempfile.gettempdir(), "strongroom-bench"))
    os.makedirs(bench_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="audit-", dir=bench_dir)
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=HERE, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=HERE, capture_output=True, text=True)
    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "python": platform.python_version(),
        "git": head.stdout.strip() + (" (src modified)" if dirty.stdout.strip() else ""),
    }
    try:
        log(f"appending {n:,} events in batches of {batch:,} (each batch sealed) ...")
        env, repo_path, append = one_log(work, "large", n, batch)
        log(
            f"  append alone {append['append_events_per_s']:,}/s; "
            f"append + seal {append['append_and_seal_events_per_s']:,}/s"
        )
        alog, repo = open_pair(env, repo_path)
        runs = []
        for _ in range(3):
            quiet("verify")
            with OtherLoad() as load:
                rep = alog.verify(repo)
            runs.append((round(load.seconds, 3), load.cores))
            log(f"  verify in process: {load.seconds:.2f} s (other load {load.cores:.2f} cores)")
        in_process = min(s for s, _ in runs)
        alog.close()
        if not rep.ok:
            raise SystemExit(f"verify failed on an untouched log: {rep.reason}")
        log(f"verify in process: {rep.events:,} events in {in_process:.2f} s")
        quiet("`audit verify`")
        with OtherLoad() as cmd_load:
            cmd_s, cmd_rc, _ = cli_verify(env, repo_path)
        log(f"`strongroom audit verify`: {cmd_s:.2f} s, exit {cmd_rc}")
        proofs_large = proof_sizes(env, repo_path, n)
        db = catalog_file(env["STRONGROOM_STATE_DIR"])
        catalog_bytes = os.path.getsize(db)
        con = sqlite3.connect(db)
        con.execute("UPDATE audit_events SET actor='mallory' WHERE seq=?", (n // 2,))
        con.commit()
        con.close()
        _, bad_rc, bad_msg = cli_verify(env, repo_path)
        log(f"after an SQL edit of event {n // 2:,}: exit {bad_rc}: {bad_msg}")
        if bad_rc != 1:
            raise SystemExit("verify did not catch an edited event")
        small_env, small_repo, _ = one_log(work, "small", 1000, 100)
        proofs_small = proof_sizes(small_env, small_repo, 1000)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = {
        "meta": meta,
        "append": append,
        "verify": {
            "events": rep.events,
            "checkpoints": rep.checkpoints_catalog,
            "in_process_seconds": round(in_process, 3),
            "in_process_runs_seconds_other_load": runs,
            "command_seconds": round(cmd_s, 3),
            "command_other_load_cores": cmd_load.cores,
            "command_exit": cmd_rc,
            "tampered_exit": bad_rc,
            "tampered_message": bad_msg,
            "catalog_bytes": catalog_bytes,
        },
        "proofs": {"small": proofs_small, "large": proofs_large},
    }
    md = render(doc)
    print()
    print(md)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    for name, text in (
        ("audit-latest.md", md),
        (f"audit-{meta['started'][:10]}.json", json.dumps(doc, indent=1) + "\n"),
    ):
        tmp = os.path.join(RESULTS_DIR, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(RESULTS_DIR, name))
    log("written: bench/results/audit-latest.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
