"""Damage (RELIABILITY T04, T07, T10) beyond the matrix: flip a byte in each kind of object, delete an index
file, put back an older refs file, and what happens next. `verify` must exit 1 — never 0 — and name exactly
the versions and paths that the damage reaches; the keyless `--structure` check must catch every flipped or
truncated pack and index file; `repair index` must recover everything still readable; every byte of refs,
config and key slots is flipped in turn. The kind x damage matrix itself (T04) and the keyless writer's
moves (T05) are table-driven in test_damage_matrix.py, which also covers the truncated and deleted pack."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from strongroom import Strongroom
from strongroom.backends.local import LocalBackend
from strongroom.errors import IntegrityError, ProblemFound, WrongPassphrase
from strongroom.store import check
from tests.conftest import PASSPHRASE, Cli, tree_snapshot
from tests.faults.conftest import WHOLE, LayeredRepo, VerifyOutput, flip_byte, parse_verify


def verify(cli: Cli, *flags: str, passphrase: str | None = PASSPHRASE) -> VerifyOutput:
    r = cli("verify", *flags, passphrase=passphrase)
    assert "Traceback" not in r.err
    return parse_verify(r.code, r.out, r.err)


def damaged_names(v: VerifyOutput) -> set[str]:
    return {what for what, _ in v.damaged}


def assert_restores(layered: LayeredRepo, tmp_path: Path) -> None:
    """Every version checks out byte for byte (library, in-process)."""
    sr = Strongroom.open(str(layered.path), PASSPHRASE)
    for i, (vid, src) in enumerate(zip(layered.versions, layered.sources, strict=True)):
        dest = tmp_path / f"restored-{i}"
        sr.checkout(vid, str(dest))
        assert tree_snapshot(dest) == tree_snapshot(src)


def test_clean_repository_verifies_in_every_mode(layered: LayeredRepo, cli: Cli) -> None:
    # The baseline every damage case is compared with: the same repository, undamaged, is clean.
    for flags in ((), ("--full",)):
        v = verify(cli, *flags)
        assert (v.code, v.damaged, v.affected) == (0, [], {})
    assert verify(cli, "--structure", passphrase=None).code == 0


def test_flipped_byte_in_a_chunk_names_every_file_holding_it(layered: LayeredRepo, cli: Cli) -> None:
    v1, v2, v3 = layered.versions
    chunk = layered.layout[v1].files["a/unique.bin"][0]
    pack, offset, length = layered.pack_of(chunk)
    flip_byte(layered.file(pack), offset + length // 2)
    expected = layered.expected_affected({chunk})
    # The same content is at two paths, and v3 replaced one of them.
    assert expected == {
        v1: {"a/unique.bin", "dup/copy.bin"},
        v2: {"a/unique.bin", "dup/copy.bin"},
        v3: {"dup/copy.bin"},
    }

    full = verify(cli, "--full")
    assert full.code == 1
    assert pack in damaged_names(full)
    assert full.affected == expected

    r = cli("--json", "verify", "--full")
    assert r.code == 1
    doc = json.loads(r.out)
    assert doc["ok"] is False and doc["mode"] == "full"
    assert pack in {d["object"] for d in doc["damage"]}
    assert {k: set(v) for k, v in doc["affected"].items()} == expected

    assert verify(cli, "--sample", "100%").code == 1
    structure = verify(cli, "--structure", passphrase=None)
    assert structure.code == 1 and damaged_names(structure) == {pack}

    # Reading the damaged file fails loudly instead of returning altered bytes.
    r = cli("cat", v1, "dup/copy.bin")
    assert r.code == 1
    assert r.out_bytes != layered.contents[0]["dup/copy.bin"]
    # Files that do not hold the chunk still read fine.
    assert cli("cat", v1, "b/keep.bin").out_bytes == layered.contents[0]["b/keep.bin"]


def test_flipped_byte_in_a_pack_header(layered: LayeredRepo, cli: Cli, tmp_path: Path) -> None:
    v1 = layered.versions[0]
    pack, _, _ = layered.pack_of(layered.layout[v1].files["b/keep.bin"][0])
    size = layered.file(pack).stat().st_size
    flip_byte(layered.file(pack), size - 4 - 8)  # inside the sealed header, just before its length

    full = verify(cli, "--full")
    assert full.code == 1
    assert any(what == pack and "header" in why for what, why in full.damaged)
    assert full.affected == {}  # the blobs themselves are intact: no file is lost
    structure = verify(cli, "--structure", passphrase=None)
    assert structure.code == 1 and damaged_names(structure) == {pack}

    # Repairing the index cannot read that header: it keeps the old entries, so nothing is lost.
    r = cli("repair", "index")
    assert r.code == 0, r.err
    assert pack in r.err
    assert_restores(layered, tmp_path)
    assert verify(cli, "--full").code == 1  # the pack is still damaged, and verify still says so


def test_flipped_byte_in_an_index_file_then_repair(layered: LayeredRepo, cli: Cli, tmp_path: Path) -> None:
    v1 = layered.versions[0]
    pack, _, _ = layered.pack_of(layered.layout[v1].files["b/keep.bin"][0])
    index_name, listed = layered.index_file_listing(pack)
    flip_byte(layered.file(index_name), layered.file(index_name).stat().st_size // 2)
    expected = layered.expected_affected(listed)
    assert expected[v1] == {WHOLE}

    for flags in ((), ("--full",)):
        v = verify(cli, *flags)
        assert v.code == 1
        assert index_name in damaged_names(v)
        assert v.affected == expected
    structure = verify(cli, "--structure", passphrase=None)
    assert structure.code == 1 and damaged_names(structure) == {index_name}

    r = cli("repair", "index")
    assert r.code == 0, r.err
    full = verify(cli, "--full")
    assert (full.code, full.damaged, full.affected) == (0, [], {})
    assert_restores(layered, tmp_path)


def test_deleted_index_file_then_repair_recovers_everything(layered: LayeredRepo, cli: Cli, tmp_path: Path) -> None:
    v1 = layered.versions[0]
    pack, _, _ = layered.pack_of(layered.layout[v1].files["a/unique.bin"][0])
    index_name, listed = layered.index_file_listing(pack)
    layered.file(index_name).unlink()

    v = verify(cli)
    assert v.code == 1
    assert v.affected == layered.expected_affected(listed)
    assert verify(cli, "--full").code == 1

    r = cli("repair", "index")
    assert r.code == 0, r.err
    assert verify(cli, "--full").code == 0
    assert_restores(layered, tmp_path)


def test_flipped_byte_in_a_shared_tree(layered: LayeredRepo, cli: Cli) -> None:
    v1, v2, _v3 = layered.versions
    tree = layered.layout[v1].dirs["dup"]
    assert all(layered.layout[v].dirs["dup"] == tree for v in layered.versions)  # one tree, three versions
    pack, offset, length = layered.pack_of(tree)
    flip_byte(layered.file(pack), offset + length - 3)  # inside the GCM tag

    expected = {v: {"dup/"} for v in layered.versions}
    assert layered.expected_affected({tree}) == expected
    for flags in ((), ("--full",)):
        v = verify(cli, *flags)
        assert v.code == 1, f"verify {flags} exited 0 on a damaged tree"
        assert v.damaged
        assert v.affected == expected
    assert cli("ls", v2, "dup").code == 1


@pytest.mark.parametrize("which", [1, 2], ids=["middle-version", "head-version"])
def test_flipped_byte_in_a_commit(layered: LayeredRepo, cli: Cli, which: int) -> None:
    vid = layered.versions[which]
    cid = bytes.fromhex(vid)
    pack, offset, length = layered.pack_of(cid)
    flip_byte(layered.file(pack), offset + length // 2)
    expected = layered.expected_affected({cid})
    assert expected == {vid: {WHOLE}}

    for flags in ((), ("--full",)):
        v = verify(cli, *flags)
        assert v.code == 1
        assert v.affected.get(vid) == {WHOLE}
        # Versions whose objects are intact and still reachable are not reported.
        assert set(v.affected) <= set(expected)
    r = cli("log")
    assert r.code == 1 and "Traceback" not in r.err


def _assert_open_refuses(path: Path) -> None:
    with pytest.raises(ProblemFound) as exc:
        Strongroom.open(str(path), PASSPHRASE).verify()
    assert not isinstance(exc.value, WrongPassphrase)


def test_every_flipped_byte_in_refs_is_refused(layered: LayeredRepo, cli: Cli) -> None:
    refs = layered.file("refs")
    size = refs.stat().st_size
    for off in range(size):
        flip_byte(refs, off)
        _assert_open_refuses(layered.path)
        flip_byte(refs, off)  # undo
    flip_byte(refs, size // 2)
    r = cli("verify")
    assert r.code == 1 and "refs" in r.err and "Traceback" not in r.err


def test_every_flipped_byte_in_config_is_refused(layered: LayeredRepo, cli: Cli) -> None:
    config = layered.file("config")
    size = config.stat().st_size
    for off in range(size):
        for mask in (0x01, 0x80):
            flip_byte(config, off, mask)
            _assert_open_refuses(layered.path)
            flip_byte(config, off, mask)
    Strongroom.open(str(layered.path), PASSPHRASE)  # undone: opens again
    flip_byte(config, size // 2)
    r = cli("verify")
    assert r.code == 1 and "Traceback" not in r.err


def test_every_flipped_byte_in_a_key_file_is_damage_not_a_wrong_passphrase(layered: LayeredRepo, cli: Cli) -> None:
    (key,) = sorted((layered.path / "keys").iterdir())
    name = f"keys/{key.name}"
    size = key.stat().st_size
    backend = LocalBackend(str(layered.path))
    for off in range(size):
        flip_byte(key, off)
        with pytest.raises(IntegrityError):
            Strongroom.open(str(layered.path), PASSPHRASE)
        report = check.verify_structure(backend)
        assert {d.what for d in report.damage} == {name}, off
        flip_byte(key, off)
    flip_byte(key, size // 3)
    r = cli("verify")
    assert r.code == 1 and "key slot is damaged" in r.err and "wrong passphrase" not in r.err
    assert verify(cli, "--structure", passphrase=None).code == 1


def test_older_refs_put_back_is_a_rollback(layered: LayeredRepo, cli: Cli, tmp_path: Path) -> None:
    old_refs = layered.file("refs").read_bytes()
    src = layered.sources[2]
    (src / "more.txt").write_bytes(b"a fourth version\n")
    r = cli("commit", str(src), "-m", "v4")
    assert r.code == 0, r.err
    v4 = r.out.strip()
    layered.file("refs").write_bytes(old_refs)

    for args in (("verify",), ("log",)):
        r = cli(*args)
        assert r.code == 1, args
        assert "rolled back" in r.err and len(r.err.splitlines()) == 1
    assert cli("trust-current").code == 0
    assert verify(cli, "--full").code == 0
    heads = json.loads(cli("--json", "log").out)
    assert [h["id"] for h in heads] == list(reversed(layered.versions))
    assert v4 not in {h["id"] for h in heads}


def test_structure_check_catches_every_flip_and_truncation_without_a_key(layered: LayeredRepo) -> None:
    backend = LocalBackend(str(layered.path))
    assert check.verify_structure(backend).ok
    names = [n for prefix in ("data", "index") for n, _ in backend.list(prefix)] + ["refs"]  # refs: checksum
    assert len(names) >= 8  # 2 packs and 1 index file per version, and refs
    rng = random.Random(7)
    for name in names:
        path = layered.file(name)
        size = path.stat().st_size
        for off in [0, size - 1, *rng.sample(range(size), min(size, 6))]:
            mask = 1 << rng.randrange(8)
            flip_byte(path, off, mask)
            report = check.verify_structure(backend)
            assert {d.what for d in report.damage} == {name}, (name, off)
            flip_byte(path, off, mask)  # undo
        original = path.read_bytes()
        path.write_bytes(original[: size - 1])
        assert {d.what for d in check.verify_structure(backend).damage} == {name}
        path.write_bytes(original)
    assert check.verify_structure(backend).ok


def test_repair_after_a_damaged_pack_loses_only_that_pack(layered: LayeredRepo, cli: Cli, tmp_path: Path) -> None:
    """T10: with one pack gone and the index rebuilt, only what that pack held is reported lost."""
    v1 = layered.versions[0]
    pack, _, _ = layered.pack_of(layered.layout[v1].files["a/unique.bin"][0])
    lost = layered.pack_entries(pack)
    layered.file(pack).unlink()
    for name in list((layered.path / "index").iterdir()):
        name.unlink()  # and every index file with it
    r = cli("repair", "index")
    assert r.code == 0, r.err
    v = verify(cli, "--full")
    assert v.code == 1
    assert v.affected == layered.expected_affected(lost)
    # Files that never depended on that pack still restore.
    sr = Strongroom.open(str(layered.path), PASSPHRASE)
    v3 = layered.versions[2]
    assert sr.read(v3, "new/added.bin") == layered.contents[2]["new/added.bin"]
    assert sr.read(v3, "a/unique.bin") == layered.contents[2]["a/unique.bin"]
    shutil.rmtree(layered.path)
