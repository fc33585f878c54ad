"""The audit log: append events to the catalog, seal them into the repository, sign checkpoints, verify,
prove and rebuild.

One catalog holds one log, named by a random ``log_id`` chosen when the catalog is created; its origin is
``strongroom/<repo_id>/<log_id>``. Events are the leaves of an RFC 6962 tree (``seq`` = leaf index).

Sealing (after each command that appended events, under the catalog's write lock, one transaction):
  1. take the last signed checkpoint of the catalog, check its signature and that its stored compact range
     folds to its root; refuse if the repository holds a larger checkpoint of this log (the catalog was
     rolled back: never sign a checkpoint inconsistent with one already signed);
  2. extend the compact range with the new events' leaf hashes (so the new tree provably extends the old);
  3. seal the events not yet in the repository into ``audit/<log>/segments/<first>-<count>-<rand>`` and the
     signed note into ``audit/<log>/checkpoints/<size>-<rand>``; insert both rows; commit.
A read-only repository leaves the events uncovered until a later command can write.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from strongroom.audit.events import Event, canonical_fields, canonical_text, scrub, utc_ago, utc_now
from strongroom.backends.base import BackendError
from strongroom.catalog.auditdb import AuditStore, open_store
from strongroom.core.checkpoint import Checkpoint
from strongroom.core.ids import ObjectKind
from strongroom.core.merkle import (
    HASH_SIZE,
    CompactRange,
    MerkleTree,
    verify_consistency,
    verify_inclusion,
)
from strongroom.crypto.signing import Ed25519Verifier, sign_checkpoint, verify_checkpoint
from strongroom.errors import (
    AuditLogTampered,
    AuditLogTruncated,
    CatalogError,
    InputError,
    IntegrityError,
    StrongroomError,
)
from strongroom.store.process import ProcessMark, discard
from strongroom.store.repository import Repository

_LEAF = b"\x00"
_NODE = b"\x01"
_OBJ = re.compile(r"^audit/([0-9a-f]{16})/(segments|checkpoints)/(\d{12})(?:-(\d+))?-([0-9a-f]{8})$")


class SegmentGap(IntegrityError):
    """The repository's sealed copy of the log lacks events from ``first`` on."""

    def __init__(self, first: int = 0, message: str = "") -> None:
        super().__init__(message)
        self.first = first


def origin_of(repo_id: str, log_id: str) -> str:
    return f"strongroom/{repo_id}/{log_id}"


EDITED = "the event's columns do not hash to its recorded leaf (edited)"


class ProjectionMismatch(ValueError):
    """A catalog row whose columns no longer hash to its recorded leaf (edited with SQL)."""


def checked_row(row: Sequence[Any]) -> tuple[bytes, bytes]:
    """(canonical bytes, leaf hash) of a ``leaf_rows`` tuple, recomputed from its columns and checked against
    the leaf recorded at append time (a row edited column by column fails here; one whose recorded leaf was
    rewritten as well fails its signed checkpoint instead)."""
    seq, time, actor, os_user, host, action, targets, outcome, details, recorded = row
    try:
        canonical = canonical_fields(seq, time, actor, os_user, host, action, targets, outcome, details)
    except (TypeError, ValueError, AttributeError):
        raise ProjectionMismatch(f"event {seq} has a malformed column") from None
    leaf = hashlib.sha256(_LEAF + canonical).digest()
    if recorded is None or leaf != bytes(recorded):
        raise ProjectionMismatch(f"event {seq}: {EDITED}")
    return canonical, leaf


def event_of_row(row: Any) -> Event:
    return Event(
        seq=row.seq,
        time=row.time,
        actor=row.actor,
        os_user=row.os_user,
        host=row.host,
        action=row.action,
        targets=json.loads(row.targets),
        outcome=row.outcome,
        details=json.loads(row.details),
    )


def _row_values(e: Event, canonical: bytes | None = None) -> dict[str, Any]:
    """The catalog row of an event: its fields as columns and its leaf hash (of ``canonical`` when given: the
    bytes a rebuilt catalog takes from the repository's sealed segment)."""
    targets = canonical_text(e.targets)
    details = canonical_text(e.details)
    if canonical is None:
        canonical = canonical_fields(e.seq, e.time, e.actor, e.os_user, e.host, e.action, targets, e.outcome, details)
    return {
        "seq": e.seq,
        "time": e.time,
        "actor": e.actor,
        "os_user": e.os_user,
        "host": e.host,
        "action": e.action,
        "targets": targets,
        "outcome": e.outcome,
        "details": details,
        "leaf": hashlib.sha256(_LEAF + canonical).digest(),
    }


def _pack_compact(cr: CompactRange) -> bytes:
    return b"".join(cr.hashes)


def _unpack_compact(size: int, blob: bytes) -> CompactRange:
    if len(blob) % HASH_SIZE:
        raise IntegrityError("stored compact range is damaged")
    return CompactRange.from_state(size, [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)])


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    where: str  # "catalog" or the repository object name


@dataclass
class VerifyReport:
    ok: bool
    log_id: str
    origin: str
    events: int
    covered: int
    checkpoints_catalog: int
    checkpoints_repository: int
    first_bad: int | None = None
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    other_logs: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    truncated: bool = False  # it ends before where this client sealed it (catalog and repository alike)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class AuditLog:
    """The log held in one catalog, for one repository."""

    def __init__(self, store: AuditStore, repo_id: str, log_id: str) -> None:
        self.store = store
        self.repo_id = repo_id
        self.log_id = log_id

    @property
    def origin(self) -> str:
        return origin_of(self.repo_id, self.log_id)

    @property
    def prefix(self) -> str:
        return f"audit/{self.log_id}"

    # ------------------------------------------------------------------ open

    @classmethod
    def open(cls, url: str, repo_id: str) -> AuditLog:
        try:
            store = open_store(url)
            with store.writer() as tx:
                meta = store.meta(tx)
                if not meta:
                    meta = {"repo_id": repo_id, "log_id": os.urandom(8).hex()}
                    store.set_meta(tx, meta)
        except StrongroomError:
            raise
        except Exception as e:  # sqlalchemy's and the driver's errors: one line, no traceback
            raise CatalogError(f"cannot open the catalog: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        if meta.get("repo_id") != repo_id:
            raise CatalogError("this catalog belongs to another repository")
        if not re.fullmatch(r"[0-9a-f]{16}", meta.get("log_id", "")):
            raise CatalogError("the catalog's log id is damaged")
        return cls(store, repo_id, meta["log_id"])

    def close(self) -> None:
        """Close the pooled connections (the log stays usable: its next query opens a new one)."""
        self.store.close()

    # ------------------------------------------------------------------ append and read

    def append(self, events: Sequence[Event], settles: str | None = None) -> list[Event]:
        """Append events (their ``seq`` is assigned here) in one write transaction; ``settles`` names the
        pending event (``begin``) that the last of them replaces, deleted in the same transaction."""
        if not events:
            return []
        with self.store.writer() as tx:
            if settles is not None and not self.store.delete_pending(tx, [settles]):
                # another command took this one for ended and recorded it as such: say so beside it
                last = events[-1]
                details = dict(last.details, recorded_as_ended=True)
                events = [
                    *events[:-1],
                    Event(
                        0,
                        last.time,
                        last.actor,
                        last.os_user,
                        last.host,
                        last.action,
                        last.targets,
                        last.outcome,
                        details,
                    ),
                ]
            return self._insert(tx, events)

    def _insert(self, tx: Any, events: Sequence[Event]) -> list[Event]:
        top = self.store.max_seq(tx)
        first = 0 if top is None else top + 1
        done = [e.at(first + i) for i, e in enumerate(events)]
        self.store.insert_events(tx, [_row_values(e) for e in done])
        return done

    def begin(self, pending_id: str, event: Event, mark: ProcessMark) -> int:
        """Record ``event`` as pending (``pending_id``) for a command that starts, run by the process ``mark``
        names, before it changes or reads anything; the command's final event settles it
        (``append(..., settles=pending_id)``). In the same transaction, the pending events of processes that
        have ended without settling theirs (killed, or the host lost power) are appended as failures.
        Returns how many were appended (they still need sealing)."""
        with self.store.writer() as tx:
            ended = [(row.id, *found) for row in self.store.pending(tx) if (found := _ended(row)) is not None]
            if ended:
                self._insert(tx, [was for _, was, _ in ended])
                self.store.delete_pending(tx, [row_id for row_id, _, _ in ended])
            self.store.insert_pending(
                tx,
                {
                    "id": pending_id,
                    "time": event.time,
                    "host": scrub(mark.host),
                    "process": json.dumps(mark.to_json()),
                    "event": json.dumps(event.to_json(), ensure_ascii=False),
                },
            )
        for _, _, gone in ended:
            if gone.hold:
                discard(gone.hold)
        return len(ended)

    def update_pending(self, pending_id: str, event: Event) -> None:
        """Replace a pending event with what the command has learnt since it began (the version it resolved
        and is about to read), so that it is recorded should the command be killed from now on."""
        with self.store.writer() as tx:
            self.store.update_pending(tx, pending_id, json.dumps(event.to_json(), ensure_ascii=False))

    def unsettled(self, older_than_s: float) -> list[str]:
        """The pending events older than ``older_than_s`` whose process this host cannot tell ended (another
        host, another PID namespace), described: their commands run on, or ended where no one looks."""
        cutoff = utc_ago(older_than_s)
        with self.store.reader() as tx:
            rows = [r for r in self.store.pending(tx) if str(r.time) < cutoff]
        out = []
        for r in rows:
            mark = ProcessMark.parse(_json_or_none(r.process))
            try:
                action = str(json.loads(r.event).get("action", "?"))
            except (ValueError, AttributeError):
                action = "?"
            out.append(
                f"the event of {action!r} started {r.time} on {r.host} (PID {mark.pid if mark else '?'}) is still "
                "pending: its command runs, or ended where no command of this catalog looks"
            )
        return out

    def size(self) -> int:
        with self.store.reader() as tx:
            return self.store.count(tx)

    def rows(self, conn: Any, start: int = 0, end: int | None = None) -> Iterator[Any]:
        return self.store.events(conn, start, end)

    def query(
        self,
        actor: str | None = None,
        action: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after_seq: int = -1,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[Event]:
        rows = self.store.query(actor, action, since, until, after_seq, limit, newest)
        out = [event_of_row(r) for r in rows]
        return list(reversed(out)) if newest else out

    def catalog_checkpoints(self, conn: Any) -> list[Any]:
        return self.store.checkpoints(conn)

    # ------------------------------------------------------------------ repository objects

    def _repo_objects(self, repo: Repository, kind: str) -> list[tuple[str, int, int | None]]:
        """(name, first-or-size, count) of this log's objects of ``kind`` in the repository, sorted."""
        out = []
        for name, _ in repo.backend.list(f"{self.prefix}/{kind}"):
            m = _OBJ.match(name)
            if m and m.group(1) == self.log_id and m.group(2) == kind:
                out.append((name, int(m.group(3)), int(m.group(4)) if m.group(4) else None))
        out.sort(key=lambda t: (t[1], t[0]))
        return out

    def repo_checkpoints(self, repo: Repository) -> list[StoredCheckpoint]:
        verifier = repo.log_signer().verifier()
        out = []
        for name, size, _ in self._repo_objects(repo, "checkpoints"):
            note = open_checkpoint_object(repo, repo.backend.get(name))
            cp = verify_checkpoint(note, verifier, origin=self.origin)
            if cp.size != size:
                raise IntegrityError(f"{name} holds a checkpoint of size {cp.size}")
            out.append(StoredCheckpoint(cp.size, cp.root_hash, note, name))
        return out

    def segment_ranges(self, repo: Repository) -> list[tuple[str, int, int]]:
        """(name, first seq, count) of this log's sealed segments, in order and contiguous from 0 (a gap
        raises IntegrityError; a segment written twice, by a retried seal, is left out)."""
        out: list[tuple[str, int, int]] = []
        end = 0
        # Of segments that start at one event (a seal cut off after its segment, then retried with more
        # events), the longest comes first and the others are covered by it.
        objects = sorted(self._repo_objects(repo, "segments"), key=lambda t: (t[1], -(t[2] or 0), t[0]))
        for name, first, count in objects:
            if first < end:
                continue
            if first > end:
                raise SegmentGap(end, f"the repository's segments miss events {end}..{first - 1}")
            if not count:
                raise IntegrityError(f"{name} names no event count")
            out.append((name, first, count))
            end = first + count
        return out

    def segment_lines(self, repo: Repository, name: str, first: int, count: int) -> list[bytes]:
        lines = open_segment_lines(repo, repo.backend.get(name))
        if len(lines) != count:
            raise IntegrityError(f"{name} does not hold events {first}..{first + count - 1}")
        return lines

    def repo_segments(self, repo: Repository) -> Iterator[tuple[int, list[bytes]]]:
        """(first seq, canonical lines) of this log's sealed segments, in order and contiguous from 0."""
        for name, first, count in self.segment_ranges(repo):
            yield first, self.segment_lines(repo, name, first, count)

    def repo_events(self, repo: Repository) -> list[tuple[Event, bytes]]:
        """Every event of this log from the repository's segments, in order, with its sealed canonical bytes."""
        out: list[tuple[Event, bytes]] = []
        for first, lines in self.repo_segments(repo):
            for i, line in enumerate(lines):
                e = _parse_line(line)
                if e.seq != first + i:
                    raise IntegrityError(f"a segment holds event {e.seq} where {first + i} belongs")
                out.append((e, line))
        return out

    def sealed_digests(self, repo: Repository, ranges: list[tuple[str, int, int]]) -> list[bytes]:
        """SHA-256 of each sealed segment's plaintext (run beside the catalog scan: reading, decrypting and
        hashing release the GIL)."""
        sha = hashlib.sha256
        return [sha(open_segment_plain(repo, repo.backend.get(name))).digest() for name, _, _ in ranges]

    def sealed_difference(
        self,
        repo: Repository,
        ranges: list[tuple[str, int, int]],
        sealed: list[bytes],
        digests: list[bytes],
        leaves: list[bytes],
    ) -> tuple[int | None, int]:
        """Compare the repository's sealed segments with the catalog: (the first seq where they differ or
        one of them ends, None when they agree to the end of both; how many events the segments hold).

        ``sealed[i]`` is the SHA-256 of segment ``ranges[i]``'s plaintext and ``digests[i]`` that of what it
        must hold (the catalog's canonical lines), so a matching segment costs nothing more; only a differing
        one is read again, split into lines and compared leaf by leaf."""
        sha = hashlib.sha256
        count = ranges[-1][1] + ranges[-1][2] if ranges else 0
        for i, (name, first, n) in enumerate(ranges):
            if i < len(digests) and sealed[i] == digests[i]:
                continue
            for j, line in enumerate(self.segment_lines(repo, name, first, n)):
                if first + j >= len(leaves) or sha(_LEAF + line).digest() != leaves[first + j]:
                    return first + j, count
        return (None if count == len(leaves) else min(count, len(leaves))), count

    def other_logs(self, repo: Repository) -> dict[str, int]:
        """Other logs of this repository (other catalogs, or an older catalog that was replaced): id → size."""
        sizes: dict[str, int] = {}
        for name, _ in repo.backend.list("audit"):
            m = _OBJ.match(name)
            if m and m.group(2) == "checkpoints" and m.group(1) != self.log_id:
                sizes[m.group(1)] = max(sizes.get(m.group(1), 0), int(m.group(3)))
        return sizes

    # ------------------------------------------------------------------ seal: segments and checkpoint

    def signed_by(self, repo: Repository) -> bool:
        """Whether this log's newest checkpoint was signed by the repository's log key (True when it has
        none): False means the catalog belongs to another repository under the same id."""
        with self.store.reader() as conn:
            last = self.store.last_checkpoint(conn)
        if last is None:
            return True
        try:
            verify_checkpoint(last.note, repo.log_signer().verifier(), origin=self.origin)
        except StrongroomError:
            return False
        return True

    @staticmethod
    def _checked(rows: list[tuple[Any, ...]], first: int) -> list[tuple[bytes, bytes]]:
        """(canonical bytes, leaf) of contiguous rows from ``first``, each checked against its recorded leaf."""
        out = []
        for i, r in enumerate(rows):
            if r[0] != first + i:
                raise AuditLogTampered(first + i, "events are not contiguous")
            try:
                out.append(checked_row(r))
            except ProjectionMismatch as e:
                raise AuditLogTampered(first + i, f"{e}; not signing") from None
        return out

    def sealed_size(self) -> int:
        """How many events the catalog's newest checkpoint covers."""
        with self.store.reader() as conn:
            last = self.store.last_checkpoint(conn)
        return 0 if last is None else int(last.tree_size)

    def seal(self, repo: Repository, floor: int = 0) -> StoredCheckpoint | None:
        """Seal new events into the repository and sign a checkpoint over them (see the module doc).
        ``floor``: how many events this client knows were sealed; a log whose newest checkpoint (in the
        catalog and the repository) covers fewer lost its newest events, and is not signed on."""
        signer = repo.log_signer()
        verifier = signer.verifier()
        repo.follow_current_key()  # a handle opened before a key was retired must not seal under it
        with self.store.writer() as conn:
            last = self.store.last_checkpoint(conn)
            if last is None:
                cr, old_size = CompactRange(), 0
            else:
                cp = verify_checkpoint(last.note, verifier, origin=self.origin)
                cr = _unpack_compact(int(last.tree_size), bytes(last.compact))
                old_size = cr.size
                if cp.size != old_size or cr.root() != cp.root_hash or bytes(last.root_hash) != cp.root_hash:
                    raise AuditLogTampered(old_size, "the catalog's last checkpoint does not match its tree state")
            repo_cps = self._repo_objects(repo, "checkpoints")
            if repo_cps and repo_cps[-1][1] > old_size:
                adopted = self._adopt_cut_off_seal(conn, repo, verifier, repo_cps[-1][0], cr)
                if adopted is None:
                    raise AuditLogTampered(
                        old_size,
                        f"the repository holds a checkpoint of size {repo_cps[-1][1]} but the catalog's last is "
                        f"{old_size} (rolled back?); not signing",
                    )
                cr, old_size = adopted, adopted.size
            if old_size < floor:
                raise AuditLogTruncated(old_size, truncated(old_size, floor) + "; not signing")
            new_rows = list(self.store.leaf_rows(conn, old_size))
            if not new_rows:
                return None
            checked = self._checked(new_rows, old_size)
            for _, leaf in checked:
                cr.append(leaf)
            size, root_hash = cr.size, cr.root()
            # The new tree extends the old one by construction: the compact range that folds to the last
            # signed root is extended, never recomputed from (possibly edited) older rows.
            seg_from = self.store.segments_end(conn)
            checkpoint = Checkpoint(self.origin, size, root_hash, (f"time {utc_now()}",))
            note = sign_checkpoint(checkpoint, signer)
            verify_checkpoint(note, verifier, origin=self.origin)
            to_seal = [c for c, _ in checked[max(seg_from - old_size, 0) :]]
            if seg_from < old_size:  # segments behind the checkpoints (an earlier read-only repository)
                older = self._checked(list(self.store.leaf_rows(conn, seg_from, old_size)), seg_from)
                to_seal = [c for c, _ in older] + to_seal
            tag = os.urandom(4).hex()
            seg_name = f"{self.prefix}/segments/{seg_from:012d}-{len(to_seal)}-{tag}"
            cp_name = f"{self.prefix}/checkpoints/{size:012d}-{tag}"
            try:
                if to_seal:
                    repo.backend.put(seg_name, seal_segment(repo, to_seal))
                repo.backend.put(cp_name, seal_checkpoint_object(repo, note))
            except (BackendError, OSError):
                return None  # a read-only repository: nothing inserted; the events wait for a writable command
            if to_seal:
                self.store.insert_segments(conn, [{"first": seg_from, "count": len(to_seal), "object_name": seg_name}])
            self.store.insert_checkpoints(
                conn,
                [
                    {
                        "tree_size": size,
                        "root_hash": root_hash,
                        "note": note,
                        "compact": _pack_compact(cr),
                        "object_name": cp_name,
                        "time": utc_now(),
                    }
                ],
            )
            return StoredCheckpoint(size, root_hash, note, cp_name)

    def _adopt_cut_off_seal(
        self, conn: Any, repo: Repository, verifier: Any, cp_name: str, cr: CompactRange
    ) -> CompactRange | None:
        """A seal killed after it stored its checkpoint in the repository, before the catalog committed the
        rows that record it, leaves the repository one checkpoint ahead. That checkpoint is taken when the
        catalog holds every event it covers and they fold, from the catalog's own last signed state, to the
        root the repository's log key signed. Otherwise (events missing or different: a catalog put back
        to an older copy) it is not, and the caller reports the rollback."""
        note = open_checkpoint_object(repo, repo.backend.get(cp_name))
        cp = verify_checkpoint(note, verifier, origin=self.origin)
        rows = list(self.store.leaf_rows(conn, cr.size, cp.size))
        if len(rows) != cp.size - cr.size:
            return None
        grown = _unpack_compact(cr.size, _pack_compact(cr))
        for _, leaf in self._checked(rows, cr.size):
            grown.append(leaf)
        if grown.root() != cp.root_hash:
            return None
        tag = cp_name.rsplit("-", 1)[1]
        seg_from = self.store.segments_end(conn)
        for seg_name, first, count in self._repo_objects(repo, "segments"):
            if first == seg_from and count and seg_name.endswith(f"-{tag}"):  # the same seal's segment
                self.store.insert_segments(conn, [{"first": first, "count": count, "object_name": seg_name}])
        self.store.insert_checkpoints(
            conn,
            [
                {
                    "tree_size": cp.size,
                    "root_hash": cp.root_hash,
                    "note": note,
                    "compact": _pack_compact(grown),
                    "object_name": cp_name,
                    "time": utc_now(),
                }
            ],
        )
        return grown

    # ------------------------------------------------------------------ verify

    def _catalog_leaves(
        self, conn: Any, end: int | None = None, segment_ends: Sequence[int] = ()
    ) -> tuple[list[bytes], int | None, str, list[bytes]]:
        """The leaf hashes of the catalog's events from seq 0, each recomputed from the row's columns and
        checked against the leaf recorded at append time; stops at the first missing, reordered, malformed or
        edited row. Returns (leaves, first bad seq or None, reason, digests), ``digests[i]`` being the SHA-256
        of the canonical lines from ``segment_ends[i - 1]`` (or 0) to ``segment_ends[i]``: what the
        repository's sealed segment of that range must hold."""
        leaves: list[bytes] = []
        digests: list[bytes] = []
        append = leaves.append
        sha = hashlib.sha256
        fields = canonical_fields
        ends = list(segment_ends)
        si = 0
        seg_end = ends[0] if ends else -1
        seg: list[bytes] = []
        keep = seg.append
        for n, (seq, time, actor, os_user, host, action, targets, outcome, details, recorded) in enumerate(
            self.store.leaf_rows(conn, 0, end)
        ):
            if seq != n:
                return leaves, n, (f"event {n} is missing" if seq > n else "duplicate or reordered seq"), digests
            try:
                canonical = fields(seq, time, actor, os_user, host, action, targets, outcome, details)
            except (TypeError, ValueError, AttributeError):
                return leaves, n, "event row is malformed", digests
            leaf = sha(_LEAF + canonical).digest()
            if leaf != recorded:
                return leaves, n, EDITED, digests
            append(leaf)
            if seg_end > 0:
                keep(canonical)
                if n + 1 == seg_end:
                    seg.append(b"")
                    digests.append(sha(b"\n".join(seg)).digest())
                    seg.clear()
                    si += 1
                    seg_end = ends[si] if si < len(ends) else -1
        return leaves, None, "", digests

    def _lost_objects(
        self,
        repo: Repository,
        cat_cps: list[Any],
        cat_segments: list[tuple[int, str]],
    ) -> list[tuple[int, str]]:
        """The sealed objects the catalog recorded writing that the repository no longer holds (nothing deletes
        them: `key reencrypt` reseals them under the same names). Each loss is reported at the first event it
        leaves without its sealed copy or checkpoint."""
        present = {name for kind in ("segments", "checkpoints") for name, _, _ in self._repo_objects(repo, kind)}
        lost = [(first, f"the repository lost the sealed segment {name}") for first, name in cat_segments]
        sizes = sorted(int(row.tree_size) for row in cat_cps)
        for row in cat_cps:
            if row.object_name:
                prev = max((s for s in sizes if s < int(row.tree_size)), default=0)
                lost.append((prev, f"the repository lost the signed checkpoint {row.object_name}"))
        return [(seq, why) for seq, why in lost if why.rsplit(" ", 1)[1] not in present]

    def verify(self, repo: Repository | None) -> VerifyReport:
        """Recompute the tree from the catalog's events; check every checkpoint (catalog and repository)."""
        verifier = repo.log_signer().verifier() if repo is not None else None
        warnings: list[str] = []
        ranges: list[tuple[str, int, int]] | None = None
        # The repository's sealed copy is what `audit rebuild` restores from: damage to it fails the check.
        copy_problems: list[tuple[int, str]] = []
        if repo is not None:
            try:
                ranges = self.segment_ranges(repo)
            except SegmentGap as e:
                copy_problems.append((e.first, f"the repository's sealed copy is damaged: {e}"))
            except StrongroomError as e:
                copy_problems.append((0, f"the repository's sealed copy is damaged: {e}"))
        with ThreadPoolExecutor(1) as pool:  # the repository's objects are read while the catalog is scanned
            repo_cps_job = pool.submit(self.repo_checkpoints, repo) if repo is not None else None
            sealed_job = pool.submit(self.sealed_digests, repo, ranges) if repo is not None and ranges else None
            with self.store.reader() as conn:
                cat_cps = self.catalog_checkpoints(conn)
                cat_segments = self.store.segment_names(conn)
                leaves, first_bad, reason, digests = self._catalog_leaves(
                    conn, segment_ends=[first + n for _, first, n in ranges or ()]
                )
            repo_cps_error = sealed_error = None
            repo_cps: list[StoredCheckpoint] = []
            sealed: list[bytes] = []
            try:
                repo_cps = repo_cps_job.result() if repo_cps_job is not None else []
            except StrongroomError as e:
                repo_cps_error = e
            try:
                sealed = sealed_job.result() if sealed_job is not None else []
            except StrongroomError as e:
                sealed_error = e
        report = VerifyReport(True, self.log_id, self.origin, len(leaves), 0, len(cat_cps), 0, warnings=warnings)
        checkpoints: list[StoredCheckpoint] = []
        problems: list[tuple[int, str]] = list(copy_problems)
        if first_bad is not None:
            problems.append((first_bad, reason))
        for row in cat_cps:
            try:
                if verifier is None:
                    cp = Checkpoint.from_text(row.note.split("\n\n", 1)[0] + "\n")
                    report.warnings.append("checkpoint signatures not checked: no repository key")
                else:
                    cp = verify_checkpoint(row.note, verifier, origin=self.origin)
                if cp.size != row.tree_size or cp.root_hash != bytes(row.root_hash):
                    raise IntegrityError("row does not match its note")
                cr = _unpack_compact(int(row.tree_size), bytes(row.compact))
                if cr.root() != cp.root_hash:
                    raise IntegrityError("stored tree state does not match the checkpoint")
                checkpoints.append(StoredCheckpoint(cp.size, cp.root_hash, row.note, "catalog"))
            except StrongroomError as e:
                problems.append((0, f"catalog checkpoint {row.tree_size} is bad: {e}"))
        if repo is not None:
            if repo_cps_error is not None:
                problems.append((0, f"a repository checkpoint is bad: {repo_cps_error}"))
            report.checkpoints_repository = len(repo_cps)
            checkpoints.extend(repo_cps)
            report.other_logs = self.other_logs(repo)
        checkpoints.sort(key=lambda c: c.size)
        # Mutual consistency: two checkpoints of one size must agree; all must match the recomputed tree.
        by_size: dict[int, bytes] = {}
        for c in checkpoints:
            if by_size.setdefault(c.size, c.root) != c.root:
                problems.append((0, f"two different signed roots for tree size {c.size} (split view)"))
        upto = first_bad if first_bad is not None else len(leaves)
        wanted = [n for n in sorted(by_size) if n > 0]
        roots = roots_at(leaves, upto, wanted)
        wi = len(roots)
        mismatch: int | None = None
        for size, root_hash in zip(wanted, roots, strict=False):
            if root_hash != by_size[size]:
                mismatch = size
                break
            report.covered = size
        # The first seq where the repository's sealed copy and the catalog differ (or one of them ends).
        diff: int | None = None
        sealed_count = 0
        if repo is not None and ranges is not None:
            try:
                if sealed_error is not None:
                    raise sealed_error
                diff, sealed_count = self.sealed_difference(repo, ranges, sealed, digests, leaves)
            except StrongroomError as e:
                problems.append((0, f"the repository's sealed copy is damaged: {e}"))
        if mismatch is not None:
            at = diff if diff is not None and diff < mismatch else report.covered
            problems.append((at, f"the events do not match the signed checkpoint of size {mismatch}"))
        if wi < len(wanted):
            problems.append(
                (
                    upto,
                    f"a checkpoint of size {wanted[-1]} is signed but the catalog holds {len(leaves)} "
                    "verifiable event(s): truncated or rolled back",
                )
            )
        if diff is not None and mismatch is None and diff < report.covered:
            # the covered prefix must also be exactly what the repository's sealed segments hold: every event
            # of it, so a segment deleted at the end (or all of them) fails too
            problems.append(
                (diff, "the event differs from the repository's sealed copy" if diff < sealed_count else
                 "the repository's sealed copy ends before the signed checkpoints")
            )  # fmt: skip
        if repo is not None:
            problems += self._lost_objects(repo, cat_cps, cat_segments)
        if problems:
            seq, why = min(problems, key=lambda p: p[0])
            report.ok, report.first_bad, report.reason = False, seq, why
        elif report.covered < len(leaves):
            report.warnings.append(
                f"{len(leaves) - report.covered} event(s) ({report.covered}..{len(leaves) - 1}) not yet covered "
                "by a checkpoint (a read-only repository, or a command still running)"
            )
        return report

    # ------------------------------------------------------------------ proofs

    def _tree_and_checkpoint(self, repo: Repository, size: int | None = None) -> tuple[MerkleTree, Any]:
        verifier = repo.log_signer().verifier()
        with self.store.reader() as conn:
            row = self.store.last_checkpoint(conn, size)
            if row is None:
                raise InputError("no checkpoint" + (f" of tree size {size}" if size is not None else " yet"))
            cp = verify_checkpoint(row.note, verifier, origin=self.origin)
            recorded = self.store.recorded_leaves(conn, cp.size)
        # The tree comes from the leaves recorded at append time: its root must equal the signed one, so they
        # are the signed leaves; an event served from the columns is hashed again and checked against its path
        # (prove), so an edited column cannot slip into a proof.
        dense = len(recorded) == cp.size and all(seq == i for i, (seq, _) in enumerate(recorded))
        tree = MerkleTree(leaf for _, leaf in recorded) if dense else None
        if tree is None or tree.root() != cp.root_hash:
            raise AuditLogTampered(
                min(len(recorded), cp.size), "the catalog does not match its checkpoint; run `audit verify`"
            )
        return tree, row

    def prove(self, repo: Repository, seq: int) -> dict[str, Any]:
        tree, row = self._tree_and_checkpoint(repo)
        if not 0 <= seq < tree.size:
            raise InputError(f"event {seq} is not covered by the latest checkpoint (tree size {tree.size})")
        with self.store.reader() as conn:
            event = event_of_row(next(iter(self.rows(conn, seq, seq + 1))))
        path = tree.inclusion_proof(seq)
        verify_inclusion(seq, tree.size, event.leaf_hash(), path, tree.root())
        return {
            "leaf_index": seq,
            "tree_size": tree.size,
            "leaf_hash": event.leaf_hash().hex(),
            "event": event.to_json(),
            "audit_path": [h.hex() for h in path],
            "root_hash": tree.root().hex(),
            "checkpoint": row.note,
        }

    def consistency(self, repo: Repository, old_size: int, new_size: int) -> dict[str, Any]:
        if not 0 <= old_size <= new_size:
            raise InputError("consistency needs 0 <= OLD_SIZE <= NEW_SIZE")
        tree, row = self._tree_and_checkpoint(repo, new_size)
        with self.store.reader() as conn:
            old_row = self.store.last_checkpoint(conn, old_size) if old_size else None
        proof = tree.consistency_proof(old_size)
        verify_consistency(old_size, new_size, tree.root_at(old_size), tree.root(), proof)
        return {
            "old_size": old_size,
            "new_size": new_size,
            "old_root": tree.root_at(old_size).hex(),
            "new_root": tree.root().hex(),
            "consistency_path": [h.hex() for h in proof],
            "old_checkpoint": old_row.note if old_row is not None else None,
            "checkpoint": row.note,
        }

    # ------------------------------------------------------------------ rebuild

    def rebuild(self, repo: Repository, log_id: str | None = None) -> tuple[int, int]:
        """Recreate this catalog's log from the repository's segments and checkpoints; (events, checkpoints)."""
        if log_id is not None:
            self.log_id = log_id
        sealed = self.repo_events(repo)
        cps = self.repo_checkpoints(repo)
        sha = hashlib.sha256
        leaves = [sha(_LEAF + line).digest() for _, line in sealed]
        cr = CompactRange()
        rows: list[dict[str, Any]] = []
        ci = 0
        for i in range(len(leaves) + 1):
            while ci < len(cps) and cps[ci].size == i:
                if cr.root() != cps[ci].root:
                    raise AuditLogTampered(i, f"the repository's segments do not match its checkpoint of size {i}")
                if not rows or rows[-1]["tree_size"] != i:
                    rows.append(
                        {
                            "tree_size": i,
                            "root_hash": cps[ci].root,
                            "note": cps[ci].note,
                            "compact": _pack_compact(cr),
                            "object_name": cps[ci].where,
                            "time": utc_now(),
                        }
                    )
                ci += 1
            if i < len(leaves):
                cr.append(leaves[i])
        if ci < len(cps):
            raise AuditLogTampered(len(leaves), "the repository holds checkpoints beyond its segments")
        covered = int(rows[-1]["tree_size"]) if rows else 0
        sealed = sealed[:covered]  # what no checkpoint covers cannot be trusted into a fresh catalog
        by_first: dict[int, dict[str, Any]] = {}
        for name, first, count in self._repo_objects(repo, "segments"):
            if count and first + count <= covered:
                by_first.setdefault(first, {"first": first, "count": count, "object_name": name})
        seg_rows = list(by_first.values())
        with self.store.writer() as conn:
            self.store.clear(conn)
            self.store.set_meta(conn, {"repo_id": self.repo_id, "log_id": self.log_id})
            self.store.insert_events(conn, [_row_values(e, line) for e, line in sealed])
            self.store.insert_checkpoints(conn, rows)
            self.store.insert_segments(conn, seg_rows)
        return len(sealed), len(rows)

    def repository_logs(self, repo: Repository) -> dict[str, int]:
        logs = self.other_logs(repo)
        own = self._repo_objects(repo, "checkpoints")
        if own:
            logs[self.log_id] = own[-1][1]
        return logs


def truncated(size: int, floor: int) -> str:
    return (
        f"this client sealed {floor} events into this log, but its newest checkpoint, in the catalog and the "
        f"repository, covers {size}: its newest events were removed"
    )


def _json_or_none(text: Any) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def _ended(row: Any) -> tuple[Event, ProcessMark] | None:
    """For a pending row whose process has ended, the event to append and that process (None while it may
    run, or when that cannot be told); a row whose event does not parse is appended as what is left of it,
    never dropped."""
    mark = ProcessMark.parse(_json_or_none(row.process))
    if mark is None or not mark.gone():
        return None
    try:
        was = Event.from_json(json.loads(row.event))
    except (ValueError, InputError):
        was = Event(0, str(row.time), "?", "?", str(row.host), "unknown", {}, "ok", {"pending": str(row.event)[:500]})
    details = dict(was.details)
    details["started"] = str(row.time)
    if "finished" in details:  # it ended, but could not record its event then (Session._record)
        message = f"the command finished ({details['finished']}), but its event could not be recorded then"
    else:
        message = "the process ended before the command did (it was killed, or the host lost power)"
    details["error"] = {"class": "Interrupted", "message": message}
    # scrubbed again: a row written by another version, or edited, must not keep every later command from starting
    event = Event(
        0, utc_now(), was.actor, was.os_user, was.host, was.action, scrub(was.targets), "failed", scrub(details)
    )
    return event, mark


def roots_at(leaves: Sequence[bytes], upto: int, sizes: Sequence[int]) -> list[bytes]:
    """The RFC 6962 root of ``leaves[:n]`` for each n of the ascending ``sizes`` that is <= ``upto``.

    Builds the complete levels of the tree over the largest such n, pair by pair (one list comprehension per
    level: 10^6 leaves take about half a second), then takes each root as the right fold of the perfect
    subtrees covering [0, n): the largest power of two first, each one a node of those levels (RFC 9162
    §2.1.1; the same decomposition as ``CompactRange``)."""
    targets = [n for n in sizes if 0 < n <= upto]
    if not targets:
        return []
    sha = hashlib.sha256
    node = _NODE
    levels: list[Sequence[bytes]] = [leaves]
    cur: Sequence[bytes] = leaves
    n = targets[-1]
    while n >= 2:
        cur = [sha(node + a + b).digest() for a, b in zip(cur[0 : n - 1 : 2], cur[1:n:2], strict=True)]
        levels.append(cur)
        n = len(cur)
    out = []
    for m in targets:
        parts = []
        start = 0
        for k in range(m.bit_length() - 1, -1, -1):
            if m >> k & 1:
                parts.append(levels[k][start >> k])
                start += 1 << k
        root = parts[-1]
        for left in reversed(parts[:-1]):
            root = sha(node + left + root).digest()
        out.append(root)
    return out


# ---------------------------------------------------------------------- sealed objects


def seal_segment(repo: Repository, canonicals: Iterable[bytes]) -> bytes:
    """A sealed segment: the events' canonical JSON, one per line (canonical JSON holds no raw newline)."""
    body = b"".join(c + b"\n" for c in canonicals)
    return repo.sealer.seal(body, ObjectKind.AUDIT_SEGMENT, repo.context)


def open_segment_plain(repo: Repository, data: bytes) -> bytes:
    return repo.sealer.open(data, ObjectKind.AUDIT_SEGMENT, repo.context)


def _split_lines(plain: bytes) -> list[bytes]:
    if plain and not plain.endswith(b"\n"):
        raise IntegrityError("an audit segment is damaged")
    return plain.split(b"\n")[:-1] if plain else []


def open_segment_lines(repo: Repository, data: bytes) -> list[bytes]:
    return _split_lines(open_segment_plain(repo, data))


def _parse_line(line: bytes) -> Event:
    try:
        return Event.from_json(json.loads(line))
    except (ValueError, TypeError, StrongroomError):
        raise IntegrityError("an audit segment is damaged") from None


def open_segment(repo: Repository, data: bytes) -> list[Event]:
    return [_parse_line(line) for line in open_segment_lines(repo, data)]


def seal_checkpoint_object(repo: Repository, note: str) -> bytes:
    return repo.sealer.seal(note.encode("utf-8"), ObjectKind.AUDIT_CHECKPOINT, repo.context)


def open_checkpoint_object(repo: Repository, data: bytes) -> str:
    try:
        return repo.sealer.open(data, ObjectKind.AUDIT_CHECKPOINT, repo.context).decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError("an audit checkpoint object is damaged") from None


# ---------------------------------------------------------------------- offline proof checking


def _hex(value: Any, what: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value))
    except ValueError:
        raise InputError(f"{what} is not hex") from None
    return raw


def check_proof(doc: dict[str, Any], verifier: Ed25519Verifier, origin: str | None = None) -> str:
    """Verify a document printed by ``audit prove`` or ``audit consistency``; return what it proves."""
    try:
        note = str(doc["checkpoint"])
        parsed = Checkpoint.from_text(note.split("\n\n", 1)[0] + "\n")
        cp = verify_checkpoint(note, verifier, origin=origin or parsed.origin)
        if "leaf_index" in doc:
            event = Event.from_json(doc["event"])
            leaf = event.leaf_hash()
            if leaf != _hex(doc["leaf_hash"], "leaf_hash"):
                raise IntegrityError("the event does not hash to leaf_hash")
            index, size = int(doc["leaf_index"]), int(doc["tree_size"])
            if event.seq != index:
                raise IntegrityError("the event's seq is not the leaf index")
            if size != cp.size or _hex(doc["root_hash"], "root_hash") != cp.root_hash:
                raise IntegrityError("tree_size or root_hash differ from the signed checkpoint")
            verify_inclusion(index, size, leaf, [_hex(h, "audit_path") for h in doc["audit_path"]], cp.root_hash)
            return f"event {index} is in the log {cp.origin} of size {size}"
        old_size, new_size = int(doc["old_size"]), int(doc["new_size"])
        if new_size != cp.size or _hex(doc["new_root"], "new_root") != cp.root_hash:
            raise IntegrityError("new_size or new_root differ from the signed checkpoint")
        old_root = _hex(doc["old_root"], "old_root")
        if doc.get("old_checkpoint"):
            old = verify_checkpoint(str(doc["old_checkpoint"]), verifier, origin=cp.origin)
            if old.size != old_size or old.root_hash != old_root:
                raise IntegrityError("old_size or old_root differ from the old signed checkpoint")
        proof = [_hex(h, "proof") for h in doc["consistency_path"]]
        verify_consistency(old_size, new_size, old_root, cp.root_hash, proof)
        return f"the log {cp.origin} of size {old_size} is a prefix of size {new_size}"
    except (KeyError, TypeError, ValueError):
        raise InputError("not a proof document of `audit prove` or `audit consistency`") from None
