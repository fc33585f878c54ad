"""Differences between two flattened trees: added, removed, modified and renamed files; and the folders that
files do not show (empty ones added or removed, a folder whose mode changed)."""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.core.model import DIR, Entry


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


def _holding(entries: dict[str, Entry]) -> set[str]:
    """Every folder path that holds something (a file, a link or a folder) in ``entries``."""
    out: set[str] = set()
    for path in entries:
        while "/" in path:
            path = path.rsplit("/", 1)[0]
            if path in out:
                break
            out.add(path)
    return out


def diff_folders(old: dict[str, Entry], new: dict[str, Entry]) -> list[Change]:
    """The folder changes files do not show, from two {path: entry} maps of every entry (folders included):
    an empty folder added or removed, a folder whose mode changed. Folder paths end in ``/``; a folder's
    mtime is not compared (it moves whenever its files do)."""
    old_dirs = {p: e for p, e in old.items() if e.type == DIR}
    new_dirs = {p: e for p, e in new.items() if e.type == DIR}
    full_old, full_new = _holding(old), _holding(new)
    changes = [Change("added", p + "/", 0) for p in new_dirs.keys() - old_dirs.keys() if p not in full_new]
    changes += [Change("removed", p + "/", 0) for p in old_dirs.keys() - new_dirs.keys() if p not in full_old]
    changes += [
        Change("modified", p + "/", 0)
        for p in old_dirs.keys() & new_dirs.keys()
        if old_dirs[p].mode != new_dirs[p].mode
    ]
    return sorted(changes, key=lambda c: c.path)
