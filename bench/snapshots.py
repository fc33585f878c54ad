#!/usr/bin/env python3
"""Issue 4 figures on the benchmark dataset: branch create, status of an unchanged workspace, commit of a
workspace after the 1 % mutation (against the initial ingest), and what `workspace switch` rewrites.

    .venv/bin/python bench/snapshots.py          # SIZE (default 1GiB), SEED (42), BENCH_DIR as bench/run.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset
import report
import srcli
from srcli import run

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    gen = dataset.gen_module()
    size = int(gen.parse_size(os.environ.get("SIZE", "1GiB")))
    seed = int(os.environ.get("SEED", "42"))
    bench_dir = os.path.abspath(os.environ.get("BENCH_DIR") or os.path.join(tempfile.gettempdir(), "strongroom-bench"))
    data, _ = dataset.ensure_dataset(os.path.join(bench_dir, "cache"), size, seed)
    work = tempfile.mkdtemp(prefix="snapshots-", dir=bench_dir)
    env = srcli.env_for(work)
    rows: list[tuple[str, str, str]] = []
    try:
        run(env, "init")
        ingest, out = run(env, "--json", "commit", data, "-m", "v1")
        v1 = json.loads(out)["id"]
        t_log, _ = run(env, "log")
        wall, _ = run(env, "branch", "create", "quick")
        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
        from strongroom import Strongroom
        from strongroom.service import branches

        lib = Strongroom.open(env["STRONGROOM_REPO"], "bench passphrase", env=env)
        t0 = time.perf_counter()
        branches.branch_create(lib._session, "inproc")
        inproc = time.perf_counter() - t0
        rows.append(("branch create (operation, in process)", f"{inproc * 1000:.1f} ms", "< 50 ms"))
        rows.append(("branch create (whole command) / `log`", f"{wall:.2f} s / {t_log:.2f} s", "O(1)"))
        ws = os.path.join(work, "ws")
        t_create, _ = run(env, "workspace", "create", ws, "--branch", "work")
        rows.append(("workspace create (materialise everything)", f"{t_create:.2f} s", ""))
        time.sleep(1.1)  # past the racy-clean second, as any real use is
        t_status, out = run(env, "--json", "status", ws)
        assert not json.loads(out)["changes"], "an unchanged workspace reported changes"
        rows.append(("status of an unchanged workspace", f"{t_status:.2f} s", "< 1 s"))
        mutation = dataset.mutate(ws, seed, 1)
        t_commit, out = run(env, "--json", "commit", ws, "-m", "mutated")
        res = json.loads(out)
        v2 = res["id"]
        rows.append(("initial ingest (for reference)", f"{ingest:.2f} s", ""))
        rows.append((
            "workspace commit after the 1 % mutation",
            f"{t_commit:.2f} s = {100 * t_commit / ingest:.1f} % of ingest; read {res['files_read']} files "
            f"({res['bytes_read'] / 1e6:.1f} MB)",
            "< 5 %",
        ))
        _, out = run(env, "--json", "diff", v1, v2)
        changed = sum(c["size"] for c in json.loads(out) if c["status"] in ("added", "modified"))
        t_switch, out = run(env, "--json", "workspace", "switch", ws, v1)
        written = json.loads(out)["bytes_written"]
        rows.append((
            "workspace switch v2 → v1",
            f"{t_switch:.2f} s; wrote {written / 1e6:.1f} MB (files added or modified v1→v2: {changed / 1e6:.1f} MB)",
            "only changed files",
        ))
        total = dataset.tree_bytes(data)
        report.write_table(
            "snapshots",
            f"# strongroom snapshots benchmark: {dataset.size_label(size)} dataset, seed {seed}",
            f"Run {time.strftime('%Y-%m-%dT%H:%M:%S%z')}; dataset {total:,} bytes; "
            f"mutation: {json.dumps(mutation)[:200]}",
            rows,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
