"""Three-way, file-level merge of flattened trees ({path: entry}); folders are merged by presence, and a folder
both sides keep takes its mode by the same three-way rule. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.core.model import Entry
from strongroom.errors import InputError

STRATEGIES = ("ours", "theirs")


def same_entry(a: Entry | None, b: Entry | None) -> bool:
    """Same kind, content (chunks and size), link target and mode; two absent entries count as the same."""
    if a is None or b is None:
        return a is b
    return (a.type, a.chunks, a.target, a.size, a.mode) == (b.type, b.chunks, b.target, b.size, b.mode)


@dataclass(frozen=True)
class MergePlan:
    merged: dict[str, Entry]
    conflicts: list[str]


def three_way(
    base: dict[str, Entry], ours: dict[str, Entry], theirs: dict[str, Entry], strategy: str | None = None
) -> MergePlan:
    """A path changed on one side only takes that side; changed identically on both, either; changed
    differently on both, a conflict unless a strategy picks a side. Deletions count as changes."""
    if strategy is not None and strategy not in STRATEGIES:
        raise InputError(f"--strategy takes ours or theirs, not {strategy!r}")
    merged: dict[str, Entry] = {}
    conflicts: list[str] = []
    for path in sorted(base.keys() | ours.keys() | theirs.keys()):
        b, o, t = base.get(path), ours.get(path), theirs.get(path)
        if same_entry(o, t) or same_entry(b, t):
            pick = o
        elif same_entry(b, o):
            pick = t
        elif strategy == "ours":
            pick = o
        elif strategy == "theirs":
            pick = t
        else:
            conflicts.append(path)
            continue
        if pick is not None:
            merged[path] = pick
    # A file on one side and a folder path below it on the other cannot both exist.
    for path in list(merged):
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in merged:
                conflicts.append(path)
                merged.pop(path, None)
                break
    return MergePlan(merged, sorted(set(conflicts)))


def merge_folders(
    base: dict[str, Entry],
    ours: dict[str, Entry],
    theirs: dict[str, Entry],
    files: dict[str, Entry],
    strategy: str | None = None,
) -> tuple[dict[str, Entry], list[str]]:
    """The folders of a merged tree whose files are ``files``: every folder that holds one of them, and every
    other folder whose presence the three-way rule keeps (deleted or added on one side only: that side wins).
    A folder on both sides takes its entry (mode) by the three-way rule too; changed differently on both, a
    conflict unless a strategy picks a side. Returns (folders, conflicts): a kept folder at, or below, a merged
    file's path is a conflict, which no strategy resolves."""
    folders: dict[str, Entry] = {}
    conflicts: list[str] = []

    def meta(path: str) -> Entry | None:
        b, o, t = base.get(path), ours.get(path), theirs.get(path)
        if o is None or t is None:
            return o or t or b
        if same_entry(o, t) or same_entry(b, t):
            return o
        if same_entry(b, o) or strategy == "theirs":
            return t
        if strategy != "ours":
            conflicts.append(path)
        return o

    for path in files:
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in folders and (m := meta(parent)) is not None:
                folders[parent] = m
    held = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    for path in sorted(base.keys() | ours.keys() | theirs.keys()):
        if path in held:
            continue
        b, o, t = path in base, path in ours, path in theirs
        if not (t if o == b else o):
            continue
        parts = path.split("/")
        if any("/".join(parts[:i]) in files for i in range(1, len(parts) + 1)):
            conflicts.append(path)
            continue
        if (m := meta(path)) is not None:  # always: it is present on at least one side
            folders[path] = m
    return folders, sorted(set(conflicts))


def merge_base(ancestors_a: list[bytes], ancestors_b: set[bytes]) -> bytes | None:
    """The newest of A's ancestors (newest first) that B also has."""
    for cid in ancestors_a:
        if cid in ancestors_b:
            return cid
    return None
