"""Differences between two flattened trees: added, removed, modified and renamed files."""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.core.model import Entry


@dataclass(frozen=True, slots=True)
class Change:
    status: str  # "added" | "removed" | "modified" | "renamed"
    path: str
    size: int
    old_path: str | None = None
    old_size: int | None = None


def _same_content(a: Entry, b: Entry) -> bool:
    return a.type == b.type and a.chunks == b.chunks and a.target == b.target and a.size == b.size


def diff_flat(old: dict[str, Entry], new: dict[str, Entry]) -> list[Change]:
    """Compare two {path: entry} maps (non-folder entries). Renames pair a removed and an added path
    with identical content."""
    changes: list[Change] = []
    removed = {p: e for p, e in old.items() if p not in new}
    added = {p: e for p, e in new.items() if p not in old}
    for path in sorted(old.keys() & new.keys()):
        a, b = old[path], new[path]
        if not _same_content(a, b) or a.mode != b.mode:
            changes.append(Change("modified", path, b.size, path, a.size))
    by_content: dict[tuple[str, tuple[bytes, ...], str | None, int], list[str]] = {}
    for path in sorted(removed):
        e = removed[path]
        by_content.setdefault((e.type, e.chunks, e.target, e.size), []).append(path)
    for path in sorted(added):
        e = added[path]
        key = (e.type, e.chunks, e.target, e.size)
        candidates = by_content.get(key)
        if candidates and (e.size > 0 or e.target is not None):
            old_path = candidates.pop(0)
            del removed[old_path]
            changes.append(Change("renamed", path, e.size, old_path, e.size))
        else:
            changes.append(Change("added", path, e.size))
    for path in sorted(removed):
        changes.append(Change("removed", path, removed[path].size))
    order = {"added": 0, "removed": 1, "modified": 2, "renamed": 3}
    changes.sort(key=lambda c: (c.path, order[c.status]))
    return changes
