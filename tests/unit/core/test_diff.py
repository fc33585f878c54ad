"""Tree diff: added, removed, modified and renamed files, with sizes, in path order."""

from __future__ import annotations

from strongroom.core.diff import Change, diff_flat
from strongroom.core.model import DIR, FILE, SYMLINK, Entry


def f(content: bytes, mode: int = 0o644, mtime: int = 1) -> Entry:
    """A file entry whose chunk list stands for its content."""
    return Entry(name="x", type=FILE, mode=mode, mtime_ns=mtime, size=len(content), chunks=(content.ljust(32, b"."),)
                 if content else ())


def link(target: str) -> Entry:
    return Entry(name="x", type=SYMLINK, mode=0o777, mtime_ns=1, target=target)


def test_identical_trees_have_no_changes() -> None:
    tree = {"a": f(b"one"), "d/b": f(b"two"), "l": link("a")}
    assert diff_flat(tree, dict(tree)) == []


def test_only_mtime_changed_is_not_a_change() -> None:
    assert diff_flat({"a": f(b"one", mtime=1)}, {"a": f(b"one", mtime=99)}) == []


def test_added_removed_modified_with_sizes() -> None:
    old = {"keep": f(b"same"), "gone": f(b"bye!"), "edit": f(b"v1")}
    new = {"keep": f(b"same"), "edit": f(b"version2"), "new": f(b"hello")}
    assert diff_flat(old, new) == [
        Change("modified", "edit", 8, "edit", 2),
        Change("removed", "gone", 4),
        Change("added", "new", 5),
    ]


def test_mode_change_is_a_modification() -> None:
    [c] = diff_flat({"run.sh": f(b"#!/bin/sh", 0o644)}, {"run.sh": f(b"#!/bin/sh", 0o755)})
    assert c.status == "modified"


def test_type_change_is_a_modification() -> None:
    [c] = diff_flat({"p": f(b"target")}, {"p": link("target")})
    assert c.status == "modified"


def test_symlink_retarget_is_a_modification() -> None:
    [c] = diff_flat({"l": link("a")}, {"l": link("b")})
    assert c.status == "modified" and c.path == "l"


def test_same_content_at_a_new_path_is_a_rename() -> None:
    old = {"a/data.bin": f(b"payload")}
    new = {"b/data.bin": f(b"payload")}
    assert diff_flat(old, new) == [Change("renamed", "b/data.bin", 7, "a/data.bin", 7)]


def test_renamed_symlink() -> None:
    assert diff_flat({"l1": link("t")}, {"l2": link("t")}) == [Change("renamed", "l2", 0, "l1", 0)]


def test_empty_files_are_never_paired_as_renames() -> None:
    # every empty file has the same content: pairing them would invent renames
    changes = diff_flat({"old.txt": f(b"")}, {"new.txt": f(b"")})
    assert sorted(c.status for c in changes) == ["added", "removed"]


def test_rename_with_an_edit_is_remove_plus_add() -> None:
    changes = diff_flat({"a": f(b"version 1")}, {"b": f(b"version 2!")})
    assert [(c.status, c.path) for c in changes] == [("removed", "a"), ("added", "b")]


def test_one_source_pairs_with_one_copy_only() -> None:
    changes = diff_flat({"a": f(b"dup")}, {"b": f(b"dup"), "c": f(b"dup")})
    statuses = sorted((c.status, c.path) for c in changes)
    assert statuses == [("added", "c"), ("renamed", "b")]
    assert next(c for c in changes if c.status == "renamed").old_path == "a"


def test_changes_are_sorted_by_path() -> None:
    old = {p: f(p.encode() * 3) for p in ["z", "m", "b"]}
    new = {p: f(p.encode() * 5) for p in ["y", "m", "a"]}
    paths = [c.path for c in diff_flat(old, new)]
    assert paths == sorted(paths)
    assert {c.path for c in diff_flat(old, new)} == {"a", "b", "m", "y", "z"}


def d(mode: int = 0o755, mtime: int = 1) -> Entry:
    return Entry(name="x", type=DIR, mode=mode, mtime_ns=mtime)


def test_folders_show_when_files_do_not_say_it_an_empty_one_or_a_mode() -> None:
    from strongroom.core.diff import diff_folders

    old = {"a": d(), "a/f": f(b"1"), "gone": d(), "keep": d(0o755, mtime=1), "locked": d(0o755)}
    new = {
        "a": d(mtime=9),  # only its mtime moved (a file in it changed): not a change
        "a/f": f(b"2"),
        "keep": d(0o755, mtime=5),
        "locked": d(0o700),
        "new": d(),  # an empty folder added
        "full": d(),  # a folder added with a file: the file says it
        "full/x": f(b"x"),
        "deep": d(),
        "deep/er": d(),  # only the empty leaf is listed
    }
    assert diff_folders(old, new) == [
        Change("added", "deep/er/", 0),
        Change("removed", "gone/", 0),
        Change("modified", "locked/", 0),
        Change("added", "new/", 0),
    ]
    assert diff_folders(new, new) == []
