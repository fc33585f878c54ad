"""Index files: encode → load_file round trip; a file that does not match its name, was damaged, or belongs
to another repository is refused with IntegrityError."""

from __future__ import annotations

import os

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import Sealer
from strongroom.crypto.idhash import content_name
from strongroom.crypto.secret import Secret
from strongroom.errors import IntegrityError
from strongroom.store import index as index_module
from strongroom.store.index import FORMAT, Index, Location
from strongroom.store.pack import PackEntry
from tests.unit.conftest import MakeSealer

entry_st = st.builds(PackEntry, kind=st.sampled_from(list(ObjectKind)), object_id=st.binary(min_size=32, max_size=32),
                     offset=st.integers(0, 2**64 - 1), length=st.integers(0, 2**32 - 1),
                     raw_length=st.integers(0, 2**32 - 1))
packs_st = st.dictionaries(st.binary(min_size=32, max_size=32).map(bytes.hex), st.lists(entry_st, max_size=6),
                           max_size=5)


def index_with(packs: dict[str, list[PackEntry]]) -> Index:
    idx = Index()
    for pid, entries in packs.items():
        idx.add_pack(pid, entries)
    return idx


@settings(max_examples=40, deadline=None)
@given(packs=packs_st)
def test_round_trip(packs: dict[str, list[PackEntry]]) -> None:
    sealer, ctx = Sealer({1: Secret(b"\3" * 32)}, 1), b"\5" * 32
    src = index_with(packs)
    name, data = src.encode(sealer, ctx, list(packs))
    assert name == content_name(data)
    dst = Index()
    dst.load_file(f"index/{name}", data, sealer, ctx)
    assert dst.packs == src.packs
    assert dst.locations == src.locations
    assert dst.files == {f"index/{name}"}


def test_encode_only_the_named_packs(sealer: Sealer, ctx: bytes) -> None:
    e1 = PackEntry(ObjectKind.CHUNK, b"\1" * 32, 0, 10, 8)
    e2 = PackEntry(ObjectKind.TREE, b"\2" * 32, 10, 20, 30)
    src = index_with({"aa" * 32: [e1], "bb" * 32: [e2]})
    name, data = src.encode(sealer, ctx, ["bb" * 32])
    dst = Index()
    dst.load_file(name, data, sealer, ctx)
    assert list(dst.packs) == ["bb" * 32]
    assert dst.get(b"\2" * 32) == Location("bb" * 32, 10, 20, ObjectKind.TREE, 30)
    assert b"\1" * 32 not in dst and len(dst) == 1


def test_first_location_of_a_duplicate_wins() -> None:
    oid = b"\x09" * 32
    idx = index_with({"aa" * 32: [PackEntry(1, oid, 0, 5, 5)], "bb" * 32: [PackEntry(1, oid, 7, 5, 5)]})
    assert idx.get(oid) == Location("aa" * 32, 0, 5, 1, 5)
    assert len(idx.packs) == 2


def _encoded(sealer: Sealer, ctx: bytes) -> tuple[str, bytes]:
    idx = index_with({os.urandom(32).hex(): [PackEntry(ObjectKind.CHUNK, os.urandom(32), 0, 100, 90)]})
    return idx.encode(sealer, ctx, list(idx.packs))


def test_name_mismatch_is_detected(sealer: Sealer, ctx: bytes) -> None:
    _, data = _encoded(sealer, ctx)
    other, _ = _encoded(sealer, ctx)
    with pytest.raises(IntegrityError, match="does not match its name"):
        Index().load_file(f"index/{other}", data, sealer, ctx)


def test_damaged_file_is_detected(sealer: Sealer, ctx: bytes) -> None:
    name, data = _encoded(sealer, ctx)
    for pos in range(0, len(data), 3):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        # under its old name: the name no longer matches
        with pytest.raises(IntegrityError):
            Index().load_file(name, bytes(bad), sealer, ctx)
        # renamed to match (an attacker can do that): authentication still fails
        with pytest.raises(IntegrityError):
            Index().load_file(content_name(bytes(bad)), bytes(bad), sealer, ctx)


def test_index_of_another_repository_or_key_is_refused(make_sealer: MakeSealer, ctx: bytes) -> None:
    s = make_sealer()
    name, data = _encoded(s, ctx)
    with pytest.raises(IntegrityError):
        Index().load_file(name, data, s, os.urandom(32))
    with pytest.raises(IntegrityError):
        Index().load_file(name, data, make_sealer(), ctx)


def _sealed_index(sealer: Sealer, ctx: bytes, plain: bytes) -> tuple[str, bytes]:
    data = sealer.seal(plain, ObjectKind.INDEX, ctx)
    return content_name(data), data


@pytest.mark.parametrize("plain", [
    b"not zstd at all",
    zstandard.ZstdCompressor().compress(b"sr-index/2"),
    zstandard.ZstdCompressor().compress(FORMAT + b"\1" * 35),  # a pack record cut short
    zstandard.ZstdCompressor().compress(FORMAT + b"\1" * 32 + (3).to_bytes(4, "little") + b"\0" * 49),  # 3 promised
])
def test_malformed_contents_are_refused(sealer: Sealer, ctx: bytes, plain: bytes) -> None:
    name, data = _sealed_index(sealer, ctx, plain)
    with pytest.raises(IntegrityError):
        Index().load_file(name, data, sealer, ctx)


def test_sealed_with_another_kind_is_refused(sealer: Sealer, ctx: bytes) -> None:
    data = sealer.seal(zstandard.ZstdCompressor().compress(FORMAT), ObjectKind.REFS, ctx)
    with pytest.raises(IntegrityError):
        Index().load_file(content_name(data), data, sealer, ctx)


def test_one_id_under_two_kinds_keeps_both_and_is_found_by_kind(sealer: Sealer, ctx: bytes) -> None:
    """A file chunk whose bytes equal a tree's encoding has the tree's id: both are stored and found."""
    oid, other = os.urandom(32), os.urandom(32)
    idx = Index()
    idx.add_pack("aa" * 32, [PackEntry(ObjectKind.TREE, oid, 0, 40, 14), PackEntry(ObjectKind.CHUNK, other, 40, 40, 9)])
    idx.add_pack("bb" * 32, [PackEntry(ObjectKind.CHUNK, oid, 0, 40, 14)])
    assert idx.get(oid, ObjectKind.TREE) == Location("aa" * 32, 0, 40, ObjectKind.TREE, 14)
    assert idx.get(oid, ObjectKind.CHUNK) == Location("bb" * 32, 0, 40, ObjectKind.CHUNK, 14)
    assert not idx.has(oid, ObjectKind.COMMIT) and not idx.has(other, ObjectKind.TREE)
    assert idx.chunk_ids() == {oid, other}  # the new chunk is deduplicated against the stored chunk only
    assert {loc.pack_id for loc in idx.every_kind(oid)} == {"aa" * 32, "bb" * 32}
    again = Index()
    name, data = idx.encode(sealer, ctx, ["bb" * 32, "aa" * 32])
    again.load_file(f"index/{name}", data, sealer, ctx)
    assert again.get(oid, ObjectKind.CHUNK) is not None and again.get(oid, ObjectKind.TREE) is not None


def test_a_read_turns_to_the_next_copy_while_packs_are_gone() -> None:
    # Three packs hold one object; the first two (an older index file's, loaded first) are gone. The copy a
    # read and verify turn to is the third, not the second gone one.
    e = PackEntry(ObjectKind.CHUNK, b"\7" * 32, 0, 10, 8)
    a, b, c = "aa" * 32, "bb" * 32, "cc" * 32
    idx = index_with({a: [e], b: [e], c: [e]})
    assert idx.get(e.object_id, e.kind) == Location(a, 0, 10, ObjectKind.CHUNK, 8)
    assert idx.elsewhere(e.object_id, e.kind, {a}) == Location(b, 0, 10, ObjectKind.CHUNK, 8)
    assert idx.elsewhere(e.object_id, e.kind, {a, b}) == Location(c, 0, 10, ObjectKind.CHUNK, 8)
    assert idx.elsewhere(e.object_id, e.kind, {a, b, c}) is None
    assert idx.copies_elsewhere({a, b}) == {(e.kind, e.object_id): Location(c, 0, 10, ObjectKind.CHUNK, 8)}


def test_a_kept_file_loads_the_same_and_is_not_opened_again(kept_parses: None, make_sealer: MakeSealer,
                                                             ctx: bytes) -> None:
    sealer = make_sealer()
    name, data = _encoded(sealer, ctx)
    first = Index()
    first.load_file(name, data, sealer, ctx)
    again = Index()
    again.load_file(name, data, make_sealer(), ctx)  # another key could not open it: it was not opened
    assert again.locations == first.locations and again.packs == first.packs and again.files == {name}


def test_a_kept_file_changed_in_place_is_still_refused(kept_parses: None, sealer: Sealer, ctx: bytes) -> None:
    name, data = _encoded(sealer, ctx)
    Index().load_file(name, data, sealer, ctx)
    damaged = bytearray(data)
    damaged[-40] ^= 1
    with pytest.raises(IntegrityError, match="does not match its name"):
        Index().load_file(name, bytes(damaged), sealer, ctx)


def test_kept_files_are_per_repository_and_forgotten_once_unlisted(kept_parses: None, make_sealer: MakeSealer,
                                                                   ctx: bytes) -> None:
    sealer = make_sealer()
    name, data = _encoded(sealer, ctx)
    Index().load_file(name, data, sealer, ctx)
    with pytest.raises(IntegrityError):  # the same bytes under another repository's context are opened anew
        Index().load_file(name, data, sealer, b"\6" * 32)
    index_module.forget_parsed_files(ctx, set())
    with pytest.raises(IntegrityError):  # forgotten: opened again, and another key cannot
        Index().load_file(name, data, make_sealer(), ctx)
