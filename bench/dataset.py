"""The benchmark dataset: generated once by ../shared/bench/gen_dataset.py, cached, and compared file by file."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from types import ModuleType

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "bench", "gen_dataset.py"))


def gen_module() -> ModuleType:
    """gen_dataset.py imported as a module (used for its parse_size; never copied)."""
    spec = importlib.util.spec_from_file_location("gen_dataset", GEN)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {GEN}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def size_label(n: int) -> str:
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n % mult == 0:
            return f"{n // mult}{unit}"
    return f"{n}B"


def _sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(root: str) -> dict[str, object]:
    """Cheap identity of a tree: every relative path with its size and nanosecond mtime (no content read)."""
    h = hashlib.sha256()
    files = total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            files += 1
            total += st.st_size
    return {"files": files, "bytes": total, "sha256": h.hexdigest()}


def ensure_dataset(cache_root: str, size: int, seed: int) -> tuple[str, dict[str, object]]:
    """Return (path, manifest) of the pristine dataset, generating it unless a matching copy is cached."""
    name = f"dataset-{size_label(size)}-seed{seed}"
    path = os.path.join(cache_root, name)
    manifest_path = path + ".manifest.json"
    gen_sha = _sha256_file(GEN)
    os.makedirs(cache_root, exist_ok=True)
    if os.path.isdir(path) and os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("gen_sha256") == gen_sha and manifest.get("size") == size and manifest.get("seed") == seed:
            fp = fingerprint(path)
            if fp == manifest.get("fingerprint"):
                print(f"dataset: reusing {path} ({fp['files']} files, {fp['bytes']:,} bytes)", flush=True)
                return path, manifest
            print("dataset: cached copy does not match its manifest; regenerating", flush=True)
        else:
            print("dataset: cached copy was made with other parameters or generator; regenerating", flush=True)
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    print(f"dataset: generating {size_label(size)} seed {seed} into {path} ...", flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, GEN, "generate", path, "--size", str(size), "--seed", str(seed), "--force"],
        check=True,
        capture_output=True,
        text=True,
    )
    gen_seconds = time.perf_counter() - t0
    manifest = {
        "size": size,
        "seed": seed,
        "gen_sha256": gen_sha,
        "gen_seconds": round(gen_seconds, 1),
        "gen_stats": json.loads(out.stdout),
        "fingerprint": fingerprint(path),
    }
    with open(manifest_path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(manifest_path + ".tmp", manifest_path)
    print(f"dataset: generated in {gen_seconds:.1f} s", flush=True)
    return path, manifest


def mutate(root: str, seed: int, rnd: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, GEN, "mutate", root, "--seed", str(seed), "--round", str(rnd)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def tree_bytes(root: str) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _same_content(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1 << 20)
            y = fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def compare_trees(expected: str, got: str) -> dict[str, object]:
    """Byte-for-byte comparison of two trees: paths, sizes, file modes, mtimes (ns) and content."""

    def scan(root: str) -> tuple[dict[str, os.stat_result], set[str]]:
        files: dict[str, os.stat_result] = {}
        dirs: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                dirs.add(os.path.relpath(os.path.join(dirpath, d), root))
            for name in filenames:
                p = os.path.join(dirpath, name)
                files[os.path.relpath(p, root)] = os.lstat(p)
        return files, dirs

    if not os.path.isdir(got):
        return {"ok": False, "error": f"{got} does not exist"}
    ef, ed = scan(expected)
    gf, gd = scan(got)
    missing = sorted(set(ef) - set(gf))
    extra = sorted(set(gf) - set(ef))
    content, size, mode, mtime = [], [], [], []
    for rel in sorted(set(ef) & set(gf)):
        a, b = ef[rel], gf[rel]
        if a.st_size != b.st_size:
            size.append(rel)
            continue
        if a.st_mode != b.st_mode:
            mode.append(rel)
        if a.st_mtime_ns != b.st_mtime_ns:
            mtime.append(rel)
        if not _same_content(os.path.join(expected, rel), os.path.join(got, rel)):
            content.append(rel)
    result: dict[str, object] = {
        "files": len(ef),
        "missing": missing[:10],
        "extra": extra[:10],
        "missing_dirs": sorted(ed - gd)[:10],
        "size_differs": size[:10],
        "content_differs": content[:10],
        "mode_differs": mode[:10],
        "mtime_differs": mtime[:10],
        "counts": {
            "missing": len(missing),
            "extra": len(extra),
            "missing_dirs": len(ed - gd),
            "size": len(size),
            "content": len(content),
            "mode": len(mode),
            "mtime": len(mtime),
        },
    }
    result["ok"] = not (missing or extra or size or content or mode or mtime or (ed - gd))
    return result
