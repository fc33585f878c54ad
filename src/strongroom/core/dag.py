"""Version references: ``BRANCH~N``, ancestry walks. Pure: the caller supplies lookups."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from strongroom.core.model import Commit
from strongroom.errors import InputError

# More than 18 digits is no ancestor anyone has (and Python refuses to convert thousands of digits).
_TILDE = re.compile(r"^(?P<base>.+?)~(?P<n>[0-9]{1,18})$")


def split_tilde(ref: str) -> tuple[str, int]:
    m = _TILDE.match(ref)
    if not m:
        return ref, 0
    return m.group("base"), int(m.group("n"))


def walk_first_parent(start: bytes, n: int, load: Callable[[bytes], Commit], name: str) -> bytes:
    current = start
    for _ in range(n):
        parents = load(current).parents
        if not parents:
            raise InputError(f"{name} has fewer than {n} ancestors")
        current = parents[0]
    return current


def ancestors(heads: list[bytes], load: Callable[[bytes], Commit]) -> Iterator[tuple[bytes, Commit]]:
    """Every commit reachable from heads, newest first by commit time, each once."""
    seen: set[bytes] = set()
    frontier: list[tuple[int, bytes, Commit]] = []
    for h in heads:
        if h not in seen:
            seen.add(h)
            c = load(h)
            frontier.append((c.time_ns, h, c))
    while frontier:
        frontier.sort(key=lambda t: t[0])
        _, cid, commit = frontier.pop()
        yield cid, commit
        for p in commit.parents:
            if p not in seen:
                seen.add(p)
                pc = load(p)
                frontier.append((pc.time_ns, p, pc))


def is_ancestor(old: bytes, new: bytes, load: Callable[[bytes], Commit]) -> bool:
    return any(cid == old for cid, _ in ancestors([new], load))


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")


def validate_ref_name(name: str) -> str:
    """Branch and tag names: letters, digits, '.', '_' and '-'; no path separators, no control characters,
    no '..', not ending in '.' or '.lock'."""
    if not _NAME.fullmatch(name) or ".." in name or name.endswith(".") or name.endswith(".lock"):
        raise InputError(f"invalid branch or tag name: {name!r} (use letters, digits, '.', '_' and '-')")
    return name
