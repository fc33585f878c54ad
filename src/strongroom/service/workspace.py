"""Workspaces: writable working folders tied to a branch. The original versions are never modified.

A workspace folder holds the files asked for (sparse by glob) and a small `.strongroom-workspace.json`
(repository, branch, base version, paths). Its file cache is primed at creation, so `status` and `commit`
read only files that changed. `switch` rewrites only the files that differ between two versions; an
interrupted switch is recorded in the metadata and completed by running it again.

The client registers every workspace it materialises (per repository, in its state folder). `create` and
`switch` reflink a file that another registered workspace of the repository holds unchanged, where the
filesystem supports it (store/reflink.py), and write it from the repository otherwise; never a hard link.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable

from strongroom.core.diff import diff_flat
from strongroom.core.model import FILE, SYMLINK, Entry
from strongroom.errors import InputError, ProblemFound
from strongroom.service.context import Session, audited
from strongroom.service.merge import refuse_scoped
from strongroom.service.results import CommitSummary, DiffEntry, WorkspaceInfo
from strongroom.service.versions import commit as commit_version
from strongroom.service.versions import resolve
from strongroom.store import lock
from strongroom.store.chunker import Chunker
from strongroom.store.clientstate import WorkspaceRegistry
from strongroom.store.filecache import CachedFile, FileCache
from strongroom.store.reflink import Donors, Sharer, checkout_shared
from strongroom.store.repository import Repository
from strongroom.store.restore import checkout as restore_checkout
from strongroom.store.restore import matches, write_file
from strongroom.store.treebuild import flatten

META = ".strongroom-workspace.json"


def _meta_path(folder: str) -> str:
    return os.path.join(folder, META)


def read_meta(folder: str) -> dict[str, object]:
    if not os.path.isdir(folder):
        raise InputError(f"workspace folder is missing (deleted or moved?): {folder}")
    try:
        with open(_meta_path(folder), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != "sr-workspace/1":
            raise ValueError
        return dict(meta)
    except FileNotFoundError:
        raise InputError(f"not a workspace: {folder} (no {META})") from None
    except (OSError, ValueError):
        raise InputError(f"workspace metadata is unreadable: {_meta_path(folder)}") from None


def is_workspace(folder: str) -> bool:
    return os.path.isfile(_meta_path(folder))


def _write_meta(folder: str, meta: dict[str, object]) -> None:
    tmp = _meta_path(folder) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, _meta_path(folder))


def _paths(meta: dict[str, object]) -> list[str]:
    value = meta.get("paths") or []
    return [str(p) for p in value] if isinstance(value, list) else []


def _sparse(flat: dict[str, Entry], paths: list[str]) -> dict[str, Entry]:
    return {p: e for p, e in flat.items() if not paths or matches(p, paths)}


def _register(session: Session, repo_id: str, folder: str, add: bool = True) -> None:
    """Add or remove a folder in the client's workspace registry. Best effort: an unwritable state folder
    costs reflink sharing only, so it does not fail a workspace that is otherwise done."""
    registry = WorkspaceRegistry(session.settings.state_dir, repo_id)
    with contextlib.suppress(OSError):
        if add:
            registry.add(folder)
        else:
            registry.remove(folder)


def _is_workspace_of(repo_id: str) -> Callable[[str], bool]:
    def alive(folder: str) -> bool:
        try:
            return read_meta(folder).get("repo_id") == repo_id
        except InputError:
            return False  # folder or metadata gone: drop it from the registry

    return alive


def _donors(session: Session, repo: Repository, folder: str) -> Donors:
    """The files of the repository's other registered workspaces on the filesystem of ``folder``, by
    content, from their file caches (a donor is used only while its stat still matches its entry)."""
    donors = Donors()
    me = os.path.abspath(folder)
    existing = me
    while not os.path.isdir(existing):  # create makes the folder later: its filesystem is its parent's
        existing = os.path.dirname(existing)
    here = os.stat(existing)
    registry = WorkspaceRegistry(session.settings.state_dir, repo.config.repo_id)
    try:
        others = registry.folders(_is_workspace_of(repo.config.repo_id))
    except OSError:
        others = []  # an unreadable registry: no sharing
    for other in others:
        cache = FileCache(session.file_cache_path(repo, other), repo.sealer, repo.context)
        try:
            st = os.stat(other)
            if st.st_dev != here.st_dev or (existing == me and st.st_ino == here.st_ino):
                continue  # reflinks stay within one filesystem; not the folder itself (under another name)
            saved_ns = os.stat(cache.path).st_mtime_ns
        except OSError:
            continue
        cache.load()
        donors.add_folder(other, cache.entries, saved_ns)
    return donors


def _prime_cache(session: Session, repo: Repository, folder: str, files: dict[str, Entry]) -> None:
    cache = FileCache(session.file_cache_path(repo, folder), repo.sealer, repo.context)
    cache.load()
    entries = dict(cache.entries)
    for rel, e in files.items():
        if e.type != FILE:
            continue
        try:
            st = os.lstat(os.path.join(folder, rel))
        except FileNotFoundError:
            entries.pop(rel, None)
            continue
        entries[rel] = CachedFile(st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, e.chunks)
    cache.save(entries)


@audited("workspace.create", branch="branch", version="from_version", paths="paths", folder="folder")
def create(session: Session, folder: str, branch: str, from_version: str | None, paths: list[str]) -> WorkspaceInfo:
    from strongroom.service.branches import branch_create

    repo = session.open()
    refs = repo.read_refs()
    # A workspace rehashes and recommits its files under the repository's keys: not for a scope's versions.
    refuse_scoped(repo, "a workspace", refs.branches.get(branch) or resolve(repo, from_version or "main"))
    if branch in refs.branches:
        if from_version is not None and resolve(repo, from_version) != refs.branches[branch]:
            raise InputError(f"branch {branch} exists: leave out --from, or name a new branch")
        base = refs.branches[branch]
    else:
        base = bytes.fromhex(branch_create(session, branch, from_version).version)
    session.audit_note(version=base.hex())
    tree = repo.load_commit(base).tree
    donors = _donors(session, repo, folder)
    reflinked = 0
    with lock.read_lock(repo.backend, "workspace create"):
        if donors:
            res, reflinked = checkout_shared(repo, tree, folder, paths or None, donors)
        else:
            res = restore_checkout(repo, tree, folder, paths or None)
    meta: dict[str, object] = {
        "format": "sr-workspace/1",
        "repository": os.path.abspath(session.repo_path()),
        "repo_id": repo.config.repo_id,
        "branch": branch,
        "base": base.hex(),
        "paths": paths,
        "created_ns": time.time_ns(),
    }
    _write_meta(folder, meta)
    files, _ = flatten(repo, tree)
    _prime_cache(session, repo, folder, _sparse(files, paths))
    _register(session, repo.config.repo_id, folder)
    return WorkspaceInfo(os.path.abspath(folder), branch, base.hex(), paths, res.files, res.bytes, None, reflinked)


def _scan_flat(session: Session, repo: Repository, folder: str) -> dict[str, Entry]:
    """The folder as a flat map; unchanged files come from the cache, changed ones are read and hashed."""
    cache = FileCache(session.file_cache_path(repo, folder), repo.sealer, repo.context)
    cache.load()
    start = time.time_ns()
    chunker = Chunker(repo.chunker_params, repo.chunker_seed)
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, folder)
            if rel == META or rel.startswith(META + ".tmp"):
                continue
            st = os.lstat(full)
            mode = st.st_mode & 0o7777
            if os.path.islink(full):
                out[rel] = Entry(name, SYMLINK, mode, st.st_mtime_ns, target=os.readlink(full))
                continue
            chunks = cache.lookup(rel, st, start)
            if chunks is None:
                fd = os.open(full, os.O_RDONLY)
                try:
                    chunks = tuple(repo.hasher(c) for c in chunker.cut_fd(fd))
                finally:
                    os.close(fd)
            out[rel] = Entry(name, FILE, mode, st.st_mtime_ns, st.st_size, chunks=chunks)
    return out


@audited("workspace.status", folder="folder")
def status(session: Session, folder: str) -> tuple[WorkspaceInfo, list[DiffEntry]]:
    meta = read_meta(folder)
    repo = session.open()
    if meta.get("repo_id") != repo.config.repo_id:
        raise InputError(f"{folder} is a workspace of another repository")
    paths = _paths(meta)
    base = bytes.fromhex(str(meta["base"]))
    base_files, _ = flatten(repo, repo.load_commit(base).tree)
    current = _scan_flat(session, repo, folder)
    changes = diff_flat(_sparse(base_files, paths), current)
    info = WorkspaceInfo(
        os.path.abspath(folder),
        str(meta["branch"]),
        base.hex(),
        paths,
        len(current),
        0,
        str(meta["switching_to"]) if meta.get("switching_to") else None,
    )
    return info, [
        DiffEntry(c.status, c.path, c.size, c.old_path if c.status == "renamed" else None, c.old_size) for c in changes
    ]


@audited("workspace.commit", folder="folder", branch="branch")
def commit(session: Session, folder: str, message: str, branch: str | None, wait: float) -> CommitSummary:
    meta = read_meta(folder)
    if meta.get("switching_to"):
        raise ProblemFound(f"an interrupted switch to {meta['switching_to']} must be completed first (run it again)")
    ws_branch = str(meta["branch"])
    if branch is not None and branch != ws_branch:
        raise InputError(f"{folder} is a workspace of branch {ws_branch}, not {branch}")
    repo = session.open()
    base = bytes.fromhex(str(meta["base"]))
    paths = _paths(meta)
    overlay = None
    if paths:
        files, folders = flatten(repo, repo.load_commit(base).tree)
        overlay = (
            {p: e for p, e in files.items() if not matches(p, paths)},
            {p: e for p, e in folders.items() if not any(matches(f, paths) for f in files if f.startswith(p + "/"))},
        )
    res = commit_version(
        session, folder, message, ws_branch, wait=wait, pinned_parent=base, overlay=overlay, always_ignore=(META,)
    )
    meta["base"] = res.id
    _write_meta(folder, meta)
    return res


@audited("workspace.switch", folder="folder", version="version")
def switch(session: Session, folder: str, version: str) -> WorkspaceInfo:
    meta = read_meta(folder)
    repo = session.open()
    target = resolve(repo, version)
    session.audit_note(version=target.hex())
    refuse_scoped(repo, "a workspace", target)
    paths = _paths(meta)
    resuming = meta.get("switching_to") == target.hex()
    if meta.get("switching_to") and not resuming:
        raise ProblemFound(f"an interrupted switch to {meta['switching_to']} must be completed first (run it again)")
    if not resuming:
        _, changes = status(session, folder)
        if changes:
            raise ProblemFound(f"{folder} has {len(changes)} uncommitted change(s); commit or discard them first")
    base = bytes.fromhex(str(meta["base"]))
    old = _sparse(flatten(repo, repo.load_commit(base).tree)[0], paths)
    new_files, new_dirs = flatten(repo, repo.load_commit(target).tree)
    new = _sparse(new_files, paths)
    meta["switching_to"] = target.hex()
    _write_meta(folder, meta)
    current = _scan_flat(session, repo, folder) if resuming else old
    written = 0
    donors = _donors(session, repo, folder)
    sharer = Sharer(repo, donors, folder) if donors else None
    with lock.read_lock(repo.backend, "workspace switch"):
        for rel in sorted(set(current) - set(new)):
            os.unlink(os.path.join(folder, rel))
        for rel, e in sorted(new.items()):
            have = current.get(rel)
            if have is not None and (have.type, have.chunks, have.target, have.mode) == (
                e.type,
                e.chunks,
                e.target,
                e.mode,
            ):
                continue
            path = os.path.join(folder, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.lexists(path):
                os.unlink(path)
            if e.type == SYMLINK:
                os.symlink(e.target or "", path)
            elif sharer is None or not sharer.place(os.fsencode(path), e):
                write_file(repo, os.fsencode(path), e)
                written += e.size
    for dirpath, _, _ in sorted(os.walk(folder), key=lambda t: -t[0].count(os.sep)):
        rel = os.path.relpath(dirpath, folder)
        if rel != "." and not os.listdir(dirpath) and rel not in new_dirs:
            os.rmdir(dirpath)
    meta["base"] = target.hex()
    meta.pop("switching_to", None)
    _write_meta(folder, meta)
    _prime_cache(session, repo, folder, new)
    _register(session, repo.config.repo_id, folder)
    reflinked = sharer.reflinked if sharer else 0
    return WorkspaceInfo(
        os.path.abspath(folder), str(meta["branch"]), target.hex(), paths, len(new), written, None, reflinked
    )


@audited("workspace.discard", folder="folder")
def discard(session: Session, folder: str) -> WorkspaceInfo:
    meta = read_meta(folder)
    shutil.rmtree(folder)
    repo_id = meta.get("repo_id")
    if isinstance(repo_id, str) and repo_id:
        _register(session, repo_id, folder, add=False)
    return WorkspaceInfo(os.path.abspath(folder), str(meta["branch"]), str(meta["base"]), _paths(meta), 0, 0, None)


def commit_any(
    session: Session,
    folder: str,
    message: str,
    branch: str | None,
    excludes: list[str],
    skip_unreadable: bool,
    wait: float,
    scope: str | None = None,
) -> CommitSummary:
    """`strongroom commit DIR`: a workspace commits onto its branch from its base; any other folder onto
    BRANCH (default main), into ``scope`` when one is named."""
    if is_workspace(folder):
        if excludes or skip_unreadable or scope is not None:
            raise InputError("--exclude, --skip-unreadable and --scope do not apply to a workspace")
        return commit(session, folder, message, branch, wait)
    return commit_version(
        session, folder, message, branch or "main", excludes, skip_unreadable, wait, always_ignore=(META,), scope=scope
    )
