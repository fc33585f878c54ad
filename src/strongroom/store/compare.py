"""Compare a folder with a version, byte for byte in effect: the gate a training job runs before it reads
its data (``verify --before-train``).

Every regular file of the folder is read in full and cut and hashed exactly as a commit would (the
repository's seeded FastCDC chunker and keyed BLAKE3 ids), and its chunk-id list compared with the one the
version's tree records: equal lists mean equal content (up to the keyed hash). Nothing is decrypted. Files
of equal size only are read; a size difference is already a difference. Symlinks compare their targets.
Large folders are read by forked workers (store.parallel), as a commit does.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strongroom.core.model import DIR, FILE, SYMLINK, Entry
from strongroom.errors import InputError, UnreadableSource
from strongroom.store import parallel
from strongroom.store.chunker import Chunker
from strongroom.store.repository import Repository
from strongroom.store.restore import walk

INLINE_BYTES = 32 << 20
_KIND = {FILE: "file", DIR: "folder", SYMLINK: "symlink"}


@dataclass(frozen=True)
class Difference:
    path: str
    kind: str  # missing | extra | changed | type
    detail: str


@dataclass
class Comparison:
    differences: list[Difference]
    files: int = 0
    bytes: int = 0


def _scan(root: str) -> dict[str, tuple[str, os.stat_result]]:
    """Every non-folder below root: relative path → (kind, lstat)."""
    out: dict[str, tuple[str, os.stat_result]] = {}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        path = os.path.join(root, rel_dir) if rel_dir else root
        try:
            with os.scandir(path) as it:
                items = list(it)
        except OSError as e:
            raise UnreadableSource(path, e.strerror or str(e)) from None
        for item in items:
            rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
            st = item.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = (FILE, st)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = (SYMLINK, st)
            else:
                out[rel] = ("special", st)
    return out


_STATE: dict[str, Any] = {}


def _hash_files(jobs: list[tuple[str, str, int, tuple[bytes, ...]]], send: Callable[[tuple[Any, ...]], None]) -> None:
    repo: Repository = _STATE["repo"]
    chunker = Chunker(repo.chunker_params, repo.chunker_seed)
    for rel, path, _size, expected in jobs:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            send(("diff", rel, "changed", f"unreadable: {e.strerror or e}"))
            continue
        ids: list[bytes] = []
        n = 0
        try:
            for chunk in chunker.cut_fd(fd):
                ids.append(repo.hasher(chunk))
                n += len(chunk)
        except OSError as e:
            send(("diff", rel, "changed", f"unreadable: {e.strerror or e}"))
            continue
        finally:
            os.close(fd)
        if tuple(ids) != expected:
            send(("diff", rel, "changed", "content differs"))
        send(("read", n))


def compare(
    repo: Repository, tree_id: bytes, folder: str, workers: int = 0, progress: Callable[[int, int], None] | None = None
) -> Comparison:
    root = os.path.abspath(folder)
    if not os.path.isdir(root):
        raise InputError(f"not a folder: {folder}")
    expected: dict[str, Entry] = {rel: e for rel, e in walk(repo, tree_id) if e.type != DIR}
    actual = _scan(root)
    out = Comparison([])
    jobs: list[tuple[str, str, int, tuple[bytes, ...]]] = []
    for rel, e in sorted(expected.items()):
        if rel not in actual:
            kind = (
                "folder"
                if os.path.isdir(os.path.join(root, rel)) and not os.path.islink(os.path.join(root, rel))
                else ""
            )
            out.differences.append(
                Difference(
                    rel, "type" if kind else "missing", f"expected a {_KIND[e.type]}, found a folder" if kind else ""
                )
            )
            continue
        kind, st = actual[rel]
        if kind != e.type:
            found = _KIND.get(kind, "special file")
            out.differences.append(Difference(rel, "type", f"expected a {_KIND[e.type]}, found a {found}"))
        elif kind == SYMLINK:
            out.files += 1
            if os.readlink(os.path.join(root, rel)) != e.target:
                out.differences.append(Difference(rel, "changed", "symlink target differs"))
        else:
            out.files += 1
            if st.st_size != e.size:
                out.differences.append(Difference(rel, "changed", f"size {st.st_size}, expected {e.size}"))
            else:
                jobs.append((rel, os.path.join(root, rel), st.st_size, e.chunks))
    for rel, (kind, _) in sorted(actual.items()):
        if rel not in expected:
            out.differences.append(Difference(rel, "extra", _KIND.get(kind, "special file")))
    total = sum(j[2] for j in jobs)
    n = 1 if total < INLINE_BYTES else (workers or parallel.default_workers())
    shares = parallel.deal(jobs, lambda j: j[2], n)

    def handle(msg: tuple[Any, ...]) -> None:
        if msg[0] == "diff":
            out.differences.append(Difference(msg[1], msg[2], msg[3]))
        elif msg[0] == "read":
            out.bytes += msg[1]
            if progress:
                progress(1, msg[1])

    _STATE["repo"] = repo
    try:
        parallel.run(shares, _hash_files, handle)
    finally:
        _STATE.clear()
    out.differences.sort(key=lambda d: (d.path, d.kind))
    return out
