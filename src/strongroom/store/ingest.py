"""Folder → version. The parent walks the folder and skips unchanged files (file cache); the files to read
are spread over forked worker processes, each chunking, hashing, compressing, sealing and writing its own
packs. Files are grouped by size before they are dealt out, so exact duplicates meet in one worker and are
stored once. Memory per worker is bounded: one read buffer and one pack being filled.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from strongroom.core import codec
from strongroom.core.ids import ObjectKind
from strongroom.core.ignore import IgnoreRules
from strongroom.core.model import DIR, FILE, SYMLINK, Commit, Entry
from strongroom.errors import InputError, ProblemFound, StrongroomError, UnreadableSource
from strongroom.store import parallel
from strongroom.store.chunker import Chunker
from strongroom.store.filecache import RACY_WINDOW_NS, CachedFile, FileCache, has_writers, ignore_lease_breaks
from strongroom.store.index import Index
from strongroom.store.pack import PackBuilder, PackEntry, pack_path
from strongroom.store.repository import Repository, load_pack_memo, save_pack_memo
from strongroom.store.treebuild import build_tree

IGNORE_FILE = ".strongroomignore"
INLINE_BYTES = 32 << 20  # below this, reading in-process beats starting workers

Progress = Callable[[int, int], None]


@dataclass
class CommitRequest:
    source: str
    branch: str
    message: str
    author: str
    excludes: list[str] = field(default_factory=list)
    skip_unreadable: bool = False
    workers: int = 0
    cache_path: str | None = None
    pack_memo_path: str | None = None  # which data folders need no listing (Repository.adopt_orphan_packs)
    wait: float = 0.0
    # Workspaces: the commit's parent is the workspace's base (the branch must still be there), and a sparse
    # workspace keeps the base's files and folders outside its paths (overlay: flat files, flat folders).
    pinned_parent: bytes | None = None
    overlay: tuple[dict[str, Entry], dict[str, Entry]] | None = None
    always_ignore: tuple[str, ...] = ()
    scope: str = ""  # the scope's name, recorded on the commit (repo is then the scope's view)
    # Signs the new commit (service.signers): called once, just before the commit object is stored.
    sign: Callable[[Commit], Commit] | None = None


@dataclass
class CommitResult:
    commit_id: bytes
    parent: bytes | None
    files: int
    bytes_total: int
    files_read: int
    bytes_read: int
    bytes_stored: int
    skipped: list[str]
    packs: int
    unchanged: bool
    notes: list[str] = dataclasses.field(default_factory=list)  # upkeep that failed after the version was published


@dataclass
class ScanNode:
    rel: str
    name: str
    st: os.stat_result
    type: str
    target: str | None = None


@dataclass
class _Job:
    rel: str
    path: str
    size: int
    guide: tuple[tuple[bytes, int], ...] = ()  # (id, length) of each chunk the file had when last read
    identity: tuple[int, int] | None = None  # (device, inode) the scan found at that path


REREADS = 3  # how many times a file that changed while it was read is read again


def _lstat_within(root: str, rel: str) -> os.stat_result | None:
    """lstat of ``rel`` below ``root``, reached through real folders only (no component a symlink: a folder
    swapped for a link to elsewhere does not lead out of ``root``); None if it cannot be reached so."""
    path = root
    parts = rel.split("/")
    try:
        for part in parts[:-1]:
            path = os.path.join(path, part)
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return None
        return os.lstat(os.path.join(path, parts[-1]))
    except OSError:
        return None


def _fresh_identity(root: str, rel: str) -> tuple[int, int] | None:
    """(device, inode) of the regular file at ``rel``, reached through real folders only; None otherwise."""
    st = _lstat_within(root, rel)
    return (st.st_dev, st.st_ino) if st is not None and stat.S_ISREG(st.st_mode) else None


def _guide(cache: FileCache | None, index: Index, rel: str) -> tuple[tuple[bytes, int], ...]:
    """The chunks of a changed file as it was last read, with their lengths: re-chunking it checks those first
    (Chunker.cut_fd_guided), so that an append or a small overwrite does not run the gear hash over it all."""
    entry = cache.entries.get(rel) if cache else None
    if entry is None:
        return ()
    guide = []
    for cid in entry.chunks:
        loc = index.get(cid, ObjectKind.CHUNK)
        if loc is None:
            return ()
        guide.append((cid, loc.raw_length))
    return tuple(guide)


# ------------------------------------------------------------------------------------------ scanning


def scan(root: str, rules: IgnoreRules) -> tuple[dict[str, list[ScanNode]], list[str]]:
    """Every folder (relative path, '' for the root) with its entries; plus the names skipped."""
    folders: dict[str, list[ScanNode]] = {}
    skipped: list[str] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        path = os.path.join(root, rel_dir) if rel_dir else root
        nodes: list[ScanNode] = []
        try:
            with os.scandir(path) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise UnreadableSource(path, e.strerror or str(e)) from None
        for item in items:
            rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as e:
                raise UnreadableSource(os.path.join(path, item.name), e.strerror or str(e)) from None
            is_dir = stat.S_ISDIR(st.st_mode)
            if rules and rules.ignored(rel, is_dir):
                continue
            if is_dir:
                nodes.append(ScanNode(rel, item.name, st, DIR))
                stack.append(rel)
            elif stat.S_ISREG(st.st_mode):
                nodes.append(ScanNode(rel, item.name, st, FILE))
            elif stat.S_ISLNK(st.st_mode):
                nodes.append(ScanNode(rel, item.name, st, SYMLINK, os.readlink(os.path.join(path, item.name))))
            else:
                skipped.append(rel)  # sockets, fifos, devices: not data
        folders[rel_dir] = nodes
    return folders, skipped


def ignore_rules(root: str, excludes: list[str]) -> IgnoreRules:
    patterns = list(excludes)
    try:
        with open(os.path.join(root, IGNORE_FILE), encoding="utf-8", errors="surrogateescape") as f:
            patterns.extend(f.read().splitlines())
    except FileNotFoundError:
        pass
    except OSError as e:  # an unreadable folder, or an ignore file that is not a readable file
        raise UnreadableSource(os.path.join(root, IGNORE_FILE), e.strerror or str(e)) from None
    return IgnoreRules(patterns)


# ------------------------------------------------------------------------------------------ workers

_STATE: dict[str, Any] = {}


class _Stopped(Exception):
    pass


def _read_files(jobs: list[_Job], send: Callable[[tuple[Any, ...]], None], state: dict[str, Any] | None = None) -> None:
    """The body of one worker (also run in-process for small work). ``state`` holds the repository, the chunk
    ids known to be stored and, for prepare_files, a ``stop`` check; forked workers inherit _STATE instead."""
    state = _STATE if state is None else state
    repo: Repository = state["repo"]
    known: set[bytes] = state["known"]
    stop: Callable[[], bool] | None = state.get("stop")
    chunker = Chunker(repo.chunker_params, repo.chunker_seed)
    hasher, encode = repo.hasher, state.get("encode", repo.codec.encode)
    builder = PackBuilder()
    pack_size = repo.config.pack_size
    sealed_before = dict(repo.codec.sealer.sealed)
    # One pack is written (and fsynced) by a thread while the next is being filled, so the disk wait
    # overlaps the compression; a pack is reported to the parent only once it is safely stored.
    writer = ThreadPoolExecutor(max_workers=1)
    pending: list[tuple[Future[None], str, list[PackEntry], int]] = []

    def settle() -> None:
        while pending:
            done, pack_id, entries, nbytes = pending.pop(0)
            done.result()
            send(("pack", pack_id, entries, nbytes))

    def flush(full: bool = False) -> None:
        if len(builder):
            pack_id, data, entries = builder.finish(repo.sealer, repo.context, full)
            settle()
            pending.append((writer.submit(repo.backend.put, pack_path(pack_id), data), pack_id, entries, len(data)))

    try:
        for job in jobs:
            try:
                try:
                    fd = os.open(job.path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0))
                except PermissionError:  # O_NOATIME needs ownership; a file we cannot read fails again below
                    fd = os.open(job.path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError as e:
                send(("unreadable", job.rel, e.strerror or str(e)))
                continue
            try:
                # Before the stat: the racy-clean rule compares stamps with it. 0 when a process has the file
                # open for writing: it gets no cache entry (a shared mapping changes bytes, not stamps).
                recorded = 0 if has_writers(fd) else time.time_ns()
                before = os.fstat(fd)
                if job.identity is not None and (before.st_dev, before.st_ino) != job.identity:
                    # Replaced since the scan, or reached through a folder swapped for a symlink (O_NOFOLLOW
                    # guards only the last component): not the file the scan saw. Nothing is read; the commit
                    # looks at the path again (_fresh_identity) and reads it anew.
                    send(("file", job.rel, [], 0, False, before.st_ino, 0, 0, recorded))
                    continue
                ids: list[bytes] = []
                size = 0
                pieces = (
                    chunker.cut_fd_guided(fd, hasher, job.guide)
                    if job.guide
                    else ((chunk, hasher(chunk)) for chunk in chunker.cut_fd(fd))
                )
                for chunk, cid in pieces:
                    if stop is not None and stop():
                        raise _Stopped
                    ids.append(cid)
                    size += len(chunk)
                    if cid not in known:
                        known.add(cid)
                        builder.add(ObjectKind.CHUNK, cid, encode(chunk, ObjectKind.CHUNK, cid), len(chunk))
                        if builder.size >= pack_size:
                            flush(full=True)
                after = os.fstat(fd)
            except OSError as e:
                send(("unreadable", job.rel, e.strerror or str(e)))
                continue
            except _Stopped:
                break  # this file is left unread; what was sealed so far is still stored below
            finally:
                os.close(fd)
            stable = (
                (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns) == (size, before.st_mtime_ns)
            )
            send(("file", job.rel, ids, size, stable, after.st_ino, after.st_mtime_ns, after.st_ctime_ns, recorded))
        flush()
        settle()
    finally:
        writer.shutdown(wait=True)  # a pack still being written is finished (never reported) before leaving
    sealed = repo.codec.sealer.sealed
    send(("done", {kid: n - sealed_before.get(kid, 0) for kid, n in sealed.items() if n != sealed_before.get(kid, 0)}))


# chunks, size, stable, inode, mtime, ctime, recorded; cached only if stable and recorded (not 0: no writer)
FileRead = tuple[list[bytes], int, bool, int, int, int, int]


def _run_jobs(
    repo: Repository, jobs: list[_Job], workers: int, progress: Progress | None, known: set[bytes]
) -> tuple[dict[str, FileRead], list[tuple[str, str]], list[str], int]:
    results: dict[str, FileRead] = {}
    unreadable: list[tuple[str, str]] = []
    packs: list[str] = []
    stored = 0
    total = sum(j.size for j in jobs)
    shares = (
        [jobs]
        if workers <= 1 or total < INLINE_BYTES
        else parallel.deal(jobs, lambda j: j.size, workers, lambda j: j.size)
    )
    forked = len(shares) > 1

    def handle(msg: tuple[Any, ...]) -> None:
        nonlocal stored
        kind = msg[0]
        if kind == "pack":
            _, pack_id, entries, nbytes = msg
            repo.index.add_pack(pack_id, entries)
            packs.append(pack_id)
            stored += nbytes
        elif kind == "file":
            _, rel, ids, size, stable, ino, mtime, ctime, recorded = msg
            results[rel] = (ids, size, stable, ino, mtime, ctime, recorded)
            if progress:
                progress(1, size)
        elif kind == "unreadable":
            unreadable.append((msg[1], msg[2]))
        elif kind == "done" and forked:
            for kid, n in msg[1].items():  # frames sealed in the workers count against their keys too
                repo.codec.sealer.sealed[kid] = repo.codec.sealer.sealed.get(kid, 0) + n

    _STATE["repo"] = repo
    _STATE["known"] = known
    try:
        parallel.run(shares, _read_files, handle)
    finally:
        _STATE.clear()
    return results, unreadable, packs, stored


# ------------------------------------------------------------------------------------------ ahead of a commit


@dataclass
class Prepared:
    files_read: int = 0
    bytes_read: int = 0
    bytes_stored: int = 0
    later: list[str] = field(default_factory=list)  # written too recently to record, or left when stopped


def _excluded(rules: IgnoreRules, rel: str) -> bool:
    parts = rel.split("/")
    return any(rules.ignored("/".join(parts[:i]), True) for i in range(1, len(parts))) or rules.ignored(rel, False)


def prepare_files(
    repo: Repository,
    root: str,
    rels: list[str],
    cache: FileCache,
    rules: IgnoreRules,
    known: set[bytes],
    stop: Callable[[], bool] | None = None,
    workers: int = 1,
) -> Prepared:
    """Read files of a folder ahead of its next commit (the agent's watched folders, docs/agent.md): chunk,
    seal and store them as a commit would, and record their chunk lists in the folder's file cache (saved).

    Nothing is published: the packs written are unindexed until the next commit (or gc) adopts them, as
    packs of an interrupted commit are, and each cache entry is used only if the file still has exactly the
    stat it had when read, recorded more than a second after its last write (filecache), and every chunk it names is
    in the index the commit sees. So an entry that is stale, or whose pack gc removed, only costs a re-read.
    ``known`` holds the chunk ids already stored (it grows with what is stored here); ``stop`` is asked
    between chunks: when it says so, the file being read is left for later.
    """
    root = os.path.abspath(root)
    now = time.time_ns()
    out = Prepared()
    jobs: list[_Job] = []
    gone: set[str] = set()
    for rel in sorted(set(rels)):
        path = os.path.join(root, rel)
        # Through real folders only, as the commit's scan walks: a folder swapped for a link to elsewhere
        # must not bring a file from outside the watched folder into the repository (the identity taken
        # here is checked against the file the worker opens).
        st = _lstat_within(root, rel)
        if st is None:
            gone.add(rel)  # deleted, renamed away, or no longer inside: its entry would never be used again
            continue
        if not stat.S_ISREG(st.st_mode) or _excluded(rules, rel):
            gone.add(rel)
            continue
        # No "already read" shortcut: a change was heard, and a write's stamps are set when it starts, so an
        # entry recorded while it was still copying can have the very stat the file has now.
        if max(st.st_mtime_ns, st.st_ctime_ns) >= now - RACY_WINDOW_NS:
            out.later.append(rel)  # its stamps could still repeat: an entry recorded now would be useless
            continue
        jobs.append(_Job(rel, path, st.st_size, _guide(cache, repo.index, rel), (st.st_dev, st.st_ino)))
    gone.intersection_update(cache.entries)
    if not jobs and not gone:
        return out
    results: dict[str, FileRead] = {}
    lock = threading.Lock()

    def handle(msg: tuple[Any, ...]) -> None:
        with lock:
            if msg[0] == "pack":
                repo.index.add_pack(msg[1], msg[2])
                out.bytes_stored += msg[3]
            elif msg[0] == "file":
                results[msg[1]] = tuple(msg[2:])

    # Threads of this process, each with its own state and zstd contexts (the agent may run a command's
    # commit in its main thread meanwhile, and forks there): chunking, hashing, zstd and AES-GCM all release
    # the GIL, so they keep the cores busy.
    shares = parallel.deal(jobs, lambda j: j.size, max(1, workers), lambda j: j.size)
    failures: list[BaseException] = []

    def read(share: list[_Job]) -> None:
        state = {"repo": repo, "known": known, "stop": stop, "encode": repo.codec.for_another_thread().encode}
        try:
            _read_files(share, handle, state)
        except BaseException as e:  # raised below, in the caller's thread
            failures.append(e)

    threads = [threading.Thread(target=read, args=(share,), name="strongroom-prepare") for share in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    if stop is not None and stop():
        out.later.extend(j.rel for j in jobs if j.rel not in results)
    entries = {rel: entry for rel, entry in cache.entries.items() if rel not in gone}
    for rel, (ids, size, stable, ino, mtime, ctime, recorded) in results.items():
        out.files_read += 1
        out.bytes_read += size
        if stable and recorded:
            entries[rel] = CachedFile(size, ino, mtime, ctime, tuple(ids), recorded)
    cache.save(entries)
    cache.entries = entries
    return out


# ------------------------------------------------------------------------------------------ commit


def overlay_clashes(
    files: Iterable[str], folders: Iterable[str], more_files: dict[str, Entry], more_folders: dict[str, Entry]
) -> dict[str, list[str]]:
    """Where what a sparse workspace holds (``files``: files and links; ``folders``) clashes with its base's
    entries outside its paths: {path in the workspace: [base files a commit could not keep, or the folders when
    only empty ones]}. The path taken, or a file above them; a folder where the base has a folder is no clash."""
    files, folders = set(files), set(folders)
    out: dict[str, list[str]] = {}
    for path in [*more_files, *more_folders]:
        parts = path.split("/")
        mine = next((a for a in ("/".join(parts[:i]) for i in range(1, len(parts))) if a in files), None)
        if mine is None and (path in files or (path in folders and path in more_files)):
            mine = path
        if mine is not None:
            out.setdefault(mine, []).append(path)
    return {p: sorted([h for h in hidden if h in more_files] or hidden) for p, hidden in sorted(out.items())}


def _refuse_overlay_clashes(
    root: str, scanned: dict[str, list[ScanNode]], more_files: dict[str, Entry], more_folders: dict[str, Entry]
) -> None:
    """Before anything is read: a commit dropping base entries that the sparse workspace never showed would lose
    them silently."""
    nodes = [n for ns in scanned.values() for n in ns]
    clashes = overlay_clashes(
        (n.rel for n in nodes if n.type != DIR), (n.rel for n in nodes if n.type == DIR), more_files, more_folders
    )
    if not clashes:
        return

    def hides(hidden: list[str]) -> str:
        return ", ".join(hidden[:5]) + (f" and {len(hidden) - 5} more" if len(hidden) > 5 else "")

    listed = "; ".join(f"{p} (hides {hides(h)})" for p, h in list(clashes.items())[:10])
    more = f"; and {len(clashes) - 10} more" if len(clashes) > 10 else ""
    raise ProblemFound(
        f"{len(clashes)} path(s) in {root} clash with files or folders of its base outside the workspace's paths,"
        f" which the commit would drop: {listed}{more}; rename or move them, then commit again"
    )


def _add_overlay(
    files: dict[str, Entry], folders: dict[str, Entry], more_files: dict[str, Entry], more_folders: dict[str, Entry]
) -> None:
    """Add a sparse workspace's base entries outside its paths to what was scanned, except where they would
    clash with it (refused before, unless the scanned entry was skipped as unreadable since): a path taken, a
    scanned file above them, or scanned entries below an overlaid file."""
    below = {"/".join(p.split("/")[:i]) for p in [*files, *folders] for i in range(1, p.count("/") + 1)}

    def above_is_file(path: str) -> bool:
        parts = path.split("/")
        return any("/".join(parts[:i]) in files for i in range(1, len(parts)))

    for path, entry in more_files.items():
        if path not in files and path not in folders and path not in below and not above_is_file(path):
            files[path] = entry
    for path, entry in more_folders.items():
        if path not in files and path not in folders and not above_is_file(path):
            folders[path] = entry


def commit_folder(
    repo: Repository,
    req: CommitRequest,
    progress_start: Callable[[int, int], None] | None = None,
    progress: Progress | None = None,
) -> CommitResult:
    root = os.path.abspath(req.source)
    if not os.path.isdir(root):
        raise InputError(f"not a folder: {req.source}")
    repo.follow_current_key()  # a long-lived handle: what it stores is sealed under today's key
    scan_start = time.time_ns()
    ignore_lease_breaks()  # so that the workers can tell a file some process is writing (has_writers)
    rules = ignore_rules(root, req.excludes + [f"/{name}" for name in req.always_ignore])
    folders, skipped = scan(root, rules)
    if req.overlay is not None:
        _refuse_overlay_clashes(root, folders, *req.overlay)

    refs = repo.read_refs()
    parent = req.pinned_parent if req.pinned_parent is not None else refs.branches.get(req.branch)
    memo = load_pack_memo(req.pack_memo_path) if req.pack_memo_path else None
    memo_before = dict(memo or {})
    adopted = repo.adopt_orphan_packs(memo)  # left by an interrupted commit: reused, and indexed below
    index = repo.index

    cache = FileCache(req.cache_path, repo.sealer, repo.context) if req.cache_path else None
    if cache:
        cache.load()
    chunks_of: dict[str, tuple[bytes, ...]] = {}
    jobs: list[_Job] = []
    total_files = total_bytes = 0
    stored_chunks = index.chunk_ids()
    for nodes in folders.values():
        for n in nodes:
            if n.type != FILE:
                continue
            total_files += 1
            total_bytes += n.st.st_size
            hit = cache.lookup(n.rel, n.st, scan_start) if cache else None
            if hit is not None and stored_chunks.issuperset(hit):
                chunks_of[n.rel] = hit
            else:
                path, identity = os.path.join(root, n.rel), (n.st.st_dev, n.st.st_ino)
                jobs.append(_Job(n.rel, path, n.st.st_size, _guide(cache, index, n.rel), identity))
    if progress_start:
        progress_start(len(jobs), sum(j.size for j in jobs))

    workers = req.workers or parallel.default_workers()
    results, unreadable, new_packs, stored = _run_jobs(repo, jobs, workers, progress, stored_chunks)
    # A file written to while it was read holds a mix of old and new bytes that never existed on disk: read
    # again, and if it keeps changing it is unreadable for this commit (tar's "file changed as we read it").
    for attempt in range(REREADS + 1):
        torn = [j for j in jobs if j.rel in results and not results[j.rel][2]]
        if not torn:
            break
        for j in torn:
            del results[j.rel]
        if attempt == REREADS:
            unreadable += [(j.rel, "changed while being read, again and again") for j in torn]
            break
        again = []
        for j in torn:
            fresh = _fresh_identity(root, j.rel)
            if fresh is None:
                unreadable.append((j.rel, "no longer a file inside the folder"))
            else:
                again.append(dataclasses.replace(j, identity=fresh, guide=()))
        more, more_unreadable, more_packs, more_stored = _run_jobs(repo, again, workers, None, stored_chunks)
        results.update(more)
        unreadable += more_unreadable
        new_packs += more_packs
        stored += more_stored
    if unreadable and not req.skip_unreadable:
        rel, why = unreadable[0]
        raise UnreadableSource(os.path.join(root, rel), why)
    unreadable_set = {r for r, _ in unreadable}
    skipped.extend(sorted(unreadable_set))

    new_cache: dict[str, CachedFile] = {}
    for rel, (ids, size, stable, ino, mtime, ctime, recorded) in results.items():
        chunks_of[rel] = tuple(ids)
        if stable and recorded:
            new_cache[rel] = CachedFile(size, ino, mtime, ctime, tuple(ids), recorded)
    if cache:
        for rel in chunks_of:
            if rel not in results:
                new_cache[rel] = cache.entries[rel]

    # Trees bottom-up (store.treebuild): each subtree id is known before its parent is encoded.
    meta = PackBuilder()
    written: set[tuple[int, bytes]] = set()

    def store(kind: int, plain: bytes) -> bytes:
        oid = repo.hasher(plain)
        if not index.has(oid, kind) and (kind, oid) not in written:
            written.add((kind, oid))
            meta.add(kind, oid, repo.codec.encode(plain, kind, oid), len(plain))
        return oid

    files_flat: dict[str, Entry] = {}
    folders_flat: dict[str, Entry] = {}
    for nodes in folders.values():
        for n in nodes:
            st = n.st
            mode = stat.S_IMODE(st.st_mode)
            if n.type == FILE:
                if n.rel in unreadable_set:
                    continue
                real = results[n.rel][1] if n.rel in results else st.st_size
                files_flat[n.rel] = Entry(
                    n.name, FILE, mode, st.st_mtime_ns, real, st.st_uid, st.st_gid, chunks=chunks_of[n.rel]
                )
            elif n.type == DIR:
                folders_flat[n.rel] = Entry(n.name, DIR, mode, st.st_mtime_ns, 0, st.st_uid, st.st_gid)
            else:
                files_flat[n.rel] = Entry(
                    n.name, SYMLINK, mode, st.st_mtime_ns, 0, st.st_uid, st.st_gid, target=n.target
                )
    if req.overlay is not None:
        _add_overlay(files_flat, folders_flat, *req.overlay)
    root_tree = build_tree(files_flat, folders_flat, store)

    unchanged = False
    if parent is not None:
        try:
            unchanged = repo.load_commit(parent).tree == root_tree
        except StrongroomError:
            unchanged = False
    commit = Commit(
        tree=root_tree,
        parents=(parent,) if parent else (),
        author=req.author,
        host=socket.gethostname(),
        time_ns=time.time_ns(),
        message=req.message,
        branch=req.branch,
        source=root,
        extra={"scope": req.scope} if req.scope else {},
    )
    if req.sign is not None:
        commit = req.sign(commit)
    # The commit object stays under the repository's keys, also in a scope: history outlives a shredding.
    base = repo.unscoped
    plain = codec.encode_commit(commit)
    commit_id = base.hasher(plain)
    if not index.has(commit_id, ObjectKind.COMMIT):
        meta.add(ObjectKind.COMMIT, commit_id, base.codec.encode(plain, ObjectKind.COMMIT, commit_id), len(plain))
    if len(meta):
        pid = repo.write_pack(meta)
        new_packs.append(pid)
        stored += repo.backend.size(pack_path(pid)) or 0
    # The index is written under the publish lock, right before the frames are counted: a kill between the
    # two is the only way left for stored frames to escape their keys' counts.
    repo.update_refs(
        req.branch, parent, commit_id, "commit", wait=req.wait, prepare=lambda: repo.write_index(adopted + new_packs)
    )
    # The version is published: the local caches below only save the next commit work, so a full disk or a
    # read-only cache folder is a note, not a failure (which would have the user commit again).
    notes = []
    try:
        # Not rewritten when it already holds exactly these entries (as after the agent's watch has read ahead:
        # it also drops the entries of files it hears are gone).
        if cache and new_cache != cache.entries:
            cache.save(new_cache)
        if req.pack_memo_path and memo is not None and memo != memo_before:
            save_pack_memo(req.pack_memo_path, memo)
    except OSError as e:
        notes.append(
            f"the version is stored, but the local cache could not be saved: {e.strerror or e} "
            "(the next commit reads the changed files again)"
        )
    return CommitResult(
        commit_id=commit_id,
        parent=parent,
        files=total_files - len(unreadable_set),
        bytes_total=total_bytes,
        files_read=len(results),
        bytes_read=sum(v[1] for v in results.values()),
        bytes_stored=stored,
        skipped=skipped,
        packs=len(new_packs),
        unchanged=unchanged,
        notes=notes,
    )
