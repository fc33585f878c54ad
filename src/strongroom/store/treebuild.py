"""Build and store trees and commits from a flat {path: entry} map (merge, revert, sparse workspaces)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from strongroom.core import codec
from strongroom.core.ids import ObjectKind
from strongroom.core.model import DIR, Commit, Entry, Tree
from strongroom.store.pack import PackBuilder
from strongroom.store.repository import Repository
from strongroom.store.restore import walk


def flatten(repo: Repository, tree_id: bytes) -> tuple[dict[str, Entry], dict[str, Entry]]:
    """(files and links by path, folders by path) of a stored tree."""
    files: dict[str, Entry] = {}
    folders: dict[str, Entry] = {}
    for rel, e in walk(repo, tree_id):
        (folders if e.type == DIR else files)[rel] = e
    return files, folders


class ObjectWriter:
    """Collects new trees and commits into one pack; writes it, then the index, on finish()."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.builder = PackBuilder()
        self._written: set[tuple[int, bytes]] = set()

    def put(self, kind: int, plain: bytes) -> bytes:
        oid = self.repo.hasher(plain)
        if not self.repo.index.has(oid, kind) and (kind, oid) not in self._written:
            self._written.add((kind, oid))
            self.builder.add(kind, oid, self.repo.codec.encode(plain, kind, oid), len(plain))
        return oid

    def finish(self, extra_packs: list[str] | None = None) -> list[str]:
        """Write the pack of new objects, then one index file for it and ``extra_packs``."""
        packs = list(extra_packs or [])
        if len(self.builder):
            packs.append(self.repo.write_pack(self.builder))
        self.repo.write_index(packs)
        return packs

    def tree_from_flat(self, files: dict[str, Entry], folders: dict[str, Entry]) -> bytes:
        return build_tree(files, folders, self.put)

    def commit(self, commit: Commit) -> bytes:
        return self.put(ObjectKind.COMMIT, codec.encode_commit(commit))


def build_tree(files: dict[str, Entry], folders: dict[str, Entry], put: Callable[[int, bytes], bytes]) -> bytes:
    """Store the trees of a flat map (paths relative to the root), deepest first; return the root tree id."""
    children: dict[str, list[Entry]] = {"": []}
    for path in [*files, *folders]:
        parts = path.split("/")
        for i in range(1, len(parts)):
            children.setdefault("/".join(parts[:i]), [])
    for path in folders:
        children.setdefault(path, [])
    for path, entry in files.items():
        parent, _, name = path.rpartition("/")
        children[parent].append(entry if entry.name == name else replace(entry, name=name))
    now = time.time_ns()
    root = b""
    for d in sorted(children, key=lambda p: -p.count("/") - (1 if p else 0)):
        tid = put(ObjectKind.TREE, codec.encode_tree(Tree(tuple(sorted(children[d], key=lambda e: e.name)))))
        if not d:
            root = tid
            continue
        parent, _, name = d.rpartition("/")
        meta = folders.get(d) or Entry(name=name, type=DIR, mode=0o755, mtime_ns=now)
        children[parent].append(replace(meta, name=name, subtree=tid))
    return root
