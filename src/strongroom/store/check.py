"""Verification. Default: every object reachable from a ref is in the index, and its pack holds it.
``full``: also read every pack, re-hash it against its name, decrypt every blob and re-hash it against its id.
``sample``: the full check on a slice (n/t) or a random share of the packs. ``structure`` (keyless): re-hash
every pack and index file against its name, and name in notes the temporary files killed writers left. Every
mode also checks the key slots and that each pack is in its fan-out folder. Damage is mapped back to every
affected version and path, objects keyed by (kind, id).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from strongroom.backends.base import Backend, ObjectMissing
from strongroom.core.dag import ancestors
from strongroom.core.ids import ObjectKind
from strongroom.core.model import DIR, FILE, Commit
from strongroom.crypto.aead import HEADER_LEN, key_id_of
from strongroom.crypto.idhash import content_name
from strongroom.crypto.keyslot import parse_slot
from strongroom.errors import InputError, KeyUnavailable, Shredded, StrongroomError
from strongroom.store import leftovers, parallel
from strongroom.store.index import Index, Location, listed_packs
from strongroom.store.pack import PackEntry, pack_path, read_header_from
from strongroom.store.refs import listed_index_files
from strongroom.store.repository import Repository
from strongroom.store.scopes import SHREDDED, list_scopes

ObjectKey = tuple[int, bytes]  # (kind, id): objects of different kinds may share an id (index.Index)


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
    # rounded first: 100 packs × 0.07 is 7.000000000000001 in floating point, and 7 % of them is 7
    k = max(1, math.ceil(round(len(ordered) * sample, 9))) if ordered else 0
    return sorted(random.SystemRandom().sample(ordered, k))


# ------------------------------------------------------------------------------ keyless structure


def verify_structure(backend: Backend) -> VerifyReport:
    """Keyless: every file re-hashes to its name or checksum, and every file a listed file names is there
    (refs list the index files, and each index file its packs: store.listing). It takes no lock (a keyless
    operator may have no write access), so it runs again when the refs changed under it: gc, `key
    reencrypt` and `repair index` replace the index files and then delete the old ones."""
    for _ in range(3):
        refs = _stored(backend, "refs")
        report = _structure_once(backend, refs)
        if _stored(backend, "refs") == refs:
            break
    report.warnings.extend(leftovers.notes(backend, time.time_ns()))  # nothing reads them: notes, not damage
    return report


def _stored(backend: Backend, name: str) -> bytes | None:
    try:
        return backend.get(name)
    except ObjectMissing:
        return None


def _structure_once(backend: Backend, refs: bytes | None) -> VerifyReport:
    report = VerifyReport("structure")
    config = _stored(backend, "config")
    try:
        if config is None:
            report.damage.append(Damage("config", "missing"))
        else:
            json.loads(config)
    except ValueError:
        report.damage.append(Damage("config", "not valid JSON"))
    if backend.size("keyring") is None:
        report.damage.append(Damage("keyring", "missing"))
    listed_index = _refs_listing(refs, report)
    report.damage.extend(key_slot_damage(backend))
    packs: dict[str, str] = {}  # pack id → the index file that names it
    index_files: set[str] = set()
    for name, size in backend.list("index"):
        data = _stored(backend, name)
        if data is None:
            continue  # deleted since the listing (an index replaced meanwhile): the second look below decides
        report.bytes_checked += size
        index_files.add(name.rsplit("/", 1)[-1])
        if content_name(data) != name.rsplit("/", 1)[-1]:
            report.damage.append(Damage(name, "content does not match its name"))
            continue
        try:
            listed = listed_packs(data)
        except StrongroomError as err:
            report.damage.append(Damage(name, str(err)))
            continue
        if listed is None:
            report.warnings.append(f"{name}: written by an earlier build, lists no packs (`repair index` rewrites it)")
        packs.update((pid, name) for pid in listed or () if pid not in packs)
        if listed_index is not None and name.rsplit("/", 1)[-1] not in listed_index:
            report.warnings.append(f"{name}: not listed by refs (an interrupted commit left it, or it was put back)")
    present: set[str] = set()
    for name, size in backend.list("data"):
        data = _stored(backend, name)
        if data is None:
            continue
        report.packs_checked += 1
        report.bytes_checked += size
        present.add(name.rsplit("/", 1)[-1])
        if content_name(data) != name.rsplit("/", 1)[-1]:
            report.damage.append(Damage(name, "content does not match its name"))
        elif misplaced(name):
            report.damage.append(Damage(name, MISPLACED))
    # A second look before calling a file missing: an index replacement (gc, compaction) stores refs that no
    # longer list the old index files, deletes them, then the packs only they named. Damage is an index file
    # still missing and still listed by the refs as they are now, or a pack still named by a file still there.
    still_listed = _refs_listing(_stored(backend, "refs"), VerifyReport("structure"))
    for lost in sorted(set(listed_index or ()) - index_files):
        if backend.size(f"index/{lost}") is None and (still_listed is None or lost in still_listed):
            report.damage.append(Damage(f"index/{lost}", "missing (refs list it)"))
    for pid in sorted(set(packs) - present):
        if backend.size(pack_path(pid)) is None and backend.size(packs[pid]) is not None:
            report.damage.append(Damage(pack_path(pid), f"missing ({packs[pid]} lists it)"))
    return report


def _refs_listing(data: bytes | None, report: VerifyReport) -> tuple[str, ...] | None:
    """The index files these refs bytes list (None when there are no intact refs, or they come from an
    earlier build that listed none); damage to the refs goes into ``report``."""
    if data is None:
        report.damage.append(Damage("refs", "missing"))
        return None
    try:
        listed = listed_index_files(data)
    except StrongroomError as err:
        report.damage.append(Damage("refs", str(err)))
        return None
    if listed is None:
        report.warnings.append(
            "refs were written by an earlier build and list no index files: the next commit lists them"
        )
    return listed


MISPLACED = "pack is not in the folder its name puts it in (data/<first 2 hex>/)"


def misplaced(name: str) -> bool:
    """A file under data/ that is not where the format puts a pack of its name: no read finds it."""
    return name != pack_path(name.rsplit("/", 1)[-1])


def key_slot_damage(backend: Backend, repo_id: str | None = None) -> list[Damage]:
    """Every key slot that fails its checksum, does not parse, or is stored under a name other than its slot
    id (format.md §10); with ``repo_id`` (a keyed check), also one that belongs to another repository."""
    out: list[Damage] = []
    if not any(True for _ in backend.list("keys")):
        out.append(Damage("keys", "no key file"))
    for name, _ in backend.list("keys"):
        try:
            data = backend.get(name)
            body = json.loads(data)
            checksum = body.pop("checksum")
            canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            if hashlib.sha256(canon).hexdigest() != checksum:
                out.append(Damage(name, "checksum mismatch"))
                continue
            slot = parse_slot(data)
        except (ValueError, KeyError, AttributeError, StrongroomError):
            out.append(Damage(name, "not a valid key file"))
            continue
        if name.rsplit("/", 1)[-1] != slot.slot_id:
            out.append(Damage(name, f"file name does not match its slot id {slot.slot_id!r}"))
        elif repo_id is not None and slot.repo_id != repo_id:
            out.append(Damage(name, "key slot belongs to another repository"))
    return out


# ------------------------------------------------------------------------------ keyed checks


def _serving(index: Index, alt: dict[ObjectKey, Location], oid: bytes, kind: int) -> Location | None:
    """The location a read of the object uses: the index's, or, when that pack is gone, the copy in ``alt``."""
    loc = index.get(oid, kind)
    return alt.get((kind, oid), loc) if alt and loc is not None else loc


def _check_packs(
    repo: Repository,
    share: list[str],
    unloaded: frozenset[int],
    alt: dict[ObjectKey, Location],
    send: Callable[[tuple[Any, ...]], None],
) -> None:
    index = repo.index
    for pid in share:
        name = pack_path(pid)
        bad = _check_one_pack(repo, pid, name, unloaded, alt)
        if bad:
            second = _check_one_pack(repo, pid, name, unloaded, alt)  # tell a passing fault from real damage
            if not second:
                send(("warning", f"{name}: a read failed once and succeeded when retried"))
            bad = second
        if not bad and pid not in index.packs:
            send(("warning", f"{name}: in no index (an interrupted commit left it, or its index file is lost)"))
        size = repo.backend.size(name) or 0
        for what, reason, key in bad:
            send(("damage", what, reason, key))
        send(("pack", size, len(index.packs.get(pid, []))))


def _check_one_pack(
    repo: Repository, pid: str, name: str, unloaded: frozenset[int], alt: dict[ObjectKey, Location]
) -> list[tuple[str, str, ObjectKey | None]]:
    """The damage found in one pack. A damaged object's (kind, id) comes with it only when the index serves
    that object from this very slot (``_serving``): damage in a pack no index names, or in a copy that reads
    do not use (a stale index file's pack, a forged duplicate), loses nothing. Frames sealed under a scope key in
    ``unloaded`` (a scope of this repository, shredded or not in this keystore) cannot be opened here and are
    skipped; a key id that no scope or data key has is damage."""
    out: list[tuple[str, str, ObjectKey | None]] = []
    index = repo.index
    indexed = pid in index.packs
    entries = index.packs.get(pid, [])

    def served(e: PackEntry) -> ObjectKey | None:
        loc = _serving(index, alt, e.object_id, e.kind)
        if loc is None or loc.pack_id != pid or loc.offset != e.offset:
            return None
        return e.kind, e.object_id

    try:
        data = repo.backend.get(name)
    except StrongroomError as err:
        return [(name, str(err), None)] + [(name, "object unreadable", served(e)) for e in entries]
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
        if unloaded and len(frame) >= HEADER_LEN and key_id_of(frame) in unloaded:
            continue  # sealed under a shredded scope key, or one not in this keystore: nothing here can open it
        try:
            plain = repo.codec.decode(frame, e.kind, e.object_id)
            if repo.hasher_of(frame)(plain) != e.object_id:
                out.append((name, "object does not match its id", served(e)))
        except StrongroomError as err:
            out.append((name, f"object {e.object_id.hex()[:16]}: {err}", served(e)))
    return out


def _scopes_of(repo: Repository, report: VerifyReport) -> dict[int, tuple[str, str]]:
    """Every scope of the repository by key id: (name, state). Those this client registered, and those the
    repository lists, so that a caller that loaded none (a backup drill) still tells a scope's frames from
    frames under a key id that nothing in the repository has."""
    scopes = dict(repo.scope_states)
    try:
        for s in list_scopes(repo):
            scopes.setdefault(s.key_id, (s.name, s.state))
    except StrongroomError as err:
        report.damage.append(Damage("scopes", str(err)))
    return scopes


def verify(
    repo: Repository,
    full: bool = False,
    sample: tuple[int, int] | float | None = None,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    report = VerifyReport("full" if full else ("sample" if sample else "default"))
    try:
        refs = repo.read_refs()
    except StrongroomError as err:
        report.damage.append(Damage("refs", str(err)))
        return report
    # The index must be at least as new as these refs: one loaded before them (when the repository was
    # opened) misses the index file of a commit another process published meanwhile, whose objects would
    # then look missing.
    listed = {f"index/{name}" for name in refs.index_files or ()}
    if refs.index_files is None or not listed <= repo.index.files | set(repo.index.bad_files):
        repo.index.replace_with(repo.load_index())
    index = repo.index
    for name in index.bad_files:
        report.damage.append(Damage(name, "index file is damaged or does not match its name"))
    report.damage.extend(key_slot_damage(repo.backend, repo.config.repo_id))
    scopes = _scopes_of(repo, report)
    held = repo.sealer.key_ids()
    unloaded = frozenset(k for k in scopes if k not in held)  # scopes whose frames no key here opens
    present_files = {name.rsplit("/", 1)[-1] for name, _ in repo.backend.list("index")}
    for lost in sorted(set(refs.index_files or ()) - present_files):
        report.damage.append(Damage(f"index/{lost}", "missing (refs list it)"))  # readers exclude gc and repair

    # A pack counts as present only where the format puts it: a read never looks anywhere else.
    pack_sizes: dict[str, int] = {}
    for name, size in repo.backend.list("data"):
        if misplaced(name):
            report.damage.append(Damage(name, MISPLACED))
        else:
            pack_sizes[name.rsplit("/", 1)[-1]] = size
    missing_packs = set(index.packs) - set(pack_sizes)
    alt = index.copies_elsewhere(missing_packs) if missing_packs else {}
    bad: set[ObjectKey] = set()

    def present(oid: bytes, kind: int) -> bool:
        loc = _serving(index, alt, oid, kind)
        if loc is None:
            return False
        size = pack_sizes.get(loc.pack_id)
        return size is not None and loc.offset + loc.length <= size

    def unloaded_scope(oid: bytes, kind: int) -> tuple[str, str] | None:
        """The scope that sealed an unreadable object, when it is one this client has not loaded (a known
        skip, not damage); None for anything else, a key id no scope of the repository has among it."""
        if not unloaded:
            return None
        try:
            frame = repo.fetch_frame(oid, kind)
        except StrongroomError:
            return None
        kid = key_id_of(frame) if len(frame) >= HEADER_LEN else -1
        return scopes[kid] if kid in unloaded else None

    # Walk every version; load each tree once.
    commits: list[tuple[bytes, bytes]] = []
    unreadable_commits: dict[bytes, str] = {}

    def read_twice(load: Callable[[bytes], Any], oid: bytes, what: str) -> tuple[Any, str | None]:
        """Load an object; a read that fails once and then succeeds is a warning, not damage."""
        try:
            return load(oid), None
        except (Shredded, KeyUnavailable):
            raise  # not a fault: no key here opens it (the caller tells a scope's from an unknown key id)
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
    skipped_trees: set[bytes] = set()  # sealed under a scope this client has not loaded: not walked
    referenced_chunks: set[bytes] = set()
    # A version whose tree is sealed under a shredded scope was erased on purpose: listed, not walked. One
    # whose scope key is not in this machine's keystore cannot be checked here: a warning. A tree under a key
    # id that no scope of the repository has is damage: nothing can open it, and nothing sealed it.
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
            bad.add((ObjectKind.TREE, tid))
            continue
        refusal: StrongroomError | None = None
        try:
            tree, why = read_twice(repo.load_tree, tid, "tree")
        except (Shredded, KeyUnavailable) as err:
            tree, why, refusal = None, str(err), err
        if why is not None:
            scope = unloaded_scope(tid, ObjectKind.TREE)
            if scope is None:
                bad.add((ObjectKind.TREE, tid))
                report.damage.append(Damage(f"tree {tid.hex()[:16]}", f"unreadable: {why}"))
                continue
            skipped_trees.add(tid)
            name, state = scope
            for cid in roots.get(tid, []):
                if isinstance(refusal, Shredded) or state == SHREDDED:
                    report.shredded[cid.hex()] = name
                else:
                    note = refusal or f"scope {name!r}: its key is not in this machine's keystore (STRONGROOM_KEYSTORE)"
                    report.warnings.append(f"version {cid.hex()[:12]}: {note}; not checked")
            continue
        for e in tree.entries:
            if e.type == DIR and e.subtree is not None:
                stack.append(e.subtree)
            elif e.type == FILE:
                referenced_chunks.update(e.chunks)
    report.objects_checked = len(seen_trees) + len(referenced_chunks) + len(commits)
    bad.update((ObjectKind.CHUNK, c) for c in referenced_chunks if not present(c, ObjectKind.CHUNK))
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
                _, what, reason, key = msg
                report.damage.append(Damage(what, reason))
                if key is not None:
                    bad.add(key)
            elif msg[0] == "warning":
                report.warnings.append(msg[1])
            elif msg[0] == "pack":
                report.packs_checked += 1
                report.bytes_checked += msg[1]
                if progress:
                    progress(1, msg[1])

        parallel.run(shares, lambda share, send: _check_packs(repo, share, unloaded, alt, send), handle)
        if not sample:
            for pid in sorted(missing_packs):
                report.damage.append(Damage(pack_path(pid), "pack is missing"))

    # Only what the versions reference, each by its kind: a chunk and a tree may share an id.
    referenced_bad = {
        (kind, oid)
        for kind, oid in bad
        if (kind == ObjectKind.CHUNK and oid in referenced_chunks) or (kind == ObjectKind.TREE and oid in seen_trees)
    }
    if referenced_bad:
        missing = [oid for kind, oid in referenced_bad if not present(oid, kind)]
        if missing:
            report.damage.append(Damage(f"{len(missing)} object(s)", "referenced but missing from the index or packs"))
        _map_damage(repo, commits, referenced_bad, skipped_trees, report)
    return report


def _map_damage(
    repo: Repository,
    commits: list[tuple[bytes, bytes]],
    bad: set[ObjectKey],
    skipped: set[bytes],
    report: VerifyReport,
) -> None:
    """Name every (version, path) that holds a damaged object: a file for a damaged chunk, a folder for a
    damaged tree (kinds kept apart: a tree's damage names no file whose chunk has its id, and the other way
    round). Trees the walk skipped (a scope this client has not loaded) name nothing."""
    bad_trees = {oid for kind, oid in bad if kind == ObjectKind.TREE}
    bad_chunks = {oid for kind, oid in bad if kind == ObjectKind.CHUNK}
    memo: dict[bytes, list[str]] = {}

    def affected_in(tid: bytes) -> list[str]:
        if tid in memo:
            return memo[tid]
        if tid in bad_trees:
            memo[tid] = [""]
            return memo[tid]
        if tid in skipped:
            memo[tid] = []
            return memo[tid]
        out: list[str] = []
        try:
            tree = repo.load_tree(tid)
        except StrongroomError:
            memo[tid] = [""]
            return memo[tid]
        for e in tree.entries:
            if e.type == FILE and any(c in bad_chunks for c in e.chunks):
                out.append(e.name)
            elif e.type == DIR and e.subtree is not None:
                out.extend(f"{e.name}/{p}" if p else f"{e.name}/" for p in affected_in(e.subtree))
        memo[tid] = out
        return out

    for cid, tid in commits:
        paths = affected_in(tid)
        if paths:
            report.affected[cid.hex()] = sorted(p if p else "(the whole version)" for p in paths)
