#!/usr/bin/env python3
"""`make demo`: strongroom end to end on a small generated dataset, narrated for a newcomer.

Creates a dataset with ../shared/bench/gen_dataset.py, puts it into an encrypted repository, changes it,
commits again, shows log, diff and stats, restores both versions and compares them byte for byte, then
flips one byte inside a pack file and shows `verify --full` naming the damaged files.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT.parent / "shared" / "bench" / "gen_dataset.py"
STRONGROOM = [sys.executable, "-m", "strongroom"]


def say(text: str) -> None:
    print("\n" + textwrap.fill(text, 100), flush=True)


def run(*args: str, env: dict[str, str], check: bool = True) -> int:
    print(f"$ strongroom {' '.join(args)}", flush=True)
    code = subprocess.run([*STRONGROOM, *args], env=env).returncode
    if check and code != 0:
        sys.exit(f"demo: `strongroom {' '.join(args)}` failed with exit code {code}")
    return code


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def main() -> None:
    if not GEN.is_file():
        sys.exit(f"demo: the dataset generator is missing ({GEN}); the shared folder must sit beside the project")
    work = Path(tempfile.mkdtemp(prefix="strongroom-demo-"))
    repo, data, pristine = work / "repo", work / "dataset", work / "dataset-v1"
    env = dict(os.environ)
    env.update(
        STRONGROOM_REPO=str(repo),
        STRONGROOM_PASSPHRASE="demo passphrase: use a prompt or STRONGROOM_PASSPHRASE_FILE for real data",
        STRONGROOM_STATE_DIR=str(work / "state"),
        STRONGROOM_CACHE_DIR=str(work / "cache"),
        STRONGROOM_USER="demo-scientist",
    )
    try:
        say(f"1. A small ML-like dataset (images, CSV/JSONL tables, float shards, some duplicates) in {data}.")
        subprocess.run([sys.executable, str(GEN), "generate", str(data), "--size", "48MiB", "--seed", "7"],
                       check=True, stdout=subprocess.DEVNULL)
        shutil.copytree(data, pristine, symlinks=True)

        say("2. Create an encrypted repository. A random master key is wrapped by a key derived from the "
            "passphrase with Argon2id; nothing in the repository is readable without it.")
        run("init", env=env)

        say("3. Commit the folder as the first version. Files are cut into content-defined chunks, named by a "
            "keyed BLAKE3 hash, compressed with zstd, sealed with AES-256-GCM and gathered into pack files.")
        run("commit", str(data), "-m", "raw images and tables", env=env)

        say("4. Commit again without changes: unchanged files are recognised by size, inode and timestamps and "
            "are not read at all.")
        run("commit", str(data), "-m", "no change", env=env)

        say("5. Change about 1 % of the data (rows appended, images added, deleted and renamed) and commit.")
        subprocess.run([sys.executable, str(GEN), "mutate", str(data), "--seed", "7", "--round", "1"],
                       check=True, stdout=subprocess.DEVNULL)
        run("commit", str(data), "-m", "cleaned: new rows, relabelled images", env=env)

        say("6. The history, what changed between the first and the last version, and the storage figures.")
        run("log", env=env)
        run("diff", "main~2", "main", env=env)
        run("stats", env=env)

        say("7. Restore both versions into fresh folders and compare them with the originals, byte for byte.")
        run("checkout", "main~2", str(work / "restore-v1"), env=env)
        run("checkout", "main", str(work / "restore-v3"), env=env)
        ok1 = same_tree(pristine, work / "restore-v1")
        ok3 = same_tree(data, work / "restore-v3")
        print(f"first version identical to the original: {ok1}; last version identical: {ok3}")
        if not (ok1 and ok3):
            sys.exit("demo: a restored version differs from its original")

        say("8. A full verification decrypts every chunk and checks it against its id.")
        run("verify", "--full", env=env)

        packs = sorted((repo / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
        victim = packs[-1]
        with open(victim, "r+b") as f:
            f.seek(victim.stat().st_size // 3)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x01]))
        say(f"9. Now flip one bit in the middle of the largest pack file ({victim.name[:16]}...), as a failing disk "
            "or an attacker would. `verify --full` finds it, names every damaged version and file, and exits 1.")
        code = run("verify", "--full", env=env, check=False)
        print(f"exit code: {code} (1 = the command ran and found a problem)")
        if code != 1:
            sys.exit("demo: verify did not report the damage")
        say("Done. Everything the demo made is in a temporary folder and is now removed.")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
