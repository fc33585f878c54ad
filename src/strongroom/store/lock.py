"""Repository locks. Packs are written without a lock; publishing (index, then ref compare-and-swap) takes
the short exclusive ``locks/publish``. Readers hold shared ``locks/read-*`` files that garbage collection
must honour. A lock whose holder is a dead process on this host is stale and is cleared automatically."""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from strongroom.backends.base import Backend, ObjectMissing, StorageFull
from strongroom.errors import RepositoryLocked, StrongroomWarning
from strongroom.store.process import ProcessMark, boot_id, machine_id, pid_namespace, process_start

PUBLISH = "locks/publish"
CLEARING_EXPIRES_NS = 60 * 10**9
STALE_GRACE_S = 2.0  # how long a writer waits for another one clearing a stale lock, whatever --wait says
EXCLUSIVE = "locks/exclusive"
COMPACTING = "index compaction"  # the command an index compaction holds the publish and exclusive locks as
COMPACTION_WAIT_S = 10.0  # a compaction holds them to write two files and delete a few dozen: others wait
COMPACTION_STALE_S = 60.0  # a compaction lock older than this (by the holder's clock) is not waited for


@dataclass(frozen=True)
class Holder:
    name: str
    pid: int
    host: str
    time_ns: int
    command: str
    boot: str = ""  # the host's boot id: after a reboot a PID names another process
    pid_ns: str = ""  # the PID namespace the PID is in: two containers on one host share its name and boot id

    def describe(self, now_ns: int) -> str:
        age = max(0, (now_ns - self.time_ns) // 1_000_000_000)
        return f"PID {self.pid} on {self.host} ({self.command}, {age}s ago)"

    started: int = 0  # when the holder process started (a reused PID names another process)
    machine: str = ""  # the holder's machine id (two machines may share a host name)

    def is_stale(self) -> bool:
        return ProcessMark(self.pid, self.host, self.boot, self.pid_ns, self.started, self.machine).gone()


def _record(command: str) -> bytes:
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time_ns": time.time_ns(),
            "command": command,
            "boot": boot_id(),
            "pid_ns": pid_namespace(),
            "started": process_start(os.getpid()),
            "machine": machine_id(),
        }
    ).encode()


def read_holder(backend: Backend, name: str) -> Holder | None:
    """Who holds the lock, or None. A lock released as it was read, and at once taken by another holder, is
    read again rather than reported unreadable."""
    for _ in range(2):
        try:
            data = backend.get(name)
        except ObjectMissing:
            continue
        except Exception:
            return None if backend.size(name) is None else Holder(name, -1, "?", 0, "unreadable lock")
        try:
            obj = json.loads(data)
            return Holder(
                name,
                int(obj["pid"]),
                str(obj["host"]),
                int(obj["time_ns"]),
                str(obj.get("command", "")),
                str(obj.get("boot", "")),
                str(obj.get("pid_ns", pid_namespace())),  # older records name none: taken as ours
                int(obj.get("started", 0)),
                str(obj.get("machine", "")),
            )
        except Exception:
            return Holder(name, -1, "?", 0, "unreadable lock")
    return None


def holders(backend: Backend) -> list[Holder]:
    out = []
    for name, _ in backend.list("locks"):
        h = read_holder(backend, name)
        if h is not None:
            out.append(h)
    return out


def _same_holder(a: Holder | None, b: Holder) -> bool:
    return a is not None and (a.pid, a.host, a.time_ns, a.command) == (b.pid, b.host, b.time_ns, b.command)


def _clear_stale(backend: Backend, name: str, stale: Holder) -> bool:
    """Delete lock ``name`` if it still holds the dead ``stale`` record. Two waiters may see the same stale
    lock; deleting blindly, the second would delete the live lock the first has just taken, and both would
    publish. So clearing is itself serialised (``<name>.clearing``) and re-reads the record first. False when
    another process is clearing it."""
    clearing = f"{name}.clearing"
    if not backend.put_exclusive(clearing, _record("clearing a stale lock")):
        other = read_holder(backend, clearing)
        # Clearing takes microseconds: one that is older than a minute, unreadable, or whose process is gone
        # was left by a clearer that died (or its PID was reused); it would otherwise block every writer.
        if other is not None and (other.is_stale() or time.time_ns() - other.time_ns > CLEARING_EXPIRES_NS):
            backend.delete(clearing)
        return False
    try:
        if _same_holder(read_holder(backend, name), stale):
            backend.delete(name)
    finally:
        backend.delete(clearing)
    return True


@contextmanager
def publish_lock(backend: Backend, command: str, wait_seconds: float = 0.0) -> Iterator[None]:
    started = time.monotonic()
    deadline = started + wait_seconds
    mine = _record(command)
    while not backend.put_exclusive(PUBLISH, mine):
        holder = read_holder(backend, PUBLISH)
        if holder is None:
            continue
        stale = holder.is_stale()
        if stale and _clear_stale(backend, PUBLISH, holder):
            continue
        # Another writer is clearing a stale lock, or another commit's index compaction (which no one asked
        # for) holds it for a moment: wait for either, whatever --wait says.
        grace = STALE_GRACE_S if stale else COMPACTION_WAIT_S if command != COMPACTING and _compacting(holder) else 0
        if time.monotonic() >= max(deadline, started + grace):
            raise RepositoryLocked(holder.describe(time.time_ns()))
        time.sleep(0.05)
    try:
        yield
    finally:
        with suppress(ObjectMissing):
            if backend.get(PUBLISH) == mine:  # only our own: never a lock someone else took
                backend.delete(PUBLISH)


def _compacting(holder: Holder) -> bool:
    """An index compaction at work: one older than COMPACTION_STALE_S (by its holder's clock) is not."""
    return holder.command == COMPACTING and time.time_ns() - holder.time_ns < COMPACTION_STALE_S * 1e9


def _live_exclusive(backend: Backend) -> Holder | None:
    holder = read_holder(backend, EXCLUSIVE)
    if holder is not None and holder.is_stale():
        backend.delete(EXCLUSIVE)
        return None
    return holder


@contextmanager
def read_lock(backend: Backend, command: str) -> Iterator[None]:
    """A shared lock (readers and commits). Two-flag protocol with exclusive_lock: write ours, then look for
    theirs; whichever comes second sees the other and backs off."""
    name = f"locks/read-{os.urandom(8).hex()}"
    try:
        backend.put(name, _record(command))
    except StorageFull:
        # Reading must still work when the disk is full: that is when data is restored elsewhere. No gc can
        # take its own lock while the disk stays full; one that starts after space is freed does not see us.
        warnings.warn(
            StrongroomWarning(
                "the repository's disk is full: reading without a reader lock "
                "(a gc started meanwhile could remove what this reads)"
            ),
            stacklevel=2,
        )
        if _live_exclusive(backend) is not None:
            raise RepositoryLocked(EXCLUSIVE) from None
        yield
        return
    deadline = time.monotonic() + COMPACTION_WAIT_S
    while (holder := _live_exclusive(backend)) is not None:
        # Our flag stays while we wait: the compaction has looked for readers already, and no gc can start.
        if not _compacting(holder) or time.monotonic() >= deadline:
            backend.delete(name)
            raise RepositoryLocked(holder.describe(time.time_ns()))
        time.sleep(0.02)
    try:
        yield
    finally:
        backend.delete(name)


@contextmanager
def exclusive_lock(backend: Backend, command: str) -> Iterator[None]:
    """Held by gc while it deletes: no reader or commit may run. Refuses while shared locks are held."""
    _live_exclusive(backend)
    if not backend.put_exclusive(EXCLUSIVE, _record(command)):
        holder = read_holder(backend, EXCLUSIVE)
        raise RepositoryLocked(holder.describe(time.time_ns()) if holder else EXCLUSIVE)
    try:
        readers = [h for h in holders(backend) if h.name.startswith("locks/read-") and not h.is_stale()]
        if readers:
            raise RepositoryLocked(readers[0].describe(time.time_ns()) + "; gc does not delete while others read")
        yield
    finally:
        backend.delete(EXCLUSIVE)


def clear(backend: Backend, force: bool) -> list[Holder]:
    """Remove stale locks (or, with force, every lock); returns what was removed."""
    removed = []
    for h in holders(backend):
        if force or h.is_stale():
            backend.delete(h.name)
            removed.append(h)
    return removed
