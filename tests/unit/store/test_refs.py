"""Refs: canonical encode/decode, sealing bound to the repository, generation, malformed refs."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import Sealer
from strongroom.crypto.secret import Secret
from strongroom.errors import IntegrityError
from strongroom.store.refs import Refs, open_refs, seal_refs
from tests.unit.conftest import MakeSealer

names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,15}", fullmatch=True)
heads = st.dictionaries(names, st.binary(min_size=32, max_size=32), max_size=5)


@settings(max_examples=40, deadline=None)
@given(gen=st.integers(0, 2**53), branches=heads, tags=heads)
def test_round_trip_through_a_sealed_file(gen: int, branches: dict[str, bytes], tags: dict[str, bytes]) -> None:
    sealer, ctx = Sealer({1: Secret(b"\4" * 32)}, 1), b"\6" * 32
    refs = Refs(gen, dict(branches), dict(tags))
    back = open_refs(sealer, ctx, seal_refs(sealer, ctx, refs))
    assert (back.generation, back.branches, back.tags) == (gen, branches, tags)
    assert back.encode() == refs.encode()
    assert back.digest() == refs.digest()


def test_encoding_is_canonical() -> None:
    a = Refs(3, {"main": b"\1" * 32, "dev": b"\2" * 32}, {"v1": b"\3" * 32})
    b = Refs(3, {"dev": b"\2" * 32, "main": b"\1" * 32}, {"v1": b"\3" * 32})
    assert a.encode() == b.encode() and a.digest() == b.digest()


def test_digest_tells_different_refs_apart() -> None:
    base = Refs(3, {"main": b"\1" * 32})
    others = [Refs(4, {"main": b"\1" * 32}), Refs(3, {"main": b"\2" * 32}), Refs(3, {"dev": b"\1" * 32}),
              Refs(3, {"main": b"\1" * 32}, {"t": b"\1" * 32})]
    assert len({base.digest(), *(o.digest() for o in others)}) == 5


def test_heads_are_unique_branch_and_tag_targets() -> None:
    refs = Refs(1, {"main": b"\1" * 32, "dev": b"\2" * 32}, {"v1": b"\1" * 32, "v2": b"\3" * 32})
    assert sorted(refs.heads()) == [b"\1" * 32, b"\2" * 32, b"\3" * 32]


def test_new_refs_are_generation_zero_and_empty() -> None:
    r = Refs()
    assert (r.generation, r.branches, r.tags, r.heads()) == (0, {}, {}, [])


def test_sealed_refs_bound_to_repository_and_key(make_sealer: MakeSealer, ctx: bytes) -> None:
    s = make_sealer()
    data = seal_refs(s, ctx, Refs(1, {"main": b"\1" * 32}))
    with pytest.raises(IntegrityError):
        open_refs(s, os.urandom(32), data)
    with pytest.raises(IntegrityError):
        open_refs(make_sealer(), ctx, data)
    frame = s.seal(Refs().encode(), ObjectKind.INDEX, ctx)
    with pytest.raises(IntegrityError):
        open_refs(s, ctx, frame)


@pytest.mark.parametrize("data", [
    b"", b"[]", b"{}", b'{"format":"sr-refs/2","generation":0,"branches":{},"tags":{}}',
    b'{"format":"sr-refs/1","generation":"x","branches":{},"tags":{}}',
    b'{"format":"sr-refs/1","generation":0,"branches":{"main":"zz"},"tags":{}}',
    b'{"format":"sr-refs/1","generation":0,"branches":{"main":5},"tags":{}}',
    b'{"format":"sr-refs/1","generation":0,"tags":{}}',
    b'{"format":"sr-refs/1","generation":Infinity,"branches":{},"tags":{}}',
    b'{"format":"sr-refs/1","generation":0,"branches":[],"tags":{}}',
    b'{"format":"sr-refs/1","generation":0,"branches":{},"tags":"v1"}',
])
def test_malformed_refs_raise_integrity_error(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        Refs.decode(data)
