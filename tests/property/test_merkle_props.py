"""Property tests for strongroom.core.merkle (RELIABILITY.md T16, T17).

- Every (index, size) and every (m, n) up to 256: generated proofs verify, and the neighbouring
  statements (index ±1, size ±1, m ±1, n ±1, swapped roots, truncated or extended proofs) do not.

  A verifier sees only opaque hashes, so a proof for (index, size) is *also* a valid proof for another
  (index', size') whenever RFC 9162 combines the same hashes in the same order for both (its "shape",
  derived below from the RFC recursion, independently of the library): e.g. the path [h1, h2] of leaf 0
  in a tree of 3 equally proves leaf 0 of a tree of 4 whose right half hashes to h2. That is why
  checkpoints sign the size. Size and index mutations must therefore be rejected exactly when the shapes
  differ (and are accepted exactly when they are equal); every mutation of a hash is always rejected.
- Differential: roots for every size 1..2048 and proofs for random (m, n) against a naive recursive
  MTH / PATH / SUBPROOF written straight from RFC 9162 §2.1.
- Mutation probes (transparency-dev corruptInclusionProof / corruptConsistencyProof, plus every single-bit
  flip, truncation and extension) on proofs drawn from trees up to ~150k leaves: 0 accepted.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core import merkle
from strongroom.errors import IntegrityError, StrongroomError

Probe = tuple[Any, ...]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
BIG_N = (1 << 17) + 12_345
SMALL_N = 2048


def _leaf(i: int) -> bytes:
    return i.to_bytes(8, "big")


# --- naive reference, straight from the RFC ------------------------------------------------------------

NAIVE_DATA = [_leaf(i) for i in range(SMALL_N)]


@functools.cache
def naive_mth(start: int, end: int) -> bytes:
    """MTH(D[start:end]) by RFC 6962's recursive definition (memoised; the definition is unchanged)."""
    n = end - start
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + NAIVE_DATA[start]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + naive_mth(start, start + k) + naive_mth(start + k, end)).digest()


def naive_path(m: int, start: int, end: int) -> list[bytes]:
    n = end - start
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, start, start + k), naive_mth(start + k, end)]
    return [*naive_path(m - k, start + k, end), naive_mth(start, start + k)]


def naive_subproof(m: int, start: int, end: int, complete: bool) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if complete else [naive_mth(start, end)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, start, start + k, complete), naive_mth(start + k, end)]
    return [*naive_subproof(m - k, start + k, end, False), naive_mth(start, start + k)]


def path_shape(m: int, n: int) -> tuple[str, ...]:
    """For PATH(m, D[n]): per proof element, whether it is the left (L) or right (R) sibling."""
    if n <= 1:
        return ()
    k = 1
    while k * 2 < n:
        k *= 2
    return (*path_shape(m, k), "R") if m < k else (*path_shape(m - k, n - k), "L")


def subproof_shape(m: int, n: int, complete: bool = True) -> tuple[str, ...]:
    """For PROOF(m, D[n]): per element, its role; "old" marks the old root used as the first node."""
    if m == n:
        return ("old",) if complete else ("seed",)
    k = 1
    while k * 2 < n:
        k *= 2
    return (*subproof_shape(m, k, complete), "R") if m <= k else (*subproof_shape(m - k, n - k, False), "L")


def same_inclusion_shape(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return 0 <= b[0] < b[1] and path_shape(*a) == path_shape(*b)


def same_consistency_shape(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return 0 < b[0] < b[1] and subproof_shape(*a) == subproof_shape(*b)


# --- shared trees ----------------------------------------------------------------------------------------

SMALL_HASHES = [merkle.leaf_hash(d) for d in NAIVE_DATA]
SMALL_TREE = merkle.MerkleTree(SMALL_HASHES)


@functools.cache
def big_tree() -> merkle.MerkleTree:
    return merkle.MerkleTree(merkle.leaf_hash(_leaf(i)) for i in range(BIG_N))


def _rejects_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    try:
        merkle.verify_inclusion(index, size, leaf, proof, root)
    except IntegrityError:
        return True
    except StrongroomError:  # e.g. a negative index: refused as input, still never accepted
        return True
    return False


def _rejects_consistency(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> bool:
    try:
        merkle.verify_consistency(m, n, r1, r2, proof)
    except StrongroomError:
        return True
    return False


# --- exhaustive small sizes ------------------------------------------------------------------------------


def test_every_inclusion_proof_up_to_256_verifies_and_neighbours_fail() -> None:
    checked = indistinguishable = 0
    for size in range(1, 257):
        root = SMALL_TREE.root_at(size)
        for index in range(size):
            leaf = SMALL_HASHES[index]
            proof = SMALL_TREE.inclusion_proof(index, size)
            merkle.verify_inclusion(index, size, leaf, proof, root)
            # Another leaf of the same tree always has another path: never accepted.
            assert _rejects_inclusion(index - 1, size, leaf, proof, root)
            assert _rejects_inclusion(index + 1, size, leaf, proof, root)
            for n in (size - 1, size + 1):
                rejected = _rejects_inclusion(index, n, leaf, proof, root)
                assert rejected != same_inclusion_shape((index, size), (index, n)), (index, size, n)
                indistinguishable += not rejected
            assert _rejects_inclusion(index, size, leaf, proof[:-1], root) or not proof
            assert _rejects_inclusion(index, size, leaf, [*proof, root], root)
            checked += 1
    assert checked == 256 * 257 // 2
    # Size ± 1 often leaves the path's shape unchanged (only the right border moves): about 3 in 4 here.
    assert 0 < indistinguishable < 2 * checked


def test_every_consistency_proof_up_to_256_verifies_and_neighbours_fail() -> None:
    roots = [SMALL_TREE.root_at(n) for n in range(258)]
    for n in range(1, 257):
        for m in range(0, n + 1):
            proof = SMALL_TREE.consistency_proof(m, n)
            merkle.verify_consistency(m, n, roots[m], roots[n], proof)
            if 0 < m < n:
                assert _rejects_consistency(m, n, roots[n], roots[m], proof)  # swapped roots
                for mm, nn in ((m - 1, n), (m + 1, n), (m, n - 1), (m, n + 1)):
                    rejected = _rejects_consistency(mm, nn, roots[m], roots[n], proof)
                    assert rejected != same_consistency_shape((m, n), (mm, nn)), (m, n, mm, nn)
                assert _rejects_consistency(m, n, roots[m], roots[n], proof[:-1])
                assert _rejects_consistency(m, n, roots[m], roots[n], [*proof, roots[n]])
                assert _rejects_consistency(m, n, roots[m], roots[n], [roots[m], *proof])


# --- differential against the naive RFC definition -------------------------------------------------------


def test_roots_match_naive_mth_for_every_size_up_to_2048() -> None:
    cr = merkle.CompactRange()
    grown = merkle.MerkleTree()
    for n in range(1, SMALL_N + 1):
        cr.append(SMALL_HASHES[n - 1])
        grown.append(SMALL_HASHES[n - 1])
        want = naive_mth(0, n)
        assert cr.root() == want, n
        assert grown.root() == want, n
        assert SMALL_TREE.root_at(n) == want, n
    for n in itertools.chain(range(1, 70), range(SMALL_N - 70, SMALL_N + 1), (1023, 1024, 1025)):
        assert merkle.root(SMALL_HASHES[:n]) == naive_mth(0, n)


@settings(max_examples=400, deadline=None)
@given(st.integers(1, SMALL_N).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_proofs_match_naive_rfc_definitions(mn: tuple[int, int]) -> None:
    m, n = mn
    if 0 < m < n:
        assert SMALL_TREE.consistency_proof(m, n) == naive_subproof(m, 0, n, True)
    if m < n:
        assert SMALL_TREE.inclusion_proof(m, n) == naive_path(m, 0, n)


def test_ten_thousand_random_pairs_match_naive() -> None:
    rng = random.Random(6962)
    for _ in range(10_000):
        n = rng.randint(2, SMALL_N)
        m = rng.randint(1, n - 1)
        assert SMALL_TREE.consistency_proof(m, n) == naive_subproof(m, 0, n, True)
        assert SMALL_TREE.inclusion_proof(m, n) == naive_path(m, 0, n)


def test_one_shot_functions_match_the_tree() -> None:
    for n in (1, 2, 3, 5, 8, 13, 100, 257, 1000, SMALL_N):
        hashes = SMALL_HASHES[:n]
        for m in {0, 1, n // 3, n // 2, n - 1, n}:
            assert merkle.consistency_proof(m, hashes) == SMALL_TREE.consistency_proof(m, n)
            if m < n:
                assert merkle.inclusion_proof(m, hashes) == SMALL_TREE.inclusion_proof(m, n)


# --- mutation probes ---------------------------------------------------------------------------------------


def _flip(proof: list[bytes], i: int, bit: int) -> list[bytes]:
    out = list(proof)
    b = bytearray(out[i])
    b[bit // 8] ^= 1 << (bit % 8)
    out[i] = bytes(b)
    return out


def corrupt_inclusion(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes) -> list[Probe]:
    """transparency-dev proof/verify_test.go corruptInclusionProof, plus size ± 1; in verify_inclusion order."""
    probes: list[Probe] = [
        (index - 1, size, leaf, proof, root),
        (index + 1, size, leaf, proof, root),
        (index ^ 2, size, leaf, proof, root),
        (index, size * 2, leaf, proof, root),
        (index, size // 2, leaf, proof, root),
        (index, size + 1, leaf, proof, root),
        (index, size - 1, leaf, proof, root),
        (index, size, b"WrongLeaf", proof, root),
        (index, size, leaf, proof, merkle.EMPTY_ROOT),
        (index, size, leaf, proof, SOME_HASH),
        (index, size, leaf, [*proof, b""], root),
        (index, size, leaf, [*proof, root], root),
        (index, size, leaf, [b"", *proof], root),
        (index, size, leaf, [root, *proof], root),
    ]
    for i in range(len(proof)):
        probes.append((index, size, leaf, _flip(proof, i, 3), root))
    if proof:
        probes.append((index, size, leaf, proof[:-1], root))
    if len(proof) > 1:
        probes.append((index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root))
    return probes


def corrupt_consistency(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> list[Probe]:
    """transparency-dev proof/verify_test.go corruptConsistencyProof, plus n ± 1."""
    probes: list[Probe] = [
        (m - 1, n, r1, r2, proof),
        (m + 1, n, r1, r2, proof),
        (m ^ 2, n, r1, r2, proof),
        (m, n * 2, r1, r2, proof),
        (m, n // 2, r1, r2, proof),
        (m, n + 1, r1, r2, proof),
        (m, n - 1, r1, r2, proof),
        (m, n, b"WrongRoot", r2, proof),
        (m, n, r1, b"WrongRoot", proof),
        (m, n, r2, r1, proof),
        (m, n, r1, r2, []),
        (m, n, r1, r2, [*proof, b""]),
        (m, n, r1, r2, [*proof, r1]),
        (m, n, r1, r2, [*proof, r2]),
        (m, n, r1, r2, [b"", *proof]),
        (m, n, r1, r2, [r1, *proof]),
        (m, n, r1, r2, [r2, *proof]),
        (m, n, r1, r2, [proof[0], *proof]),
        (m, n, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        probes.append((m, n, r1, r2, _flip(proof, i, 4)))
    return probes


@settings(max_examples=150, deadline=None)
@given(st.integers(2, BIG_N).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_inclusion_mutations_on_large_trees_are_rejected(pair: tuple[int, int]) -> None:
    index, size = pair
    tree = big_tree()
    root, leaf = tree.root_at(size), tree.leaf(index)
    proof = tree.inclusion_proof(index, size)
    merkle.verify_inclusion(index, size, leaf, proof, root)
    for probe in corrupt_inclusion(index, size, proof, root, leaf):
        rejected = _rejects_inclusion(*probe)
        if probe[2:] == (leaf, proof, root):  # only the index or size changed
            assert rejected != same_inclusion_shape((index, size), probe[:2]), (index, size, probe[:2])
        else:
            assert rejected, (index, size)


@settings(max_examples=150, deadline=None)
@given(st.integers(3, BIG_N).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))))
def test_consistency_mutations_on_large_trees_are_rejected(pair: tuple[int, int]) -> None:
    m, n = pair
    tree = big_tree()
    r1, r2 = tree.root_at(m), tree.root_at(n)
    proof = tree.consistency_proof(m, n)
    merkle.verify_consistency(m, n, r1, r2, proof)
    for probe in corrupt_consistency(m, n, r1, r2, proof):
        rejected = _rejects_consistency(*probe)
        if probe[2:] == (r1, r2, proof):  # only a size changed
            assert rejected != same_consistency_shape((m, n), probe[:2]), (m, n, probe[:2])
        else:
            assert rejected, (m, n)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, SMALL_N).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.just(n))))
def test_every_single_bit_flip_is_rejected(triple: tuple[int, int, int]) -> None:
    index, old, size = triple
    old = max(old, 1)
    root = SMALL_TREE.root_at(size)
    proof = SMALL_TREE.inclusion_proof(index, size)
    for i, bit in itertools.product(range(len(proof)), range(256)):
        assert _rejects_inclusion(index, size, SMALL_HASHES[index], _flip(proof, i, bit), root)
    for bit in range(256):
        assert _rejects_inclusion(index, size, _flip([SMALL_HASHES[index]], 0, bit)[0], proof, root)
        assert _rejects_inclusion(index, size, SMALL_HASHES[index], proof, _flip([root], 0, bit)[0])
    cproof = SMALL_TREE.consistency_proof(old, size)
    r1 = SMALL_TREE.root_at(old)
    for i, bit in itertools.product(range(len(cproof)), range(256)):
        assert _rejects_consistency(old, size, r1, root, _flip(cproof, i, bit))


# --- compact ranges ----------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=6))
def test_compact_range_appends_in_batches_and_restores(batches: list[int]) -> None:
    cr = merkle.CompactRange()
    done = 0
    for count in batches:
        count = min(count, SMALL_N - done)
        cr.extend(SMALL_HASHES[done : done + count])
        done += count
        assert cr.size == done
        assert len(cr.hashes) == done.bit_count()
        assert cr.root() == naive_mth(0, done)
        restored = merkle.CompactRange.from_state(cr.size, cr.hashes)
        assert restored.root() == cr.root()
        cr = restored


@pytest.mark.parametrize(("size", "count"), [(5, 1), (5, 3), (0, 1), (8, 0), (-1, 0)])
def test_compact_range_rejects_inconsistent_state(size: int, count: int) -> None:
    with pytest.raises(StrongroomError):
        merkle.CompactRange.from_state(size, [SOME_HASH] * count)
