"""Forensic queries: the chain of custody of files, and everything an actor touched.

For each file of a version: the versions (along the first-parent chain) that added or changed it, who
committed each, when, from which host and source folder; then every read recorded in the audit log of a
version holding that same content at that path (checkout, cat, workspace create and switch).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from strongroom.audit.events import Event
from strongroom.core.model import Entry
from strongroom.store.repository import Repository
from strongroom.store.restore import matches
from strongroom.store.treebuild import flatten

READ_ACTIONS = frozenset({"checkout", "cat", "workspace.create", "workspace.switch", "export"})


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _same(a: Entry | None, b: Entry | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.type, a.chunks, a.target, a.size) == (b.type, b.chunks, b.target, b.size)


def _selected(files: dict[str, Entry], paths: list[str]) -> dict[str, Entry]:
    if not paths:
        return dict(files)
    wanted = [p.strip("/") for p in paths]
    return {p: e for p, e in files.items() if any(p == w or p.startswith(w + "/") for w in wanted)}


class _Trees:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._files: dict[bytes, dict[str, Entry]] = {}

    def files_of(self, commit_id: bytes) -> dict[str, Entry]:
        tree = self.repo.load_commit(commit_id).tree
        if tree not in self._files:
            self._files[tree] = flatten(self.repo, tree)[0]
        return self._files[tree]


def custody(repo: Repository, version: bytes, paths: list[str], events: list[Event]) -> dict[str, Any]:
    """The custody report of the files of ``version`` (below ``paths``, or all)."""
    trees = _Trees(repo)
    selected = _selected(trees.files_of(version), paths)
    history: dict[str, list[dict[str, Any]]] = {p: [] for p in selected}
    open_paths = set(selected)
    cid: bytes | None = version
    while cid is not None and open_paths:
        commit = repo.load_commit(cid)
        parent = commit.parents[0] if commit.parents else None
        here = trees.files_of(cid)
        before = trees.files_of(parent) if parent is not None else {}
        for p in sorted(open_paths):
            if _same(here.get(p), before.get(p)):
                continue
            history[p].append(
                {
                    "version": cid.hex(),
                    "change": "added" if p not in before else "modified",
                    "author": commit.author,
                    "host": commit.host,
                    "time": _iso(commit.time_ns),
                    "source": commit.source,
                    "branch": commit.branch,
                    "message": commit.message,
                }
            )
            if p not in before:
                open_paths.discard(p)
        cid = parent
    reads: dict[str, list[dict[str, Any]]] = {p: [] for p in selected}
    for ev in events:
        # A read that failed part-way, or whose consumer stopped early (`cat | head`), may have delivered some
        # plaintext: it is listed, with its outcome. A denied one was refused before anything was read.
        if ev.action not in READ_ACTIONS or ev.outcome not in ("ok", "failed"):
            continue
        vid = ev.targets.get("version")
        try:
            read_version = bytes.fromhex(str(vid))
            files = trees.files_of(read_version)
        except Exception:  # noqa: S112 - an event naming a version gc removed, or no version at all
            continue
        patterns = ev.paths
        for p, entry in selected.items():
            if not _same(files.get(p), entry):
                continue
            if patterns and not matches(p, patterns):
                continue
            reads[p].append(
                {
                    "seq": ev.seq,
                    "time": ev.time,
                    "actor": ev.actor,
                    "os_user": ev.os_user,
                    "host": ev.host,
                    "action": ev.action,
                    "version": str(vid),
                    "outcome": ev.outcome,
                }
            )
    return {
        "version": version.hex(),
        "files": [
            {"path": p, "size": selected[p].size, "history": history[p], "reads": reads[p]} for p in sorted(selected)
        ],
    }


def touched_by(actor: str, events: list[Event]) -> dict[str, Any]:
    """Everything ``actor`` did: every event of theirs, oldest first."""
    mine = [e.to_json() for e in events if e.actor == actor]
    return {"actor": actor, "events": mine}
