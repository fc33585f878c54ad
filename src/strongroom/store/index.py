"""The index: object id → (pack, offset, length, kind), kept in memory and in encrypted index files.

Index file (``sr-index/2``): the names of its packs in plaintext, then a sealed frame (kind INDEX) around a
zstd-compressed list of those packs, each with its entries (store.listing; ``sr-index/1`` files of earlier
builds are the bare frame). Its name is the BLAKE3 of its bytes. Every commit writes one index file for the
packs it added; gc and `repair index` replace them all with one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import zstandard

from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import Sealer
from strongroom.crypto.idhash import content_name
from strongroom.errors import IntegrityError
from strongroom.store import listing
from strongroom.store.pack import PackEntry

_PACK = struct.Struct("<32sI")
_ENTRY = struct.Struct("<B32sQII")
FORMAT = b"sr-index/1"  # the sealed payload's record (unchanged in sr-index/2)
MAGIC = b"sr-index/2\n"


@dataclass(frozen=True, slots=True)
class Location:
    pack_id: str
    offset: int
    length: int
    kind: int
    raw_length: int


class Index:
    """Objects by id. An id names content, not its kind: a file chunk whose bytes equal a tree's encoding has
    the tree's id. Both are stored (the pack entry and the associated data carry the kind), so the first
    location of an id is in ``locations`` and any other kind's in ``other_kinds``; look up with the kind."""

    def __init__(self) -> None:
        self.locations: dict[bytes, Location] = {}
        self.other_kinds: dict[tuple[int, bytes], Location] = {}
        self.packs: dict[str, list[PackEntry]] = {}
        self.files: set[str] = set()
        self.bad_files: list[str] = []

    def replace_with(self, other: Index) -> None:
        self.locations, self.other_kinds, self.packs = other.locations, other.other_kinds, other.packs
        self.files, self.bad_files = other.files, other.bad_files

    def __contains__(self, object_id: bytes) -> bool:
        return object_id in self.locations

    def __len__(self) -> int:
        return len(self.locations)

    def get(self, object_id: bytes, kind: int | None = None) -> Location | None:
        """Where the object of this id and kind is (of any kind when ``kind`` is None)."""
        loc = self.locations.get(object_id)
        if kind is None or loc is None or loc.kind == kind:
            return loc
        return self.other_kinds.get((kind, object_id))

    def every_kind(self, object_id: bytes) -> list[Location]:
        """Every location of this id, whatever its kind (for a set of live ids that carries no kinds)."""
        loc = self.locations.get(object_id)
        if loc is None:
            return []
        if not self.other_kinds:
            return [loc]
        return [loc, *(o for k in ObjectKind if (o := self.other_kinds.get((k, object_id))) is not None)]

    def elsewhere(self, object_id: bytes, kind: int, not_in: set[str]) -> Location | None:
        """A copy of the object in a pack outside ``not_in`` (a slow scan, for when its pack turned out to be
        gone: an older index file put back can name a pack that gc has since replaced, and it may have been
        loaded first). The first such copy in pack order, as ``copies_elsewhere`` finds it."""
        for pid, entries in self.packs.items():
            if pid in not_in:
                continue
            for e in entries:
                if e.object_id == object_id and e.kind == kind:
                    return Location(pid, e.offset, e.length, e.kind, e.raw_length)
        return None

    def copies_elsewhere(self, gone: set[str]) -> dict[tuple[int, bytes], Location]:
        """``elsewhere`` for every object located in a pack of ``gone`` at once, by (kind, id): where reads of
        them turn (verify checks those copies). One pass over the entries."""
        out: dict[tuple[int, bytes], Location] = {}
        for pid, entries in self.packs.items():
            if pid in gone:
                continue
            for e in entries:
                key = (e.kind, e.object_id)
                if key in out:
                    continue
                loc = self.get(e.object_id, e.kind)
                if loc is not None and loc.pack_id in gone:
                    out[key] = Location(pid, e.offset, e.length, e.kind, e.raw_length)
        return out

    def has(self, object_id: bytes, kind: int) -> bool:
        return self.get(object_id, kind) is not None

    def chunk_ids(self) -> set[bytes]:
        """The ids stored as chunks: what a new chunk is deduplicated against."""
        ids = set(self.locations)
        ids.difference_update(oid for oid, loc in self.locations.items() if loc.kind != ObjectKind.CHUNK)
        ids.update(oid for kind, oid in self.other_kinds if kind == ObjectKind.CHUNK)
        return ids

    def add_pack(self, pack_id: str, entries: Iterable[PackEntry]) -> None:
        entries = list(entries)
        self.packs[pack_id] = entries
        for e in entries:
            loc = Location(pack_id, e.offset, e.length, e.kind, e.raw_length)
            have = self.locations.setdefault(e.object_id, loc)
            if have.kind != e.kind:
                self.other_kinds.setdefault((e.kind, e.object_id), loc)

    def encode(self, sealer: Sealer, repo_ctx: bytes, pack_ids: Sequence[str]) -> tuple[str, bytes]:
        parts = [FORMAT]
        for pid in pack_ids:
            entries = self.packs[pid]
            parts.append(_PACK.pack(bytes.fromhex(pid), len(entries)))
            parts.extend(_ENTRY.pack(e.kind, e.object_id, e.offset, e.length, e.raw_length) for e in entries)
        plain = zstandard.ZstdCompressor(level=3).compress(b"".join(parts))
        data = listing.wrap(MAGIC, pack_ids, lambda binding: sealer.seal(plain, ObjectKind.INDEX, repo_ctx + binding))
        return content_name(data), data

    def load_file(self, name: str, data: bytes, sealer: Sealer, repo_ctx: bytes) -> None:
        if content_name(data) != name.rsplit("/", 1)[-1]:
            raise IntegrityError(f"index file {name} does not match its name")
        packs = _parsed.get((repo_ctx, name)) if _parsed is not None else None
        if packs is None:
            packs = _parse_file(name, data, sealer, repo_ctx)
            if _parsed is not None:
                _parsed[(repo_ctx, name)] = packs
        for pid, entries in packs:
            self.add_pack(pid, entries)
        self.files.add(name)


# Parsed index files by (repository context, name), kept by a long-lived process (keep_parsed_files). Safe to
# reuse: a file's name is the hash of its bytes, checked on every load before the cache is consulted.
_parsed: dict[tuple[bytes, str], list[tuple[str, list[PackEntry]]]] | None = None


def keep_parsed_files() -> None:
    global _parsed
    if _parsed is None:
        _parsed = {}


def forget_parsed_files(repo_ctx: bytes, keep: set[str]) -> None:
    """Drop the parsed files of this repository that are no longer listed (gc and repair replace them)."""
    if _parsed is not None:
        for key in [k for k in list(_parsed) if k[0] == repo_ctx and k[1] not in keep]:  # a copy: watch threads
            _parsed.pop(key, None)


def _parse_file(name: str, data: bytes, sealer: Sealer, repo_ctx: bytes) -> list[tuple[str, list[PackEntry]]]:
    listed = listing.unwrap(data, MAGIC, f"index file {name}")
    if listed is None:
        plain = sealer.open(data, ObjectKind.INDEX, repo_ctx)
    else:
        plain = sealer.open(listed.frame, ObjectKind.INDEX, repo_ctx + listed.binding)
    try:
        raw = zstandard.ZstdDecompressor().decompress(plain, max_output_size=1 << 31)
    except zstandard.ZstdError:
        raise IntegrityError(f"index file {name} is malformed") from None
    if not raw.startswith(FORMAT):
        raise IntegrityError(f"index file {name} is malformed")
    off = len(FORMAT)
    packs: list[tuple[str, list[PackEntry]]] = []
    try:
        while off < len(raw):
            pid, count = _PACK.unpack_from(raw, off)
            off += _PACK.size
            entries = []
            for _ in range(count):
                entries.append(PackEntry(*_ENTRY.unpack_from(raw, off)))
                off += _ENTRY.size
            packs.append((pid.hex(), entries))
    except struct.error:
        raise IntegrityError(f"index file {name} is malformed") from None
    if listed is not None and tuple(pid for pid, _ in packs) != listed.names:
        raise IntegrityError(f"index file {name} lists other packs than it indexes")
    return packs


def listed_packs(data: bytes) -> tuple[str, ...] | None:
    """The packs an index file names, read without the key (None: an sr-index/1 file lists none in the
    clear). IntegrityError for a file that is neither."""
    listed = listing.unwrap(data, MAGIC, "index file")
    return None if listed is None else listed.names
