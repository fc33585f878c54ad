"""Telling, from another process, that a process has ended: so that what it left (a repository lock, the
pending audit event of a command it ran) is taken over, and never that of a process that still runs.

A ``ProcessMark`` names a process by host (name and machine id), boot, PID namespace, PID and start time,
and optionally a file it keeps locked (``flock``) while it runs: the kernel releases that lock when the
process dies, whichever namespace or container it ran in, so a held file is the surest answer there is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import os
import socket
from typing import Any


@dataclasses.dataclass(frozen=True)
class ProcessMark:
    pid: int
    host: str
    boot: str = ""  # the host's boot id: after a reboot a PID names another process
    pid_ns: str = ""  # the PID namespace the PID is in: two containers on one host share its name and boot id
    started: int = 0  # when the process started (clock ticks since boot; 0: unknown): a reused PID differs
    machine: str = ""  # the machine id: two machines may share a host name, never a machine id
    hold: str = ""  # a file the process keeps locked while it runs ("" for none)

    @classmethod
    def current(cls, hold: str = "") -> ProcessMark:
        pid = os.getpid()
        return cls(pid, socket.gethostname(), boot_id(), pid_namespace(), process_start(pid), machine_id(), hold)

    @classmethod
    def parse(cls, obj: Any) -> ProcessMark | None:
        """The mark recorded as ``obj`` (fields this version does not know are ignored), or None."""
        try:
            return cls(
                int(obj["pid"]),
                str(obj["host"]),
                str(obj.get("boot", "")),
                str(obj.get("pid_ns", "")),
                int(obj.get("started", 0)),
                str(obj.get("machine", "")),
                str(obj.get("hold", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def gone(self) -> bool:
        """True only when this process has certainly ended; one that cannot be told about (another host,
        another PID namespace) is taken as running."""
        if self.hold:
            held = is_held(self.hold)
            if held is not None:
                return not held
        if self.host != socket.gethostname():
            return False
        here = machine_id()
        if self.machine and here and self.machine != here:
            return False  # another machine under the same name
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
def machine_id() -> str:
    """The machine's id (systemd's /etc/machine-id, or D-Bus's; "" when there is none)."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                if found := f.read().strip():
                    return found
        except OSError:
            continue
    return ""


@functools.cache
def pid_namespace() -> str:
    """The PID namespace this process's PIDs mean something in, as Linux names it ("" elsewhere)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


_HELD: dict[str, int] = {}  # files this process holds locked, and the descriptor that holds each


def hold(path: str) -> bool:
    """Create ``path`` (its folder 0700) and keep it locked until ``release`` or the end of this process.
    False when it cannot be (a read-only state folder): the mark then falls back on the PID."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _HELD[path] = fd
    return True


def release(path: str) -> None:
    """Stop holding ``path`` and remove it."""
    fd = _HELD.pop(path, None)
    with contextlib.suppress(OSError):
        os.unlink(path)
    if fd is not None:
        os.close(fd)


def is_held(path: str) -> bool | None:
    """Whether some process holds ``path`` locked (None when there is no such file here, or no telling)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)
    return False


def discard(path: str) -> None:
    """Remove the held file of a process found ended."""
    with contextlib.suppress(OSError):
        os.unlink(path)
