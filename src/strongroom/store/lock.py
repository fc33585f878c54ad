"""Repository locks. Packs are written without a lock; publishing (index, then ref compare-and-swap) takes
the short exclusive ``locks/publish``. Readers hold shared ``locks/read-*`` files that garbage collection
must honour. A lock whose holder is a dead process on this host is stale and is cleared automatically."""

from __future__ import annotations

import functools
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

    def is_stale(self) -> bool:
        return ProcessMark(self.pid, self.host, self.boot, self.pid_ns).gone()


@dataclass(frozen=True)
class ProcessMark:
    """Enough about a process to tell later, from another process, that it has ended."""

    pid: int
    host: str
    boot: str = ""  # the host's boot id: after a reboot a PID names another process
    pid_ns: str = ""  # the PID namespace the PID is in: two containers on one host share its name and boot id
    started: int = 0  # when the process started (clock ticks since boot; 0: unknown): a reused PID differs

    @classmethod
    def current(cls) -> ProcessMark:
        pid = os.getpid()
        return cls(pid, socket.gethostname(), boot_id(), pid_namespace(), process_start(pid))

    def gone(self) -> bool:
        """True only when this process has certainly ended; a process of another host or PID namespace
        cannot be told, and is taken as running."""
        if self.host != socket.gethostname():
            return False
        now = boot_id()
        if self.boot and now and self.boot != now:
            return True  # before this host last booted (a record a power loss brought back)
        if self.pid_ns != pid_namespace():
            return False  # a PID of another namespace (another container): this one cannot tell if it lives
        if process_gone(self.pid):
            return True
        return bool(self.started) and process_start(self.pid) not in (0, self.started)


def process_gone(pid: int) -> bool:
    """No process with this PID runs in this PID namespace (False when one does, or when that cannot be told).
    Whether it is the process that once had the PID is for the caller to know (a host, a boot, a namespace)."""
    if pid <= 0:
        return False  # 0 and negative numbers name process groups: never a writer's PID
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OverflowError:
        return True  # beyond any PID this system can hand out
    except PermissionError:
        return False
    return False


def process_start(pid: int) -> int:
    """When process ``pid`` started, in clock ticks since boot (Linux; 0 when unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # the command name, in parentheses, may hold spaces and parentheses: count fields after the last one
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


@functools.cache
def boot_id() -> str:
    """Linux's id of the current boot ("" elsewhere)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


@functools.cache
def pid_namespace() -> str:
    """The PID namespace this process's PIDs mean something in, as Linux names it ("" elsewhere)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _record(command: str) -> bytes:
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time_ns": time.time_ns(),
            "command": command,
            "boot": boot_id(),
            "pid_ns": pid_namespace(),
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
