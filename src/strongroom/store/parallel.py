"""Run work over forked worker processes and collect their messages in the parent.

Processes, not threads: the Python glue between library calls holds the GIL, and on a 16-core machine
threads stopped gaining at about 4 cores while processes kept scaling. Workers are forked so they inherit
the opened repository (keys included) without it ever being serialized.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from strongroom.errors import StrongroomError

T = TypeVar("T")
Message = tuple[Any, ...]


def tune_allocator() -> None:
    """Keep freed large buffers in the heap for reuse. glibc otherwise maps and unmaps every buffer above
    its threshold (each chunk, each pack), and the page faults cost more system time than the I/O."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def deal(
    items: Sequence[T], weight: Callable[[T], int], n: int, group: Callable[[T], Any] | None = None
) -> list[list[T]]:
    """Longest-processing-time dealing into n shares; items with the same group key stay together."""
    groups: dict[Any, list[T]] = {}
    for i, item in enumerate(items):
        groups.setdefault(group(item) if group else i, []).append(item)
    loads = [0] * n
    out: list[list[T]] = [[] for _ in range(n)]
    for members in sorted(groups.values(), key=lambda g: -sum(weight(x) for x in g)):
        w = loads.index(min(loads))
        out[w].extend(members)
        loads[w] += sum(weight(x) + 4096 for x in members)
    return [o for o in out if o]


def _portable(e: BaseException) -> StrongroomError | None:
    """Errors a user acts on (any exit code but 3: bad input, a key not at hand, shredded data, a storage
    failure) cross back to the parent as themselves, so their exit code and message hold."""
    if isinstance(e, StrongroomError) and e.exit_code != 3:
        try:
            type(e)(*e.args)  # how the pipe rebuilds it: a class that cannot be rebuilt so stays a text
        except Exception:
            return None
        return e
    return None


def _child(body: Callable[[list[T], Callable[[Message], None]], None], share: list[T], conn: Connection) -> None:
    gc.freeze()  # the inherited objects (the index above all) are never garbage: collections skip them
    try:
        body(share, conn.send)
    except BaseException as e:  # report to the parent instead of hanging it
        with contextlib.suppress(Exception):
            conn.send(("fatal", f"{type(e).__name__}: {e}", isinstance(e, StrongroomError), _portable(e)))
    finally:
        conn.close()


def run(
    shares: list[list[T]],
    body: Callable[[list[T], Callable[[Message], None]], None],
    handle: Callable[[Message], None],
) -> None:
    """Run body(share, send) for each share: in-process for one share, else one forked process each.
    A ("fatal", text, ...) message from a worker stops everything with StrongroomError."""

    def checked(msg: Message) -> None:
        if msg[0] == "fatal":
            if len(msg) > 3 and msg[3] is not None:
                raise msg[3]  # a user-facing error (shredded, a key not at hand): raised as itself
            raise StrongroomError(f"worker failed: {msg[1]}")
        handle(msg)

    tune_allocator()
    if len(shares) <= 1:
        for share in shares:
            body(share, checked)
        return
    ctx = multiprocessing.get_context("fork")
    procs, conns = [], []
    finished = False
    try:
        for share in shares:
            parent_end, child_end = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_child, args=(body, share, child_end), daemon=True)
            p.start()
            child_end.close()
            procs.append(p)
            conns.append(parent_end)
        open_conns = list(conns)
        while open_conns:
            for c in wait(open_conns):
                assert isinstance(c, Connection)
                try:
                    msg = c.recv()
                except EOFError:
                    open_conns.remove(c)
                    continue
                checked(msg)
        finished = True
    finally:
        for p in procs:
            if not finished and p.is_alive():
                p.terminate()  # an error in the parent: stop the others at once
            p.join()
        for c in conns:
            c.close()
    if any(p.exitcode != 0 for p in procs):
        raise StrongroomError("a worker process died")
