"""Re-encryption: rewrite everything sealed under older data keys with the current one, then (when asked)
destroy a retired key.

Frames keep their plaintext encoding (compressed or raw), only the sealing changes, so nothing is
recompressed. Work goes in batches of packs; each batch follows gc's safe order: new packs, then one
complete new index, then the old index files, then the old packs. Every step leaves a repository that
verifies (the old keys stay in the keyring until the very end), and a run that is killed is resumed by
running it again: it finds what is still sealed under a target key. The retired key is dropped from the
keyring only after a scan finds nothing left that needs it.

A key destroyed here is gone from this repository only: copies and backups made earlier carry their own
keyring. Erasure that reaches every copy is what scopes and ``key shred`` are for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from strongroom.backends.base import ObjectMissing
from strongroom.crypto.aead import key_id_of
from strongroom.crypto.keys import SCOPE_KEY_BASE
from strongroom.errors import InputError, IntegrityError
from strongroom.store.index import MAGIC as INDEX_MAGIC
from strongroom.store.listing import frame_key_id
from strongroom.store.pack import TRAILER_LEN, PackBuilder, header_location, pack_path
from strongroom.store.refs import MAGIC as REFS_MAGIC
from strongroom.store.repository import Repository

BATCH_PACKS = 16  # about 256 MiB of default packs between two index rewrites

# Objects sealed under a data key with the repository id as context, besides packs, indexes, refs and
# counters (those two are resealed by a refs edit): the trusted signers, and the audit segments and checkpoints.
_SEALED_NAMES = ("signers",)
_SEALED_PREFIXES = ("audit", "scopes")


def _sealed_objects(repo: Repository) -> list[str]:
    names = [n for n in _SEALED_NAMES if repo.backend.size(n) is not None]
    return names + [n for prefix in _SEALED_PREFIXES for n, _ in repo.backend.list(prefix)]


@dataclass
class ReencryptReport:
    packs_rewritten: int = 0
    bytes_rewritten: int = 0
    index_rewrites: int = 0
    objects_resealed: int = 0
    retired: int | None = None
    already_retired: bool = False  # the key was destroyed before this run (by a run killed after that)
    seconds: float = 0.0


def pack_key_id(repo: Repository, pack_id: str, size: int) -> int:
    name = pack_path(pack_id)
    trailer = repo.backend.get_range(name, size - TRAILER_LEN, TRAILER_LEN)
    start, hlen = header_location(size, trailer)
    return key_id_of(repo.backend.get_range(name, start, min(hlen, 32)))


def _packs_under(repo: Repository, targets: Callable[[int], bool]) -> list[str]:
    """Packs whose header, or any frame, is sealed under a target key. Frames are checked one by one (7 bytes
    each: chunks average 768 KiB, so there are few): gc copies live frames into new packs as they are, so a
    pack's header key says nothing certain about its frames."""
    sizes = {name.rsplit("/", 1)[-1]: size for name, size in repo.backend.list("data")}
    out = []
    for pid, entries in repo.index.packs.items():
        if pid not in sizes:
            continue
        name = pack_path(pid)
        if targets(pack_key_id(repo, pid, sizes[pid])) or any(
            targets(key_id_of(repo.backend.get_range(name, e.offset, 7))) for e in entries
        ):
            out.append(pid)
    return sorted(out)


def _index_files_under(repo: Repository, targets: Callable[[int], bool]) -> list[str]:
    return [name for name, _ in repo.backend.list("index") if targets(frame_key_id(repo.backend, name, INDEX_MAGIC))]


def _rewrite_batch(repo: Repository, pack_ids: list[str], report: ReencryptReport) -> None:
    sealer = repo.sealer
    builder = PackBuilder()
    with repo.packs_replacing(set(pack_ids)) as written:

        def flush() -> None:
            if len(builder):
                pid, data, entries = builder.finish(sealer, repo.context)
                repo.backend.put(pack_path(pid), data)
                written.append(pid)
                repo.index.add_pack(pid, entries)

        for pid in pack_ids:
            data = repo.backend.get(pack_path(pid))
            for e in repo.index.packs[pid]:
                frame = data[e.offset : e.offset + e.length]
                if key_id_of(frame) >= SCOPE_KEY_BASE:
                    builder.add(e.kind, e.object_id, frame, e.raw_length)  # a scope's frame keeps its scope's key
                else:
                    body, flags = sealer.open_flagged(frame, e.kind, e.object_id)  # authenticated: no damage moves on
                    builder.add(e.kind, e.object_id, sealer.seal(body, e.kind, e.object_id, flags), e.raw_length)
                if builder.size >= repo.config.pack_size:
                    flush()
            report.packs_rewritten += 1
            report.bytes_rewritten += len(data)
        flush()
    report.index_rewrites += 1


def _reseal_singletons(repo: Repository, targets: Callable[[int], bool], report: ReencryptReport) -> None:
    """Re-sealed in place, under the same name (the catalog refers to audit objects by name)."""
    for name in _sealed_objects(repo):
        data = repo.backend.get(name)
        if len(data) < 7 or not targets(key_id_of(data)):
            continue
        kind = data[1]
        body, flags = repo.sealer.open_flagged(data, kind, repo.context)
        repo.backend.put(name, repo.sealer.seal(body, kind, repo.context, flags))
        report.objects_resealed += 1


def reencrypt(
    repo: Repository,
    retire: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> ReencryptReport:
    """Rewrite under the current data key what is sealed under ``retire`` (or under any older key when
    None). The caller holds the publish and exclusive locks; refs and counters are resealed afterwards by
    a refs edit, and ``destroy_key`` then drops the retired key.

    A key already destroyed is reported as such (``already_retired``) and nothing is done: destroying is the
    last step, after the refs edit, and only once nothing is sealed under the key, so a run killed after it
    left nothing to finish."""
    t0 = time.perf_counter()
    repo.reload_keyring()
    current = repo.keyring.current
    if retire is not None:
        if repo.keyring.destroyed(retire):
            return ReencryptReport(retired=retire, already_retired=True)
        if retire not in repo.keyring.data_keys:
            raise InputError(f"no data key {retire} (strongroom key list shows them)")
        if retire == current:
            raise InputError(f"data key {retire} is the current key: run strongroom key rotate first")

    def targets(kid: int) -> bool:
        if kid >= SCOPE_KEY_BASE:
            return False  # a scope's frames keep the scope's key
        return kid == retire if retire is not None else kid != current

    report = ReencryptReport()
    repo.adopt_orphan_packs()  # a killed commit's packs may hold data under the old key too
    stale = _packs_under(repo, targets)
    for start in range(0, len(stale), BATCH_PACKS):
        _rewrite_batch(repo, stale[start : start + BATCH_PACKS], report)
        if progress:
            progress(report.packs_rewritten, report.bytes_rewritten)
    if _index_files_under(repo, targets):
        repo.rewrite_index(set())
        report.index_rewrites += 1
    _reseal_singletons(repo, targets, report)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def still_needed(repo: Repository, key_id: int) -> list[str]:
    """What in the repository is still sealed under ``key_id`` (empty once it can be destroyed)."""
    found = []
    if _packs_under(repo, lambda k: k == key_id):
        found.append("packs")
    if _index_files_under(repo, lambda k: k == key_id):
        found.append("index files")
    for name in ("refs", "counters"):  # counters is a bare frame: no listed file's magic starts it
        try:
            if frame_key_id(repo.backend, name, REFS_MAGIC) == key_id:
                found.append(name)
        except ObjectMissing:
            continue
    left = [n for n in _sealed_objects(repo) if key_id_of(repo.backend.get_range(n, 0, 32)) == key_id]
    found.extend(sorted({n.split("/")[0] + (" objects" if "/" in n else "") for n in left}))
    return found


def destroy_key(repo: Repository, key_id: int) -> None:
    """Drop a data key from the keyring for good. Caller holds the publish lock."""
    repo.reload_keyring()
    if key_id == repo.keyring.current:
        raise InputError(f"data key {key_id} is the current key")
    left = still_needed(repo, key_id)
    if left:
        raise IntegrityError(f"data key {key_id} still seals {', '.join(left)}: run key reencrypt again")
    repo.keyring.data_keys.pop(key_id, None)
    repo.keyring.created.pop(key_id, None)
    repo.save_keyring()
