"""Garbage collection: remove what no branch, tag, or recently moved ref can reach.

Mark: every object reachable from the branches, the tags, and the versions the reflog shows a ref left or
reached less than ``keep_ns`` ago. Refuse to start when a reachable object is missing from the index
("data seems to be missing": run verify or repair index first), or while readers or commits hold shared
locks. Sweep, in the safe order: write repacked live blobs into new packs, then one new complete index, then
delete the old index files, then the dead packs. A crash at any point leaves a repository that verifies.
"""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.core.dag import ancestors
from strongroom.core.ids import ObjectKind
from strongroom.core.model import DIR, FILE
from strongroom.crypto.aead import key_id_of
from strongroom.crypto.keys import SCOPE_KEY_BASE
from strongroom.errors import IntegrityError, KeyUnavailable, Shredded
from strongroom.store.pack import PackBuilder, pack_path
from strongroom.store.refs import Refs
from strongroom.store.repository import Repository


@dataclass
class GcPlan:
    live: set[bytes]
    packs_dead: list[str]
    packs_repack: list[str]
    objects_dead: int
    bytes_dead: int
    reflog_dropped: int


def _roots(refs: Refs, cutoff_ns: int) -> list[bytes]:
    roots = list(refs.heads())
    for change in refs.reflog:
        if change.time_ns >= cutoff_ns:
            roots.extend(c for c in (change.old, change.new) if c is not None)
    return list(dict.fromkeys(roots))


def mark(repo: Repository, refs: Refs, cutoff_ns: int) -> set[bytes]:
    index = repo.index
    live: set[bytes] = set()
    roots = [r for r in _roots(refs, cutoff_ns) if index.has(r, ObjectKind.COMMIT)]
    missing_heads = [r for r in refs.heads() if not index.has(r, ObjectKind.COMMIT)]
    if missing_heads:
        raise IntegrityError("data seems to be missing (a ref names an unindexed version); gc will not start")
    stack: list[bytes] = []
    for cid, commit in ancestors(roots, repo.load_commit):
        live.add(cid)
        stack.append(commit.tree)
    while stack:
        tid = stack.pop()
        if tid in live:
            continue
        if not index.has(tid, ObjectKind.TREE):
            raise IntegrityError("data seems to be missing (an unindexed tree); gc will not start")
        live.add(tid)
        try:
            tree = repo.load_tree(tid)
        except Shredded:
            continue  # its chunks are unreadable by anyone now: garbage, collected like any other
        except KeyUnavailable as err:
            raise KeyUnavailable(f"{err}; gc cannot tell which chunks that scope needs and will not start") from None
        for e in tree.entries:
            if e.type == DIR and e.subtree is not None:
                stack.append(e.subtree)
            elif e.type == FILE:
                for c in e.chunks:
                    if not index.has(c, ObjectKind.CHUNK):
                        raise IntegrityError("data seems to be missing (an unindexed chunk); gc will not start")
                    live.add(c)
    return live


def plan(repo: Repository, keep_ns: int, now_ns: int) -> GcPlan:
    repo.follow_current_key()
    repo.adopt_orphan_packs()
    refs = repo.read_refs()
    cutoff = now_ns - keep_ns
    live = mark(repo, refs, cutoff)
    present = {name.rsplit("/", 1)[-1] for name, _ in repo.backend.list("data")}
    for oid in live:
        found = repo.index.every_kind(oid)
        if not found or any(loc.pack_id not in present for loc in found):
            raise IntegrityError("data seems to be missing (a pack that live data needs is gone); gc will not start")
    dead_packs: list[str] = []
    repack: list[str] = []
    objects_dead = bytes_dead = 0
    seen: set[tuple[int, bytes]] = set()  # by kind too: a chunk may have a tree's id (store/index.py)
    for pid, entries in repo.index.packs.items():
        dead = []
        for e in entries:
            # a duplicate copy of a live object (two workers stored it) is dead weight too
            if e.object_id not in live or (e.kind, e.object_id) in seen:
                dead.append(e)
            else:
                seen.add((e.kind, e.object_id))
        if not dead:
            continue
        objects_dead += len(dead)
        bytes_dead += sum(e.length for e in dead)
        (dead_packs if len(dead) == len(entries) else repack).append(pid)
    # A commit that was running when `key reencrypt --retire` destroyed its key is refused at publish; the
    # packs it wrote are sealed under that key, so nothing can ever read or adopt them: they go too.
    dead_packs += sorted(pid for pid in present - set(repo.index.packs) if _under_a_destroyed_key(repo, pid))
    dropped = sum(1 for c in refs.reflog if c.time_ns < cutoff)
    return GcPlan(live, dead_packs, repack, objects_dead, bytes_dead, dropped)


def _under_a_destroyed_key(repo: Repository, pack_id: str) -> bool:
    head = repo.backend.get_range(pack_path(pack_id), 0, 7)
    if len(head) < 7:
        return False  # not a pack at all: verify reports it, gc does not guess
    kid = key_id_of(head)
    return kid < SCOPE_KEY_BASE and kid < repo.keyring.current and kid not in repo.keyring.data_keys


def sweep(repo: Repository, p: GcPlan, keep_ns: int, now_ns: int) -> int:
    """Carry out a plan under the publish and exclusive locks; returns bytes freed on disk. Wholly dead packs
    go first: one index write frees them, which a nearly full disk can still take, while a repack first needs
    room for the packs it writes."""
    repo.follow_current_key()
    before = sum(size for _, size in repo.backend.list("data"))
    if p.packs_dead:
        with repo.packs_replacing(set(p.packs_dead)):
            pass
    if p.packs_repack:
        _repack(repo, p)
    return before - sum(size for _, size in repo.backend.list("data"))


def _repack(repo: Repository, p: GcPlan) -> None:
    """The live objects of the partly dead packs into new packs; the old ones go once an index names those."""
    repack = set(p.packs_repack)
    kept = {(e.kind, e.object_id) for pid, entries in repo.index.packs.items() if pid not in repack for e in entries}
    builder = PackBuilder()
    with repo.packs_replacing(repack) as written:

        def flush() -> None:
            if len(builder):
                pid, data, entries = builder.finish(repo.sealer, repo.context)
                repo.backend.put(pack_path(pid), data)
                written.append(pid)
                repo.index.add_pack(pid, entries)

        for pid in p.packs_repack:
            for e in repo.index.packs[pid]:
                if e.object_id in p.live and (e.kind, e.object_id) not in kept:
                    frame = repo.backend.get_range(pack_path(pid), e.offset, e.length)
                    if key_id_of(frame) < SCOPE_KEY_BASE or key_id_of(frame) in repo.sealer.key_ids():
                        repo.codec.decode(frame, e.kind, e.object_id)  # never carry a damaged blob forward
                    builder.add(e.kind, e.object_id, frame, e.raw_length)
                    kept.add((e.kind, e.object_id))
                    if builder.size >= repo.config.pack_size:
                        flush()
        flush()


__all__ = ["GcPlan", "mark", "plan", "sweep"]
