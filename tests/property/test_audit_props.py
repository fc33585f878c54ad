"""Property tests for the audit layer's formats and parsers (hypothesis):

- events: the canonical JSON of an event built from catalog columns by concatenation (``canonical_fields``,
  what `audit verify` and sealing use) is byte for byte ``Event.canonical()``; canonical JSON round-trips,
  is a fixed point, never holds a raw newline (segments are one event per line) and refuses floats;
- ``roots_at`` (the roots `audit verify` compares with every checkpoint) equals the reference tree's roots;
- checkpoints as the log signs them (C2SP signed notes with a ``time`` extension line): they parse back to
  the same checkpoint, and any changed character makes them fail;
- proof documents of `audit prove` / `audit consistency`: `check-proof` accepts them, and rejects every
  mutation (index, size, any hash, any event field, the checkpoint of another size or another key).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from strongroom.audit.events import OUTCOMES, Event, canonical_fields, canonical_json, canonical_text
from strongroom.audit.log import check_proof, roots_at
from strongroom.core.checkpoint import Checkpoint
from strongroom.core.merkle import MerkleTree
from strongroom.crypto.signing import Ed25519Signer, sign_checkpoint, verify_checkpoint
from strongroom.errors import InputError, StrongroomError

# any text, control characters, quotes, backslashes and astral characters included (no lone surrogates:
# events never hold them, scrub() escapes undecodable file names first)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
SPICY = st.text(st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "\x7f", "é", "\u2028", "😀", "a", "/"]), max_size=12)
ANY_TEXT = st.one_of(TEXT, SPICY)
INT = st.integers(-(2**63), 2**63 - 1)
JSON = st.recursive(
    st.none() | st.booleans() | INT | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
OBJ = st.dictionaries(ANY_TEXT, JSON, max_size=5)


@st.composite
def events(draw: st.DrawFn, seq: int | None = None) -> Event:
    return Event(
        seq=draw(st.integers(0, 2**40)) if seq is None else seq,
        time=draw(ANY_TEXT),
        actor=draw(ANY_TEXT),
        os_user=draw(ANY_TEXT),
        host=draw(ANY_TEXT),
        action=draw(ANY_TEXT),
        targets=draw(OBJ),
        outcome=draw(st.sampled_from(OUTCOMES)),
        details=draw(OBJ),
    )


# ----------------------------------------------------------------------------- events


@given(events())
def test_canonical_fields_is_the_event_canonical_json(e: Event) -> None:
    built = canonical_fields(
        e.seq, e.time, e.actor, e.os_user, e.host, e.action, canonical_text(e.targets), e.outcome,
        canonical_text(e.details),
    )
    assert built == e.canonical()


@given(events())
def test_event_canonical_json_round_trips(e: Event) -> None:
    raw = e.canonical()
    assert b"\n" not in raw and b"\r" not in raw  # one event per segment line
    back = Event.from_json(json.loads(raw))
    assert back == e and back.canonical() == raw and back.leaf_hash() == e.leaf_hash()


@given(JSON)
def test_canonical_json_is_a_fixed_point(value: Any) -> None:
    raw = canonical_json(value)
    assert json.loads(raw) == value
    assert canonical_json(json.loads(raw)) == raw
    raw.decode("utf-8")  # always valid UTF-8


@given(OBJ)
def test_canonical_json_keys_are_sorted_and_compact(value: dict[str, Any]) -> None:
    text = canonical_text(value)
    parsed = json.loads(text)
    assert list(parsed) == sorted(parsed)
    assert json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == text


@given(OBJ, st.floats(allow_nan=True, allow_infinity=True), ANY_TEXT)
def test_floats_are_refused_anywhere(value: dict[str, Any], f: float, key: str) -> None:
    with pytest.raises(InputError):
        canonical_json({**value, key: [f]})


class _Str(str):
    pass


def test_subclasses_of_plain_types_take_the_slow_path_and_encode_the_same() -> None:
    assert canonical_json({"a": _Str("x"), "b": [True, None]}) == b'{"a":"x","b":[true,null]}'
    with pytest.raises(InputError):
        canonical_json({"a": {"b": object()}})
    with pytest.raises(InputError):
        canonical_json({"a": 2**63})


# ----------------------------------------------------------------------------- roots


def _leaves(n: int) -> list[bytes]:
    return [Event(i, "t", "a", "o", "h", "x").leaf_hash() for i in range(n)]


LEAVES = _leaves(300)
REFERENCE = MerkleTree(LEAVES)


def test_roots_at_every_size_up_to_300() -> None:
    sizes = list(range(301))
    assert roots_at(LEAVES, 300, sizes) == [REFERENCE.root_at(n) for n in range(1, 301)]


@given(st.integers(1, 300), st.lists(st.integers(0, 320), max_size=20))
def test_roots_at_random_sizes_and_bounds(upto: int, sizes: list[int]) -> None:
    wanted = sorted(set(sizes))
    expect = [REFERENCE.root_at(n) for n in wanted if 0 < n <= upto]
    assert roots_at(LEAVES, upto, wanted) == expect


# ----------------------------------------------------------------------------- checkpoints

SIGNER = Ed25519Signer.generate("strongroom/" + "ab" * 32 + "/0123456789abcdef")
OTHER = Ed25519Signer.generate("strongroom/" + "ab" * 32 + "/0123456789abcdef")
ORIGIN = "strongroom/" + "ab" * 32 + "/0123456789abcdef"


@given(st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32), st.integers(0, 2**40))
def test_log_checkpoints_round_trip(size: int, root: bytes, micros: int) -> None:
    cp = Checkpoint(ORIGIN, size, root, (f"time 2026-01-01T00:00:00.{micros % 10**6:06d}Z",))
    note = sign_checkpoint(cp, SIGNER)
    assert verify_checkpoint(note, SIGNER.verifier(), origin=ORIGIN) == cp
    assert Checkpoint.from_text(note.split("\n\n", 1)[0] + "\n") == cp
    with pytest.raises(StrongroomError):
        verify_checkpoint(note, OTHER.verifier(), origin=ORIGIN)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 10**6), st.binary(min_size=32, max_size=32), st.data())
def test_any_changed_character_of_a_checkpoint_note_fails(size: int, root: bytes, data: st.DataObject) -> None:
    note = sign_checkpoint(Checkpoint(ORIGIN, size, root, ("time 2026-01-01T00:00:00.000000Z",)), SIGNER)
    i = data.draw(st.integers(0, len(note) - 1))
    ch = data.draw(st.characters(exclude_categories=("Cs",)))
    assume(ch != note[i])
    with pytest.raises(StrongroomError):
        verify_checkpoint(note[:i] + ch + note[i + 1 :], SIGNER.verifier(), origin=ORIGIN)


# ----------------------------------------------------------------------------- proof documents


def _signed(tree: MerkleTree, size: int, signer: Ed25519Signer = SIGNER) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, size, tree.root_at(size), ("time 2026-01-01T00:00:00.000000Z",)), signer)


def _prove_doc(evs: list[Event], tree: MerkleTree, seq: int) -> dict[str, Any]:
    """The document `audit prove` prints (AuditLog.prove), from an independent tree."""
    return {
        "leaf_index": seq,
        "tree_size": tree.size,
        "leaf_hash": evs[seq].leaf_hash().hex(),
        "event": evs[seq].to_json(),
        "audit_path": [h.hex() for h in tree.inclusion_proof(seq)],
        "root_hash": tree.root().hex(),
        "checkpoint": _signed(tree, tree.size),
    }


def _consistency_doc(tree: MerkleTree, old: int) -> dict[str, Any]:
    return {
        "old_size": old,
        "new_size": tree.size,
        "old_root": tree.root_at(old).hex(),
        "new_root": tree.root().hex(),
        "consistency_path": [h.hex() for h in tree.consistency_proof(old)],
        "old_checkpoint": _signed(tree, old) if old else None,
        "checkpoint": _signed(tree, tree.size),
    }


def _flip(hex_text: str, pos: int) -> str:
    i = pos % len(hex_text)
    return hex_text[:i] + ("0" if hex_text[i] != "0" else "1") + hex_text[i + 1 :]


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[Event], MerkleTree, int]:
    """A log of 1..64 events (plain ones, and one drawn with any content at the index to prove)."""
    n = draw(st.integers(1, 64))
    seq = draw(st.integers(0, n - 1))
    evs = [Event(i, "2026-01-01T00:00:00.000000Z", "carol", "carol", "h", "cat", {"paths": [str(i)]}) for i in range(n)]
    evs[seq] = draw(events(seq=seq))
    return evs, MerkleTree(e.leaf_hash() for e in evs), seq


def _inclusion_mutants(doc: dict[str, Any], evs: list[Event], tree: MerkleTree, pos: int) -> list[dict[str, Any]]:
    out = []

    def m(**changes: Any) -> None:
        d = copy.deepcopy(doc)
        d.update(changes)
        out.append(d)

    m(leaf_index=doc["leaf_index"] + 1)
    m(leaf_index=doc["leaf_index"] - 1)
    m(tree_size=doc["tree_size"] + 1)
    m(tree_size=doc["tree_size"] - 1)
    m(leaf_hash=_flip(doc["leaf_hash"], pos))
    m(root_hash=_flip(doc["root_hash"], pos))
    m(audit_path=[*doc["audit_path"], "00" * 32])
    m(event={**doc["event"], "actor": doc["event"]["actor"] + "x"})
    m(event={**doc["event"], "outcome": "denied" if doc["event"]["outcome"] != "denied" else "ok"})
    m(event={**doc["event"], "details": {**doc["event"]["details"], "injected": 1}})
    m(event={**doc["event"], "seq": doc["event"]["seq"] + 1})
    m(checkpoint=_signed(tree, tree.size, OTHER))
    if tree.size > 1:
        m(checkpoint=_signed(tree, tree.size - 1))
    if doc["audit_path"]:
        k = pos % len(doc["audit_path"])
        path = list(doc["audit_path"])
        path[k] = _flip(path[k], pos // 7)
        m(audit_path=path)
        m(audit_path=doc["audit_path"][:-1])
        m(audit_path=list(reversed(doc["audit_path"])) if len(doc["audit_path"]) > 1 else [])
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(logs(), st.data())
def test_inclusion_proof_documents_verify_and_every_mutation_fails(
    log: tuple[list[Event], MerkleTree, int], data: st.DataObject
) -> None:
    evs, tree, seq = log
    doc = json.loads(json.dumps(_prove_doc(evs, tree, seq)))  # as read back from the file
    assert check_proof(doc, SIGNER.verifier()).startswith(f"event {seq} is in the log")
    pos = data.draw(st.integers(0, 10**6))
    for bad in _inclusion_mutants(doc, evs, tree, pos):
        assert bad != doc
        with pytest.raises(StrongroomError):
            check_proof(bad, SIGNER.verifier())


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.data())
def test_consistency_proof_documents_verify_and_every_mutation_fails(n: int, data: st.DataObject) -> None:
    tree = MerkleTree(LEAVES[:n])
    old = data.draw(st.integers(0, tree.size))
    doc = json.loads(json.dumps(_consistency_doc(tree, old)))
    assert "is a prefix of size" in check_proof(doc, SIGNER.verifier())
    pos = data.draw(st.integers(0, 10**6))
    mutants = []

    def m(**changes: Any) -> None:
        d = copy.deepcopy(doc)
        d.update(changes)
        mutants.append(d)

    m(new_size=tree.size + 1)
    m(new_root=_flip(doc["new_root"], pos))
    m(checkpoint=_signed(tree, tree.size, OTHER))
    if old:
        m(old_size=old - 1)
        m(old_root=_flip(doc["old_root"], pos))
        m(old_checkpoint=_signed(tree, old, OTHER))
    if old < tree.size:
        m(old_size=old + 1)
    if doc["consistency_path"]:
        k = pos % len(doc["consistency_path"])
        path = list(doc["consistency_path"])
        path[k] = _flip(path[k], pos // 5)
        m(consistency_path=path)
        m(consistency_path=doc["consistency_path"][:-1])
    m(consistency_path=[*doc["consistency_path"], "11" * 32])
    for bad in mutants:
        with pytest.raises(StrongroomError):
            check_proof(bad, SIGNER.verifier())


def test_a_document_that_is_not_a_proof_is_bad_input() -> None:
    for doc in ({}, {"checkpoint": 5}, {"leaf_index": 0}, {"checkpoint": "x\n", "old_size": 1}):
        with pytest.raises(StrongroomError):
            check_proof(doc, SIGNER.verifier())
