"""What one version needs from a backup, and the three operations built on it (docs/backup.md):

- ``release``: extend retention (never shorten) and optionally set a legal hold on every object version a
  repository version needs, plus the manifest version that names them;
- ``prune``: delete the object versions no kept backup (manifest version) names, once their retention has
  passed and never under a legal hold;
- ``restore_version``: rebuild a repository holding only what one version needs.

"What a version needs" is its closure in the version DAG: its commit and its ancestors' commits, their
trees and the chunks those trees name (a commit is hash-linked to its parents, so a restored version
verifies with its history), the packs holding those objects and the index files listing those packs, and
the small objects every restore needs (``config``, ``keyring``, ``keys/*``, ``counters``, ``refs``) and
the audit log (``audit/*``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from strongroom.backends.base import Backend, BackendAccessDenied, BackendError, ObjectMissing
from strongroom.backends.s3 import Lock, S3Backend, Version
from strongroom.backup.engine import (
    _CREDENTIALS,
    DAY,
    NoBackup,
    _parallel,
    accept_for,
    find_manifest,
    manifest_candidates,
    manifest_versions,
    open_verified,
    owned_versions,
    owns,
    retrying,
)
from strongroom.backup.manifest import MANIFEST_NAME, Manifest
from strongroom.backup.pinned import PinnedBackend
from strongroom.backup.remotes import MAX_RETAIN_DAYS, Remote
from strongroom.core.ids import ObjectKind
from strongroom.crypto.keyslot import Credentials
from strongroom.crypto.secret import Secret
from strongroom.errors import InputError, IntegrityError, ProblemFound, StrongroomError
from strongroom.store import gc
from strongroom.store.index import Index
from strongroom.store.pack import pack_path
from strongroom.store.refs import Refs, seal_refs
from strongroom.store.repository import Repository

ALWAYS = ("config", "keyring", "counters", "refs", "signers")
Resolver = Callable[[Repository, str], bytes]


class VersionNotBackedUp(ProblemFound):
    template = "{}"

    def hint(self) -> str | None:
        return "a version is in a backup once `strongroom backup push` ran after its commit (and before a prune)"


# ----------------------------------------------------------------------------------------- needs


def _index_packs(repo: Repository) -> dict[str, set[str]]:
    """Each index file of ``repo`` and the pack ids it lists (files that cannot be read are left out)."""
    out: dict[str, set[str]] = {}
    for name, _ in repo.backend.list("index"):
        idx = Index()
        try:
            idx.load_file(name, repo.backend.get(name), repo.sealer, repo.context)
        except StrongroomError:
            continue
        out[name] = set(idx.packs)
    return out


@dataclass
class Needs:
    commits: set[bytes]
    packs: set[str]  # pack ids
    names: set[str]  # object names: packs and the index files listing them

    def with_small(self, available: set[str]) -> set[str]:
        """These names plus the small objects, key files and audit objects among ``available``."""
        return self.names | {n for n in available if n in ALWAYS or n.startswith(("keys/", "audit/", "scopes/"))}


def needs(repo: Repository, heads: list[bytes]) -> Needs:
    """The packs (and index files) restoring ``heads`` and their history needs, by name."""
    try:
        live = gc.mark(repo, Refs(branches={f"h{k}": h for k, h in enumerate(heads)}), cutoff_ns=2**62)
    except IntegrityError as e:
        raise IntegrityError(str(e).removesuffix("; gc will not start")) from None
    packs: set[str] = set()
    commits: set[bytes] = set()
    for oid in live:
        found = repo.index.every_kind(oid)
        if not found:
            raise IntegrityError(f"object {oid.hex()[:16]} is not in any index")
        for loc in found:
            packs.add(loc.pack_id)
            if loc.kind == ObjectKind.COMMIT:
                commits.add(oid)
    names = {pack_path(p) for p in packs}
    names |= {f for f, listed in _index_packs(repo).items() if listed & packs}
    return Needs(commits, packs, names)


# ----------------------------------------------------------------------------------------- manifests


@dataclass
class Good:
    manifest: Manifest
    version: Version


def good_manifests(s3: S3Backend, accept: Callable[[bytes], Manifest]) -> tuple[list[Good], list[Version]]:
    """Every manifest version whose signature checks (newest first), and the versions that do not."""
    good: list[Good] = []
    bad: list[Version] = []
    for v in manifest_versions(s3):
        try:
            good.append(Good(accept(s3.get_version(MANIFEST_NAME, v.version_id)), v))
        except _CREDENTIALS:  # the credentials, not the manifest
            raise
        except ObjectMissing:
            continue
        except IntegrityError:
            bad.append(v)
    good.sort(key=lambda g: g.manifest.created_ns, reverse=True)
    return good, bad


# ----------------------------------------------------------------------------------------- release


@dataclass
class ReleaseReport:
    version: str
    manifest_version: str
    objects: int
    bytes: int
    retain_until: str | None
    extended: int
    legal_hold: bool
    seconds: float = 0.0
    manifest_warnings: list[str] = field(default_factory=list)  # a replayed manifest (``Candidates.replay``)


def release(
    repo: Repository,
    s3: S3Backend,
    remote: Remote,
    commit_id: bytes,
    *,
    retain_days: int | None,
    legal_hold: bool,
    now: float | None = None,
    workers: int = 8,
) -> ReleaseReport:
    """Lock every object version ``commit_id`` needs in the newest good manifest, and that manifest version:
    retention raised to now + ``retain_days`` (never lowered), and a legal hold when asked."""
    t0 = time.perf_counter()
    now = time.time() if now is None else now
    if retain_days is None and not legal_hold:
        raise InputError("backup release needs --retain-days N, --legal-hold, or both")
    lock: Lock | None = None
    if retain_days is not None:
        if retain_days < 1:
            raise InputError("--retain-days must be at least 1")
        if retain_days > MAX_RETAIN_DAYS:
            raise InputError(
                f"retention of {retain_days} days is above the maximum of {MAX_RETAIN_DAYS} days (100 years)"
            )
        if retain_days > remote.max_retain_days:
            raise InputError(
                f"retention of {retain_days} days is above the maximum of {remote.max_retain_days} days "
                f"for remote {remote.name} (--max-retain-days)"
            )
        if remote.lock_mode is None:
            raise InputError(f"remote {remote.name} has no Object Lock mode (remote add --lock ...)")
        lock = Lock(remote.lock_mode, dt.datetime.fromtimestamp(int(now) + retain_days * DAY, dt.UTC))
    found = find_manifest(s3, accept_for(repo))  # the newest signed one, not a replayed older one on top
    if found is None:
        raise NoBackup(s3.describe(), "no manifest version with a good signature")
    manifest, manifest_vid, _, notes = found
    need = needs(repo, [commit_id])
    names = need.with_small(set(manifest.entries))
    missing = sorted(names - set(manifest.entries))
    if missing:
        raise VersionNotBackedUp(
            f"version {commit_id.hex()[:16]} is not fully in the newest backup of {remote.name} "
            f"({len(missing)} objects missing, e.g. {missing[0]})"
        )
    targets = [(n, manifest.entries[n].version_id) for n in sorted(names)]
    targets.append((MANIFEST_NAME, manifest_vid))

    def apply(item: tuple[str, str]) -> bool:
        name, vid = item
        extended = False
        if lock is not None:
            before = s3.head(name, vid).retain_until
            after = retrying(lambda: s3.extend_retention(name, vid, lock))
            extended = before is None or after > before
        if legal_hold:
            retrying(lambda: s3.set_legal_hold(name, vid, True))
        return extended

    extended = sum(1 for e in _parallel(apply, targets, workers) if e)
    return ReleaseReport(
        commit_id.hex(),
        manifest_vid,
        len(targets),
        sum(manifest.entries[n].size for n in names),
        lock.until.isoformat() if lock else None,
        extended,
        legal_hold,
        round(time.perf_counter() - t0, 3),
        notes,
    )


# ----------------------------------------------------------------------------------------- prune


@dataclass
class PruneReport:
    manifests: int
    kept_manifests: int
    deleted: int = 0
    deleted_bytes: int = 0
    locked: int = 0
    held: int = 0
    young: int = 0
    bad_manifests: int = 0
    dry_run: bool = False
    deleted_names: list[str] = field(default_factory=list)
    seconds: float = 0.0
    kept_everything: bool = False  # a manifest version this repository cannot open: nothing was deleted
    unopened_manifests: list[str] = field(default_factory=list)  # their version ids


def prune(
    repo: Repository,
    s3: S3Backend,
    *,
    keep_last: int | None,
    keep_within_days: int | None,
    now: float | None = None,
    min_age_days: float = 1.0,
    dry_run: bool = False,
    workers: int = 8,
) -> PruneReport:
    """Delete every object version that no kept backup names, once its retention has passed, never one under
    a legal hold, and never one younger than ``min_age_days`` (a push that is running has not written its
    manifest yet). Kept: the newest ``keep_last`` backups, those made within ``keep_within_days``, the
    newest one always, and any whose manifest version is under a legal hold (``backup release``). Before
    deleting anything, every object a kept backup names must be in the bucket ("data seems to be missing").

    Only names of the exact shapes strongroom writes are considered (``owned_versions``): never a key of
    another shape or below another folder (``data/team-b/...``), even when the prefix is the whole bucket.
    A manifest version that does not verify under this repository's key may be another repository's (in a
    prefix an older strongroom let two repositories share), a newer format, or garbage: prune cannot know
    what it needs, so it then deletes nothing at all (``kept_everything``) until that version is removed
    by hand."""
    t0 = time.perf_counter()
    now = time.time() if now is None else now
    if keep_last is None and keep_within_days is None:
        raise InputError("backup prune needs --keep-last N, --keep-within DAYS, or both")
    if (keep_last is not None and keep_last < 1) or (keep_within_days is not None and keep_within_days < 0):
        raise InputError("--keep-last must be at least 1 and --keep-within at least 0")
    if keep_within_days is not None and keep_within_days > MAX_RETAIN_DAYS:  # its date must stay computable
        raise InputError(f"--keep-within is above the maximum of {MAX_RETAIN_DAYS} days (100 years)")
    good, bad = good_manifests(s3, accept_for(repo))
    if not good:
        raise NoBackup(s3.describe(), "no manifest version with a good signature: prune will not start")
    kept: list[Good] = []
    for k, g in enumerate(good):
        recent = keep_within_days is not None and g.manifest.created_ns >= (now - keep_within_days * DAY) * 1e9
        last = keep_last is not None and k < keep_last
        if k == 0 or last or recent or s3.head(MANIFEST_NAME, g.version.version_id).legal_hold:
            kept.append(g)
    wanted: set[tuple[str, str]] = {(MANIFEST_NAME, g.version.version_id) for g in kept}
    for g in kept:
        wanted.update((n, e.version_id) for n, e in g.manifest.entries.items())
    listing = owned_versions(s3, workers)
    present = {(v.name, v.version_id) for v in listing}

    def absent(item: tuple[str, str]) -> bool:
        """Not in the listing: missing, unless its name is of no shape the listing covers (then ask)."""
        if owns(item[0]):
            return True
        try:
            s3.head(*item)
        except ObjectMissing:
            return True
        return False

    missing = sorted(item for item in wanted - present if absent(item))
    if missing:
        raise IntegrityError(
            f"data seems to be missing: {len(missing)} objects that kept backups name are not in the bucket "
            f"(e.g. {missing[0][0]}); prune will not start (run `strongroom backup verify`)"
        )
    report = PruneReport(len(good), len(kept), bad_manifests=len(bad), dry_run=dry_run)
    if bad:
        report.kept_everything = True
        report.unopened_manifests = sorted(v.version_id for v in bad)
        report.seconds = round(time.perf_counter() - t0, 3)
        return report
    cutoff = dt.datetime.fromtimestamp(now - min_age_days * DAY, dt.UTC)
    candidates = []
    for v in listing:
        if (v.name, v.version_id) in wanted:
            continue
        if v.modified > cutoff:
            report.young += 1
            continue
        candidates.append(v)
    when = dt.datetime.fromtimestamp(now, dt.UTC)

    def remove(v: Version) -> tuple[str, Version]:
        head = s3.head(v.name, v.version_id)
        if head.legal_hold:
            return "held", v
        if head.retain_until is not None and head.retain_until > when:
            return "locked", v
        if dry_run:
            return "deleted", v
        try:
            retrying(lambda: s3.delete_version(v.name, v.version_id))
        except ObjectMissing:
            return "gone", v
        except BackendAccessDenied:
            return "locked", v  # the server still holds it (its clock, or a lock set since the head)
        return "deleted", v

    try:
        for outcome, v in _parallel(remove, candidates, workers):
            if outcome == "held":
                report.held += 1
            elif outcome == "locked":
                report.locked += 1
            elif outcome == "deleted":
                report.deleted += 1
                report.deleted_bytes += v.size
                report.deleted_names.append(v.name)
    except BackendError as e:
        raise ProblemFound(f"prune interrupted after {report.deleted} deletions: {e}") from None
    report.deleted_names.sort()
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


# ----------------------------------------------------------------------------------------- restore one version


@dataclass
class VersionRestore:
    manifest_version: str
    manifest_created_ns: int
    repo_id: str
    version: str
    objects: int
    bytes: int
    versions: int
    skipped_manifests: list[str]
    seconds: float = 0.0
    manifest_warnings: list[str] = field(default_factory=list)  # a replayed manifest (``Candidates.replay``)


def restore_version(
    s3: S3Backend, credentials: Secret | Credentials, dest: Backend, version: str, resolve: Resolver, workers: int = 8
) -> VersionRestore:
    """Rebuild in ``dest`` a repository holding only what ``version`` needs, from the newest good manifest
    that has it (newest by signed creation time, as ``find_manifest``: a replayed older manifest on top of
    the key is not taken for the newest): its packs, a new index listing just those packs, refs naming only
    the branches and tags inside its history (or a branch ``restored`` when none is), keys, keyring,
    counters and audit log; ``config`` last; verified before returning."""
    t0 = time.perf_counter()
    skipped: list[str] = []
    chosen: tuple[Manifest, Version, Repository, bytes] | None = None
    denied: InputError | None = None  # the credentials opened no manifest version (yet)
    opened = False
    generation = 0  # the newest refs generation in the bucket: the restored refs must not look rolled back
    notes: list[str] = []
    candidates = manifest_candidates(s3, workers)
    for v in candidates.order:
        try:
            note = retrying(functools.partial(s3.get_version, MANIFEST_NAME, v.version_id))
        except ObjectMissing:  # deleted since the listing
            continue
        try:
            m = Manifest.parse_unverified(note)
            backup = Repository.open(PinnedBackend(s3, m), credentials)
            Manifest.verified(note, backup.log_signer().verifier(), backup.config.repo_id)
        except _CREDENTIALS as e:  # another repository's backup, in a prefix two repositories shared
            denied = denied or e
            skipped.append(f"{v.version_id}: {e} (another repository's backup?)")
            continue
        except BackendError:  # the bucket could not be read: not a verdict on this version
            raise
        except StrongroomError as e:
            skipped.append(f"{v.version_id}: {e}")
            continue
        if not opened:  # the newest signed manifest
            skipped += candidates.skipped_malformed(v)
            notes = candidates.replay(v, m.created_ns, skipped)
        opened = True
        with contextlib.suppress(StrongroomError):
            generation = max(generation, backup.read_refs().generation)
        try:
            chosen = (m, v, backup, resolve(backup, version))
            break
        except InputError:
            continue
    if chosen is None:
        if denied is not None and not opened:
            raise denied
        raise VersionNotBackedUp(f"no backup in {s3.describe()} holds version {version}")
    m, v, backup, cid = chosen
    need = needs(backup, [cid])
    pinned = backup.backend
    names = need.with_small(set(m.entries))
    copy = sorted(n for n in names if not n.startswith("index/") and n not in ("config", "refs"))

    def fetch(name: str) -> str:
        dest.put(name, retrying(lambda: pinned.get(name)))
        return name

    try:
        list(_parallel(fetch, copy, workers))
        fresh = Index()
        for pid in sorted(need.packs):
            fresh.add_pack(pid, backup.index.packs[pid])
        name, data = fresh.encode(backup.sealer, backup.context, sorted(need.packs))
        dest.put(f"index/{name}", data)
        refs = backup.read_refs()
        keep = {k: c for k, c in refs.branches.items() if c in need.commits}
        tags = {k: c for k, c in refs.tags.items() if c in need.commits}
        if cid not in set(keep.values()) | set(tags.values()):
            keep["restored" if "restored" not in keep else f"restored-{cid.hex()[:8]}"] = cid
        log = [c for c in refs.reflog if all(x is None or x in need.commits for x in (c.old, c.new))]
        new = Refs(
            max(generation, refs.generation) + 1,
            keep,
            tags,
            {k: p for k, p in refs.protected.items() if k in keep},
            log,
            index_files=(name,),
        )
        dest.put("refs", seal_refs(backup.sealer, backup.context, new))
        fetch("config")  # last: until it is there, the folder is not a repository
    except StrongroomError as e:
        raise IntegrityError(f"restore incomplete: {e}") from None
    repo, r = open_verified(dest, credentials, "the restored version")
    return VersionRestore(
        v.version_id,
        m.created_ns,
        repo.config.repo_id,
        cid.hex(),
        len(copy) + 3,  # and the new index, refs and config
        sum(m.entries[n].size for n in copy if n in m.entries),
        r.versions,
        skipped,
        round(time.perf_counter() - t0, 3),
        notes,
    )
