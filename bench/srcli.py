"""The strongroom command as the extra benchmarks (snapshots, keys, agent, backup) run it: a private
environment under one work folder, and a timed call that stops the benchmark on a failure."""

from __future__ import annotations

import os
import subprocess
import sys
import time

SR = [sys.executable, "-m", "strongroom"]
PASSPHRASE = "bench passphrase"


def env_for(work: str, repo: str = "repo", **extra: str) -> dict[str, str]:
    """os.environ without STRONGROOM_* (and AWS_*) settings of the caller's, pointed at ``work``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STRONGROOM_"))}
    env.update(
        STRONGROOM_REPO=os.path.join(work, repo),
        STRONGROOM_PASSPHRASE=PASSPHRASE,
        STRONGROOM_STATE_DIR=os.path.join(work, "state"),
        STRONGROOM_CACHE_DIR=os.path.join(work, "cache"),
        STRONGROOM_CONFIG_DIR=os.path.join(work, "config"),
        STRONGROOM_KEYSTORE=os.path.join(work, "keystore"),
        **extra,
    )
    return env


def run(env: dict[str, str], *args: str, sync: bool = True, exe: list[str] | None = None) -> tuple[float, str]:
    """(wall seconds, standard output) of one command. ``sync`` first (untimed), as bench/run.py does, so
    that no step pays for writing back the one before."""
    if sync:
        os.sync()
    t0 = time.perf_counter()
    out = subprocess.run([*(exe or SR), *args], env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"strongroom {' '.join(args)} failed: {out.stderr.strip()}")
    return elapsed, out.stdout
