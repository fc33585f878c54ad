"""`make bench`: strongroom against restic and borg (lz4, zstd,3) on the shared ML-like dataset.

    .venv/bin/python bench/run.py                 # 1 GiB, seed 42, 3 rounds
    SIZE=4GiB .venv/bin/python bench/run.py       # the larger run

Environment: SIZE (default 1GiB), SEED (42), ROUNDS (3), BENCH_DIR (scratch + dataset cache, default
$TMPDIR/strongroom-bench), BENCH_TOOLS (comma list of strongroom,restic,borg-lz4,borg-zstd3), BENCH_KEEP=1 (keep
the scratch folder), BENCH_CHECK_RESTORE (rounds whose restores are compared byte for byte; default "1", "all"),
BENCH_BACKUP=0 (skip the offsite-backup figures that follow, bench/backup.py; `run.py --backup` runs only them),
BENCH_QUIET_BUDGET (seconds the run may spend in total waiting for other load on the machine to stop before timed
steps; default 900), BENCH_AUDIT=0 (skip the audit log benchmark, bench/audit_log.py, which runs last and writes
bench/results/audit-latest.md; AUDIT_EVENTS and AUDIT_BATCH size it), BENCH_EXTRAS=0 (skip bench/snapshots.py,
bench/keys.py and bench/agent.py, which write bench/results/snapshots-latest.md, keys-latest.md and agent-latest.md).

Per round, for each tool in turn (strongroom, restic, borg lz4, borg zstd3 - alternating so that no tool
systematically runs first on cold memory): reset the one source folder from the pristine dataset (cp -a, mtimes
kept), init a fresh repository (not counted), then time: initial ingest, no-change re-commit, the tool's version
listing (`strongroom log`), `gen_dataset.py mutate` (not counted), commit after the mutation, full restore of the
mutated version, full verify. Medians over the rounds are reported. `sync` runs (untimed) before every timed step so
write-back of earlier steps does not land in a later one; page caches are never dropped (every tool reads its
source from memory). Each step records the machine's busy CPU beyond the tool's own ("other load"); a step that ran
under other load is flagged, and medians use only unflagged rounds when at least two are unflagged.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import backup
import dataset
import procmon
import report
import tools

REPO_ROOT = dataset.REPO_ROOT
RESULTS_DIR = os.path.join(REPO_ROOT, "bench", "results")
TOOL_ORDER = ["strongroom", "restic", "borg-lz4", "borg-zstd3"]
STEPS = ["init", "ingest", "recommit", "list", "incremental", "restore", "verify"]
QUIET_CORES = 0.25  # wait before a timed step until other processes use less CPU than this (in cores)
RACY_PAUSE = 1.2  # seconds between resetting the source and the first commit (strongroom's racy-clean window is 1 s)


def log(msg: str) -> None:
    print(msg, flush=True)


def cmd_output(argv: list[str], cwd: str | None = None) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False).stdout.strip()
    except OSError as e:
        return f"unavailable ({e})"


def ensure_peers() -> None:
    missing = [exe for exe in ("restic", "borg") if shutil.which(exe) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"{', '.join(missing)} missing: run `apt-get install -y restic borgbackup` as root")
    log(f"installing restic and borgbackup from Debian ({', '.join(missing)} missing) ...")
    subprocess.run("apt-get update -qq && apt-get install -y -qq restic borgbackup", shell=True, check=True)


def strongroom_exe() -> str:
    for cand in (os.path.join(REPO_ROOT, ".venv", "bin", "strongroom"), shutil.which("strongroom")):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise SystemExit("strongroom CLI not found: run `make install`")


def machine_info() -> dict[str, Any]:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "mem_total_bytes": mem,
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(sr_exe: str) -> dict[str, str]:
    py = os.path.join(os.path.dirname(sr_exe), "python")
    sr_ver = cmd_output([py, "-c", "import importlib.metadata as m; print(m.version('strongroom'))"])
    head = cmd_output(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT)
    dirty = cmd_output(
        ["git", "status", "--porcelain", "--", "src", "pyproject.toml", "constraints.txt"], cwd=REPO_ROOT
    )
    return {
        "strongroom": f"{sr_ver} (git {head}{', src modified' if dirty else ''})",
        "restic": cmd_output(["restic", "version"]),
        "borg": cmd_output(["borg", "--version"]),
    }


def warm_up(scratch: str, nbytes: int) -> dict[str, float]:
    """Write then delete nbytes so the page cache the run will use is memory the guest has touched before.

    On this VM first-touch guest memory makes new-file writes ~10x slower; a second pass shows the warm speed.
    """
    block = os.urandom(8 << 20)
    speeds: dict[str, float] = {}
    for label, n in (("first_pass", nbytes), ("second_pass", min(nbytes, 1 << 30))):
        path = os.path.join(scratch, f"warmup-{label}.bin")
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            written = 0
            while written < n:
                f.write(block)
                written += len(block)
        dt = time.perf_counter() - t0
        os.remove(path)
        speeds[f"{label}_bytes"] = written
        speeds[f"{label}_mb_s"] = round(written / dt / 1e6, 1)
        log(f"warm-up {label}: wrote {written / 2**30:.2f} GiB at {written / dt / 1e6:.0f} MB/s")
    return speeds


def du_bytes(path: str) -> int:
    if not os.path.exists(path):
        return 0
    out = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def rmtree(path: str) -> None:
    if os.path.lexists(path):
        shutil.rmtree(path)


def make_tools(run_dir: str, data: str, sr_exe: str, wanted: list[str]) -> list[tools.Tool]:
    made: dict[str, tools.Tool] = {
        "strongroom": tools.Strongroom(os.path.join(run_dir, "strongroom"), data, sr_exe),
        "restic": tools.Restic(os.path.join(run_dir, "restic"), data),
        "borg-lz4": tools.Borg(os.path.join(run_dir, "borg-lz4"), data, "lz4", "borg-lz4", "borg lz4"),
        "borg-zstd3": tools.Borg(os.path.join(run_dir, "borg-zstd3"), data, "zstd,3", "borg-zstd3", "borg zstd3"),
    }
    return [made[k] for k in TOOL_ORDER if k in wanted]


class QuietGate:
    """Before timed work, wait (within a total budget) for other load on the machine to die down."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.waited = 0.0
        self.gave_up = 0

    def wait(self, max_wait: float) -> tuple[float, float]:
        limit = max(0.0, min(max_wait, self.budget - self.waited))
        waited, cores = procmon.wait_quiet(limit, QUIET_CORES, window=0.5)
        self.waited += waited
        if cores >= QUIET_CORES:
            self.gave_up += 1
        if waited > 2:
            log(f"  (waited {waited:.0f} s for other load to stop; now {cores:.2f} cores busy)")
        return waited, cores


def one_round(
    tool: tools.Tool,
    rnd: int,
    pristine: str,
    data: str,
    run_dir: str,
    seed: int,
    check_restore: bool,
    gate: QuietGate,
) -> dict[str, Any]:
    res: dict[str, Any] = {"steps": {}}
    logf = os.path.join(run_dir, f"{tool.key}-round{rnd}.log")
    res["log"] = logf

    # reset the one source folder (same absolute path for every tool and round), mtimes kept
    rmtree(data)
    subprocess.run(["cp", "-a", pristine, data], check=True)
    rmtree(tool.home)
    os.makedirs(tool.home)
    os.sync()
    time.sleep(RACY_PAUSE)
    gate.wait(180)

    def step(name: str, argv_cwd: tuple[list[str], str]) -> bool:
        argv, cwd = argv_cwd
        os.sync()
        waited, cores = gate.wait(45)
        m = procmon.run_measured(argv, env=tool.env, cwd=cwd, log_path=logf)
        res["steps"][name] = m.to_json() | {"quiet_wait_s": round(waited, 1), "busy_cores_before": round(cores, 2)}
        if m.rc != 0:  # the scratch folder (and the log) is removed at the end: keep the tail in the results
            with open(logf, errors="replace") as f:
                res["steps"][name]["log_tail"] = f.read()[-3000:]
        status = "ok" if m.rc == 0 else f"FAILED rc={m.rc} (see {logf})"
        peak = m.peak_tree_rss / 2**20
        log(
            f"  [{tool.label:>10} r{rnd}] {name:<12} {m.seconds:8.2f} s  peak {peak:7.1f} MiB  "
            f"cpu {m.cpu_seconds:6.2f} s  other load {m.foreign_cpu_seconds:5.2f} s  {status}"
        )
        return m.rc == 0

    if not step("init", tool.init()):
        return res
    if not step("ingest", tool.commit("initial")):
        return res
    res["repo_bytes_ingest"] = du_bytes(tool.repo)
    step("recommit", tool.commit("nochange"))
    step("list", tool.list_versions())
    res["mutation"] = dataset.mutate(data, seed, 1)
    res["mutated_bytes"] = dataset.tree_bytes(data)
    if not step("incremental", tool.commit("mutated")):
        return res
    res["repo_bytes_final"] = du_bytes(tool.repo)
    res["cache_bytes"] = sum(du_bytes(d) for d in tool.cache_dirs)

    dest = os.path.join(run_dir, "restore")
    rmtree(dest)
    tool.prepare_restore_dest(dest)
    if step("restore", tool.restore("mutated", dest)) and check_restore:
        cmp = dataset.compare_trees(data, tool.restored_root(dest))
        res["restore_check"] = cmp
        log(f"  [{tool.label:>10} r{rnd}] restore check: {'ok' if cmp['ok'] else 'DIFFERENCES ' + str(cmp)}")
    rmtree(dest)
    step("verify", tool.verify())
    rmtree(tool.home)
    return res


def render_only(json_path: str) -> int:
    """`bench/run.py --render RESULTS.json`: rebuild the markdown of an earlier run (same stem, and latest.md)."""
    with open(json_path) as f:
        doc = json.load(f)
    doc["summary"] = report.summarize(doc)
    md = report.render_markdown(doc)
    print(md)
    for target in (json_path.removesuffix(".json") + ".md", os.path.join(RESULTS_DIR, "latest.md")):
        with open(target + ".tmp", "w") as f:
            f.write(md)
        os.replace(target + ".tmp", target)
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        return render_only(sys.argv[2])
    if sys.argv[1:] == ["--backup"]:  # only the offsite-backup figures (bench/backup.py)
        backup.main()
        return 0
    if "PYTEST_CURRENT_TEST" in os.environ:
        raise SystemExit("the benchmark never runs inside the test suite")
    gen = dataset.gen_module()
    size = int(gen.parse_size(os.environ.get("SIZE", "1GiB")))
    seed = int(os.environ.get("SEED", "42"))
    rounds = int(os.environ.get("ROUNDS", "3"))
    bench_dir = os.path.abspath(os.environ.get("BENCH_DIR") or os.path.join(tempfile.gettempdir(), "strongroom-bench"))
    wanted = [t.strip() for t in os.environ.get("BENCH_TOOLS", ",".join(TOOL_ORDER)).split(",") if t.strip()]
    unknown = set(wanted) - set(TOOL_ORDER)
    if unknown:
        raise SystemExit(f"unknown BENCH_TOOLS entries: {sorted(unknown)}")
    check_spec = os.environ.get("BENCH_CHECK_RESTORE", "1")
    keep = os.environ.get("BENCH_KEEP") == "1"

    t_start = time.perf_counter()
    ensure_peers()
    sr_exe = strongroom_exe()
    pristine, manifest = dataset.ensure_dataset(bench_dir, size, seed)
    fp = manifest["fingerprint"]

    run_dir = os.path.join(bench_dir, time.strftime("run-%Y%m%d-%H%M%S"))
    os.makedirs(run_dir)
    data = os.path.join(run_dir, "src", "data")
    os.makedirs(os.path.dirname(data))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta: dict[str, Any] = {
        "started": started,
        "size": size,
        "size_label": dataset.size_label(size),
        "seed": seed,
        "rounds": rounds,
        "dataset": {"files": fp["files"], "bytes": fp["bytes"], "gen_stats": manifest.get("gen_stats")},
        "machine": machine_info(),
        "versions": versions(sr_exe),
        "source_path": data,
        "memory_method": procmon.__doc__,
    }
    log(f"machine: {meta['machine']}")
    log(f"versions: {meta['versions']}")
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in wanted}
    gate = QuietGate(float(os.environ.get("BENCH_QUIET_BUDGET", "900")))
    try:
        # the largest amount of page cache a step adds is about one dataset (source copy, restore) on top of
        # the pristine copy, the working copy and a repository: write 3x the dataset once, capped by free memory
        with open("/proc/meminfo") as f:
            avail = next(int(x.split()[1]) * 1024 for x in f if x.startswith("MemAvailable:"))
        meta["warmup"] = warm_up(run_dir, min(3 * fp["bytes"], int(avail * 0.6)))
        tl = make_tools(run_dir, data, sr_exe, wanted)
        for rnd in range(1, rounds + 1):
            log(f"round {rnd}/{rounds}")
            check = check_spec == "all" or str(rnd) in check_spec.split(",")
            for tool in tl:
                results[tool.key].append(one_round(tool, rnd, pristine, data, run_dir, seed, check, gate))
    finally:
        if keep:
            log(f"scratch kept at {run_dir}")
        else:
            rmtree(run_dir)
    meta["total_seconds"] = round(time.perf_counter() - t_start, 1)
    meta["versions_end"] = versions(sr_exe)  # strongroom's source may change under a long run (shared checkout)
    meta["quiet_gate"] = {
        "threshold_cores": QUIET_CORES,
        "waited_seconds": round(gate.waited, 1),
        "gave_up": gate.gave_up,
    }

    doc = {"meta": meta, "results": results}
    summary = report.summarize(doc)
    doc["summary"] = summary
    md = report.render_markdown(doc)
    print()
    print(md)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stem = f"{started[:10]}-{meta['size_label']}"
    for name, text in ((f"{stem}.md", md), ("latest.md", md), (f"{stem}.json", json.dumps(doc, indent=1) + "\n")):
        tmp = os.path.join(RESULTS_DIR, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(RESULTS_DIR, name))
    log(f"written: bench/results/{stem}.md, bench/results/latest.md, bench/results/{stem}.json")
    failed = any(s.get("rc") for rounds_ in results.values() for r in rounds_ for s in r["steps"].values())
    if os.environ.get("BENCH_BACKUP", "1") != "0":  # then the offsite-backup figures, in their own results file
        backup.main()
    if os.environ.get("BENCH_AUDIT", "1") != "0":  # the audit log's own figures, in their own results file
        log("audit log benchmark (bench/audit_log.py; BENCH_AUDIT=0 skips it) ...")
        audit = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "audit_log.py")], check=False)
        failed = failed or audit.returncode != 0
    for extra in ("snapshots.py", "keys.py", "agent.py"):  # issues 4, 3 and the agent, each in its own results file
        if os.environ.get("BENCH_EXTRAS", "1") != "0":
            log(f"bench/{extra} (BENCH_EXTRAS=0 skips it) ...")
            ran = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", extra)], check=False)
            failed = failed or ran.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
