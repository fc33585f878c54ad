#!/usr/bin/env python3
"""The agent's figures (docs/agent.md) on the benchmark dataset: commands through a running agent, and the
commit after the 1 % mutation when the agent watches the folder (issue 2) or the workspace (issue 4).

    .venv/bin/python bench/agent.py          # SIZE (default 1GiB), SEED (42), ROUNDS (3), BENCH_DIR as bench/run.py

Per round: a fresh copy of the dataset and a fresh repository; the initial ingest without the agent (the
reference the targets are stated against, as in bench/run.py); then an agent is started and watches the
folder, and through it: the no-change re-commit, `log`, and the commit right after `gen_dataset.py mutate`
returns (no pause: files written within the racy-clean second are not read ahead yet, so this commit reads
them itself); then a second mutation, committed only once `agent status` shows nothing left to read ahead,
nor waiting for that second to pass (as when a person types the commit a moment after editing); then the
same for a watched workspace, right after a mutation and once caught up. The agent's own CPU time from the
start of each mutation to the end of its commit is reported beside it: that work is not free, it is done
earlier.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset
import report
import srcli

# The console script, as bench/run.py times it and as users run it.
SR = [os.path.join(dataset.REPO_ROOT, ".venv", "bin", "strongroom")]
RACY_PAUSE = 1.2


def run(env: dict[str, str], *args: str, sync: bool = True) -> tuple[float, str]:
    return srcli.run(env, *args, sync=sync, exe=SR)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def caught_up(env: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = json.loads(run(env, "--json", "agent", "status", sync=False)[1])
        if all(w["backlog"] == 0 and w["waiting"] == 0 for w in status["watches"]):
            return
        time.sleep(0.05)
    raise SystemExit("the agent did not catch up within 60 s")


def mutated_commit(
    env: dict[str, str], agent_pid: int, folder: str, seed: int, rnd: int, wait: bool
) -> dict[str, float]:
    cpu0 = cpu_seconds(agent_pid)
    dataset.mutate(folder, seed, rnd)
    if wait:
        caught_up(env)
    took, out = run(env, "--json", "commit", folder, "-m", f"mutated {rnd}", sync=False)
    res = json.loads(out)
    return {"s": took, "agent_cpu_s": cpu_seconds(agent_pid) - cpu0, "files_read": res["files_read"]}


def one_round(pristine: str, bench_dir: str, seed: int) -> dict[str, object]:
    work = tempfile.mkdtemp(prefix="agent-", dir=bench_dir)
    sock_dir = tempfile.mkdtemp(prefix="sr-agent-")  # socket paths are short: not under the bench folder
    data = os.path.join(work, "data")
    env = dict(os.environ)
    env.update(
        STRONGROOM_REPO=os.path.join(work, "repo"),
        STRONGROOM_PASSPHRASE="bench passphrase",
        STRONGROOM_STATE_DIR=os.path.join(work, "state"),
        STRONGROOM_CACHE_DIR=os.path.join(work, "cache"),
        STRONGROOM_CONFIG_DIR=os.path.join(work, "config"),
        STRONGROOM_KEYSTORE=os.path.join(work, "keystore"),
    )
    env.pop("STRONGROOM_AGENT", None)
    agent = None
    try:
        subprocess.run(["cp", "-a", pristine, data], check=True)
        time.sleep(RACY_PAUSE)
        run(env, "init")
        ingest, _ = run(env, "commit", data, "-m", "initial")
        t_log_plain, _ = run(env, "log")
        sock = os.path.join(sock_dir, "agent.sock")
        agent = subprocess.Popen([*SR, "agent", "run", "--socket", sock], env=env, stdout=subprocess.PIPE, text=True)
        assert agent.stdout is not None
        agent.stdout.readline()
        aenv = dict(env, STRONGROOM_AGENT=sock)
        run(aenv, "log")  # the agent derives the key once
        run(aenv, "agent", "watch", data)
        recommit, _ = run(aenv, "commit", data, "-m", "nochange")
        t_log, _ = run(aenv, "log")
        time.sleep(0.5)
        at_once = mutated_commit(aenv, agent.pid, data, seed, 1, wait=False)
        time.sleep(0.5)
        later = mutated_commit(aenv, agent.pid, data, seed, 2, wait=True)
        ws = os.path.join(work, "ws")
        run(aenv, "workspace", "create", ws, "--branch", "work")
        time.sleep(RACY_PAUSE)  # past the racy-clean second, as any real use is
        run(aenv, "agent", "watch", ws)
        ws_at_once = mutated_commit(aenv, agent.pid, ws, seed, 1, wait=False)
        time.sleep(0.5)
        ws_later = mutated_commit(aenv, agent.pid, ws, seed, 2, wait=True)
        return {
            "ingest_s": ingest,
            "log_plain_s": t_log_plain,
            "recommit_s": recommit,
            "log_s": t_log,
            "mutated": at_once,
            "mutated_caught_up": later,
            "workspace_mutated": ws_at_once,
            "workspace_mutated_caught_up": ws_later,
        }
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(30)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sock_dir, ignore_errors=True)


def main() -> None:
    gen = dataset.gen_module()
    size = int(gen.parse_size(os.environ.get("SIZE", "1GiB")))
    seed = int(os.environ.get("SEED", "42"))
    rounds = int(os.environ.get("ROUNDS", "3"))
    bench_dir = os.path.abspath(os.environ.get("BENCH_DIR") or os.path.join(tempfile.gettempdir(), "strongroom-bench"))
    pristine, _ = dataset.ensure_dataset(os.path.join(bench_dir, "cache"), size, seed)
    results = []
    for r in range(rounds):
        res = one_round(pristine, bench_dir, seed)
        print(f"  round {r + 1}: {json.dumps(res)}", flush=True)
        results.append(res)

    def med(get: object) -> float:
        return statistics.median(get(x) for x in results)  # type: ignore[operator]

    ingest = med(lambda x: x["ingest_s"])

    def mutation_row(label: str, key: str) -> tuple[str, str, str]:
        s = med(lambda x: x[key]["s"])
        cpu = med(lambda x: x[key]["agent_cpu_s"])
        read = max(x[key]["files_read"] for x in results)
        return (
            label,
            f"{s:.3f} s = {100 * s / ingest:.1f} % of ingest; files read by the commit: {read}; "
            f"agent CPU meanwhile {cpu:.2f} s",
            "< 5 %",
        )

    rows = [
        ("initial ingest, without the agent (the reference)", f"{ingest:.2f} s", ""),
        (
            "`log`: without / through the agent",
            f"{med(lambda x: x['log_plain_s']):.3f} s / {med(lambda x: x['log_s']):.3f} s",
            "",
        ),
        ("no-change re-commit through the agent", f"{med(lambda x: x['recommit_s']):.3f} s", ""),
        mutation_row("commit right after the 1 % mutation (agent, folder watched)", "mutated"),
        mutation_row("commit after a 1 % mutation, once the watch has caught up", "mutated_caught_up"),
        mutation_row("workspace commit right after the 1 % mutation (agent, workspace watched)", "workspace_mutated"),
        mutation_row("workspace commit after a 1 % mutation, watch caught up", "workspace_mutated_caught_up"),
    ]
    report.write_table(
        "agent",
        f"# strongroom agent benchmark: {dataset.size_label(size)} dataset, seed {seed}, {rounds} rounds (medians)",
        f"Run {time.strftime('%Y-%m-%dT%H:%M:%S%z')} on {os.cpu_count()} cores. Times are wall seconds of the "
        '`strongroom` command as a script sees them; "agent CPU" is what the agent spent from the start of the '
        "mutation to the end of the commit (reading ahead, then the commit itself).",
        rows,
    )


if __name__ == "__main__":
    main()
