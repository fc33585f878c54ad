"""Temporary files that killed writers left in the repository folder: every write goes to
``<name>.tmp<pid>-<random>`` first and is renamed into place (backends.local), and a process killed in
between leaves that file. Listings skip such names, so nothing reads them, and nothing else would ever
remove or report them: gc removes the abandoned ones, ``verify --structure`` names them all in notes."""

from __future__ import annotations

from strongroom.backends.base import Backend
from strongroom.backends.local import LocalBackend, Temporary
from strongroom.store.process import process_gone

# The name records the writer's PID, but not its host or PID namespace: a repository on a shared filesystem is
# written from several machines, and a container numbers its own processes. So a PID that runs no process here
# does not tell that the writer is gone. Time does: a write fills its temporary file and renames it within
# seconds (a pack is 16 MiB by default), so one that nothing has written to for an hour was left by a process
# that was killed, or that is stopped and would fail at its rename (an error, no damage). A PID that does run
# here keeps the file all the same (it may be that stopped writer); a later gc removes it once it has gone.
ABANDONED_AFTER_S = 3600


def temporaries(backend: Backend) -> tuple[Temporary, ...]:
    """Every temporary file in the repository (only a folder has them: the other stores write whole objects)."""
    return backend.temporaries() if isinstance(backend, LocalBackend) else ()


def abandoned(temporary: Temporary, now_ns: int) -> bool:
    """Left by a writer that is gone: removing it breaks no write under way."""
    return now_ns - temporary.mtime_ns >= ABANDONED_AFTER_S * 10**9 and process_gone(temporary.pid)


def remove_abandoned(backend: Backend, now_ns: int, dry_run: bool = False) -> int:
    """Remove (or, dry, only count) the abandoned temporary files; returns how many."""
    if not isinstance(backend, LocalBackend):
        return 0
    gone = [t for t in backend.temporaries() if abandoned(t, now_ns)]
    return len(gone) if dry_run else sum(1 for t in gone if backend.remove_temporary(t.name))


def notes(backend: Backend, now_ns: int, shown: int = 10) -> list[str]:
    """What ``verify --structure`` says about them: one line each (the first ``shown``), then how many more."""
    found = temporaries(backend)
    out = []
    for t in found[:shown]:
        if abandoned(t, now_ns):
            out.append(f"{t.name}: a temporary file left by a write that was killed (gc removes it)")
        else:
            out.append(
                f"{t.name}: a temporary file being written, or left by a write killed less than "
                f"{ABANDONED_AFTER_S // 3600} hour ago (gc removes it after that, once its process is gone)"
            )
    if len(found) > shown:
        out.append(f"{len(found) - shown} more temporary files (gc removes those left by killed writes)")
    return out
