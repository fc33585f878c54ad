"""Verification. Default: every object reachable from a ref is in the index, and its pack holds it.
``full``: also read every pack, re-hash it against its name, decrypt every blob and re-hash it against its id.
``sample``: the full check on a slice (n/t) or a random share of the packs. ``structure`` (keyless): re-hash
every pack and index file against its name. Damage is mapped back to every affected version and path.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from strongroom.backends.base import Backend
from strongroom.core.dag import ancestors
from strongroom.core.ids import ObjectKind
from strongroom.core.model import DIR, FILE, Commit
from strongroom.crypto.aead import key_id_of
from strongroom.crypto.idhash import content_name
from strongroom.crypto.keys import SCOPE_KEY_BASE
from strongroom.errors import InputError, KeyUnavailable, Shredded, StrongroomError
from strongroom.store import parallel
from strongroom.store.pack import read_header_from
from strongroom.store.repository import Repository


@dataclass(frozen=True, slots=True)
class Damage:
    what: str
    reason: str


@dataclass
class VerifyReport:
    mode: str
    versions: int = 0
    packs_checked: int = 0
    bytes_checked: int = 0
    objects_checked: int = 0
    damage: list[Damage] = field(default_factory=list)
    affected: dict[str, list[str]] = field(default_factory=dict)  # version id → paths
    warnings: list[str] = field(default_factory=list)
    commits: list[tuple[bytes, Commit]] = field(default_factory=list)  # every readable version, for callers
    shredded: dict[str, str] = field(default_factory=dict)  # version id → scope: erased on purpose, not damage

    @property
    def ok(self) -> bool:
        return not self.damage


def parse_sample(text: str) -> tuple[int, int] | float:
    """'5%' → 0.05; 'n/t' → (n, t)."""
    try:
        if text.endswith("%"):
            share = float(text[:-1]) / 100
            if not 0 < share <= 1:
                raise ValueError
            return share
        n, t = (int(x) for x in text.split("/"))
        if not 1 <= n <= t:
            raise ValueError
        return n, t
    except ValueError:
        raise InputError(f"--sample takes PERCENT (such as 5%) or n/t (such as 2/7), not {text!r}") from None


def select_packs(pack_ids: list[str], sample: tuple[int, int] | float) -> list[str]:
    ordered = sorted(pack_ids)
    if isinstance(sample, tuple):
        n, t = sample
        return [p for p in ordered if int(p[:8], 16) % t == n - 1]
    k = max(1, math.ceil(len(ordered) * sample)) if ordered else 0
    return sorted(random.SystemRandom().sample(ordered, k))


# ------------------------------------------------------------------------------ keyless structure


def verify_structure(backend: Backend) -> VerifyReport:
    report = VerifyReport("structure")
    try:
        json.loads(backend.get("config"))
    except StrongroomError:
        report.damage.append(Damage("config", "missing"))
    except ValueError:
        report.damage.append(Damage("config", "not valid JSON"))
    for name in ("keyring", "refs"):
        if backend.size(name) is None:
            report.damage.append(Damage(name, "missing"))
    if not any(True for _ in backend.list("keys")):
        report.damage.append(Damage("keys", "no key file"))
    for name, _ in backend.list("keys"):
        try:
            body = json.loads(backend.get(name))
            checksum = body.pop("checksum")
            canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            if hashlib.sha256(canon).hexdigest() != checksum:
                report.damage.append(Damage(name, "checksum mismatch"))
        except (ValueError, KeyError, AttributeError):
            report.damage.append(Damage(name, "not a valid key file"))
    for prefix in ("data", "index"):
        for name, size in backend.list(prefix):
            data = backend.get(name)
            report.packs_checked += prefix == "data"
            report.bytes_checked += size
            if content_name(data) != name.rsplit("/", 1)[-1]:
                report.damage.append(Damage(name, "content does not match its name"))
    return report


# ------------------------------------------------------------------------------ keyed checks


def _check_packs(repo: Repository, share: list[str], send: Callable[[tuple[Any, ...]], None]) -> None:
    index = repo.index
    for pid in share:
        name = f"data/{pid[:2]}/{pid}"
        bad = _check_one_pack(repo, pid, name)
        if bad:
            second = _check_one_pack(repo, pid, name)  # tell a passing fault from real damage
            if not second:
                send(("warning", f"{name}: a read failed once and succeeded when retried"))
            bad = second
        if not bad and pid not in index.packs:
            send(("warning", f"{name}: in no index (an interrupted commit left it, or its index file is lost)"))
        size = repo.backend.size(name) or 0
        for what, reason, oid in bad:
            send(("damage", what, reason, oid))
        send(("pack", size, len(index.packs.get(pid, []))))


def _check_one_pack(repo: Repository, pid: str, name: str) -> list[tuple[str, str, bytes | None]]:
    out: list[tuple[str, str, bytes | None]] = []
    indexed = pid in repo.index.packs
    entries = repo.index.packs.get(pid, [])
    try:
        data = repo.backend.get(name)
    except StrongroomError as err:
        return [(name, str(err), None)] + [(name, "object unreadable", entry.object_id) for entry in entries]
    if content_name(data) != pid:
        out.append((name, "content does not match its name", None))
    try:
        listed = read_header_from(data, repo.sealer, repo.context)
        header = {(e.object_id, e.offset, e.length) for e in listed}
        if not indexed:
            entries = listed  # an orphan (an interrupted commit wrote it): check what its own header lists
        elif header != {(e.object_id, e.offset, e.length) for e in entries}:
            out.append((name, "pack header disagrees with the index", None))
    except StrongroomError as err:
        out.append((name, f"pack header: {err}", None))
    for e in entries:
        frame = data[e.offset : e.offset + e.length]
        if len(frame) >= 7 and key_id_of(frame) >= SCOPE_KEY_BASE and key_id_of(frame) not in repo.sealer.key_ids():
            continue  # sealed under a shredded scope key, or one not in this keystore: nothing here can open it
        try:
            plain = repo.codec.decode(frame, e.kind, e.object_id)
            if repo.hasher_of(frame)(plain) != e.object_id:
                out.append((name, "object does not match its id", e.object_id))
        except StrongroomError as err:
            out.append((name, f"object {e.object_id.hex()[:16]}: {err}", e.object_id))
    return out


def verify(
    repo: Repository,
    full: bool = False,
    sample: tuple[int, int] | float | None = None,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    report = VerifyReport("full" if full else ("sample" if sample else "default"))
    index = repo.index
    for name in index.bad_files:
        report.damage.append(Damage(name, "index file is damaged or does not match its name"))
    try:
        refs = repo.read_refs()
    except StrongroomError as err:
        report.damage.append(Damage("refs", str(err)))
        return report

    pack_sizes = {name.rsplit("/", 1)[-1]: size for name, size in repo.backend.list("data")}
    bad_ids: set[bytes] = set()

    def present(oid: bytes, kind: int | None = None) -> bool:
        loc = index.get(oid, kind)
        if loc is None:
            return False
        size = pack_sizes.get(loc.pack_id)
        return size is not None and loc.offset + loc.length <= size

    # Walk every version; load each tree once.
    commits: list[tuple[bytes, bytes]] = []
    unreadable_commits: dict[bytes, str] = {}

    def read_twice(load: Callable[[bytes], Any], oid: bytes, what: str) -> tuple[Any, str | None]:
        """Load an object; a read that fails once and then succeeds is a warning, not damage."""
        try:
            return load(oid), None
        except (Shredded, KeyUnavailable):
            raise  # not a fault: no key here opens it
        except StrongroomError:
            pass
        try:
            obj = load(oid)
        except StrongroomError as err:
            return None, str(err)
        report.warnings.append(f"{what} {oid.hex()[:16]}: a read failed once and succeeded when retried")
        return obj, None

    def load_commit(cid: bytes) -> Any:
        c, why = read_twice(repo.load_commit, cid, "commit")
        if why is not None:
            # The version is lost; walk on without it (its parents cannot be known).
            unreadable_commits[cid] = f"unreadable: {why}"
            return Commit(tree=b"", parents=(), author="", host="", time_ns=0, message="", branch="")
        return c

    heads = refs.heads()
    for h in heads:
        if not present(h, ObjectKind.COMMIT):
            unreadable_commits[h] = "missing"
    try:
        for cid, c in ancestors([h for h in heads if h not in unreadable_commits], load_commit):
            if cid not in unreadable_commits:
                commits.append((cid, c.tree))
                report.commits.append((cid, c))
    except StrongroomError as err:
        report.damage.append(Damage("commit history", str(err)))
    report.versions = len(commits)
    seen_trees: set[bytes] = set()
    referenced_chunks: set[bytes] = set()
    # A version whose tree is sealed under a shredded scope was erased on purpose: listed, not walked. One
    # whose scope key is not in this machine's keystore cannot be checked here: a warning.
    roots: dict[bytes, list[bytes]] = {}
    for cid, tid in commits:
        roots.setdefault(tid, []).append(cid)
    stack = [t for _, t in commits]
    while stack:
        tid = stack.pop()
        if tid in seen_trees:
            continue
        seen_trees.add(tid)
        if not present(tid, ObjectKind.TREE):
            bad_ids.add(tid)
            continue
        try:
            tree, why = read_twice(repo.load_tree, tid, "tree")
        except Shredded as err:
            for cid in roots.get(tid, []):
                report.shredded[cid.hex()] = str(err.args_[0]) if err.args_ else ""
            continue
        except KeyUnavailable as err:
            for cid in roots.get(tid, []):
                report.warnings.append(f"version {cid.hex()[:12]}: {err}; not checked")
            continue
        if why is not None:
            bad_ids.add(tid)
            report.damage.append(Damage(f"tree {tid.hex()[:16]}", f"unreadable: {why}"))
            continue
        for e in tree.entries:
            if e.type == DIR and e.subtree is not None:
                stack.append(e.subtree)
            elif e.type == FILE:
                referenced_chunks.update(e.chunks)
    report.objects_checked = len(seen_trees) + len(referenced_chunks) + len(commits)
    bad_ids.update(c for c in referenced_chunks if not present(c, ObjectKind.CHUNK))
    for cid, why in unreadable_commits.items():
        report.damage.append(Damage(f"version {cid.hex()[:12]}", f"commit object {why}"))
        report.affected.setdefault(cid.hex(), []).append("(the whole version)")

    if full or sample:
        pack_ids = sorted(set(pack_sizes) | set(index.packs))
        if sample:
            pack_ids = select_packs(pack_ids, sample)
        n = workers or parallel.default_workers()
        shares = parallel.deal(pack_ids, lambda p: pack_sizes.get(p, 0), n)

        def handle(msg: tuple[Any, ...]) -> None:
            if msg[0] == "damage":
                _, what, reason, oid = msg
                report.damage.append(Damage(what, reason))
                if oid is not None:
                    bad_ids.add(oid)
            elif msg[0] == "warning":
                report.warnings.append(msg[1])
            elif msg[0] == "pack":
                report.packs_checked += 1
                report.bytes_checked += msg[1]
                if progress:
                    progress(1, msg[1])

        parallel.run(shares, lambda share, send: _check_packs(repo, share, send), handle)
        missing_packs = set(index.packs) - set(pack_sizes)
        if not sample:
            for pid in sorted(missing_packs):
                report.damage.append(Damage(f"data/{pid[:2]}/{pid}", "pack is missing"))

    referenced_bad = bad_ids & (referenced_chunks | seen_trees)
    if referenced_bad:
        missing = [b for b in referenced_bad if not present(b)]
        if missing:
            report.damage.append(Damage(f"{len(missing)} object(s)", "referenced but missing from the index or packs"))
        _map_damage(repo, commits, referenced_bad, report)
    return report


def _map_damage(repo: Repository, commits: list[tuple[bytes, bytes]], bad: set[bytes], report: VerifyReport) -> None:
    """Name every (version, path) that holds a damaged object."""
    memo: dict[bytes, list[str]] = {}

    def affected_in(tid: bytes) -> list[str]:
        if tid in memo:
            return memo[tid]
        if tid in bad:
            memo[tid] = [""]
            return memo[tid]
        out: list[str] = []
        try:
            tree = repo.load_tree(tid)
        except StrongroomError:
            memo[tid] = [""]
            return memo[tid]
        for e in tree.entries:
            if e.type == FILE and any(c in bad for c in e.chunks):
                out.append(e.name)
            elif e.type == DIR and e.subtree is not None:
                out.extend(f"{e.name}/{p}" if p else f"{e.name}/" for p in affected_in(e.subtree))
        memo[tid] = out
        return out

    for cid, tid in commits:
        paths = affected_in(tid)
        if paths:
            report.affected[cid.hex()] = sorted(p if p else "(the whole version)" for p in paths)
