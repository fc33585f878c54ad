"""A full disk (ENOSPC) under the repository, a checkout's destination or standard output: one line naming
the refusal, exit 1 (the machine's state, not a bug, and not damage), nothing stored lost or moved, no file
left half written, and the same command works once there is room again.

The small disk is a tmpfs mounted with a size limit (`small_disk` in conftest.py), which needs root (mount).
Under CI=true a machine that cannot mount one fails these tests; elsewhere they are skipped with the reason."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from tests.conftest import Cli, CliResult, make_tree
from tests.faults.conftest import fill_disk, free_disk

MiB = 1 << 20


def one_error_line(r: CliResult, *words: str) -> str:
    assert "Traceback" not in r.err and "internal error" not in r.err and "integrity" not in r.err, r.err
    (line,) = r.err.strip().splitlines()
    for w in words:
        assert w in line, line
    return line


def source(root: Path, big_mib: int) -> Path:
    rng = random.Random(big_mib)
    return make_tree(
        root,
        {
            "big.bin": rng.randbytes(big_mib * MiB),  # random: it compresses to its own size
            "notes/a.txt": b"alpha\n" * 2000,
            "notes/b.txt": b"beta\n" * 3000,
        },
    )


def versions(cli: Cli) -> list[str]:
    r = cli("log")
    assert r.code == 0, r.err
    return r.out.splitlines()


def test_a_commit_that_fills_the_repository_disk_moves_nothing(cli: Cli, small_disk: Path, tmp_path: Path) -> None:
    cli.repo = small_disk / "repo"
    assert cli("init").code == 0
    src = source(tmp_path / "src", 1)
    assert cli("commit", str(src), "-m", "fits").code == 0
    before = versions(cli)

    (src / "big.bin").write_bytes(random.Random(7).randbytes(40 * MiB))  # more than the disk holds
    r = cli("commit", str(src), "-m", "too big")
    assert r.code == 1, r.err
    one_error_line(r, "storage error", "No space left on device")
    assert versions(cli) == before
    assert cli("verify", "--full").code == 0

    (src / "big.bin").write_bytes(random.Random(8).randbytes(2 * MiB))
    r = cli("commit", str(src), "-m", "fits again")
    assert r.code == 0, r.err
    assert len(versions(cli)) == len(before) + 1
    r = cli("verify", "--full")
    assert r.code == 0, r.err
    assert cli("cat", "main", "big.bin").out_bytes == (src / "big.bin").read_bytes()


def test_a_checkout_onto_a_full_disk_leaves_no_file_half_written(cli: Cli, small_disk: Path, tmp_path: Path) -> None:
    assert cli("init").code == 0
    src = source(tmp_path / "src", 30)  # 30 MiB: more than the destination holds
    assert cli("commit", str(src)).code == 0

    dest = small_disk / "out"
    r = cli("checkout", "main", str(dest))
    assert r.code == 1, r.err
    one_error_line(r, "could not be written into", "big.bin", "No space left on device")
    restored = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert "big.bin" not in restored  # removed, not left at its name with part of its bytes
    assert restored == {"notes/a.txt", "notes/b.txt"}
    for rel in restored:
        assert (dest / rel).read_bytes() == (src / rel).read_bytes()
    assert cli("verify", "--full").code == 0

    r = cli("checkout", "main", str(tmp_path / "elsewhere"))
    assert r.code == 0, r.err
    assert (tmp_path / "elsewhere" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


def test_cat_into_a_full_disk_is_one_line(cli: Cli, small_disk: Path, tmp_path: Path) -> None:
    assert cli("init").code == 0
    src = source(tmp_path / "src", 30)
    assert cli("commit", str(src)).code == 0
    r = cli("cat", "main", "big.bin", stdout_to=small_disk / "big.copy")
    assert r.code == 1, r.err
    one_error_line(r, "a write was refused", "No space left on device")


def test_audit_rebuild_on_a_full_disk_keeps_the_catalog(cli: Cli, small_disk: Path, tmp_path: Path) -> None:
    """A rebuild that could not write set the whole catalog aside as 'broken' and left an empty one: the next
    command started a new audit log in place of the good one."""
    cli.env["STRONGROOM_STATE_DIR"] = str(small_disk / "state")
    assert cli("init").code == 0
    src = source(tmp_path / "src", 1)
    for i in range(3):
        assert cli("commit", str(src), "-m", f"v{i}").code == 0
    catalogs = small_disk / "state" / "catalogs"
    before = sorted(p.name for p in catalogs.iterdir())

    fill_disk(small_disk, 8192)
    r = cli("audit", "rebuild")
    assert r.code == 1, r.err
    one_error_line(r, "catalog")
    free_disk(small_disk)

    assert not any(".broken-" in p.name for p in catalogs.iterdir())
    assert [p for p in before if p.endswith(".sqlite")] == sorted(p.name for p in catalogs.glob("*.sqlite"))
    r = cli("--json", "audit", "verify")
    assert r.code == 0, r.err
    assert cli("branch", "create", "after", "--from", "main").code == 0
    events = json.loads(cli("--json", "audit", "log").out)
    assert [e["action"] for e in events].count("commit") == 3


def test_a_commit_whose_local_cache_cannot_be_saved_stands(cli: Cli, small_disk: Path, tmp_path: Path) -> None:
    """The version was published, then saving the file cache failed on the full cache disk: the command said
    'internal error' and the user would commit again. Now it exits 0 with a note. A catalog that cannot take
    the audit event fails the command (fail closed) but says the commit is done."""
    cli.env["STRONGROOM_CACHE_DIR"] = str(small_disk / "cache")
    assert cli("init").code == 0
    src = source(tmp_path / "src", 1)
    assert cli("commit", str(src), "-m", "v1").code == 0
    (src / "notes" / "c.txt").write_bytes(b"new\n")
    fill_disk(small_disk)
    r = cli("commit", str(src), "-m", "v2")
    assert r.code == 0, r.err
    assert "the version is stored, but the local cache could not be saved" in r.err
    assert len(versions(cli)) == 2
    free_disk(small_disk)

    cli.env["STRONGROOM_STATE_DIR"] = str(small_disk / "state")
    assert cli("log").code == 0  # the catalog and client state move to the small disk
    (src / "notes" / "d.txt").write_bytes(b"newer\n")
    fill_disk(small_disk)
    r = cli("commit", str(src), "-m", "v3")
    free_disk(small_disk)
    assert r.code == 1, r.err
    one_error_line(r, "commit completed, but its audit event could not be recorded")
    assert len(versions(cli)) == 3


def test_a_full_repository_can_still_be_read(cli: Cli, small_disk: Path, tmp_path: Path) -> None:
    """Reading takes a reader lock, a file in the repository: on a full disk checkout, cat and verify failed
    with 'internal error', so no data could be restored out of a full repository."""
    cli.repo = small_disk / "repo"
    assert cli("init").code == 0
    src = source(tmp_path / "src", 2)
    assert cli("commit", str(src)).code == 0
    fill_disk(small_disk)
    for args in (("checkout", "main", str(tmp_path / "out")), ("verify", "--full"), ("cat", "main", "notes/a.txt")):
        r = cli(*args)
        assert r.code == 0, (args, r.err)
        assert "strongroom: warning: the repository's disk is full: reading without a reader lock" in r.err, r.err
    assert (tmp_path / "out" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    free_disk(small_disk)
    r = cli("verify")
    assert r.code == 0 and "warning" not in r.err, r.err


def key_slots(cli: Cli, passphrase: str) -> list[str] | None:
    """The key slots' ids, read with ``passphrase``; None when it does not open the repository."""
    r = cli("--json", "key", "list", passphrase=passphrase)
    if r.code != 0:
        assert "wrong passphrase" in r.err, r.err
        return None
    return [s["id"] for s in json.loads(r.out)["slots"]]


def test_a_passphrase_change_stopped_by_a_full_disk_leaves_only_the_old_passphrase(cli: Cli, small_disk: Path) -> None:
    """With less and less room short of what the change needs, every step it can stop at: a change that fails
    leaves exactly the old passphrase working (not the new one as well, unknown to the user who was told it
    failed); one that succeeds leaves exactly the new one."""
    cli.repo = small_disk / "repo"
    assert cli("init", passphrase="pw-0").code == 0
    current, failed = "pw-0", 0
    for step, leave in enumerate(range(0, 10 * 4096, 4096)):
        new = f"pw-{step + 1}"
        fill_disk(small_disk, leave)
        r = cli("key", "change-passphrase", passphrase=current, extra_env={"STRONGROOM_NEW_PASSPHRASE": new})
        free_disk(small_disk)
        if r.code != 0:
            failed += 1
            assert r.code == 1, r.err
            one_error_line(r, "No space left on device")
        old, current = current, new if r.code == 0 else current
        slots = key_slots(cli, current)
        assert slots is not None and len(slots) == 1, (leave, r.err, slots)
        assert key_slots(cli, new if r.code != 0 else old) is None, (leave, r.err)
    assert failed and current != "pw-0"  # both outcomes were met


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def run_until_it_fits(
    cli: Cli, disk: Path, leaves: Iterable[int], args: tuple[str, ...], check: Callable[[int, CliResult], None]
) -> None:
    """Run the command with the disk filled to leave each of ``leaves`` bytes free in turn, until it succeeds:
    each failure must be one line naming ENOSPC, exit 1, and pass ``check``; at least one attempt must fail and
    the last succeed."""
    failed = 0
    for leave in leaves:
        fill_disk(disk, leave)
        r = cli(*args)
        free_disk(disk)
        if r.code == 0:
            break
        failed += 1
        assert r.code == 1, r.err
        one_error_line(r, "No space left on device")
        check(leave, r)
    assert failed and r.code == 0, r.err  # stopped at least once, then done


def init_until_it_fits(cli: Cli, disk: Path, steps: int, check: Callable[[int, CliResult], None]) -> None:
    """`init` with the disk filled to 0, 4 KiB, 8 KiB, ... free, until it succeeds (``run_until_it_fits``)."""
    run_until_it_fits(cli, disk, range(0, steps * 4096, 4096), ("init",), check)


@pytest.mark.parametrize("made", [False, True], ids=["new-folder", "empty-folder"])
def test_an_init_stopped_by_a_full_disk_leaves_nothing_and_runs_again(cli: Cli, small_disk: Path, made: bool) -> None:
    """However far init got before the disk was full, it leaves the disk as it found it (a folder it created is
    removed, an empty one that was there stays, empty): no keys, keyring or refs without a config, which every
    command took for a damaged repository and a second init refused."""
    cli.repo = small_disk / "datasets" / "repo"
    if made:
        cli.repo.mkdir(parents=True)
    before = listing(small_disk)

    def unchanged(leave: int, r: CliResult) -> None:
        assert listing(small_disk) == before, (leave, r.err)

    init_until_it_fits(cli, small_disk, 32, unchanged)
    assert cli("log").code == 0


def test_a_signing_key_stopped_by_a_full_disk_leaves_no_half_key(cli: Cli, small_disk: Path, tmp_path: Path) -> None:
    """The signing key folder on a full disk: an init that cannot write the key's record leaves no private key
    without it either (it made every later commit, and init, refuse 'a signing key named ... already exists'),
    says so in one line, and runs again once there is room; the key it then makes signs commits."""
    config = small_disk / "config"
    cli.env["STRONGROOM_CONFIG_DIR"] = str(config)

    def no_half_key(leave: int, r: CliResult) -> None:
        assert not [p for p in config.rglob("*") if p.is_file()], (leave, r.err)
        assert not cli.repo.exists()

    init_until_it_fits(cli, small_disk, 8, no_half_key)
    src = source(tmp_path / "src", 1)
    assert cli("commit", str(src), "-m", "signed").code == 0
    r = cli("--json", "log")
    assert r.code == 0 and json.loads(r.out)[0]["signature"] == "valid", r.out


@pytest.mark.parametrize("made", [False, True], ids=["new-folder", "empty-folder"])
def test_a_workspace_create_stopped_by_a_full_disk_leaves_nothing(
    cli: Cli, small_disk: Path, tmp_path: Path, made: bool
) -> None:
    """A workspace that cannot be created on a full disk: one line, exit 1, and the destination as it was (the
    folders it made removed, an empty one it was given emptied), so the same command runs again once there is
    room; it left files and no metadata, and the retry said 'destination is not empty'."""
    assert cli("init").code == 0
    assert cli("commit", str(source(tmp_path / "src", 1))).code == 0
    dest = small_disk / "work" / "ws"
    if made:
        dest.mkdir(parents=True)
    before = listing(small_disk)

    def left_nothing(leave: int, r: CliResult) -> None:
        assert listing(small_disk) == before, (leave, r.err)
        assert "work" not in cli("branch", "list").out

    leaves = [0, 4096, 64 << 10, 512 << 10, 1 * MiB, 4 * MiB]
    run_until_it_fits(cli, small_disk, leaves, ("workspace", "create", str(dest), "--branch", "work"), left_nothing)
    r = cli("status", str(dest))
    assert r.code == 0, r.err


def test_workspace_metadata_on_a_full_disk_is_one_line(cli: Cli, small_disk: Path, tmp_path: Path) -> None:
    """A workspace commit or switch that cannot write the workspace's metadata: one line, exit 1 (it was
    'internal error (a bug)'), no temporary metadata file left, and the same command works once there is room."""
    assert cli("init").code == 0
    src = source(tmp_path / "src", 1)
    assert cli("commit", str(src), "-m", "one").code == 0
    (src / "notes" / "c.txt").write_bytes(b"gamma\n" * 100)
    assert cli("commit", str(src), "-m", "two").code == 0
    first = versions(cli)[-1].split()[0]
    ws = small_disk / "ws"
    assert cli("workspace", "create", str(ws), "--branch", "work", "--from", first).code == 0

    (ws / "notes" / "d.txt").write_bytes(b"delta\n")
    meta = (ws / ".strongroom-workspace.json").read_bytes()
    fill_disk(small_disk)
    r = cli("commit", str(ws), "-m", "three")
    assert r.code == 1, r.err
    one_error_line(r, "cannot write the workspace metadata", "No space left on device")
    assert not list(ws.glob("*.tmp")) and (ws / ".strongroom-workspace.json").read_bytes() == meta
    free_disk(small_disk)
    r = cli("commit", str(ws), "-m", "three")
    assert r.code == 0, r.err
    assert cli("cat", "work", "notes/d.txt").out == "delta\n"

    meta = (ws / ".strongroom-workspace.json").read_bytes()
    fill_disk(small_disk)
    r = cli("workspace", "switch", str(ws), "main")
    assert r.code == 1, r.err
    one_error_line(r, "cannot write the workspace metadata", "No space left on device")
    assert not list(ws.glob("*.tmp")) and (ws / ".strongroom-workspace.json").read_bytes() == meta
    free_disk(small_disk)
    r = cli("workspace", "switch", str(ws), "main")
    assert r.code == 0, r.err
    assert (ws / "notes" / "c.txt").read_bytes() == b"gamma\n" * 100
    assert not (ws / "notes" / "d.txt").exists()


def test_a_commit_with_a_full_cache_disk_is_published_and_leaves_no_temporary_files(
    cli: Cli, small_disk: Path, tmp_path: Path
) -> None:
    """The file cache and the pack memo are local caches: on a full disk they cannot be saved, and the commit,
    published by then, still succeeds (it exited 1 'cannot write the output' after publishing its version),
    leaving no half-written temporary file of either (files-*.tmp<pid>, packs-*.tmp<pid>) behind."""
    cache = small_disk / "cache"
    cli.env["STRONGROOM_CACHE_DIR"] = str(cache)
    assert cli("init").code == 0
    src = make_tree(tmp_path / "src", {f"rows/{i:04d}.csv": f"{i},row\n".encode() * 40 for i in range(50)})
    assert cli("commit", str(src), "-m", "one").code == 0
    time.sleep(2.5)  # the data folders are past their racy window: this commit memoizes them
    (src / "rows" / "0000.csv").write_bytes(b"changed\n")
    fill_disk(small_disk)
    r = cli("commit", str(src), "-m", "cache disk full")
    free_disk(small_disk)
    assert r.code == 0, r.err
    assert not [p.name for p in cache.rglob("*") if ".tmp" in p.name]
    assert len(versions(cli)) == 2
    assert cli("cat", "main", "rows/0000.csv").out == "changed\n"
    (src / "rows" / "0001.csv").write_bytes(b"changed too\n")
    assert cli("commit", str(src), "-m", "room again").code == 0
    names = [p.name for p in cache.rglob("*") if p.is_file()]
    assert any(n.startswith("files-") for n in names) and any(n.startswith("packs-") for n in names), names
    assert not [n for n in names if ".tmp" in n], names
