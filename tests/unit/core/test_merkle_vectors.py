"""Known-answer tests: transparency-dev/merkle's public vectors (see tests/vectors/merkle/README.md)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from strongroom.core import merkle
from strongroom.errors import InputError, IntegrityError, StrongroomError

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "merkle"
CONSTS: dict[str, Any] = json.loads((VECTORS / "verify_test_constants.json").read_text())
HASHER: dict[str, Any] = json.loads((VECTORS / "rfc6962_hasher.json").read_text())
LEAVES = [bytes.fromhex(x) for x in CONSTS["leaves"]]
ROOTS = [bytes.fromhex(x) for x in CONSTS["roots"]]


def _load(kind: str) -> list[tuple[str, dict[str, Any]]]:
    files = sorted((VECTORS / "testdata" / kind).glob("*/*.json"))
    return [(f"{p.parent.name}/{p.name}", json.loads(p.read_text())) for p in files]


INCLUSION = _load("inclusion")
CONSISTENCY = _load("consistency")


def _b64list(items: list[str] | None) -> list[bytes]:
    return [base64.b64decode(x) for x in items or []]


def test_vector_files_are_present() -> None:
    assert len(INCLUSION) == 22
    assert len(CONSISTENCY) == 25
    assert sum(not v["wantErr"] for _, v in INCLUSION) == 5
    assert sum(not v["wantErr"] for _, v in CONSISTENCY) == 5


def test_rfc6962_hasher() -> None:
    assert merkle.EMPTY_ROOT.hex() == HASHER["empty_root"]
    assert merkle.root([]).hex() == HASHER["empty_root"]
    for case in HASHER["leaf_hash"]:
        assert merkle.leaf_hash(bytes.fromhex(case["input_hex"])).hex() == case["hash"]
    for case in HASHER["node_hash"]:
        got = merkle.node_hash(bytes.fromhex(case["left_hex"]), bytes.fromhex(case["right_hex"]))
        assert got.hex() == case["hash"]


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = merkle.leaf_hash(b"Hello"), merkle.leaf_hash(b"World")
    assert a != b
    assert merkle.node_hash(a, b) != merkle.leaf_hash(a + b)
    assert merkle.node_hash(a, b) != merkle.node_hash(b, a)


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_the_reference_tree(size: int) -> None:
    hashes = [merkle.leaf_hash(x) for x in LEAVES[:size]]
    assert merkle.root(hashes) == ROOTS[size - 1]
    assert merkle.MerkleTree(hashes).root() == ROOTS[size - 1]
    cr = merkle.CompactRange()
    cr.extend(hashes)
    assert cr.root() == ROOTS[size - 1]
    assert merkle.MerkleTree([merkle.leaf_hash(x) for x in LEAVES]).root_at(size) == ROOTS[size - 1]


@pytest.mark.parametrize("case", CONSTS["inclusion_proofs"], ids=lambda c: f"{c['leaf']}-{c['size']}")
def test_reference_inclusion_proofs(case: dict[str, Any]) -> None:
    index, size = case["leaf"] - 1, case["size"]
    proof = [bytes.fromhex(x) for x in case["proof"]]
    hashes = [merkle.leaf_hash(x) for x in LEAVES[:size]]
    assert merkle.inclusion_proof(index, hashes) == proof
    assert merkle.MerkleTree([merkle.leaf_hash(x) for x in LEAVES]).inclusion_proof(index, size) == proof
    merkle.verify_inclusion(index, size, hashes[index], proof, ROOTS[size - 1])


@pytest.mark.parametrize("case", CONSTS["consistency_proofs"], ids=lambda c: f"{c['size1']}-{c['size2']}")
def test_reference_consistency_proofs(case: dict[str, Any]) -> None:
    size1, size2 = case["size1"], case["size2"]
    proof = [bytes.fromhex(x) for x in case["proof"]]
    hashes = [merkle.leaf_hash(x) for x in LEAVES[:size2]]
    assert merkle.consistency_proof(size1, hashes) == proof
    assert merkle.MerkleTree([merkle.leaf_hash(x) for x in LEAVES]).consistency_proof(size1, size2) == proof
    merkle.verify_consistency(size1, size2, ROOTS[size1 - 1], ROOTS[size2 - 1], proof)


@pytest.mark.parametrize(("name", "vec"), INCLUSION, ids=[n for n, _ in INCLUSION])
def test_inclusion_json_vectors(name: str, vec: dict[str, Any]) -> None:
    args = (vec["leafIdx"], vec["treeSize"], base64.b64decode(vec["leafHash"]), _b64list(vec["proof"]),
            base64.b64decode(vec["root"]))
    if vec["wantErr"]:
        with pytest.raises(IntegrityError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)
        # Our generator produces the same proof for the reference tree.
        size = vec["treeSize"]
        hashes = [merkle.leaf_hash(x) for x in LEAVES[:size]]
        assert merkle.root(hashes) == args[4]
        assert merkle.inclusion_proof(vec["leafIdx"], hashes) == args[3]


@pytest.mark.parametrize(("name", "vec"), CONSISTENCY, ids=[n for n, _ in CONSISTENCY])
def test_consistency_json_vectors(name: str, vec: dict[str, Any]) -> None:
    args = (vec["size1"], vec["size2"], base64.b64decode(vec["root1"]), base64.b64decode(vec["root2"]),
            _b64list(vec["proof"]))
    if vec["wantErr"]:
        with pytest.raises(IntegrityError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)
        hashes = [merkle.leaf_hash(x) for x in LEAVES[: vec["size2"]]]
        assert merkle.consistency_proof(vec["size1"], hashes) == args[4]


# transparency-dev TestVerifyInclusion / TestVerifyInclusionSingleEntry / TestVerifyConsistency edge cases.
SOME = bytes.fromhex(CONSTS["sha256_some_hash"])
EMPTY = bytes.fromhex(CONSTS["sha256_empty_tree_hash"])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_probes_without_a_proof_fail(index: int, size: int) -> None:
    for leaf, root in ((SOME, b""), (b"", EMPTY), (SOME, EMPTY)):
        with pytest.raises(IntegrityError):
            merkle.verify_inclusion(index, size, leaf, [], root)


def test_single_entry_tree() -> None:
    h = merkle.leaf_hash(b"data")
    merkle.verify_inclusion(0, 1, h, [], h)
    for leaf, root in ((h, b""), (b"", h), (b"", b"")):
        with pytest.raises(IntegrityError):
            merkle.verify_inclusion(0, 1, leaf, [], root)


def test_consistency_edge_cases() -> None:
    r1, r2 = merkle.leaf_hash(b"1"), merkle.leaf_hash(b"2")
    # Same size, same root, empty proof: consistent. Different roots for one size: not.
    merkle.verify_consistency(1, 1, r2, r2, [])
    merkle.verify_consistency(0, 0, EMPTY, EMPTY, [])
    merkle.verify_consistency(0, 1, EMPTY, r2, [])
    bad: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (1, 1, r1, r2, []),
        (0, 0, EMPTY, r2, []),
        (1, 0, r1, r2, []),  # time travel to the past
        (2, 1, r1, r2, []),
        (1, 2, r1, r2, []),  # empty proof
        (0, 0, EMPTY, EMPTY, [EMPTY]),  # roots match but the proof is not empty
        (0, 1, EMPTY, EMPTY, [EMPTY]),
        (1, 1, EMPTY, EMPTY, [EMPTY]),
        # Stricter than transparency-dev, which accepts any roots for size 0: we require MTH({}).
        (0, 1, r1, r2, []),
        (0, 0, r1, r1, []),
    ]
    for case in bad:
        with pytest.raises(IntegrityError):
            merkle.verify_consistency(*case)


def test_generation_rejects_impossible_requests() -> None:
    hashes = [merkle.leaf_hash(x) for x in LEAVES]
    tree = merkle.MerkleTree(hashes)
    for call in (
        lambda: merkle.inclusion_proof(8, hashes),
        lambda: merkle.inclusion_proof(-1, hashes),
        lambda: merkle.inclusion_proof(0, []),
        lambda: merkle.consistency_proof(9, hashes),
        lambda: merkle.consistency_proof(-1, hashes),
        lambda: tree.inclusion_proof(3, 3),
        lambda: tree.inclusion_proof(0, 9),
        lambda: tree.consistency_proof(5, 4),
        lambda: tree.root_at(9),
        lambda: tree.leaf(8),
        lambda: merkle.verify_inclusion(-1, 8, hashes[0], [], ROOTS[7]),
    ):
        with pytest.raises(InputError):
            call()


def test_errors_are_never_bare_value_errors() -> None:
    """Tampering is an IntegrityError (exit 1), bad requests an InputError (exit 2): both StrongroomErrors."""
    hashes = [merkle.leaf_hash(x) for x in LEAVES]
    proof = merkle.inclusion_proof(3, hashes)
    for junk in ([b"short"], [*proof[:-1], proof[-1][:31]], [*proof, b""]):
        with pytest.raises(StrongroomError):
            merkle.verify_inclusion(3, 8, hashes[3], junk, ROOTS[7])
