"""Merge properties (issue 4): random edits on two branches, merged through the repository and checked
against a model of three-way merging; plus algebraic laws of the pure merge plan."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom import Strongroom
from strongroom.core.merge import merge_folders, three_way
from strongroom.core.model import DIR, FILE, Entry
from strongroom.errors import MergeConflict
from tests.conftest import PASSPHRASE

PATHS = ["a", "b", "c", "d1/x", "d1/y", "d2/z"]
contents = st.sampled_from([b"1", b"2", b"3", b"4"])
trees = st.dictionaries(st.sampled_from(PATHS), contents, min_size=1)
edits = st.dictionaries(st.sampled_from(PATHS), st.one_of(st.none(), contents))  # None deletes


def apply(tree: dict[str, bytes], edit: dict[str, bytes | None]) -> dict[str, bytes]:
    out = dict(tree)
    for path, value in edit.items():
        if value is None:
            out.pop(path, None)
        else:
            out[path] = value
    return out


def model(
    base: dict[str, bytes], ours: dict[str, bytes], theirs: dict[str, bytes]
) -> tuple[dict[str, bytes], set[str]]:
    """Three-way merge by definition: a side 'changed' a path when its value differs from the base's."""
    merged: dict[str, bytes] = {}
    conflicts: set[str] = set()
    for path in base.keys() | ours.keys() | theirs.keys():
        b, o, t = base.get(path), ours.get(path), theirs.get(path)
        ours_changed, theirs_changed = o != b, t != b
        if ours_changed and theirs_changed and o != t:
            conflicts.add(path)
            continue
        value = t if theirs_changed else o
        if value is not None:
            merged[path] = value
    return merged, conflicts


def entries(tree: dict[str, bytes]) -> dict[str, Entry]:
    return {p: Entry(p.rsplit("/", 1)[-1], FILE, 0o644, 0, len(v), chunks=(v,)) for p, v in tree.items()}


@given(trees, edits, edits)
def test_plan_matches_the_model(
    base: dict[str, bytes], e1: dict[str, bytes | None], e2: dict[str, bytes | None]
) -> None:
    ours, theirs = apply(base, e1), apply(base, e2)
    merged, conflicts = model(base, ours, theirs)
    plan = three_way(entries(base), entries(ours), entries(theirs))
    assert set(plan.conflicts) == conflicts
    assert {p: e.chunks[0] for p, e in plan.merged.items()} == merged


@given(trees, edits)
def test_merge_laws(base: dict[str, bytes], e: dict[str, bytes | None]) -> None:
    x = entries(apply(base, e))
    b = entries(base)
    assert three_way(b, x, b).merged == x  # nothing changed on their side: ours stands
    assert three_way(b, b, x).merged == x  # nothing changed on our side: theirs is taken
    assert three_way(b, x, x).merged == x  # both made the same change


@given(trees, edits, edits)
def test_strategies_resolve_every_conflict_towards_one_side(
    base: dict[str, bytes], e1: dict[str, bytes | None], e2: dict[str, bytes | None]
) -> None:
    ours, theirs = apply(base, e1), apply(base, e2)
    _, conflicts = model(base, ours, theirs)
    for strategy, side in (("ours", ours), ("theirs", theirs)):
        plan = three_way(entries(base), entries(ours), entries(theirs), strategy)
        assert plan.conflicts == []
        got = {p: e.chunks[0] for p, e in plan.merged.items()}
        for path in conflicts:
            assert got.get(path) == side.get(path)


def _write(root: Path, tree: dict[str, bytes]) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for path, data in tree.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)


def _read(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trees, edits, edits)
def test_merging_two_branches_in_a_repository(
    base: dict[str, bytes], e1: dict[str, bytes | None], e2: dict[str, bytes | None]
) -> None:
    ours, theirs = apply(base, e1), apply(base, e2)
    merged, conflicts = model(base, ours, theirs)
    work = Path(tempfile.mkdtemp())
    try:
        repo = Strongroom.init(str(work / "repo"), PASSPHRASE)
        _write(work / "src", base)
        repo.commit(str(work / "src"))
        from strongroom.service import branches, merge

        branches.branch_create(repo._session, "theirs")
        _write(work / "src", ours)
        repo.commit(str(work / "src"), branch="main")
        _write(work / "src", theirs)
        repo.commit(str(work / "src"), branch="theirs")
        try:
            merge.merge(repo._session, "theirs", "main")
        except MergeConflict:
            assert conflicts
            return
        assert not conflicts
        repo.checkout("main", str(work / "out"))
        assert _read(work / "out") == merged
    finally:
        shutil.rmtree(work, ignore_errors=True)


FOLDERS = ["e1", "e2", "d1", "d1/e3"]
folder_sets = st.sets(st.sampled_from(FOLDERS))


def folder_entries(paths: set[str]) -> dict[str, Entry]:
    return {p: Entry(p.rsplit("/", 1)[-1], DIR, 0o755, 0) for p in paths}


@given(folder_sets, folder_sets, folder_sets, trees)
def test_folders_merge_by_presence_and_hold_every_merged_file(
    base: set[str], ours: set[str], theirs: set[str], files: dict[str, bytes]
) -> None:
    folders, conflicts = merge_folders(
        folder_entries(base), folder_entries(ours), folder_entries(theirs), entries(files)
    )
    held = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    kept = {p for p in base | ours | theirs if ((p in theirs) if (p in ours) == (p in base) else (p in ours))}
    assert conflicts == []  # the sampled file paths never meet a folder path
    assert set(folders) == {p for p in held if p in base | ours | theirs} | kept
    assert all(folders[p].type == DIR for p in folders)


folder_modes = st.dictionaries(st.sampled_from(FOLDERS), st.sampled_from([0o700, 0o750, 0o755]))


@given(folder_modes, folder_modes, folder_modes, st.sampled_from([None, "ours", "theirs"]))
def test_a_folder_on_both_sides_takes_its_mode_by_the_three_way_rule(
    base: dict[str, int], ours: dict[str, int], theirs: dict[str, int], strategy: str | None
) -> None:
    def dirs(modes: dict[str, int]) -> dict[str, Entry]:
        return {p: Entry(p.rsplit("/", 1)[-1], DIR, mode, 0) for p, mode in modes.items()}

    folders, conflicts = merge_folders(dirs(base), dirs(ours), dirs(theirs), {}, strategy)
    expected_conflicts = []
    for p in sorted(ours.keys() & theirs.keys()):
        b, o, t = base.get(p), ours[p], theirs[p]
        if o != t and o != b and t != b:  # changed differently on both sides (added counts as changed)
            if strategy is None:
                expected_conflicts.append(p)
            else:
                assert folders[p].mode == (o if strategy == "ours" else t)
        else:
            assert folders[p].mode == (t if o == b else o)
    assert conflicts == expected_conflicts
