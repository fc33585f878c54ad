"""Tree and commit codec: exact round trips, one encoding per object, and damaged input that always
raises IntegrityError (never a stray exception that the CLI would report as an internal error)."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core import codec
from strongroom.core.model import DIR, FILE, SYMLINK, Commit, Entry, Tree
from strongroom.errors import IntegrityError

ids = st.binary(min_size=32, max_size=32)
# File names as the OS gives them: any bytes but "/" and NUL, decoded with surrogate escapes.
raw_names = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
names = st.one_of(raw_names.map(os.fsdecode), st.text(min_size=1, max_size=20).filter(
    lambda s: "/" not in s and "\0" not in s and s not in (".", "..")))
ints = st.integers(min_value=0, max_value=2**63 - 1)
mtimes = st.integers(min_value=-(2**62), max_value=2**63 - 1)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from([FILE, DIR, SYMLINK]))
    common = dict(name=draw(names), mode=draw(st.integers(0, 0o7777)), mtime_ns=draw(mtimes),
                  uid=draw(st.integers(0, 2**32 - 1)), gid=draw(st.integers(0, 2**32 - 1)))
    if kind == FILE:
        return Entry(type=FILE, size=draw(ints), chunks=tuple(draw(st.lists(ids, max_size=5))), **common)
    if kind == DIR:
        return Entry(type=DIR, subtree=draw(ids), **common)
    return Entry(type=SYMLINK, target=draw(st.one_of(names, raw_names.map(os.fsdecode), st.just(""))), **common)


trees = st.lists(entries(), max_size=8, unique_by=lambda e: e.name).map(lambda es: Tree(tuple(es)))

commits = st.builds(
    Commit,
    tree=ids,
    parents=st.lists(ids, max_size=3).map(tuple),
    author=st.text(max_size=20),
    host=st.text(max_size=20),
    time_ns=mtimes,
    message=st.text(max_size=200),
    branch=st.text(min_size=1, max_size=20),
    source=st.one_of(st.text(max_size=30), raw_names.map(os.fsdecode)),
    extra=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)


def sorted_tree(t: Tree) -> Tree:
    return Tree(tuple(sorted(t.entries, key=lambda e: e.name)))


@settings(max_examples=80)
@given(trees)
def test_tree_round_trip(tree: Tree) -> None:
    assert codec.decode_tree(codec.encode_tree(tree)) == sorted_tree(tree)


@settings(max_examples=60)
@given(trees, st.randoms(use_true_random=False))
def test_tree_encoding_is_canonical(tree: Tree, rnd: object) -> None:
    shuffled = list(tree.entries)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    data = codec.encode_tree(tree)
    assert codec.encode_tree(Tree(tuple(shuffled))) == data
    assert codec.encode_tree(codec.decode_tree(data)) == data
    assert all(b < 0x80 for b in data)  # ASCII only, whatever the names


@settings(max_examples=80)
@given(commits)
def test_commit_round_trip_and_determinism(c: Commit) -> None:
    data = codec.encode_commit(c)
    assert codec.decode_commit(data) == c
    assert codec.encode_commit(codec.decode_commit(data)) == data
    assert all(b < 0x80 for b in data)


def test_commits_that_differ_encode_differently() -> None:
    base = Commit(tree=b"\1" * 32, parents=(), author="a", host="h", time_ns=1, message="m", branch="main")
    variants = [
        Commit(tree=b"\2" * 32, parents=(), author="a", host="h", time_ns=1, message="m", branch="main"),
        Commit(tree=b"\1" * 32, parents=(b"\3" * 32,), author="a", host="h", time_ns=1, message="m", branch="main"),
        Commit(tree=b"\1" * 32, parents=(), author="b", host="h", time_ns=1, message="m", branch="main"),
        Commit(tree=b"\1" * 32, parents=(), author="a", host="h", time_ns=2, message="m", branch="main"),
        Commit(tree=b"\1" * 32, parents=(), author="a", host="h", time_ns=1, message="n", branch="main"),
        Commit(tree=b"\1" * 32, parents=(), author="a", host="h", time_ns=1, message="m", branch="dev"),
    ]
    encoded = {codec.encode_commit(v) for v in [base, *variants]}
    assert len(encoded) == len(variants) + 1


def test_non_utf8_names_survive_byte_for_byte() -> None:
    raw = [b"\xff\xfe", b"caf\xe9.txt", b"\xed\xa0\x80", b"ok-\xc3\xa9"]
    tree = Tree(tuple(Entry(name=os.fsdecode(r), type=FILE, mode=0o644, mtime_ns=0) for r in raw))
    back = codec.decode_tree(codec.encode_tree(tree))
    assert sorted(os.fsencode(e.name) for e in back.entries) == sorted(raw)


def _valid_tree_json() -> dict[str, object]:
    tree = Tree((
        Entry(name="a", type=FILE, mode=0o644, mtime_ns=5, size=3, chunks=(b"\1" * 32,)),
        Entry(name="d", type=DIR, mode=0o755, mtime_ns=6, subtree=b"\2" * 32),
        Entry(name="l", type=SYMLINK, mode=0o777, mtime_ns=7, target="a"),
    ))
    return json.loads(codec.encode_tree(tree))


def _valid_commit_json() -> dict[str, object]:
    c = Commit(tree=b"\1" * 32, parents=(b"\2" * 32,), author="a", host="h", time_ns=1, message="m", branch="main",
               extra={"k": "v"})
    return json.loads(codec.encode_commit(c))


@pytest.mark.parametrize("data", [
    b"", b"{", b"null", b"[]", b"42", b'"tree"', b"\xff\xfe", b"{}", b'{"v":2,"e":[]}', b'{"v":1}',
    b'{"v":1,"e":{}}', b'{"v":1,"e":[1]}', b'{"v":1,"e":["x"]}', b'{"v":1,"e":[[]]}',
    b'{"v":1,"e":[{"n":"a","t":"x","m":1,"mt":0,"u":0,"g":0}]}',
    b'{"v":1,"e":[{"n":"a","t":"f","m":"x","mt":0,"u":0,"g":0}]}',
    b'{"v":1,"e":[{"n":"a","t":"f","m":Infinity,"mt":0,"u":0,"g":0}]}',
    b'{"v":1,"e":[{"n":"a","t":"f","m":NaN,"mt":0,"u":0,"g":0}]}',
    b'{"v":1,"e":[{"n":"a","t":"f","m":1,"mt":-Infinity,"u":0,"g":0}]}',
    b'{"v":1,"e":[{"n":"a","t":"f","m":1,"mt":0,"u":0,"g":0,"c":["zz"]}]}',
    b'{"v":1,"e":[{"n":"a","t":"f","m":1,"mt":0,"u":0,"g":0,"c":"abcd"}]}',
    b'{"v":1,"e":[{"n":"a","t":"d","m":1,"mt":0,"u":0,"g":0}]}',
    b'{"v":1,"e":[{"n":"a","t":"d","m":1,"mt":0,"u":0,"g":0,"x":7}]}',
    b"[" * 100_000,
    b'{"v":' * 50_000,
])
def test_malformed_tree_raises_integrity_error(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        codec.decode_tree(data)


@pytest.mark.parametrize("name", [5, None, "", ".", "..", "a/b", "../etc", "/abs", "a\0b", ["a"]])
def test_tree_entry_names_that_could_escape_a_checkout_are_refused(name: object) -> None:
    obj = _valid_tree_json()
    obj["e"][0]["n"] = name  # type: ignore[index]
    with pytest.raises(IntegrityError):
        codec.decode_tree(json.dumps(obj).encode())


def test_symlink_target_must_be_text() -> None:
    obj = _valid_tree_json()
    obj["e"][2]["l"] = 17  # type: ignore[index]
    with pytest.raises(IntegrityError):
        codec.decode_tree(json.dumps(obj).encode())


@pytest.mark.parametrize("field,value", [
    ("tree", "zz"), ("tree", 5), ("parents", "ab"), ("parents", [5]), ("parents", None), ("time_ns", "x"),
    ("time_ns", float("inf")), ("time_ns", float("nan")), ("extra", [1]), ("extra", "x"), ("v", 2),
])
def test_malformed_commit_raises_integrity_error(field: str, value: object) -> None:
    obj = _valid_commit_json()
    obj[field] = value
    with pytest.raises(IntegrityError):
        codec.decode_commit(json.dumps(obj).encode())


@pytest.mark.parametrize("field", ["v", "tree", "parents", "author", "host", "time_ns", "message", "branch"])
def test_commit_missing_field_raises_integrity_error(field: str) -> None:
    obj = _valid_commit_json()
    del obj[field]
    with pytest.raises(IntegrityError):
        codec.decode_commit(json.dumps(obj).encode())


def test_every_truncation_of_an_encoding_is_rejected() -> None:
    tree = codec.encode_tree(Tree((Entry(name="a", type=FILE, mode=0o644, mtime_ns=1, size=1, chunks=(b"\1" * 32,)),)))
    commit = json.dumps(_valid_commit_json()).encode()
    for i in range(len(tree)):
        with pytest.raises(IntegrityError):
            codec.decode_tree(tree[:i])
    for i in range(len(commit)):
        with pytest.raises(IntegrityError):
            codec.decode_commit(commit[:i])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


def _check_tree(t: Tree) -> None:
    for e in t.entries:
        assert isinstance(e.name, str) and e.name not in ("", ".", "..") and "/" not in e.name
        assert e.type in (FILE, DIR, SYMLINK)
        assert all(isinstance(x, int) for x in (e.mode, e.mtime_ns, e.size, e.uid, e.gid))
        assert all(isinstance(c, bytes) for c in e.chunks)
        assert e.type != SYMLINK or isinstance(e.target, str)


@settings(max_examples=120)
@given(st.sampled_from(["n", "t", "m", "mt", "s", "u", "g", "c", "x", "l", "v", "e"]), st.integers(0, 2), json_values)
def test_any_mutated_tree_decodes_cleanly_or_raises_integrity_error(field: str, which: int, value: object) -> None:
    obj = _valid_tree_json()
    target = obj if field in ("v", "e") else obj["e"][which]  # type: ignore[index]
    target[field] = value
    data = json.dumps(obj).encode()
    with contextlib.suppress(IntegrityError):
        _check_tree(codec.decode_tree(data))


@settings(max_examples=120)
@given(st.sampled_from(["v", "tree", "parents", "author", "host", "time_ns", "message", "branch", "source", "extra"]),
       json_values)
def test_any_mutated_commit_decodes_cleanly_or_raises_integrity_error(field: str, value: object) -> None:
    obj = _valid_commit_json()
    obj[field] = value
    try:
        c = codec.decode_commit(json.dumps(obj).encode())
    except IntegrityError:
        return
    assert isinstance(c.time_ns, int) and all(isinstance(p, bytes) for p in c.parents)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in c.extra.items())


@settings(max_examples=120)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_another_exception(data: bytes) -> None:
    for decode in (codec.decode_tree, codec.decode_commit):
        with contextlib.suppress(IntegrityError):
            decode(data)


def test_a_tree_naming_an_entry_twice_is_neither_written_nor_read() -> None:
    """A file and a folder of one name (or two files) cannot both be restored: refused on both sides, so a
    writer's bug stops before it is stored and a stored one is reported as damage by verify."""
    twice = Tree((Entry("x", FILE, 0o644, 0, 1, chunks=(b"\1" * 32,)), Entry("x", DIR, 0o755, 0, subtree=b"\2" * 32)))
    with pytest.raises(IntegrityError, match="twice"):
        codec.encode_tree(twice)
    one = json.loads(codec.encode_tree(Tree(twice.entries[:1])))
    one["e"].append({**one["e"][0]})
    with pytest.raises(IntegrityError, match="twice"):
        codec.decode_tree(json.dumps(one, separators=(",", ":"), sort_keys=True).encode())
