#!/usr/bin/env python3
"""Issue 6 figures on the benchmark dataset, against a local S3 server (moto's, over real HTTP, started and
stopped here as a separate process): initial push, push of an unchanged repository (time; no pack or index
data sent), push after the 1 % mutation (bytes sent as % of the repository), and `backup verify` MB/s.

    .venv/bin/python bench/backup.py            # SIZE (default 1GiB), SEED (42), BENCH_DIR as bench/run.py
    .venv/bin/python bench/run.py --backup      # the same, through the harness

Every timing is the wall time of the whole `strongroom` command (start-up, passphrase KDF, bucket checks
included); the JSON each command prints gives bytes sent and its own seconds. Results go to
bench/results/backup-latest.{json,md} only. Never run it while tests run: both compete for the 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset
import report
import srcli

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_BIN = os.path.join(os.path.dirname(HERE), ".venv", "bin")
SR = [sys.executable, "-m", "strongroom"]
BUCKET = "strongroom-bench"


def run(env: dict[str, str], *args: str) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = subprocess.run([*SR, "--json", *args], env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"strongroom {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    try:
        return elapsed, json.loads(out.stdout) if out.stdout.strip() else None
    except ValueError:
        return elapsed, out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_s3(port: int) -> subprocess.Popen[bytes]:
    exe = os.path.join(VENV_BIN, "moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the local S3 server did not start")


def make_bucket(endpoint: str) -> None:
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                      aws_secret_access_key="bench",
                      config=Config(request_checksum_calculation="when_required"))
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)


def main() -> None:
    if "PYTEST_CURRENT_TEST" in os.environ:
        raise SystemExit("the benchmark never runs inside the test suite")
    gen = dataset.gen_module()
    size = int(gen.parse_size(os.environ.get("SIZE", "1GiB")))
    seed = int(os.environ.get("SEED", "42"))
    bench_dir = os.path.abspath(os.environ.get("BENCH_DIR") or os.path.join(tempfile.gettempdir(), "strongroom-bench"))
    pristine, _ = dataset.ensure_dataset(bench_dir, size, seed)
    work = tempfile.mkdtemp(prefix="backup-", dir=bench_dir)
    data = os.path.join(work, "data")
    subprocess.run(["cp", "-a", pristine, data], check=True)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = srcli.env_for(
        work,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.path.join(work, "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=os.path.join(work, "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    server = start_s3(port)
    res: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "size": size,
        "seed": seed,
        "dataset_bytes": dataset.tree_bytes(data),
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "server": "moto_server (moto[server]) on 127.0.0.1, separate process, in memory",
    }
    try:
        make_bucket(endpoint)
        run(env, "init")
        res["ingest_s"], _ = run(env, "commit", data, "-m", "v1")
        run(env, "remote", "add", "off", f"s3://{BUCKET}/bench", "--endpoint", endpoint, "--region", "us-east-1",
            "--lock", "governance", "--retain-days", "1")
        wall, first = run(env, "backup", "push", "off")
        res["push_initial"] = {"wall_s": round(wall, 2), **first}
        unchanged = []
        for _ in range(3):  # each push seals its own audit event afterwards; the next push sends that
            wall, rep = run(env, "backup", "push", "off")
            unchanged.append({"wall_s": round(wall, 2), **rep})
        res["push_unchanged"] = unchanged
        res["mutation"] = dataset.mutate(data, seed, 1)
        res["commit_mutated_s"], _ = run(env, "commit", data, "-m", "v2")
        wall, after = run(env, "backup", "push", "off")
        res["push_after_mutation"] = {"wall_s": round(wall, 2), **after}
        wall, drill = run(env, "backup", "verify", "off")
        drill.pop("affected", None)
        res["verify"] = {"wall_s": round(wall, 2), **drill}
        wall, drill = run(env, "backup", "verify", "off", "--sample", "5%")
        drill.pop("affected", None)
        res["verify_sample_5pct"] = {"wall_s": round(wall, 2), **drill}
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    med_wall = sorted(p["wall_s"] for p in res["push_unchanged"])[1]
    med_engine = sorted(p["seconds"] for p in res["push_unchanged"])[1]
    data_sent = max(p["data_bytes_sent"] for p in res["push_unchanged"])
    other_sent = max(p["bytes_sent"] for p in res["push_unchanged"])
    after = res["push_after_mutation"]
    share = 100 * after["bytes_sent"] / after["total_bytes"]
    v = res["verify"]
    rate = v["bytes_checked"] / v["seconds"] / 1e6 if v["seconds"] else 0.0
    rate_wall = v["bytes_checked"] / v["wall_s"] / 1e6
    first = res["push_initial"]
    res["summary"] = {
        "push_unchanged_wall_s_median": med_wall,
        "push_unchanged_engine_s_median": med_engine,
        "push_unchanged_data_bytes_sent_max": data_sent,
        "push_unchanged_bytes_sent_max": other_sent,
        "push_after_mutation_bytes_sent": after["bytes_sent"],
        "push_after_mutation_pct_of_repository": round(share, 2),
        "verify_mb_s": round(rate, 1),
        "verify_mb_s_wall": round(rate_wall, 1),
    }
    rows = [
        ("initial push", f"{first['wall_s']:.1f} s; {first['bytes_sent'] / 1e6:.1f} MB sent, {first['objects']} "
         f"objects ({first['bytes_sent'] / 1e6 / first['wall_s']:.0f} MB/s)", ""),
        ("push of an unchanged repository (median of 3)",
         f"{med_wall:.2f} s (push itself {med_engine:.2f} s); pack/index bytes sent: {data_sent}; "
         f"other bytes sent: ≤ {other_sent} (the previous command's audit event)", "< 2 s, no object data"),
        ("push after the 1 % mutation",
         f"{after['bytes_sent'] / 1e6:.1f} MB sent = {share:.2f} % of the repository "
         f"({after['total_bytes'] / 1e6:.1f} MB); {after['wall_s']:.1f} s", "< 3 %"),
        ("`backup verify` (full: download, hash, decrypt, re-hash)",
         f"{rate:.1f} MB/s ({v['bytes_checked'] / 1e6:.1f} MB in {v['seconds']:.1f} s; whole command "
         f"{v['wall_s']:.1f} s = {rate_wall:.1f} MB/s); ok={v['ok']}", "stated"),
        ("`backup verify --sample 5%`", f"{res['verify_sample_5pct']['wall_s']:.1f} s", ""),
    ]
    report.write_table(
        "backup",
        f"# strongroom backup benchmark: {dataset.size_label(size)} dataset, seed {seed}",
        f"Run {res['started']}; dataset {res['dataset_bytes']:,} bytes; {res['cpus']} cores; S3: {res['server']}; "
        f"load average {res['loadavg_start'][0]} at start, {res['loadavg_end'][0]} at end (other users of the "
        f"machine); ingest {res['ingest_s']:.1f} s; mutation: {json.dumps(res['mutation'])[:160]}",
        rows,
    )
    with open(os.path.join(HERE, "results", "backup-latest.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
