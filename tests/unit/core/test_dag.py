"""Version names: BRANCH~N, first-parent walks, ancestry order, and branch/tag name validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.core.dag import ancestors, is_ancestor, split_tilde, validate_ref_name, walk_first_parent
from strongroom.core.model import Commit
from strongroom.errors import InputError


def cid(n: int) -> bytes:
    return n.to_bytes(32, "big")


def graph(spec: dict[int, tuple[int, list[int]]]) -> dict[bytes, Commit]:
    """{id: (time, parents)} → commits."""
    return {
        cid(k): Commit(tree=b"\0" * 32, parents=tuple(cid(p) for p in ps), author="a", host="h", time_ns=t,
                       message=str(k), branch="main")
        for k, (t, ps) in spec.items()
    }


@pytest.mark.parametrize("ref,expected", [
    ("main", ("main", 0)),
    ("main~0", ("main", 0)),
    ("main~3", ("main", 3)),
    ("feature/x~12", ("feature/x", 12)),
    ("deadbeefcafe~1", ("deadbeefcafe", 1)),
    ("main~", ("main~", 0)),
    ("main~x", ("main~x", 0)),
    ("~3", ("~3", 0)),
    ("a~1~2", ("a~1", 2)),
])
def test_split_tilde(ref: str, expected: tuple[str, int]) -> None:
    assert split_tilde(ref) == expected


def test_walk_first_parent_follows_first_parents_only() -> None:
    # 4 is a merge of 3 (first parent) and 5 (second); 5's line must never be taken
    g = graph({1: (1, []), 2: (2, [1]), 3: (3, [2]), 5: (5, [1]), 4: (6, [3, 5])})
    assert walk_first_parent(cid(4), 0, g.__getitem__, "main") == cid(4)
    assert walk_first_parent(cid(4), 1, g.__getitem__, "main") == cid(3)
    assert walk_first_parent(cid(4), 3, g.__getitem__, "main") == cid(1)


def test_walk_past_the_root_is_an_input_error() -> None:
    g = graph({1: (1, []), 2: (2, [1])})
    with pytest.raises(InputError, match="fewer than 2"):
        walk_first_parent(cid(2), 2, g.__getitem__, "main")


def test_ancestors_newest_first_each_once() -> None:
    # diamond: 1 ← 2, 1 ← 3, (2, 3) ← 4; times out of id order on purpose
    g = graph({1: (10, []), 2: (30, [1]), 3: (20, [1]), 4: (40, [2, 3])})
    loads: list[bytes] = []

    def load(x: bytes) -> Commit:
        loads.append(x)
        return g[x]

    order = [c for c, _ in ancestors([cid(4)], load)]
    assert order == [cid(4), cid(2), cid(3), cid(1)]
    assert len(loads) == len(set(loads))  # each commit loaded once


def test_ancestors_of_several_heads_merge_by_time() -> None:
    g = graph({1: (1, []), 2: (2, [1]), 3: (5, [2]), 4: (3, [1]), 5: (4, [4])})
    order = [c for c, _ in ancestors([cid(3), cid(5), cid(3)], g.__getitem__)]
    assert order == [cid(3), cid(5), cid(4), cid(2), cid(1)]


def test_is_ancestor() -> None:
    g = graph({1: (1, []), 2: (2, [1]), 3: (3, [1])})
    assert is_ancestor(cid(1), cid(2), g.__getitem__)
    assert is_ancestor(cid(2), cid(2), g.__getitem__)
    assert not is_ancestor(cid(2), cid(3), g.__getitem__)
    assert not is_ancestor(cid(3), cid(1), g.__getitem__)


@pytest.mark.parametrize("name", ["main", "dev", "feature-x", "v1.0", "release-2024_01", "a", "_x", "A.b.C", "x" * 200])
def test_valid_ref_names(name: str) -> None:
    assert validate_ref_name(name) == name


@pytest.mark.parametrize("name", [
    "", "..", "../x", "a/../b", "a/..", "x..y", "/abs", "a//b", "a/", "feature/x", ".hidden", "-rf", "a.", "a.lock",
    "a~1", "~", "a b", "a\tb", "a\nb",
    "main\n", "\nmain", "a\0", "a\x7f", "a\x1b[31m", "é", "a:b", "a*", "a?", "a[", "a\\b", "x" * 201,
])
def test_invalid_ref_names(name: str) -> None:
    with pytest.raises(InputError):
        validate_ref_name(name)


@given(st.text(min_size=1, max_size=20), st.characters(max_codepoint=0x1F), st.integers(0, 20))
def test_any_control_character_is_refused(base: str, ctl: str, pos: int) -> None:
    name = base[:pos] + ctl + base[pos:]
    with pytest.raises(InputError):
        validate_ref_name(name)
