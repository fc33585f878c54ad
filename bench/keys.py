#!/usr/bin/env python3
"""Issue 3 figures on the benchmark dataset: ingest with a passphrase + HSM KEK (double encryption) against
passphrase only, `key rotate` (the operation, and the whole command), `key reencrypt --retire` throughput.

    .venv/bin/python bench/keys.py          # SIZE (default 1GiB), SEED (42), BENCH_DIR as bench/run.py

Needs SoftHSM2 (scripts/ensure-softhsm.sh installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset
import report
import srcli

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "bench-pin-5521"
ROUNDS = 3


def run(env: dict[str, str], *args: str) -> tuple[float, str]:
    return srcli.run(env, *args, sync=False)


def softhsm_token(work: str) -> dict[str, str]:
    subprocess.run(["bash", os.path.join(os.path.dirname(HERE), "scripts", "ensure-softhsm.sh")], check=True)
    root = os.path.join(work, "hsm")
    os.makedirs(os.path.join(root, "tokens"))
    conf = os.path.join(root, "softhsm2.conf")
    with open(conf, "w") as f:
        f.write(f"directories.tokendir = {root}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", PIN, "--so-pin", "0000"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    return {"SOFTHSM2_CONF": conf, "STRONGROOM_PKCS11_PIN": PIN}


def main() -> None:
    gen = dataset.gen_module()
    size = int(gen.parse_size(os.environ.get("SIZE", "1GiB")))
    seed = int(os.environ.get("SEED", "42"))
    bench_dir = os.path.abspath(os.environ.get("BENCH_DIR") or os.path.join(tempfile.gettempdir(), "strongroom-bench"))
    data, _ = dataset.ensure_dataset(os.path.join(bench_dir, "cache"), size, seed)
    work = tempfile.mkdtemp(prefix="keys-", dir=bench_dir)
    hsm_env = softhsm_token(work)
    rows: list[tuple[str, str, str]] = []

    def env_for(name: str) -> dict[str, str]:
        return srcli.env_for(work, name, **hsm_env)

    try:
        plain_times, double_times = [], []
        hsm_args = ["--kek", "passphrase", "--kek", "pkcs11", "--pkcs11-module", MODULE, "--pkcs11-token", "bench"]
        for r in range(ROUNDS):  # alternate, so drift in the machine's speed hits both alike
            for name, times, args in (("plain", plain_times, []), ("double", double_times, hsm_args)):
                env = env_for(f"{name}{r}")
                run(env, "init", *args, *(["--pkcs11-key-label", f"kek{r}"] if args else []))
                elapsed, _ = run(env, "commit", data, "-m", "v1")
                times.append(elapsed)
        plain, double = min(plain_times), min(double_times)
        rows.append((
            "ingest, passphrase + HSM KEK vs passphrase only",
            f"{double:.2f} s vs {plain:.2f} s ({100 * (double - plain) / plain:+.1f} %), best of {ROUNDS} "
            f"(rounds: {', '.join(f'{d:.2f}/{p:.2f}' for d, p in zip(double_times, plain_times, strict=True))})",
            "within 5 %",
        ))  # fmt: skip

        env = env_for("plain0")
        t_log, _ = run(env, "log")
        t_rotate, out = run(env, "--json", "key", "rotate")
        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
        from strongroom import Strongroom
        from strongroom.service import keys

        lib = Strongroom.open(env["STRONGROOM_REPO"], "bench passphrase", env=env)
        repo = lib._session.open()
        t0 = time.perf_counter()
        keys.rotate(lib._session)
        inproc = time.perf_counter() - t0
        t0 = time.perf_counter()
        repo.rotate_key()
        bare = time.perf_counter() - t0
        rows.append((
            "key rotate (in process, repository open): with its audit event and checkpoint / the key change alone",
            f"{inproc * 1000:.1f} ms / {bare * 1000:.1f} ms",
            "< 100 ms",
        ))  # fmt: skip
        rows.append(("key rotate (whole command) / `log`", f"{t_rotate:.2f} s / {t_log:.2f} s", ""))
        t_re, out = run(env, "--json", "key", "reencrypt", "--retire", "1")
        res = json.loads(out)
        rows.append((
            "key reencrypt --retire 1 (every pack rewritten)",
            f"{res['bytes_rewritten'] / 1e6:.0f} MB in {res['seconds']:.2f} s = {res['mb_per_s']:.0f} MB/s "
            f"(whole command {t_re:.2f} s)",
            "stated",
        ))  # fmt: skip
        t_verify, _ = run(env, "verify", "--full")
        rows.append(("verify --full after reencrypt", f"{t_verify:.2f} s, ok", ""))
        total = dataset.tree_bytes(data)
        report.write_table(
            "keys",
            f"# strongroom keys benchmark: {dataset.size_label(size)} dataset, seed {seed}",
            f"Run {time.strftime('%Y-%m-%dT%H:%M:%S%z')}; dataset {total:,} bytes; SoftHSM2 token; "
            f"{os.cpu_count()} cores.",
            rows,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
