"""Workspaces: writable working folders tied to a branch. The original versions are never modified.

A workspace folder holds the files asked for (sparse by glob), a small `.strongroom-workspace.json`
(repository, branch, base version, paths, extra) and the lock that lets one commit or switch run at a time.
Its file cache is primed at creation, so `status` and `commit` read only files that changed. `status` and
`commit` see the folder exactly as `strongroom commit` does (the same ignore rules; FIFOs, sockets and devices
skipped), folders included. `switch` rewrites only the files that differ between two versions; an interrupted
switch is recorded in the metadata and completed by running it again, which refuses to touch any file that
belongs to neither version. So are a create (the metadata is written first, marked ``creating``) and a discard
(marked ``discarding``, the metadata removed last) that were killed: status, commit and switch refuse such a
folder and say which command finishes it.

A sparse workspace's view of its base is the files and folders matching its paths plus ``extra``: what its
last commit took from the folder outside the paths. A commit keeps the base's files outside that view, and
refuses where something in the folder would displace one of them.

The client registers every workspace it materialises (per repository, in its state folder). `create` and
`switch` reflink a file that another registered workspace of the repository holds unchanged, where the
filesystem supports it (store/reflink.py), and write it from the repository otherwise; never a hard link.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator

from strongroom.core.dag import validate_ref_name
from strongroom.core.diff import diff_flat
from strongroom.core.merge import same_entry
from strongroom.core.model import DIR, FILE, SYMLINK, Entry
from strongroom.errors import (
    CannotWrite,
    DestinationNotEmpty,
    InputError,
    ProblemFound,
    StrongroomError,
    UnreadableSource,
    refused_write,
)
from strongroom.service.context import Session, audited
from strongroom.service.fresh import FreshFolder, make_removable
from strongroom.service.merge import refuse_scoped
from strongroom.service.results import CommitSummary, DiffEntry, WorkspaceInfo
from strongroom.service.versions import commit as commit_version
from strongroom.service.versions import resolve
from strongroom.store import ingest, lock
from strongroom.store.chunker import Chunker
from strongroom.store.clientstate import WorkspaceRegistry
from strongroom.store.filecache import CachedFile, FileCache
from strongroom.store.reflink import Donors, Sharer, checkout_shared
from strongroom.store.repository import Repository
from strongroom.store.restore import CheckoutResult, matches, write_file
from strongroom.store.restore import checkout as restore_checkout
from strongroom.store.treebuild import flatten

META = ".strongroom-workspace.json"
LOCK = ".strongroom-workspace.lock"
# Never part of a version: the metadata, its copy while it is rewritten, and the lock of _exclusive.
OWN = (META, META + ".tmp", LOCK)
BEFORE_META = frozenset({LOCK, META + ".tmp"})  # all a create killed before its metadata was written leaves
# A switch writes each file (one at a time) under a new name of this pattern in its folder, created exclusively,
# and then renames it into place, so a killed switch leaves no half-written file under a name of either version
# and never overwrites a user's file; running it again removes it.
PARTIAL = ".strongroom-partial-"
_PARTIAL_NAME = re.compile(r"\.strongroom-partial-[0-9a-f]{16}")
_ORDER = {"added": 0, "removed": 1, "modified": 2, "renamed": 3, "clash": 4}

Files = dict[str, Entry]


def _meta_path(folder: str) -> str:
    return os.path.join(folder, META)


def read_meta(folder: str) -> dict[str, object]:
    if not os.path.isdir(folder):
        raise InputError(f"workspace folder is missing (deleted or moved?): {folder}")
    try:
        with open(_meta_path(folder), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != "sr-workspace/1" or not isinstance(meta.get("branch"), str):
            raise ValueError
        bytes.fromhex(str(meta.get("base")))  # a version id: anything else is damage
        return dict(meta)
    except FileNotFoundError:
        raise InputError(f"not a workspace: {folder} (no {META})") from None
    except (OSError, ValueError):
        raise InputError(f"workspace metadata is unreadable: {_meta_path(folder)}") from None


def is_workspace(folder: str) -> bool:
    return os.path.isfile(_meta_path(folder))


def _write_meta(folder: str, meta: dict[str, object]) -> None:
    """Replace the metadata atomically. A write the machine refuses (a full disk) is CannotWrite (exit 1), any
    other failure InputError, one line either way; the temporary file is removed and the metadata left as it
    was."""
    path = _meta_path(folder)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        refused = f"cannot write the workspace metadata {path}: {e.strerror or e}"
        raise (CannotWrite if refused_write(e) else InputError)(refused) from None


_held = threading.local()  # the workspaces this thread holds the lock of: a nested use (switch's status) passes


@contextlib.contextmanager
def _exclusive(folder: str, needed: bool = True) -> Iterator[bool]:
    """One commit, switch, adoption or discard at a time per workspace: each rewrites the metadata from what it
    read, so another one finishing meanwhile would have its base reset. Yields True once held. A second one
    exits 1, unless not ``needed`` (status: it then only reads, and yields False)."""
    key = os.path.realpath(folder)
    held: set[str] = _held.__dict__.setdefault("folders", set())
    if key in held:
        yield True
        return
    try:
        fd = os.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if needed:
            raise InputError(f"cannot lock workspace {folder}: {e.strerror or e}") from None
        fd = -1  # an unwritable folder: status reads only
    busy = fd < 0
    try:
        if not busy:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy = True
            except OSError:
                pass  # no locks on this filesystem: as without them
        if busy and needed:
            raise ProblemFound(
                f"workspace {folder} is in use by another strongroom command (a commit or switch);"
                " run this again once it has finished"
            )
        if not busy:
            held.add(key)
        try:
            yield not busy
        finally:
            held.discard(key)
    finally:
        if fd >= 0:
            os.close(fd)


def _listed(meta: dict[str, object], key: str) -> list[str]:
    """The workspace's ``paths`` or ``extra`` (absent in older metadata: none)."""
    value = meta.get(key) or []
    return [str(p) for p in value] if isinstance(value, list) else []


def _paths(meta: dict[str, object]) -> list[str]:
    return _listed(meta, "paths")


def _version(repo: Repository, version: bytes) -> tuple[Files, Files]:
    return flatten(repo, repo.load_commit(version).tree)


def _view(files: Files, folders: Files, paths: list[str], extra: list[str]) -> tuple[Files, Files]:
    """The files and folders of a version that the workspace holds: all of them, or, when it is sparse, those
    matching its paths or listed in ``extra``, and the folders holding any of these."""
    if not paths:
        return files, folders
    keep = set(extra)
    shown = {p: e for p, e in files.items() if matches(p, paths) or p in keep}
    wanted = [*shown, *(d for d in folders if matches(d, paths) or d in keep)]
    holders = {p[:i] for p in wanted for i, c in enumerate(p) if c == "/"}
    return shown, {d: e for d, e in folders.items() if d in holders or d in keep or matches(d, paths)}


def _hidden(files: Files, folders: Files, shown: Files, shown_dirs: Files) -> tuple[Files, Files]:
    """A sparse workspace's base entries outside its view, which its commit keeps."""
    return {p: e for p, e in files.items() if p not in shown}, {p: e for p, e in folders.items() if p not in shown_dirs}


def _is_folder(path: str) -> bool:
    """A real folder, not a symbolic link to one."""
    return os.path.isdir(path) and not os.path.islink(path)


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
        # No recorded time: just written, the stamps are as new as the stat, so the lookup measures them
        # against its scan's start instead (a commit a second later trusts them).
        entries[rel] = CachedFile(st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, e.chunks)
    cache.save(entries)


def _check_destination(folder: str) -> None:
    """The workspace folder must be absent or empty (checked before a branch is created for it)."""
    try:
        st = os.stat(folder)  # follows a link, as checkout does: a link to an empty folder will do
        if not stat.S_ISDIR(st.st_mode) or set(os.listdir(folder)) - BEFORE_META:
            raise DestinationNotEmpty(folder)  # what a create killed before its metadata leaves is empty
    except FileNotFoundError:
        pass
    except OSError as e:
        raise InputError(f"cannot create a workspace at {folder}: {e.strerror or e}") from None


class _Writable:
    """Folders of the workspace given u+rwx while files are written or removed in them (a version's read-only
    folder, 0555, is not writable without root's override), and the modes to put back."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.modes: dict[str, int] = {}
        self.seen: set[str] = set()

    def parent_of(self, rel: str) -> None:
        """Make the folder holding ``rel`` writable."""
        parent = os.path.dirname(rel)
        if parent in self.seen:
            return
        path = os.path.join(self.folder, parent)
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if mode & 0o700 != 0o700:
            os.chmod(path, mode | 0o700)
            self.modes[parent] = mode
        self.seen.add(parent)

    def restore(self) -> None:
        """Put the modes back, deepest first (a folder without x would bar the way to those below)."""
        for rel, mode in sorted(self.modes.items(), key=lambda item: -item[0].count("/")):
            path = os.path.join(self.folder, rel)
            if _is_folder(path):  # not a link that replaced it: chmod would follow it
                os.chmod(path, mode)
        self.modes.clear()
        self.seen.clear()


def _make_folders(folder: str, dirs: Files, writable: _Writable | None = None) -> None:
    """Create the missing folders of ``dirs``, parents first; their modes and mtimes are set once they are
    filled (_set_folder_stamps)."""
    for rel in sorted(dirs):
        path = os.path.join(folder, rel)
        if os.path.lexists(path):
            continue
        if writable is not None:
            writable.parent_of(rel)
        os.mkdir(path, 0o700)


def _set_folder_stamps(folder: str, dirs: Files) -> None:
    """The folders' modes and mtimes where they differ from what is on disk (new, changed, left loosened by
    a killed switch, or touched by the files written into them), deepest first: the folder then is the
    version, and a commit of it makes the same tree."""
    for rel, e in sorted(dirs.items(), key=lambda item: -item[0].count("/")):
        path = os.path.join(folder, rel)
        st = os.lstat(path)
        if stat.S_IMODE(st.st_mode) != e.mode:
            os.chmod(path, e.mode)
        if st.st_mtime_ns != e.mtime_ns:
            os.utime(path, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)


@audited("workspace.create", branch="branch", version="from_version", paths="paths", folder="folder")
def create(session: Session, folder: str, branch: str, from_version: str | None, paths: list[str]) -> WorkspaceInfo:
    from strongroom.service.branches import branch_create, branch_delete

    repo = session.open()
    if is_workspace(folder) and _unfinished(read_meta(folder)):
        return _create_again(session, repo, folder, branch, from_version, paths)
    refs = repo.read_refs()
    source = refs.branches.get(branch) or resolve(repo, from_version or "main")
    # A workspace rehashes and recommits its files under the repository's keys: not for a scope's versions.
    refuse_scoped(repo, "a workspace", source)
    if branch in refs.branches and from_version is not None and resolve(repo, from_version) != source:
        raise InputError(f"branch {branch} exists: leave out --from, or name a new branch")
    # Whatever can be refused is refused before a new branch is created.
    new_branch = branch not in refs.branches
    if new_branch:
        validate_ref_name(branch)
    _check_destination(folder)
    fresh = FreshFolder(folder)  # absent or empty: on failure, what create wrote there is removed again
    files, folders = _version(repo, source)
    if paths and not any(matches(p, paths) for p in files):
        raise InputError(f"no path in the version matches {' '.join(paths)}")
    session.audit_note(version=source.hex())
    meta: dict[str, object] = {
        "format": "sr-workspace/1",
        "repository": os.path.abspath(session.repo_path()),
        "repo_id": repo.config.repo_id,
        "branch": branch,
        "base": source.hex(),
        "paths": paths,
        "extra": [],
        # Until the checkout is done: a create killed meanwhile is completed by running it again, or discarded.
        "creating": {"new_branch": new_branch},
    }
    made = mine = False
    try:
        os.makedirs(folder, 0o700, exist_ok=True)
        with _exclusive(folder):  # held by another create of this folder: exit 1
            if set(os.listdir(folder)) - BEFORE_META:
                raise DestinationNotEmpty(folder)  # filled by another create since it was checked
            mine = True
            _write_meta(folder, meta)  # first: whatever a kill leaves, `status` and `discard` know it
            if new_branch:
                branch_create(session, branch, source.hex())
                made = True
            res, reflinked = _materialise(session, repo, folder, meta, files, folders)
    except BaseException as e:
        # A retry must find the destination as it was (files without metadata made it 'not empty'), and no
        # branch that no workspace holds (unless it moved meanwhile). What another create wrote stays.
        if mine or not isinstance(e, (ProblemFound, DestinationNotEmpty)):
            fresh.undo()
        if made:
            with contextlib.suppress(StrongroomError):
                branch_delete(session, branch, at=source)
        if isinstance(e, OSError):
            refused = f"cannot create a workspace at {folder}: {e.strerror or e}"
            raise (CannotWrite if refused_write(e) else InputError)(refused) from None
        if isinstance(e, CannotWrite):  # the checkout's 'the others were restored' is undone
            first = str(e).split("; ", 1)[0]
            raise CannotWrite(f"workspace not created: {first}; nothing of it was left in {folder}") from None
        raise
    _register(session, repo.config.repo_id, folder)
    return WorkspaceInfo(os.path.abspath(folder), branch, source.hex(), paths, res.files, res.bytes, None, reflinked)


def _materialise(
    session: Session, repo: Repository, folder: str, meta: dict[str, object], files: Files, folders: Files
) -> tuple[CheckoutResult, int]:
    """Check the base out into the folder (empty but for the workspace's own files), then mark the creation
    done. Returns the checkout's result and the bytes reflinked."""
    paths = _paths(meta)
    shown, shown_dirs = _view(files, folders, paths, [])
    donors = _donors(session, repo, folder)
    tree = repo.load_commit(bytes.fromhex(str(meta["base"]))).tree
    reflinked = 0
    with lock.read_lock(repo.backend, "workspace create"):
        if donors:
            res, reflinked = checkout_shared(repo, tree, folder, paths or None, donors, own=OWN)
        else:
            res = restore_checkout(repo, tree, folder, paths or None, own=OWN)
    writable = _Writable(folder)
    try:  # a sparse checkout makes only the folders holding files
        _make_folders(folder, shown_dirs, writable)
    finally:
        writable.restore()
    _set_folder_stamps(folder, shown_dirs)
    meta.pop("creating", None)
    meta["created_ns"] = time.time_ns()
    _write_meta(folder, meta)
    _prime_cache(session, repo, folder, shown)
    return res, reflinked


def _unfinished(meta: dict[str, object]) -> bool:
    """A create or discard of the workspace was cut off (killed): the folder holds part of its files."""
    return bool(meta.get("creating") or meta.get("discarding"))


def _made_branch(meta: dict[str, object]) -> bool:
    """The unfinished create made the workspace's branch (it was new)."""
    creating = meta.get("creating")
    return isinstance(creating, dict) and creating.get("new_branch") is True


def _to_finish(folder: str, meta: dict[str, object]) -> str:
    """What an interrupted create or discard was, and the commands that finish it."""
    q = shlex.quote(folder)
    if meta.get("discarding"):
        return f"the discard of workspace {folder} was interrupted: run `strongroom workspace discard {q}` again"
    args = "".join(f" --paths {shlex.quote(p)}" for p in _paths(meta))
    return (
        f"the creation of workspace {folder} was interrupted: run `strongroom workspace create {q} --branch"
        f" {shlex.quote(str(meta['branch']))}{args}` again to complete it, or `strongroom workspace discard {q}`"
    )


def _refuse_unfinished(folder: str, meta: dict[str, object]) -> None:
    """status, commit and switch refuse a workspace whose create or discard was cut off, saying what finishes it
    (a create that is still running holds the lock)."""
    if not _unfinished(meta):
        return
    if meta.get("creating") and not meta.get("discarding"):
        with _exclusive(folder, needed=False) as held:
            if not held:
                raise ProblemFound(
                    f"workspace {folder} is being created by another strongroom command; run this again once it"
                    " has finished"
                )
    raise ProblemFound(_to_finish(folder, meta))


def _create_again(
    session: Session, repo: Repository, folder: str, branch: str, from_version: str | None, paths: list[str]
) -> WorkspaceInfo:
    """`workspace create` run again, with the same branch and paths, on a folder whose creation was cut off:
    what that run wrote is removed and the base checked out again. Everything in the folder must be at a name
    the base's view has (all a create writes); anything else is the user's, and nothing is changed."""
    from strongroom.service.branches import branch_create

    with _exclusive(folder):
        meta = read_meta(folder)
        if not _unfinished(meta):
            raise DestinationNotEmpty(folder)  # completed meanwhile
        if meta.get("discarding"):
            raise ProblemFound(_to_finish(folder, meta))
        if meta.get("repo_id") != repo.config.repo_id:
            raise InputError(f"{folder} is a workspace of another repository")
        base = bytes.fromhex(str(meta["base"]))
        same = meta.get("branch") == branch and _paths(meta) == paths
        if not same or (from_version is not None and resolve(repo, from_version) != base):
            raise InputError(_to_finish(folder, meta))
        session.audit_note(version=base.hex())
        if branch not in repo.read_refs().branches:
            if not _made_branch(meta):
                raise ProblemFound(
                    f"branch {branch} no longer exists: run `strongroom workspace discard {shlex.quote(folder)}`,"
                    " then create the workspace again"
                )
            branch_create(session, branch, base.hex())  # killed before it made the branch, or discarded since
        files, folders = _version(repo, base)
        try:
            _clear_interrupted(folder, *_view(files, folders, paths, []))
            res, reflinked = _materialise(session, repo, folder, meta, files, folders)
        except OSError as e:
            where = os.fsdecode(e.filename) if e.filename else folder
            stopped = f"workspace create stopped at {where}: {e.strerror or e}; fix that, then run the create again"
            raise (CannotWrite if refused_write(e) else InputError)(stopped) from None
        except CannotWrite as e:
            first = str(e).split("; ", 1)[0]
            raise CannotWrite(f"workspace create stopped: {first}; fix that, then run the create again") from None
    _register(session, repo.config.repo_id, folder)
    return WorkspaceInfo(os.path.abspath(folder), branch, base.hex(), paths, res.files, res.bytes, None, reflinked)


def _clear_interrupted(folder: str, files: Files, dirs: Files) -> None:
    """Remove what an interrupted create wrote (a file it was writing may be half written): everything in the
    folder but the workspace's own files, once each is a folder where the view has one, or a file or link
    where it has one. Anything else is refused (exit 1) before anything is removed."""
    strangers: list[str] = []

    def unreadable(e: OSError) -> None:
        raise e  # what cannot be listed cannot be checked: nothing is removed

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
        here = os.path.relpath(dirpath, folder)
        for name in [*dirnames, *filenames]:
            rel = os.path.normpath(os.path.join(here, name))
            path = os.path.join(dirpath, name)
            if here == "." and name in OWN:
                continue
            e = files.get(rel)
            if _is_folder(path):
                ok = rel in dirs
            elif os.path.islink(path):
                ok = e is not None and e.type == SYMLINK
            else:
                ok = e is not None and e.type == FILE and stat.S_ISREG(os.lstat(path).st_mode)
            if not ok:
                strangers.append(rel)
        dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(here, d)) in dirs]
    if strangers:
        strangers.sort()
        more = f" and {len(strangers) - 10} more" if len(strangers) > 10 else ""
        raise ProblemFound(
            f"{len(strangers)} path(s) in {folder} are not of the version its interrupted creation was checking"
            f" out: {', '.join(strangers[:10])}{more}; move them out of the folder, then run the create again"
        )
    _remove_all_but(folder, OWN)


def _remove_all_but(folder: str, keep: tuple[str, ...]) -> None:
    """Remove everything in ``folder`` but the names in ``keep``, read-only folders included. The folder is
    opened once, without following a link, and everything is removed relative to it: a folder swapped for a
    link meanwhile (by whoever can rename in its parent) is refused, never followed."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(f"{folder} is no longer the workspace folder (a link, or gone): {e.strerror}") from None

    def remove() -> None:
        for entry in os.scandir(fd):
            if entry.name not in keep:
                _remove_at(fd, entry)

    try:
        try:
            remove()
        except PermissionError:  # a version's read-only folder, without root's override
            make_removable(f"/proc/self/fd/{fd}")
            remove()
    finally:
        os.close(fd)


def _remove_at(dir_fd: int, entry: os.DirEntry[str]) -> None:
    """Remove ``entry`` of the folder open as ``dir_fd``, a folder with everything in it, never following a
    link."""
    if not entry.is_dir(follow_symlinks=False):
        os.unlink(entry.name, dir_fd=dir_fd)
        return
    fd = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        for inner in os.scandir(fd):
            _remove_at(fd, inner)
    finally:
        os.close(fd)
    os.rmdir(entry.name, dir_fd=dir_fd)


def _listing(folder: str) -> dict[str, list[ingest.ScanNode]]:
    """What `strongroom commit` takes from the folder, by folder: the same scan and ignore rules (its
    .strongroomignore and the workspace's own files), so anything but files, folders and links is skipped."""
    root = os.path.abspath(folder)
    return ingest.scan(root, ingest.ignore_rules(root, [f"/{name}" for name in OWN]))[0]


def _scan_flat(session: Session, repo: Repository, folder: str) -> tuple[Files, dict[str, int]]:
    """The folder's files and links as a flat map, and its folders with their modes; unchanged files come from
    the cache, changed ones are read and hashed."""
    cache = FileCache(session.file_cache_path(repo, folder), repo.sealer, repo.context)
    cache.load()
    start = time.time_ns()
    chunker = Chunker(repo.chunker_params, repo.chunker_seed)
    out: Files = {}
    dirs: dict[str, int] = {}
    for nodes in _listing(folder).values():
        for n in nodes:
            mode = stat.S_IMODE(n.st.st_mode)
            if n.type == DIR:
                dirs[n.rel] = mode
            elif n.type == SYMLINK:
                out[n.rel] = Entry(n.name, SYMLINK, mode, n.st.st_mtime_ns, target=n.target)
            else:
                chunks = cache.lookup(n.rel, n.st, start)
                if chunks is None:
                    chunks = _hash(repo, chunker, os.path.join(folder, n.rel))
                out[n.rel] = Entry(n.name, FILE, mode, n.st.st_mtime_ns, n.st.st_size, chunks=chunks)
    return out, dirs


def _hash(repo: Repository, chunker: Chunker, path: str) -> tuple[bytes, ...]:
    try:
        # O_NONBLOCK: a file replaced by a FIFO since the scan must not block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            return tuple(repo.hasher(c) for c in chunker.cut_fd(fd))
        finally:
            os.close(fd)
    except OSError as e:
        raise UnreadableSource(path, e.strerror or str(e)) from None


def _open(session: Session, folder: str, meta: dict[str, object]) -> Repository:
    repo = session.open()
    if meta.get("repo_id") != repo.config.repo_id:
        raise InputError(f"{folder} is a workspace of another repository")
    return repo


def _committed(repo: Repository, folder: str, meta: dict[str, object], version: bytes) -> None:
    """Make ``version``, just committed from the folder, its base. A sparse workspace's view then extends to
    what the commit took from the folder outside the paths (``extra``)."""
    paths = _paths(meta)
    extra: list[str] = []
    if paths:
        files, folders = _version(repo, version)
        shown, shown_dirs = _view(files, folders, paths, [])
        here = {n.rel for nodes in _listing(folder).values() for n in nodes}
        extra = sorted(p for p in here if (p in files or p in folders) and p not in shown and p not in shown_dirs)
    meta["base"] = version.hex()
    meta["extra"] = extra
    meta.pop("committing", None)
    meta.pop("committing_ns", None)
    _write_meta(folder, meta)


def _adopt(session: Session, repo: Repository, folder: str, meta: dict[str, object]) -> str | None:
    """A workspace commit killed after it moved the branch and before it rewrote the metadata left the branch
    one version ahead of the base: that version, committed from this folder onto the base, becomes the base.
    The file cache needs nothing: its entries hold whatever the base (at worst a file is read again)."""
    branch = str(meta["branch"])
    base = bytes.fromhex(str(meta["base"]))
    if meta.get("committing") != base.hex():
        return None  # without it, a version made here on the base would be adopted again after a switch back
    head = repo.read_refs().branches.get(branch)
    if head is None or head == base:
        return None
    c = repo.load_commit(head)
    if c.parents[:1] != (base,) or c.source != os.path.abspath(folder) or c.branch != branch:
        return None
    # Made by the marked commit, not earlier: a version committed here before a switch back to its parent
    # also names this folder and the base, and adopting it would make the next commit silently revert it.
    since = meta.get("committing_ns")
    if c.host != socket.gethostname() or not isinstance(since, int) or c.time_ns < since:
        return None
    _committed(repo, folder, meta, head)
    session.audit_detail(adopted=head.hex())
    return head.hex()


@audited("workspace.status", folder="folder")
def status(session: Session, folder: str) -> tuple[WorkspaceInfo, list[DiffEntry]]:
    meta = read_meta(folder)
    _refuse_unfinished(folder, meta)
    repo = _open(session, folder, meta)
    adopted = None
    with _exclusive(folder, needed=False) as held:
        if held:  # adopting rewrites the metadata; while a commit or switch runs, status only reads
            meta = read_meta(folder)
            adopted = _adopt(session, repo, folder, meta)
    paths = _paths(meta)
    base = bytes.fromhex(str(meta["base"]))
    all_files, all_dirs = _version(repo, base)
    files, dirs = _view(all_files, all_dirs, paths, _listed(meta, "extra"))
    current, current_dirs = _scan_flat(session, repo, folder)
    changes = [
        DiffEntry(c.status, c.path, c.size, c.old_path if c.status == "renamed" else None, c.old_size)
        for c in diff_flat(files, current)
    ]
    changes += [DiffEntry("added", d, 0) for d in current_dirs.keys() - dirs.keys()]
    changes += [DiffEntry("removed", d, 0) for d in dirs.keys() - current_dirs.keys()]
    # A folder's mode is part of the version: commit records a change of it, so status reports it.
    changes += [
        DiffEntry("modified", d, 0) for d in current_dirs.keys() & dirs.keys() if current_dirs[d] != dirs[d].mode
    ]
    if paths:  # base entries outside the view that what is here would displace: commit refuses
        clashes = ingest.overlay_clashes(current, current_dirs, *_hidden(all_files, all_dirs, files, dirs))
        changes += [DiffEntry("clash", p, 0) for hidden in clashes.values() for p in hidden]
    changes.sort(key=lambda c: (c.path, _ORDER[c.status]))
    info = WorkspaceInfo(
        os.path.abspath(folder),
        str(meta["branch"]),
        base.hex(),
        paths,
        len(current),
        0,
        str(meta["switching_to"]) if meta.get("switching_to") else None,
        adopted=adopted,
    )
    return info, changes


@audited("workspace.commit", folder="folder", branch="branch")
def commit(session: Session, folder: str, message: str, branch: str | None, wait: float) -> CommitSummary:
    read_meta(folder)  # a missing folder or metadata is reported as such, not as a lock that cannot be made
    with _exclusive(folder):
        return _commit(session, folder, message, branch, wait)


def _commit(session: Session, folder: str, message: str, branch: str | None, wait: float) -> CommitSummary:
    meta = read_meta(folder)
    _refuse_unfinished(folder, meta)
    if meta.get("switching_to"):
        raise ProblemFound(f"an interrupted switch to {meta['switching_to']} must be completed first (run it again)")
    ws_branch = str(meta["branch"])
    if branch is not None and branch != ws_branch:
        raise InputError(f"{folder} is a workspace of branch {ws_branch}, not {branch}")
    repo = _open(session, folder, meta)
    _adopt(session, repo, folder, meta)
    base = bytes.fromhex(str(meta["base"]))
    if ws_branch not in repo.read_refs().branches:  # deleted since: a retry would never help
        raise ProblemFound(
            f"branch {ws_branch} no longer exists (deleted?): `strongroom branch create {shlex.quote(ws_branch)} "
            f"--from {base.hex()[:16]}` makes it again at this workspace's base; then commit again"
        )
    paths = _paths(meta)
    overlay = None
    if paths:
        files, folders = _version(repo, base)
        overlay = _hidden(files, folders, *_view(files, folders, paths, _listed(meta, "extra")))
    meta["committing"] = base.hex()  # lets _adopt tell an interrupted commit from a switch to the base
    meta["committing_ns"] = time.time_ns()
    _write_meta(folder, meta)
    try:
        res = commit_version(
            session, folder, message, ws_branch, wait=wait, pinned_parent=base, overlay=overlay, always_ignore=OWN
        )
    except Exception:
        meta.pop("committing", None)  # refused (branch moved, ...): only a kill or ^C leaves the mark
        meta.pop("committing_ns", None)
        with contextlib.suppress(StrongroomError):  # the commit's refusal is what to report; the mark is harmless
            _write_meta(folder, meta)
        raise
    try:
        _committed(repo, folder, meta, bytes.fromhex(res.id))
    except (CannotWrite, InputError) as e:
        raise (CannotWrite if isinstance(e, CannotWrite) else InputError)(
            f"version {res.id[:12]} was committed to {ws_branch}, but {e}; `strongroom status "
            f"{folder}` makes it the workspace's base once that can be written"
        ) from None
    return res


def _is_partial(rel: str) -> bool:
    return _PARTIAL_NAME.fullmatch(os.path.basename(rel)) is not None


def _partial_name(path: str) -> str:
    """A free name in the folder of ``path`` for the file the switch writes there (created with O_EXCL)."""
    while True:
        partial = os.path.join(os.path.dirname(path), PARTIAL + secrets.token_hex(8))
        if not os.path.lexists(partial):
            return partial


def _refuse_strangers(
    folder: str, current: Files, current_dirs: dict[str, int], old: Files, old_dirs: Files, new: Files, new_dirs: Files
) -> None:
    """Resuming a switch deletes and rewrites what is not yet as in the target: only if everything in the folder
    is as in one of the two versions (or is a file the switch was writing). Anything else is the user's."""
    strangers = sorted(
        [
            rel
            for rel, e in current.items()
            if not (same_entry(e, old.get(rel)) or same_entry(e, new.get(rel)) or _is_partial(rel))
        ]
        + [rel for rel in current_dirs if rel not in old_dirs and rel not in new_dirs]
    )
    if strangers:
        more = f" and {len(strangers) - 10} more" if len(strangers) > 10 else ""
        raise ProblemFound(
            f"{len(strangers)} path(s) in {folder} belong to neither version: {', '.join(strangers[:10])}{more};"
            " move them out of the workspace, then run the switch again"
        )


def _stray(folder: str, rel: str, gone: set[str]) -> str | None:
    """Something below the folder ``rel`` other than folders and the files the switch deletes."""
    for dirpath, dirnames, filenames in os.walk(os.path.join(folder, rel)):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            found = os.path.relpath(os.path.join(dirpath, name), folder)
            if found not in gone:
                return found
    return None


def _refuse_in_the_way(
    folder: str, version: str, current: Files, gone: set[str], changed: Files, new_dirs: Files
) -> None:
    """Refuse, before anything changes, a switch that would have to replace something of neither version (an
    ignored file, a FIFO): where the target has a file, link or folder, or inside a folder it replaces."""
    for rel in [*changed, *new_dirs]:
        path = os.path.join(folder, rel)
        if _is_folder(path):
            found = None if rel in new_dirs else _stray(folder, rel, gone)
            if found is not None:
                raise ProblemFound(
                    f"{path} is a folder here and not in {version}: it holds {found}, which belongs to neither"
                    " version; move it out of the workspace, then run the switch again"
                )
        elif os.path.lexists(path) and rel not in current:
            raise ProblemFound(
                f"{path} belongs to neither version (ignored, or not a file): move it out of the workspace, then run"
                " the switch again"
            )


def _remove_folder(path: str, writable: _Writable) -> None:
    """Remove a folder holding nothing but folders, deepest first."""
    for dirpath, _, _ in os.walk(path, topdown=False):
        writable.parent_of(os.path.relpath(dirpath, writable.folder))
        try:
            os.rmdir(dirpath)
        except OSError:
            raise ProblemFound(
                f"{path} is a folder here and not in the target: it holds files of neither version; move them out"
                " of the workspace, then run the switch again"
            ) from None


@audited("workspace.switch", folder="folder", version="version")
def switch(session: Session, folder: str, version: str) -> WorkspaceInfo:
    read_meta(folder)
    with _exclusive(folder):
        return _switch(session, folder, version)


def _switch(session: Session, folder: str, version: str) -> WorkspaceInfo:
    meta = read_meta(folder)
    _refuse_unfinished(folder, meta)
    repo = _open(session, folder, meta)
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
        meta = read_meta(folder)  # status adopts a version whose commit was interrupted
    base = bytes.fromhex(str(meta["base"]))
    old, old_dirs = _view(*_version(repo, base), paths, _listed(meta, "extra"))
    extra = _listed(meta, "extra")
    new, new_dirs = _view(*_version(repo, target), paths, extra)  # what it committed outside its paths stays
    if resuming:
        current, current_dirs = _scan_flat(session, repo, folder)
        _refuse_strangers(folder, current, current_dirs, old, old_dirs, new, new_dirs)
    else:
        current = old  # status found the folder as the base
    gone = set(current) - set(new)
    changed = {rel: e for rel, e in new.items() if not same_entry(current.get(rel), e)}
    _refuse_in_the_way(folder, version, current, gone, changed, new_dirs)
    meta["switching_to"] = target.hex()
    meta.pop("committing", None)
    meta.pop("committing_ns", None)
    _write_meta(folder, meta)
    written = 0
    donors = _donors(session, repo, folder)
    sharer = Sharer(repo, donors, folder) if donors else None
    writable = _Writable(folder)
    try:
        with lock.read_lock(repo.backend, "workspace switch"):
            for rel in sorted(gone):
                writable.parent_of(rel)
                os.unlink(os.path.join(folder, rel))
            _make_folders(folder, new_dirs, writable)
            for rel, e in sorted(changed.items()):
                path = os.path.join(folder, rel)
                writable.parent_of(rel)
                partial = _partial_name(path)  # one a killed run left is in ``gone``: removed above
                if e.type == SYMLINK:
                    os.symlink(e.target or "", partial)
                elif sharer is None or not sharer.place(os.fsencode(partial), e):
                    write_file(repo, os.fsencode(partial), e)
                    written += e.size
                if _is_folder(path):
                    _remove_folder(path, writable)
                os.replace(partial, path)
        for rel in sorted(old_dirs.keys() - new_dirs.keys(), key=lambda r: -r.count("/")):
            path = os.path.join(folder, rel)
            if _is_folder(path) and not os.listdir(path):
                writable.parent_of(rel)
                os.rmdir(path)
        writable.restore()
        _set_folder_stamps(folder, new_dirs)
    except OSError as e:
        where = os.fsdecode(e.filename) if e.filename else folder
        stopped = f"workspace switch stopped at {where}: {e.strerror or e}; fix that, then run the switch again"
        raise (CannotWrite if refused_write(e) else InputError)(stopped) from None
    finally:
        with contextlib.suppress(OSError):
            writable.restore()
    meta["base"] = target.hex()
    meta["extra"] = [p for p in extra if p in new or p in new_dirs]
    meta.pop("switching_to", None)
    try:
        _write_meta(folder, meta)
    except (CannotWrite, InputError) as e:
        stopped = f"workspace switch stopped: {e}; run the switch again"
        raise (CannotWrite if isinstance(e, CannotWrite) else InputError)(stopped) from None
    _prime_cache(session, repo, folder, new)
    _register(session, repo.config.repo_id, folder)
    reflinked = sharer.reflinked if sharer else 0
    return WorkspaceInfo(
        os.path.abspath(folder), str(meta["branch"]), target.hex(), paths, len(new), written, None, reflinked
    )


@audited("workspace.discard", folder="folder")
def discard(session: Session, folder: str) -> WorkspaceInfo:
    if os.path.islink(os.path.normpath(folder)):
        raise InputError(f"{folder} is a symbolic link; give the workspace folder itself")
    read_meta(folder)
    notes: list[str] = []
    with _exclusive(folder):
        meta = read_meta(folder)
        if _made_branch(meta):
            notes = _made_branch_note(meta)
        if not meta.get("discarding"):
            # Marked first and removed last: a discard killed half way leaves a workspace that says so, which
            # commit and switch refuse and a second discard completes.
            meta["discarding"] = True
            with contextlib.suppress(StrongroomError):  # a full disk: removing the files is what frees it
                _write_meta(folder, meta)
        try:
            _remove_all_but(folder, (META, LOCK))
            os.unlink(os.path.join(folder, LOCK))
            os.unlink(_meta_path(folder))
            os.rmdir(folder)
        except OSError as e:
            raise InputError(f"cannot remove {e.filename or folder}: {e.strerror or e}") from None
    repo_id = meta.get("repo_id")
    if isinstance(repo_id, str) and repo_id:
        _register(session, repo_id, folder, add=False)
    base = str(meta["base"])
    return WorkspaceInfo(os.path.abspath(folder), str(meta["branch"]), base, _paths(meta), 0, 0, None, notes=notes)


def _made_branch_note(meta: dict[str, object]) -> list[str]:
    """Discarding a workspace whose create was cut off leaves the branch that create made: whether another
    workspace (of any client, anywhere) is on it cannot be told from here. The note says how to remove it."""
    branch = str(meta["branch"])
    return [
        f"branch {branch}, made by the interrupted workspace create, was kept: "
        f"`strongroom branch delete {shlex.quote(branch)}` removes it if nothing uses it"
    ]


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
