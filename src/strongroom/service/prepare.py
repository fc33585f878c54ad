"""Watched folders: read what changes in a folder as it changes, so that its next commit has little left to
read (`strongroom agent watch`, docs/agent.md).

A watch lives in the agent. It keeps the opened repository (its keys) for as long as it runs, hears of
changed files from the operating system (watchdog: inotify on Linux), and hands them to
store.ingest.prepare_files, which stores their chunks and records them in the folder's file cache. The
commit itself is unchanged: it trusts a cache entry only on an exact stat match, recorded late enough after
the file's last write, with every chunk in the index. So nothing the watcher misses or gets wrong can make
a commit wrong; it can only leave the commit more to read.

The agent runs one command at a time and pauses every watch while a command runs (`quiet`), after giving
them a moment to finish what they already heard of (`settle`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from strongroom.errors import InputError, StrongroomError
from strongroom.service.context import Session, audited
from strongroom.service.results import Result
from strongroom.service.workspace import META, OWN, is_workspace
from strongroom.store.filecache import FileCache, ignore_lease_breaks
from strongroom.store.ingest import ignore_rules, prepare_files
from strongroom.store.parallel import default_workers
from strongroom.store.repository import PackMemo, Repository

NOT_LOADED = (0, 0, 0)  # no real file's signature: the cache is loaded at the next batch
RETRY_FIRST_S = 0.25  # a file written within the racy-clean second is looked at again this soon, then
RETRY_MAX_S = 5.0  # ... backing off to this (a file stamped in the future, or written to all the time)
REFRESH_S = 1.0  # how stale the watch's view of the repository may get while no command runs


@dataclass
class WatchSummary(Result):
    folder: str
    repo_id: str
    workspace: bool
    excludes: list[str] = field(default_factory=list)


@dataclass
class WatchStats:
    files_read: int = 0
    bytes_read: int = 0
    bytes_stored: int = 0
    errors: int = 0
    last_error: str = ""
    overflows: int = 0  # times the operating system's event queue overflowed: events lost, folder looked at again


class _Handler(FileSystemEventHandler):
    def __init__(self, watch: Watch) -> None:
        self.watch = watch

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                self.watch.heard(os.fsdecode(path))


_LIVE: weakref.WeakSet[Watch] = weakref.WeakSet()


class _Overflow(logging.Handler):
    """watchdog reports an inotify queue overflow (events lost) only as this warning, after it has re-added
    its watches: every running watch then looks at its whole folder again. It also keeps watchdog's
    warnings off the standard error of whichever command the agent is running."""

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            for w in list(_LIVE):
                w.overflowed()


logging.getLogger("watchdog.observers.inotify_c").addHandler(_Overflow(logging.WARNING))


class Watch:
    """One watched folder: a watchdog observer, and a thread that prepares what it hears of."""

    def __init__(
        self, repo: Repository, folder: str, cache_path: str, excludes: list[str], always_ignore: tuple[str, ...]
    ) -> None:
        self.repo = repo
        self.folder = folder
        self.cache_path = cache_path
        self.excludes = excludes
        self.always_ignore = always_ignore
        self.stats = WatchStats()
        self._cache = FileCache(cache_path, repo.sealer, repo.context)
        self._cache_seen: tuple[int, int, int] | None = NOT_LOADED
        self._keyring_seen = repo.backend.get("keyring")
        self._refs_seen: bytes | None = None
        self._pack_memo: PackMemo = {}  # which data folders need no listing at the next refresh
        self._known: set[bytes] = set()
        self._pending: set[str] = set()
        self._waiting: dict[str, tuple[float, float]] = {}  # file → (when to look again, the delay it waited)
        self._refreshed = 0.0
        self._stale = True  # the repository or the cache may have changed since the last look: _refresh
        self._busy = False
        self._paused = False
        self._stopped = False
        self._rescan = False  # events were lost: look at every file changed since the watch started
        self._since_ns = time.time_ns()
        self._cond = threading.Condition()
        self._observer = Observer()
        self._thread = threading.Thread(target=self._work, name=f"strongroom-watch {folder}", daemon=True)

    def start(self) -> None:
        ignore_lease_breaks()  # in the thread that starts watches (the main one): see has_writers
        self._since_ns = time.time_ns() - 2 * 10**9  # a margin for stamps a little behind this clock
        _LIVE.add(self)
        try:
            self._observer.schedule(_Handler(self), self.folder, recursive=True)
            self._observer.start()
        except OSError as e:  # inotify's limits (fs.inotify.max_user_watches, max_user_instances), a gone folder
            self._observer.stop()
            raise InputError(f"cannot watch {self.folder}: {e.strerror or e}") from None
        self._thread.start()

    def stop(self) -> None:
        _LIVE.discard(self)
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._observer.stop()
        self._observer.join(5)
        self._thread.join(30)

    # ------------------------------------------------------------------ heard from the observer

    def heard(self, path: str) -> None:
        rel = os.path.relpath(path, self.folder)
        if rel.startswith("..") or rel == ".":
            return
        with self._cond:
            self._pending.add(rel.replace(os.sep, "/"))
            self._cond.notify_all()

    def overflowed(self) -> None:
        with self._cond:
            self.stats.overflows += 1
            self._rescan = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ the agent's side

    def backlog(self) -> int:
        """Files heard of that can be read ahead now and are not yet (one more while a batch is being read).
        Files still inside the racy-clean second, or stamped in the future, wait apart and do not count."""
        with self._cond:
            return len(self._pending) + (1 if self._busy else 0) + (1 if self._rescan else 0)

    def waiting(self) -> int:
        """Files heard of that wait for their stamps to age past the racy-clean second (or that are stamped in
        the future): the agent reads them once they have."""
        with self._cond:
            return len(self._waiting)

    def settle(self, deadline: float) -> None:
        """Wait (until the monotonic deadline) for the backlog to be read."""
        with self._cond:
            while (self._pending or self._busy) and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(left, 0.05))

    def pause(self) -> None:
        """Stop before the next batch, and wait for the running one to end (it stops between chunks)."""
        with self._cond:
            self._paused = True
            while self._busy:
                self._cond.wait()

    def resume(self) -> None:
        """After a command: carry on, first catching up with what the command may have changed."""
        with self._cond:
            self._paused = False
            self._stale = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ the watch's thread

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.monotonic()
                    due = [rel for rel, (when, _) in self._waiting.items() if when <= now]
                    if not self._paused and (self._pending or self._stale or due or self._rescan):
                        break
                    soonest = min((when for when, _ in self._waiting.values()), default=None)
                    self._cond.wait(None if soonest is None or self._paused else max(0.0, soonest - now))
                if self._stopped:
                    return
                retried = {rel: self._waiting.pop(rel)[1] for rel in due}
                batch = sorted(self._pending | set(retried))
                self._pending.clear()
                rescan, self._rescan = self._rescan, False
                self._busy = True
            later: list[str] = []
            try:
                if rescan:
                    batch = sorted(set(batch) | set(self._changed_since_start()))
                if self._stale or time.monotonic() - self._refreshed >= REFRESH_S:
                    self._stale = False
                    self._refresh()
                if batch:
                    later = self._prepare(batch)
            except (StrongroomError, OSError) as e:
                self.stats.errors += 1
                self.stats.last_error = f"{type(e).__name__}: {e}"[:300]
            finally:
                with self._cond:
                    self._busy = False
                    now = time.monotonic()
                    for rel in later:  # again after a while, backing off (a file stamped in the future, or hot)
                        delay = min(2 * retried[rel], RETRY_MAX_S) if rel in retried else RETRY_FIRST_S
                        self._waiting[rel] = (now + delay, delay)
                    self._cond.notify_all()

    def _changed_since_start(self) -> list[str]:
        """Every file whose stamps are from the watch's time: what the lost events may have named."""
        found = []
        for top, _dirs, files in os.walk(self.folder):
            for name in files:
                path = os.path.join(top, name)
                with contextlib.suppress(OSError):
                    st = os.lstat(path)
                    if max(st.st_mtime_ns, st.st_ctime_ns) >= self._since_ns:
                        found.append(os.path.relpath(path, self.folder).replace(os.sep, "/"))
        return found

    def _prepare(self, rels: list[str]) -> list[str]:
        if _file_signature(self.cache_path) != self._cache_seen:  # a commit saved it
            self._cache.load()
            self._cache_seen = _file_signature(self.cache_path)
        rules = ignore_rules(self.folder, self.excludes + [f"/{name}" for name in self.always_ignore])
        done = prepare_files(
            self.repo,
            self.folder,
            rels,
            self._cache,
            rules,
            self._known,
            lambda: self._paused or self._stopped,
            default_workers(),
        )
        self._cache_seen = _file_signature(self.cache_path)
        self.stats.files_read += done.files_read
        self.stats.bytes_read += done.bytes_read
        self.stats.bytes_stored += done.bytes_stored
        return done.later

    def _refresh(self) -> None:
        """Catch up with the repository when someone else changed it: a rotated data key is the one to seal
        with; chunks another commit stored are not stored again (and the packs earlier batches wrote are
        found again, unindexed, among the orphans). After each command, and at most once a second besides."""
        repo = self.repo
        keyring, refs = repo.backend.get("keyring"), repo.backend.get("refs")
        if keyring != self._keyring_seen:
            repo.reload_keyring()
            self._cache = FileCache(self.cache_path, repo.sealer, repo.context)
            self._cache_seen = NOT_LOADED
            self._keyring_seen = keyring
        if refs != self._refs_seen:
            repo.index.replace_with(repo.load_index())
            repo.adopt_orphan_packs(self._pack_memo)
            self._known = repo.index.chunk_ids()
            self._refs_seen = refs
        self._refreshed = time.monotonic()


def _file_signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Watches:
    """The agent's watched folders, by absolute path."""

    def __init__(self) -> None:
        self._by_folder: dict[str, Watch] = {}
        self._lock = threading.Lock()

    def add(self, watch: Watch) -> None:
        watch.start()
        with self._lock:
            old = self._by_folder.pop(watch.folder, None)
            self._by_folder[watch.folder] = watch
        if old is not None:
            old.stop()

    def remove(self, folder: str) -> bool:
        with self._lock:
            watch = self._by_folder.pop(os.path.abspath(folder), None)
        if watch is None:
            return False
        watch.stop()
        return True

    def all(self) -> list[Watch]:
        with self._lock:
            return list(self._by_folder.values())

    def stop_all(self) -> None:
        for watch in self.all():
            self.remove(watch.folder)

    @contextlib.contextmanager
    def quiet(self, settle_s: float) -> Iterator[float]:
        """Around a command: let the watches finish what they heard of (at most settle_s), then pause them
        until the command is over (a command and a watch never work on one repository at once). Yields the
        seconds that took."""
        watches = self.all()
        started = time.monotonic()
        try:  # a Ctrl-C while settling or pausing must not leave a watch paused
            for w in watches:
                w.settle(started + settle_s)
            for w in watches:
                w.pause()
            yield time.monotonic() - started
        finally:
            for w in watches:
                w.resume()


@audited("watch", paths="folder", scope="scope")
def watch(session: Session, folder: str, excludes: list[str], scope: str | None = None) -> tuple[Watch, WatchSummary]:
    """Open the repository (the passphrase is checked as for any command) and watch ``folder`` for the
    commits of it that follow: a workspace with its own rules, any other folder with ``excludes`` (give the
    ones your commits use) and its .strongroomignore. A folder whose commits go to a scope is read ahead under
    that scope's keys (``scope``): read under the repository's, its data would outlive the scope's shredding."""
    from strongroom.service.scopes import scope_view
    from strongroom.store.scopes import check_scope_name

    root = os.path.abspath(folder)
    if not os.path.isdir(root):
        raise InputError(f"not a folder: {folder}")
    repo = session.open()
    if scope is not None:
        check_scope_name(scope)
        repo = scope_view(session, repo, scope, create=True)
    workspace = is_workspace(root)
    if workspace and excludes:
        raise InputError("--exclude does not apply to a workspace")
    always = OWN if workspace else (META,)
    w = Watch(repo, root, session.file_cache_path(repo, root), list(excludes), always)
    return w, WatchSummary(folder=root, repo_id=repo.config.repo_id, workspace=workspace, excludes=list(excludes))
