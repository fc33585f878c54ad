"""Push, verify and restore (docs/backup.md).

Push uploads what the bucket lacks, every object with the remote's Object Lock retention, several at a
time, then writes the signed manifest last: a push that stops early (a dropped connection, SIGKILL, an
incident) leaves no manifest naming a missing object, and the next push finds the finished uploads by
their ETag and does not send them again. Verify and restore read only the versions a manifest names.

A prefix holds one repository: push, verify, release and prune first read the prefix's ``config`` (plaintext,
it holds the repository id) and refuse another repository's prefix (``check_prefix``). Content-named
objects (``data/``, ``index/``) are re-hashed against their names before upload, and a restore re-hashes
them after download: a damaged local pack never replaces the good copy, and a damaged backup never
restores with success. Listings meant for deletion see only names of the exact shapes strongroom writes
(``OWNED``, ``owned_versions``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from strongroom.backends.base import Backend, BackendError, ObjectMissing, TransientBackendError
from strongroom.backends.s3 import Lock, S3Backend, Version, expected_etag
from strongroom.backup.manifest import MANIFEST_NAME, Entry, Manifest
from strongroom.backup.pinned import PinnedBackend
from strongroom.backup.remotes import Incident, IncidentOpen, Remote, RemoteUnusable
from strongroom.crypto.idhash import content_name
from strongroom.crypto.keyslot import Credentials
from strongroom.crypto.secret import Secret
from strongroom.errors import (
    HsmError,
    InputError,
    IntegrityError,
    KeyUnavailable,
    PolicyDenied,
    ProblemFound,
    StrongroomError,
    WrongPassphrase,
    WrongPin,
)
from strongroom.store import check
from strongroom.store.repository import Repository

T = TypeVar("T")
A = TypeVar("A")
DAY = 86400
SMALL = ("config", "counters", "keyring", "signers")  # besides refs and keys/*; read after listing (keys grow)
CONTENT_FOLDERS = ("data", "index")  # objects named by the BLAKE3 of their bytes (docs/format.md §5)
SEALED_FOLDERS = ("keys", "scopes", "audit")  # compared by hash: rewritten in place
TOP_NAMES = (MANIFEST_NAME, "refs", *SMALL)  # every name push writes at the top of a prefix
_HEX64 = re.compile(r"[0-9a-f]{64}")
# The exact shape of every name push writes (docs/format.md §2, docs/audit.md): prune deletes nothing else.
OWNED = re.compile(
    "|".join(TOP_NAMES) + r"|data/(?P<xx>[0-9a-f]{2})/(?P=xx)[0-9a-f]{62}"
    r"|index/[0-9a-f]{64}"
    r"|keys/[0-9a-f]{16}"
    r"|scopes/[0-9a-f]{16}(?:-shredded)?"
    r"|audit/[0-9a-f]{16}/(?:segments/[0-9]{12,}-[0-9]+-[0-9a-f]{8}|checkpoints/[0-9]{12,}-[0-9a-f]{8})"
)
_DATA_FOLDER = re.compile(r"data/[0-9a-f]{2}/")
_AUDIT_FOLDER = re.compile(r"audit/[0-9a-f]{16}/")
_CREDENTIALS = (WrongPassphrase, WrongPin, HsmError, KeyUnavailable)  # the credentials, not the manifest


class PushInterrupted(ProblemFound):
    """A push that could not finish; what it uploaded is reused by the next push (no manifest was written)."""

    template = "push interrupted: {}"

    def hint(self) -> str | None:
        return "run `strongroom backup push` again: finished uploads are not sent twice"


class NoBackup(ProblemFound):
    template = "no usable backup in {}: {}"


@dataclass
class PushReport:
    objects: int = 0
    total_bytes: int = 0
    uploaded: int = 0
    bytes_sent: int = 0
    data_bytes_sent: int = 0  # of packs and index files (the rest: refs, keys, counters, audit, manifest)
    resumed: int = 0
    extended: int = 0
    healed: int = 0  # objects the previous manifest names that the bucket lost: uploaded again
    manifest_version: str | None = None
    up_to_date: bool = False
    skipped_manifests: list[str] = field(default_factory=list)
    seconds: float = 0.0


def retrying(op: Callable[[], T], attempts: int = 4, delay: float = 0.25) -> T:
    """Retry transient failures with exponential backoff (on top of botocore's own retries)."""
    for k in range(attempts):
        try:
            return op()
        except TransientBackendError:
            if k == attempts - 1:
                raise
            time.sleep(delay * (2**k))
    raise AssertionError("unreachable")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------- the prefix


def owns(name: str) -> bool:
    """Whether ``name`` (relative to the prefix) has the exact shape of a name strongroom writes (``OWNED``):
    a top name, ``data/<2 hex>/<64 hex>`` (the pack's first two digits), ``index/<64 hex>``,
    ``keys/<16 hex>``, ``scopes/<16 hex>[-shredded]``, ``audit/<16 hex>/segments/<first>-<count>-<8 hex>``
    or ``audit/<16 hex>/checkpoints/<size>-<8 hex>``. Anything else in a prefix (another backup under
    ``data/team-b/``, say) is never listed for deletion."""
    return OWNED.fullmatch(name) is not None


def owned_versions(s3: S3Backend, workers: int = 8) -> list[Version]:
    """Every version of strongroom's own objects under the prefix, listed level by level with S3's delimiter:
    the top names, ``index/``, ``keys/`` and ``scopes/`` (their top level only), each ``data/<2 hex>/`` and
    each ``audit/<16 hex>/segments/`` and ``.../checkpoints/``. A folder of another shape (another backup
    under ``data/team-b/``, even when the prefix is the whole bucket) is neither listed nor deleted."""
    folders = ["", "index/", "keys/", "scopes/"]
    folders += [f for f in retrying(lambda: list(s3.folders("data/"))) if _DATA_FOLDER.fullmatch(f)]
    for log in (f for f in retrying(lambda: list(s3.folders("audit/"))) if _AUDIT_FOLDER.fullmatch(f)):
        folders += [f"{log}segments/", f"{log}checkpoints/"]

    def listing(folder: str) -> list[Version]:
        return [v for v in retrying(lambda: list(s3.versions(folder, top=True))) if owns(v.name)]

    return [v for found in _parallel(listing, folders, workers) for v in found]


def prefix_owner(s3: S3Backend) -> str | None:
    """The repository id in the prefix's current ``config`` (plaintext JSON); None when there is none or it
    is not a strongroom config (garbage is the manifests' business: their signatures are checked)."""
    try:
        data, _ = s3.get_current("config")
    except ObjectMissing:
        return None
    except BackendError as e:
        raise RemoteUnusable(f"cannot read {s3.describe()}: {e}") from None
    try:
        rid = json.loads(data)["id"]
    except (ValueError, KeyError, TypeError):
        return None
    return rid if isinstance(rid, str) and _HEX64.fullmatch(rid) else None


def check_prefix(s3: S3Backend, repo_id: str) -> None:
    """Refuse (exit 2) a prefix whose ``config`` belongs to another repository."""
    owner = prefix_owner(s3)
    if owner is not None and owner != repo_id:
        raise InputError(
            f"{s3.location} holds the backup of repository {owner[:16]}, not of this one ({repo_id[:16]}): "
            "give each repository its own prefix"
        )


# ----------------------------------------------------------------------------------------- manifests


def manifest_versions(s3: S3Backend) -> list[Version]:
    """Versions of the manifest key in S3's order, newest first (the current one first within a second)."""
    found = [v for v in retrying(lambda: list(s3.versions(MANIFEST_NAME, top=True))) if v.name == MANIFEST_NAME]
    return sorted(found, key=lambda v: (v.modified, v.latest), reverse=True)


HEAD_BYTES = 256  # a manifest's first four lines (format, repo, created, objects) fit in 140 bytes


class Found(NamedTuple):
    manifest: Manifest
    version_id: str
    skipped: list[str]  # versions refused on the way: "<version id>: <reason>"
    warnings: list[str]  # a replayed older manifest on top of the key (``Candidates.replay``)


@dataclass
class Candidates:
    """The manifest key's versions in the order to try them (``order``): by the creation time each one's
    body claims, newest first (read with a ranged GET of its first lines, so no version is downloaded
    whole), S3's order among equal claims. The claim is part of the signed body: the first version that
    verifies in this order is the newest signed manifest, whatever S3's dates say. Someone holding the push
    credential can copy an older, validly signed manifest on top of the key (a newer S3 version with an
    older signed time): it is not taken for the newest backup, and ``replay`` says so."""

    order: list[Version]
    newest: Version | None  # S3's newest version (the key's current one)
    malformed: list[Version]  # versions whose first lines are no manifest's: never tried

    def skipped_malformed(self, chosen: Version | None) -> list[str]:
        """The malformed versions S3-newer than ``chosen`` (all when None): garbage on top of the key."""
        return [
            f"{v.version_id}: backup manifest is malformed"
            for v in self.malformed
            if chosen is None or (v.modified, v.latest) > (chosen.modified, chosen.latest)
        ]

    def replay(self, signed_newest: Version, created_ns: int, skipped: list[str]) -> list[str]:
        """A warning when S3's newest version is not the newest signed manifest (and was not reported)."""
        top = self.newest
        if top is None or top.version_id == signed_newest.version_id:
            return []
        if any(s.startswith(f"{top.version_id}: ") for s in skipped):
            return []
        when = dt.datetime.fromtimestamp(created_ns / 1e9, dt.UTC).isoformat(timespec="seconds")
        return [
            f"the manifest key's newest version in S3 ({top.version_id}, written "
            f"{top.modified.isoformat(timespec='seconds')}) is not the newest signed manifest: an older manifest "
            f"was copied on top of it (replayed) or it does not verify; used the newest signed one "
            f"({signed_newest.version_id}, created {when})"
        ]


def manifest_candidates(s3: S3Backend, workers: int = 8) -> Candidates:
    listed = manifest_versions(s3)

    def claim(v: Version) -> int | None:
        try:
            head = retrying(lambda: s3.get_range(MANIFEST_NAME, 0, HEAD_BYTES, v.version_id))
        except ObjectMissing:  # deleted since the listing
            return -1
        return Manifest.claimed_created(head)

    claims = list(_parallel(claim, listed, workers))
    valid = [(c, v) for c, v in zip(claims, listed, strict=True) if c is not None and c >= 0]
    valid.sort(key=lambda cv: cv[0], reverse=True)  # stable: S3's order among equal claims
    return Candidates(
        [v for _, v in valid],
        listed[0] if listed else None,
        [v for c, v in zip(claims, listed, strict=True) if c is None],
    )


def find_manifest(s3: S3Backend, accept: Callable[[bytes], Manifest], workers: int = 8) -> Found | None:
    """The newest signed manifest: the key's versions in the order of their claimed creation time
    (``manifest_candidates``), the first that ``accept`` takes (it checks the signature). Versions it
    refuses on the way (garbage, another key) are skipped and listed, as are malformed versions newer in
    S3 than the one taken; a warning says when S3's newest version is not the one taken (a replay). A
    version the credentials cannot open (another repository's, in a prefix an older strongroom let two
    repositories share) is skipped too; when no version opens, that credential error is raised. None when
    no version is acceptable."""
    skipped: list[str] = []
    denied: InputError | None = None
    found = manifest_candidates(s3, workers)
    for v in found.order:
        try:
            note = retrying(functools.partial(s3.get_version, MANIFEST_NAME, v.version_id))
        except ObjectMissing:  # deleted since the listing
            continue
        try:
            m = accept(note)
        except _CREDENTIALS as e:
            denied = denied or e
            skipped.append(f"{v.version_id}: {e} (another repository's backup?)")
            continue
        except BackendError:  # the bucket could not be read: not a verdict on this version
            raise
        except StrongroomError as e:
            skipped.append(f"{v.version_id}: {e}")
            continue
        skipped += found.skipped_malformed(v)
        return Found(m, v.version_id, skipped, found.replay(v, m.created_ns, skipped))
    if denied is not None:
        raise denied
    return None


def _current_manifest(s3: S3Backend, accept: Callable[[bytes], Manifest]) -> Found | None:
    """The manifest's current version when it verifies: one GET instead of listing the key's versions.
    Enough for push (a replayed older manifest only makes it check more objects, and its own manifest is
    then the newest signed one); verify, restore, release and restore --version take the newest signed
    manifest (``find_manifest``)."""
    try:
        note, vid = s3.get_current(MANIFEST_NAME)
        return Found(accept(note), vid, [], [])
    except _CREDENTIALS:
        raise
    except (ObjectMissing, IntegrityError):
        return None


def accept_for(repo: Repository) -> Callable[[bytes], Manifest]:
    verifier = repo.log_signer().verifier()
    return lambda note: Manifest.verified(note, verifier, repo.config.repo_id)


def accept_with_passphrase(s3: S3Backend, credentials: Secret | Credentials) -> Callable[[bytes], Manifest]:
    """From the bucket alone: open the repository the manifest pins (key files, keyring and config, all
    hash-checked against it) with the passphrase, and check the manifest with that repository's log key.
    A wrong passphrase on every candidate is reported as such."""

    def accept(note: bytes) -> Manifest:
        m = Manifest.parse_unverified(note)
        repo = Repository.open(PinnedBackend(s3, m), credentials)
        return Manifest.verified(note, repo.log_signer().verifier(), repo.config.repo_id)

    return accept


# ----------------------------------------------------------------------------------------- push


def _snapshot(backend: Backend) -> tuple[dict[str, int], dict[str, bytes]]:
    """Names and sizes of everything a backup holds. Refs are read first and the keyring last: packs and
    index files are written before the refs that reach them, and key material only grows."""
    small: dict[str, bytes] = {"refs": backend.get("refs")}
    sizes: dict[str, int] = {}
    for folder in reversed(CONTENT_FOLDERS):  # index files first: packs are written before them
        sizes.update(backend.list(folder))
    # keys/*, scope records and audit objects are compared by hash: key slots come and go, and
    # `key reencrypt` reseals scope records, audit segments and checkpoints in place under a new data key.
    for prefix in SEALED_FOLDERS:
        for name, _ in backend.list(prefix):
            small[name] = backend.get(name)
    for name in SMALL:
        try:
            small[name] = backend.get(name)
        except ObjectMissing:
            if name not in ("counters", "signers"):  # absent in a new repository
                raise
    sizes.update({n: len(d) for n, d in small.items()})
    return sizes, small


def push(
    repo: Repository,
    s3: S3Backend,
    remote: Remote,
    incidents: Callable[[], list[Incident]],
    *,
    now: float | None = None,
    workers: int = 8,
    grace_days: int | None = None,
    list_above: int = 64,
    check: bool = False,
) -> PushReport:
    """``list_above``: with more objects to send than this, finished uploads of an interrupted push are found
    in one listing of the bucket's versions; with fewer, by a HeadObject per object (listing every version
    of a large bucket costs more than a few heads). ``check``: list the bucket whatever the count.

    Healing: an object the previous manifest names but the bucket lost (a bypassed GOVERNANCE lock, a
    lifecycle rule) is uploaded again from the repository when the push lists the bucket (``check``, or
    many objects to send) or when extending its retention finds the version gone."""
    t0 = time.perf_counter()
    now = time.time() if now is None else now

    def guard() -> None:
        opened = incidents()
        if opened:
            raise IncidentOpen(opened[0].id, opened[0].reason)

    guard()
    if remote.retain_days > remote.max_retain_days:
        raise PolicyDenied(
            f"retention of {remote.retain_days} days is above the maximum of "
            f"{remote.max_retain_days} days for remote {remote.name}"
        )
    horizon = int(now) + remote.retain_days * DAY
    lock = Lock(remote.lock_mode, dt.datetime.fromtimestamp(horizon, dt.UTC)) if remote.lock_mode else None
    grace = (grace_days if grace_days is not None else max(1, remote.retain_days // 10)) * DAY
    report = PushReport()
    try:
        found = _current_manifest(s3, accept_for(repo)) or find_manifest(s3, accept_for(repo))
    except BackendError as e:
        raise PushInterrupted(f"reading the bucket: {e}") from None
    prev = found[0] if found else None
    if found:
        report.skipped_manifests = found[2]

    sizes, small = _snapshot(repo.backend)
    entries: dict[str, Entry] = {}
    pending: list[str] = []
    for name, size in sorted(sizes.items()):
        old = prev.entries.get(name) if prev else None
        # data/ and index/ are named by the hash of their bytes; the small ones are compared by hash.
        if old is not None and old.size == size and (name not in small or old.sha256 == _sha(small[name])):
            entries[name] = old
            continue
        pending.append(name)

    stop = threading.Event()
    refused = threading.Event()  # a damaged local object: upload nothing more
    versions: dict[str, list[Version]] | None = None
    if check or len(pending) > list_above:
        versions = {}
        for v in owned_versions(s3):
            versions.setdefault(v.name, []).append(v)
        # The listing shows for free which versions the previous manifest names that the bucket lost.
        listed = {(v.name, v.version_id) for found in versions.values() for v in found}
        lost = sorted(n for n, e in entries.items() if owns(n) and (n, e.version_id) not in listed)
        for name in lost:
            del entries[name]
        pending += lost
        report.healed += len(lost)

    def finished(name: str, size: int, etag: str) -> str | None:
        """The version id of a complete copy of these bytes an interrupted push left, if any."""
        if versions is not None:
            found = [v for v in versions.get(name, []) if v.size == size and v.etag == etag]
            return found[0].version_id if found else None
        try:
            head = retrying(lambda: s3.head(name))
        except ObjectMissing:
            return None
        return head.version_id if head.size == size and head.etag == etag and head.version_id else None

    def upload(name: str) -> tuple[str, Entry, int, bool]:
        if stop.is_set():
            raise IncidentOpen("(opened during the push)", "stopped")
        if refused.is_set():  # never the error reported: the refused object was submitted earlier
            raise PushInterrupted("stopped: another object was refused")
        if incidents():
            stop.set()
            guard()
        data = small.get(name)
        if data is None:
            data = repo.backend.get(name)
            # Content-named: the bytes must hash to the name, or a damaged local copy would go up as a new
            # version of the key (over the good one in the bucket) and into the manifest.
            if name.split("/", 1)[0] in CONTENT_FOLDERS and content_name(data) != name.rsplit("/", 1)[-1]:
                refused.set()
                raise IntegrityError(
                    f"push refused: {name} in the repository does not match its content name (damaged); no "
                    "backup was written: run `strongroom verify` to see what it affects (the bucket's copy was "
                    "left as it was)"
                )
        sha, etag = _sha(data), expected_etag(data, s3.part_size, s3.multipart_threshold)
        done = finished(name, len(data), etag)
        if done is not None:  # finished by an interrupted push
            return name, Entry(sha, len(data), 0, done), 0, True
        vid, sent = retrying(lambda: s3.put_object_counted(name, data, lock))
        if not vid or vid == "null":
            raise BackendError(f"{s3.describe()} gave no version id for {name}: is versioning on?")
        return name, Entry(sha, len(data), horizon if lock else 0, vid), sent, False

    def extend(name: str) -> tuple[str, Entry | None]:
        """The entry with its retention extended; None when the bucket no longer has that version."""
        e = entries[name]
        assert lock is not None
        try:
            until = retrying(lambda: s3.extend_retention(name, e.version_id, lock))
        except ObjectMissing:
            return name, None
        return name, Entry(e.sha256, e.size, int(until.timestamp()), e.version_id)

    def send(names: list[str]) -> None:
        for name, entry, sent, resumed in _parallel(upload, names, workers):
            entries[name] = entry
            report.uploaded += 0 if resumed else 1
            report.resumed += 1 if resumed else 0
            report.bytes_sent += sent
            report.data_bytes_sent += sent if name.startswith(("data/", "index/")) else 0

    def lengthen() -> list[str]:
        """Extend the retention that falls short; the names whose version the bucket lost."""
        lost = []
        short = [n for n, e in entries.items() if e.retain_until < horizon - grace]
        for name, entry in _parallel(extend, short, workers):
            if entry is None:
                lost.append(name)
                continue
            report.extended += 1 if entry.retain_until != entries[name].retain_until else 0
            entries[name] = entry
        return sorted(lost)

    try:
        send(pending)
        if lock is not None:
            lost = lengthen()
            if lost:  # lost from the bucket (a bypassed lock, a lifecycle rule): upload it again
                for name in lost:
                    del entries[name]
                report.healed += len(lost)
                send(lost)
                again = lengthen()  # a copy an interrupted push left, reused above, gets its retention
                if again:
                    raise PushInterrupted(
                        f"{again[0]} disappeared from {s3.describe()} while the push uploaded it again; no "
                        "manifest was written"
                    )
        guard()
    except (BackendError, ObjectMissing) as e:  # ObjectMissing: an object lost while the push ran
        raise PushInterrupted(f"{report.uploaded} of {len(pending)} objects uploaded; {e}") from None

    report.objects, report.total_bytes = len(entries), sum(e.size for e in entries.values())
    if prev is not None and prev.entries == entries:
        report.up_to_date, report.manifest_version = True, found[1] if found else None
    else:
        # Later than the previous manifest even when this machine's clock is behind: restore takes the
        # newest signed creation time.
        created = max(time.time_ns(), prev.created_ns + 1) if prev is not None else time.time_ns()
        manifest = Manifest(repo.config.repo_id, created, entries)
        note = manifest.sign(repo.log_signer())
        try:
            report.manifest_version = retrying(lambda: s3.put_object(MANIFEST_NAME, note, lock))
        except BackendError as e:
            raise PushInterrupted(f"writing the manifest: {e}") from None
        report.bytes_sent += len(note)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _parallel(fn: Callable[[A], T], names: list[A], workers: int) -> Iterator[T]:
    if not names:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(names)))) as pool:
        futures = [pool.submit(fn, n) for n in names]
        error: BaseException | None = None
        for f in futures:
            try:
                yield f.result()
            except BaseException as e:  # let in-flight uploads finish, then raise the first failure
                if error is None:
                    error = e
                    for g in futures:
                        g.cancel()
        if error is not None:
            raise error


# ----------------------------------------------------------------------------------------- verify / restore


@dataclass
class DrillReport:
    manifest_version: str
    manifest_created_ns: int
    objects: int
    mode: str
    ok: bool
    versions: int
    packs_checked: int
    bytes_checked: int
    damage: list[dict[str, str]]
    affected: dict[str, list[str]]
    skipped_manifests: list[str]
    warnings: list[str]
    seconds: float = 0.0
    manifest_warnings: list[str] = field(default_factory=list)  # a replayed manifest (``Candidates.replay``)
    unread: list[dict[str, str]] = field(default_factory=list)  # not served by the bucket after retries


UNREAD = "could not read"  # in the reason of a read that failed after retries (not damage: the bucket did not answer)


class DrillReads(PinnedBackend):
    """The pinned versions as a drill reads them: transient errors (throttling, 5xx, a dropped connection)
    are retried (``retrying``, on top of botocore's own retries); a read that still fails raises a
    BackendError saying ``could not read`` and its name is remembered (in this process: packs checked by
    forked workers are told apart by that reason)."""

    def __init__(self, s3: S3Backend, manifest: Manifest) -> None:
        super().__init__(s3, manifest)
        self.unread: dict[str, str] = {}

    def _read(self, name: str, op: Callable[[], bytes]) -> bytes:
        if name in self.unread:  # retried once already: fail at once
            raise TransientBackendError(self.unread[name])
        try:
            return retrying(op, attempts=2)
        except BackendError as e:
            self.unread.setdefault(name, f"{UNREAD}: {e}")
            raise TransientBackendError(f"{UNREAD} {name}: {e}") from None

    def get(self, name: str) -> bytes:
        return self._read(name, lambda: PinnedBackend.get(self, name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self._read(name, lambda: PinnedBackend.get_range(self, name, offset, length))


def verify(
    s3: S3Backend,
    accept: Callable[[bytes], Manifest],
    credentials: Secret | Credentials,
    sample: tuple[int, int] | float | None = None,
) -> DrillReport:
    """A restore drill against the bucket: every small object and index file hash-checked against the
    manifest, then the backup opened as a repository (pinned versions only) and checked in full (or a
    sample of packs): each pack re-hashed, every chunk decrypted and re-hashed, damage mapped to versions.
    An object the bucket would not serve (after retries) is listed in ``unread``, not in ``damage``."""
    t0 = time.perf_counter()
    found = find_manifest(s3, accept)
    if found is None:
        raise NoBackup(s3.describe(), "no manifest version with a good signature")
    m, vid, skipped, notes = found
    pinned = DrillReads(s3, m)
    damage: list[dict[str, str]] = []
    for name in sorted(m.entries):
        if not name.startswith("data/"):
            try:
                pinned.get(name)
            except BackendError:
                pass  # in pinned.unread
            except StrongroomError as e:
                damage.append({"object": name, "reason": str(e)})
    report = DrillReport(
        vid, m.created_ns, len(m.entries), "sample" if sample else "full", False, 0, 0, 0, damage, {}, skipped, []
    )
    report.manifest_warnings = notes
    try:
        backup = Repository.open(pinned, credentials)
        r = check.verify(backup, full=sample is None, sample=sample)
    except BackendError as e:
        pinned.unread.setdefault("repository", f"the backup cannot be opened: {e}")
    except StrongroomError as e:
        damage.append({"object": "repository", "reason": f"the backup cannot be opened: {e}"})
    else:
        report.versions, report.packs_checked, report.bytes_checked = r.versions, r.packs_checked, r.bytes_checked
        report.affected, report.warnings = r.affected, r.warnings
        have = {d["object"] for d in damage}
        blind = sorted(n for n in pinned.unread if not n.startswith("data/"))  # an index file, refs, keys...
        for d in r.damage:
            if blind and d.what not in pinned.unread:  # "missing" may only mean: listed in what was not read
                pinned.unread.setdefault(d.what, f"not known: {d.reason} ({blind[0]} could not be read)")
            elif d.what in pinned.unread or UNREAD in d.reason:  # what follows from a read that failed
                pinned.unread.setdefault(d.what, d.reason)
            elif d.what not in have:
                damage.append({"object": d.what, "reason": d.reason})
        if not damage:  # versions "affected" only by what could not be read: not known to be damaged
            report.affected = {}
    report.unread = [{"object": k, "reason": v} for k, v in sorted(pinned.unread.items())]
    report.ok = not damage and not report.unread
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


@dataclass
class RestoreReport:
    manifest_version: str
    manifest_created_ns: int
    repo_id: str
    objects: int
    bytes: int
    versions: int
    skipped_manifests: list[str]
    seconds: float = 0.0
    manifest_warnings: list[str] = field(default_factory=list)  # a replayed manifest (``Candidates.replay``)


def open_verified(dest: Backend, credentials: Secret | Credentials, what: str) -> tuple[Repository, check.VerifyReport]:
    """Verify what a restore rebuilt: first the keyless structure check (every pack and index file re-hashed
    against its name, config, keyring, refs and key files present and well formed), then open it and check
    that every version's objects are indexed and in their packs. IntegrityError naming the first damage."""

    def fail(damage: list[check.Damage]) -> IntegrityError:
        return IntegrityError(f"{what} fails verification: " + "; ".join(f"{d.what}: {d.reason}" for d in damage[:5]))

    structure = check.verify_structure(dest)
    if not structure.ok:
        raise fail(structure.damage)
    repo = Repository.open(dest, credentials)
    r = check.verify(repo)
    if not r.ok:
        raise fail(r.damage)
    return repo, r


def restore(s3: S3Backend, credentials: Secret | Credentials, dest: Backend, workers: int = 8) -> RestoreReport:
    """Rebuild a repository in ``dest`` from the bucket alone; every object is the version the newest
    good manifest names, hash-checked; the result is verified (every pack and index file re-hashed against
    its name, and reachability) before return."""
    t0 = time.perf_counter()
    found = find_manifest(s3, accept_with_passphrase(s3, credentials))
    if found is None:
        raise NoBackup(s3.describe(), "no manifest version with a good signature")
    m, vid, skipped, notes = found
    pinned = PinnedBackend(s3, m)

    def fetch(name: str) -> str:
        data = retrying(lambda: pinned.get(name))
        dest.put(name, data)
        return name

    try:
        list(_parallel(fetch, sorted(n for n in m.entries if n != "config"), workers))
        fetch("config")  # last: until it is there, the folder is not a repository
    except StrongroomError as e:
        raise IntegrityError(f"restore incomplete: {e}") from None
    repo, r = open_verified(dest, credentials, "the restored repository")
    return RestoreReport(
        vid,
        m.created_ns,
        repo.config.repo_id,
        len(m.entries),
        m.total_bytes,
        r.versions,
        skipped,
        round(time.perf_counter() - t0, 3),
        notes,
    )
