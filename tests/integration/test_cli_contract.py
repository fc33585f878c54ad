"""The command-line contract: exit codes (0 ok, 1 problem found, 2 bad input, 3 internal error), one-line
errors and never a traceback, one JSON document with --json, version names, and the read commands'
output, driven through `python -m strongroom` as users and scripts run it."""

from __future__ import annotations

import ctypes
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom import Strongroom
from tests.conftest import PASSPHRASE, Cli, CliResult, injected_bug, make_tree, tree_snapshot

V1 = {
    "data/a.bin": bytes(range(256)) * 1000,
    "data/b.txt": b"hello\n" * 100,
    "old.txt": b"to be removed\n",
    "move/me.bin": random.Random(5).randbytes(5000),
    "exec.sh": b"#!/bin/sh\necho hi\n",
}
V2 = {
    "data/a.bin": bytes(range(256)) * 1200,
    "data/b.txt": b"hello\n" * 100,
    "moved/me.bin": V1["move/me.bin"],
    "exec.sh": V1["exec.sh"],
    "new.txt": b"brand new\n",
}


def build_source(root: Path, files: dict[str, bytes]) -> Path:
    make_tree(root, files)
    os.chmod(root / "exec.sh", 0o755)
    os.symlink("data/b.txt", root / "link")
    (root / "emptydir").mkdir()
    return root


class History:
    """A repository with main: v1 → v2, and a branch `exp` with one version; read-only for the tests."""

    def __init__(self, root: Path) -> None:
        env = {
            "HOME": str(root / "home"),
            "STRONGROOM_STATE_DIR": str(root / "state"),
            "STRONGROOM_CACHE_DIR": str(root / "cache"),
            "STRONGROOM_UNSAFE_TEST_WEAK_KDF": "1",
        }
        self.path = root / "repo"
        self.src1 = build_source(root / "src1", V1)
        self.src2 = build_source(root / "src2", V2)
        self.src_exp = make_tree(root / "exp", {"only-on-exp.txt": b"experiment\n"})
        sr = Strongroom.init(str(self.path), PASSPHRASE, env=env, user="carol")
        self.v1 = sr.commit(str(self.src1), message="first", workers=1).id
        self.v2 = sr.commit(str(self.src2), message="second", workers=1).id
        self.exp = sr.commit(str(self.src_exp), message="exp", branch="exp", workers=1).id


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return History(tmp_path_factory.mktemp("history"))


@pytest.fixture
def hcli(history: History, cli: Cli) -> Cli:
    return Cli(history.path, cli.env)


def ok(r: CliResult) -> CliResult:
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    return r


def fails(r: CliResult, code: int, *words: str) -> None:
    """Exit `code` with exactly one line on stderr that says what is wrong; nothing on stdout."""
    assert r.code == code, (r.code, r.err)
    assert "Traceback" not in r.err + r.out
    lines = r.err.strip("\n").split("\n")
    assert len(lines) == 1, r.err
    for w in words:
        assert w in lines[0], lines[0]
    assert r.out == ""


# ------------------------------------------------------------------------------ bad input: exit 2


def test_wrong_passphrase(hcli: Cli, history: History) -> None:
    for args in (("log",), ("verify",), ("ls", "main"), ("commit", str(history.src1))):
        fails(hcli(*args, passphrase="not the passphrase"), 2, "wrong passphrase")
    assert len(json.loads(ok(hcli("--json", "log")).out)) == 3  # nothing was committed


@pytest.mark.parametrize("kind", ["empty", "absent", "foreign"])
def test_not_a_repository(cli: Cli, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "elsewhere"
    if kind == "empty":
        path.mkdir()
    elif kind == "foreign":
        make_tree(path, {"notes.txt": b"just a folder\n"})
    other = Cli(path, cli.env)
    for args in (("log",), ("verify",), ("verify", "--structure")):
        fails(other(*args), 2, "not a strongroom repository")


def test_init_refuses_a_non_empty_folder(cli: Cli) -> None:
    make_tree(cli.repo, {"precious.txt": b"keep me\n"})
    fails(cli("init"), 2, "not empty")
    assert tree_snapshot(cli.repo) == {"precious.txt": ("f", b"keep me\n", 0o644)}


def test_init_refuses_an_existing_repository(cli: Cli) -> None:
    ok(cli("init"))
    before = tree_snapshot(cli.repo)
    fails(cli("init"), 2, "not empty")
    assert tree_snapshot(cli.repo) == before


def test_checkout_into_a_non_empty_folder_writes_nothing(hcli: Cli, tmp_path: Path) -> None:
    dest = make_tree(tmp_path / "dest", {"mine.txt": b"mine\n"})
    before = tree_snapshot(dest)
    fails(hcli("checkout", "main", str(dest)), 2, "not empty")
    assert tree_snapshot(dest) == before
    a_file = tmp_path / "file"
    a_file.write_bytes(b"x")
    fails(hcli("checkout", "main", str(a_file)), 2)
    assert a_file.read_bytes() == b"x"
    fails(hcli("checkout", "main", str(a_file / "sub")), 2, "cannot create")  # below a file: one line
    fails(hcli("checkout", "main", "/proc/strongroom-test"), 2, "cannot create")


@pytest.mark.parametrize("days", ["nan", "inf", "-1", "1e308", "36501"])
def test_gc_refuses_a_keep_period_that_is_not_a_number_of_days_up_to_a_century(hcli: Cli, days: str) -> None:
    fails(hcli("gc", "--keep-unreachable", days), 2, "number of days from 0 to 36500")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("ls", "deadbeefdeadbeef"), "deadbeefdeadbeef"),
        (("ls", "no-such-branch"), "no-such-branch"),
        (("cat", "main~5", "data/b.txt"), "fewer than 5"),
        (("diff", "main", "no-such-branch"), "no-such-branch"),
        (("ls", "abcdef1"), "abcdef1"),  # a prefix shorter than 8 hex digits is not a version name
    ],
)
def test_unknown_version(hcli: Cli, args: tuple[str, ...], named: str) -> None:
    fails(hcli(*args), 2, named)


def test_unknown_version_checkout_creates_nothing(hcli: Cli, tmp_path: Path) -> None:
    fails(hcli("checkout", "no-such-branch", str(tmp_path / "dest")), 2, "unknown version")
    assert not (tmp_path / "dest").exists()


def _drop_dac_override() -> None:
    """Run the child without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so that root too is refused a
    chmod 000 file (the suite runs as root in CI containers). Harmless for other users."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP


def run_unprivileged(cli: Cli, *args: str) -> CliResult:
    env = dict(cli.env, STRONGROOM_PASSPHRASE=PASSPHRASE)
    proc = subprocess.run(
        [sys.executable, "-m", "strongroom", "--repo", str(cli.repo), *args],
        env=env, capture_output=True, timeout=120, preexec_fn=_drop_dac_override,
    )
    return CliResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode(), proc.stdout)


@pytest.fixture
def unreadable_src(tmp_path: Path) -> Iterator[Path]:
    src = make_tree(tmp_path / "src", {"fine.txt": b"fine\n", "sub/secret.bin": b"no access\n" * 100})
    os.chmod(src / "sub/secret.bin", 0)
    yield src
    os.chmod(src / "sub/secret.bin", 0o644)


def test_unreadable_source_file_fails_the_commit(cli: Cli, unreadable_src: Path) -> None:
    ok(cli("init"))
    probe = subprocess.run([sys.executable, "-c", f"open({str(unreadable_src / 'sub/secret.bin')!r}).read()"],
                           capture_output=True, preexec_fn=_drop_dac_override)
    assert probe.returncode != 0, "the test cannot make a file unreadable here"

    r = run_unprivileged(cli, "commit", str(unreadable_src))
    fails(r, 2, "cannot read", str(unreadable_src / "sub/secret.bin"))
    assert json.loads(ok(cli("--json", "log")).out) == []  # no partial version is referenced

    r = run_unprivileged(cli, "--json", "commit", str(unreadable_src), "--skip-unreadable")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert summary["skipped"] == ["sub/secret.bin"]
    listed = {e["path"] for e in json.loads(ok(cli("--json", "ls", "main")).out)}
    assert listed == {"fine.txt", "sub"}

    (unreadable_src / "fine.txt").write_bytes(b"changed\n")
    r = run_unprivileged(cli, "commit", str(unreadable_src), "--skip-unreadable")
    assert r.code == 0 and "skipped: sub/secret.bin" in r.err


def test_internal_error_is_one_line_pointing_to_a_log(cli: Cli, tmp_path: Path) -> None:
    ok(cli("init"))
    src = make_tree(tmp_path / "src", {"f.bin": b"x" * 1000})
    r = cli("commit", str(src), extra_env=injected_bug(tmp_path / "bug"))
    assert r.code == 3, r.err
    assert r.out == "" and "Traceback" not in r.err
    (line,) = r.err.strip().splitlines()
    assert "internal error" in line
    m = re.search(r"(/\S+\.log)", line)
    assert m, line
    assert "RuntimeError: an injected bug" in Path(m.group(1)).read_text()


# ------------------------------------------------------------------------------ --json


@pytest.mark.parametrize(
    "args",
    [("log",), ("ls", "main"), ("diff", "main~1", "main"), ("stats",), ("verify",), ("verify", "--full")],
)
def test_json_is_exactly_one_document(hcli: Cli, args: tuple[str, ...]) -> None:
    r = ok(hcli("--json", *args))
    json.loads(r.out)  # raises on anything before or after the one document
    assert r.out.endswith("\n") and r.out.count("\n") == 1


def test_json_commit_and_checkout_are_one_document(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"x.txt": b"x\n"})
    init = json.loads(ok(cli("--json", "init")).out)
    assert re.fullmatch(r"[0-9a-f]{64}", init["repo_id"])
    c = json.loads(ok(cli("--json", "commit", str(src), "-m", "m")).out)
    assert re.fullmatch(r"[0-9a-f]{64}", c["id"]) and c["files"] == 1 and c["parent"] is None
    again = json.loads(ok(cli("--json", "commit", str(src))).out)
    assert again["unchanged"] is True and again["parent"] == c["id"]
    co = json.loads(ok(cli("--json", "checkout", c["id"], str(tmp_path / "out"))).out)
    assert co["version"] == c["id"] and co["files"] == 1


def test_log_json_is_newest_first_with_the_documented_fields(hcli: Cli, history: History) -> None:
    entries = json.loads(ok(hcli("--json", "log", "--branch", "main")).out)
    fields = {"id", "parents", "branch", "author", "time", "message", "signer", "signature", "scope", "state"}
    assert [set(e) for e in entries] == [fields] * 2
    assert [e["id"] for e in entries] == [history.v2, history.v1]
    assert entries[0]["parents"] == [history.v1] and entries[1]["parents"] == []
    assert [e["message"] for e in entries] == ["second", "first"]
    assert all(e["branch"] == "main" and e["author"] == "carol" for e in entries)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["time"]) for e in entries)
    every = json.loads(ok(hcli("--json", "log")).out)
    assert {e["id"] for e in every} == {history.v1, history.v2, history.exp}
    plain = ok(hcli("log", "--branch", "main")).out.splitlines()
    assert [line.split("\t")[0] for line in plain] == [history.v2, history.v1]


# ------------------------------------------------------------------------------ reading versions


def test_version_names(hcli: Cli, history: History) -> None:
    for name in (history.v1, history.v1[:8].upper(), "main~1"):
        assert ok(hcli("cat", name, "data/a.bin")).out_bytes == V1["data/a.bin"], name
    for name in (history.v2[:10], "main"):
        assert ok(hcli("cat", name, "data/a.bin")).out_bytes == V2["data/a.bin"], name
    fails(hcli("cat", "exp~1", "only-on-exp.txt"), 2)  # exp has one version


def test_ls_lists_every_entry_one_per_line(hcli: Cli) -> None:
    lines = ok(hcli("ls", "main~1")).out.splitlines()
    rows = {ln.split("\t")[4]: ln.split("\t") for ln in lines}
    assert set(rows) == {"data", "data/a.bin", "data/b.txt", "old.txt", "move", "move/me.bin", "exec.sh",
                         "link -> data/b.txt", "emptydir"}
    assert rows["data/a.bin"][:3] == ["f", "0o644", "256000"]
    assert rows["exec.sh"][:2] == ["f", "0o755"]
    assert rows["emptydir"][0] == "d" and rows["link -> data/b.txt"][0] == "l"
    sub = [ln.split("\t")[4] for ln in ok(hcli("ls", "main~1", "data")).out.splitlines()]
    assert sorted(sub) == ["data", "data/a.bin", "data/b.txt"]
    fails(hcli("ls", "main", "no/such/path"), 2, "no such path")


def test_diff_names_added_removed_modified_and_renamed_with_sizes(hcli: Cli) -> None:
    changes = json.loads(ok(hcli("--json", "diff", "main~1", "main")).out)
    got = {(c["status"], c["path"]): c for c in changes}
    assert set(got) == {("modified", "data/a.bin"), ("removed", "old.txt"), ("added", "new.txt"),
                        ("renamed", "moved/me.bin")}
    assert (got["modified", "data/a.bin"]["old_size"], got["modified", "data/a.bin"]["size"]) == (256000, 307200)
    assert got["renamed", "moved/me.bin"]["old_path"] == "move/me.bin"
    assert got["renamed", "moved/me.bin"]["size"] == 5000
    assert got["removed", "old.txt"]["size"] == len(V1["old.txt"])
    assert got["added", "new.txt"]["size"] == len(V2["new.txt"])
    plain = set(ok(hcli("diff", "main~1", "main")).out.splitlines())
    assert plain == {"modified\t256000 -> 307200\tdata/a.bin", f"removed\t{len(V1['old.txt'])}\told.txt",
                     f"added\t{len(V2['new.txt'])}\tnew.txt", "renamed\t5000\tmove/me.bin -> moved/me.bin"}
    r = ok(hcli("diff", "main", "main~0"))
    assert r.out == ""


def test_diff_names_the_folders_files_do_not_show(cli: Cli, tmp_path: Path) -> None:
    """An empty folder added or removed, or a folder's mode changed, is a difference between two versions
    (they are recorded and checked out), though no file shows it."""
    src = make_tree(tmp_path / "src", {"a.txt": b"a"})
    ok(cli("init"))
    ok(cli("commit", str(src)))
    (src / "empty").mkdir()
    (src / "empty").chmod(0o755)  # whatever the umask
    ok(cli("commit", str(src)))
    (src / "empty").chmod(0o700)
    ok(cli("commit", str(src)))
    assert ok(cli("diff", "main~2", "main~1")).out == "added\t0\tempty/\n"
    assert ok(cli("diff", "main~1", "main")).out == "modified\tmode 0o755 -> 0o700\tempty/\n"
    (got,) = json.loads(ok(cli("--json", "diff", "main", "main~2")).out)
    assert (got["status"], got["path"]) == ("removed", "empty/")


def test_stats(hcli: Cli, history: History) -> None:
    s = json.loads(ok(hcli("--json", "stats")).out)
    raw = sum(len(d) for d in V1.values()) + sum(len(d) for d in V2.values()) + len(b"experiment\n")
    assert s["versions"] == 3 and s["branches"] == 2
    assert s["files"] == len(V1) + len(V2) + 1
    assert s["raw_bytes"] == raw
    assert s["unique_bytes"] < raw and s["dedupe_ratio"] > 1  # unchanged and renamed files are stored once
    on_disk = sum(p.stat().st_size for p in (history.path / "data").rglob("*") if p.is_file())
    assert s["stored_bytes"] == on_disk


def test_checkout_include_restores_only_matching_paths(hcli: Cli, history: History, tmp_path: Path) -> None:
    dest = tmp_path / "part"
    ok(hcli("checkout", "main~1", str(dest), "--include", "data/*.bin", "--include", "exec.sh"))
    got = tree_snapshot(dest)
    want = tree_snapshot(history.src1)
    assert set(got) == {"data", "data/a.bin", "exec.sh"}
    assert got["data/a.bin"] == want["data/a.bin"] and got["exec.sh"] == want["exec.sh"]
    assert (dest / "exec.sh").stat().st_mtime_ns == (history.src1 / "exec.sh").stat().st_mtime_ns
    fails(hcli("checkout", "main", str(tmp_path / "none"), "--include", "*.nothing"), 2)
    full = tmp_path / "full"
    ok(hcli("checkout", "main", str(full)))
    assert tree_snapshot(full) == tree_snapshot(history.src2)


def test_strongroomignore_and_exclude(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {
        ".strongroomignore": b"# scratch files\n*.tmp\ncache/\n!keep.tmp\n",
        "a.txt": b"a", "b.tmp": b"b", "keep.tmp": b"k", "cache/x.bin": b"x", "sub/cache/y.bin": b"y",
        "logs/run.log": b"l", "sub/c.txt": b"c",
    })
    ok(cli("init"))
    ok(cli("commit", str(src), "--exclude", "*.log", "--exclude", "/sub/c.txt"))
    files = {e["path"] for e in json.loads(ok(cli("--json", "ls", "main")).out) if e["type"] == "file"}
    assert files == {".strongroomignore", "a.txt", "keep.tmp"}


# ------------------------------------------------------------------------------ identity and passphrases


def test_strongroom_user_is_recorded_as_author(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"x": b"x"})
    ok(cli("init", "--user", "from-config"))
    ok(cli("commit", str(src), extra_env={"STRONGROOM_USER": "dana"}))
    (src / "y").write_bytes(b"y")
    ok(cli("commit", str(src)))
    authors = [e["author"] for e in json.loads(ok(cli("--json", "log")).out)]
    assert authors == ["from-config", "dana"]


def test_passphrase_file_and_command(cli: Cli, tmp_path: Path) -> None:
    good = tmp_path / "pass.txt"
    good.write_text(PASSPHRASE + "\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("something else\n")
    ok(cli("init", passphrase=None, extra_env={"STRONGROOM_PASSPHRASE_FILE": str(good)}))
    ok(cli("--passphrase-command", f"cat {good}", "log", passphrase=None))
    fails(cli("log", passphrase=None, extra_env={"STRONGROOM_PASSPHRASE_FILE": str(bad)}), 2, "wrong passphrase")
    fails(cli("--passphrase-command", f"cat {bad}", "log", passphrase=None), 2, "wrong passphrase")
    fails(cli("--passphrase-command", "false", "log", passphrase=None), 2, "passphrase-command")
    fails(cli("log", passphrase=None), 2, "no passphrase")  # no terminal, no source: says how to give one


def test_weak_kdf_switch_is_refused_outside_the_test_suite(cli: Cli) -> None:
    ok(cli("init"))
    env = {k: v for k, v in cli.env.items() if k != "PYTEST_CURRENT_TEST"}
    outside = Cli(cli.repo, env)
    fails(outside("log"), 2, "STRONGROOM_UNSAFE_TEST_WEAK_KDF")
    fresh = Cli(cli.repo.parent / "fresh", env)
    fails(fresh("init"), 2, "STRONGROOM_UNSAFE_TEST_WEAK_KDF")
    assert not fresh.repo.exists()
    del env["STRONGROOM_UNSAFE_TEST_WEAK_KDF"]
    ok(Cli(cli.repo, env)("log"))  # the same command without the switch runs


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (("key", "export", "--paper", "--confirm", "é"), "confirmation does not match"),
        (("key", "recover", "{latin1}"), "not a recovery sheet"),
        (("audit", "check-proof", "{proof}", "--key", "{latin1}"), "cannot read a verifier key"),
        (("audit", "log", "--since", "0001-01-01T00:00:00+01:00"), "out of range"),
        (("audit", "export", "--since", "9999-12-31T23:59:59-01:00"), "out of range"),
        (("audit", "tail", "-n", "99999999999999999999"), "--lines"),
        (("audit", "prove", "99999999999999999999"), "sequence number"),
        (("audit", "consistency", "1", "99999999999999999999999"), "NEW_SIZE"),
        # undecodable text (a non-UTF-8 argument arrives as surrogate escapes): refused before SQLite sees it
        (("audit", "log", "--actor", "caf\udce9"), "--actor is not UTF-8 text: caf\\xe9"),
        (("audit", "log", "--action", "caf\udce9"), "--action is not UTF-8 text: caf\\xe9"),
        (("custody", "--json", "--actor", "caf\udce9"), "--actor is not UTF-8 text"),
        (("custody", "--actor", "caf\udce9", "--html", "{tmp}/r.html"), "--actor is not UTF-8 text"),
        # ... or compared with the confirmation it must repeat
        (("key", "shred", "caf\udce9", "--confirm", "pii"), "confirmation does not match"),
        (("key", "export", "--paper", "--confirm", "caf\udce9"), "confirmation does not match"),
        # ... or stored for good as a version's message
        (("commit", "{tmp}", "-m", "caf\udce9"), "-m is not UTF-8 text: caf\\xe9"),
        (("merge", "exp", "--into", "main", "-m", "caf\udce9"), "-m is not UTF-8 text"),
        (("revert", "main", "-m", "caf\udce9"), "-m is not UTF-8 text"),
        (("incident", "open", "--reason", "caf\udce9"), "--reason is not UTF-8 text: caf\\xe9"),
    ],
)
def test_out_of_range_numbers_times_and_undecodable_files(
    hcli: Cli, tmp_path: Path, args: tuple[str, ...], word: str
) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("clé é".encode("latin-1"))
    proof = tmp_path / "proof.json"
    proof.write_text("{}")  # the key is read first
    fails(hcli(*(a.format(latin1=latin1, proof=proof, tmp=tmp_path) for a in args)), 2, word)
    assert not (tmp_path / "r.html").exists()


# ------------------------------------------------------------------------------ the catalog URL

IN_MEMORY = ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite+pysqlite://", "sqlite:///file::memory:?uri=true"]


@pytest.mark.parametrize("url", IN_MEMORY)
@pytest.mark.parametrize("args", [("log",), ("stats",), ("gc",)])
def test_an_in_memory_catalog_is_refused(hcli: Cli, url: str, args: tuple[str, ...]) -> None:
    """Commands close the catalog's connections before work (no connection in forked workers), which would
    discard an in-memory database and its audit log: refused, exit 2, not an internal error."""
    fails(hcli("--catalog", url, *args), 2, "--catalog: an in-memory SQLite database cannot hold the audit log")


def test_a_refused_catalog_url_creates_no_repository(cli: Cli) -> None:
    for url in ("sqlite://", "not a url"):
        fails(cli("--catalog", url, "init"), 2, "--catalog")
        assert not cli.repo.exists()


def test_catalog_url_arguments_sqlite_would_ignore_are_refused(hcli: Cli, tmp_path: Path) -> None:
    """Without uri=true the driver ignores mode=ro and SQLAlchemy warns on stderr: refused in one line."""
    url = f"sqlite:///{tmp_path}/c.sqlite?mode=ro"
    fails(hcli("--catalog", url, "ls", "nosuch"), 2, "would ignore the URL argument(s) mode")
    assert not (tmp_path / "c.sqlite").exists()
    # the SQLite URI form takes them: a read-only catalog then fails as a catalog (exit 1), not with a warning
    ro = f"sqlite:///file:{tmp_path}/c.sqlite?mode=ro&uri=true"
    fails(hcli("--catalog", ro, "log"), 1, "catalog:")


def test_a_catalog_failing_in_use_is_a_catalog_error(cli: Cli, tmp_path: Path) -> None:
    """A database error after the catalog was opened (here a table gone) is exit 1, one line, never exit 3."""
    import sqlite3

    ok(cli("init"))
    catalog = tmp_path / "c.sqlite"
    ok(cli("--catalog", f"sqlite:///{catalog}", "log"))
    with sqlite3.connect(catalog) as db:
        db.execute("DROP TABLE audit_events")
    fails(cli("--catalog", f"sqlite:///{catalog}", "log"), 1, "catalog: the catalog database failed: OperationalError")


def test_a_catalog_error_never_shows_the_password_of_its_url(hcli: Cli) -> None:
    secret = "s3cr3t-in-the-url"
    r = hcli("--catalog", f"postgresql+psycopg://user:{secret}@127.0.0.1:1/db", "log")
    fails(r, 1, "catalog:")
    assert secret not in r.err + r.out


# ------------------------------------------------------------------------------ undecodable text

UNDECODABLE = "caf\udce9"  # what Python makes of the bytes b"caf\xe9" in argv or the environment
STRICT_STDOUT = {"PYTHONIOENCODING": "utf-8:strict"}  # stdout as under a UTF-8 locale such as en_US.UTF-8


def test_an_undecodable_user_is_refused_before_anything_is_made(cli: Cli, history: History) -> None:
    fails(cli("init", "--user", UNDECODABLE), 2, "--user is not UTF-8 text: caf\\xe9")
    assert not cli.repo.exists()
    fails(cli("init", extra_env={"STRONGROOM_USER": UNDECODABLE}), 2, "STRONGROOM_USER is not UTF-8 text")
    assert not cli.repo.exists()
    fails(Cli(history.path, cli.env)("log", extra_env={"STRONGROOM_USER": UNDECODABLE}), 2, "STRONGROOM_USER")


def test_an_undecodable_os_user_is_recorded_escaped(hcli: Cli) -> None:
    """$LOGNAME / $USER name the OS user in every audit event: bytes that are not UTF-8 are recorded as \\xNN
    escapes (as file names are), not an internal error."""
    ok(hcli("log", extra_env={"LOGNAME": UNDECODABLE, "USER": UNDECODABLE}))
    events = json.loads(ok(hcli("--json", "audit", "log", "--action", "log")).out)
    assert events[-1]["os_user"] == "caf\\xe9"


def test_undecodable_text_already_stored_is_printed_escaped(cli: Cli, tmp_path: Path) -> None:
    """A message stored before messages were checked, a destination folder: printed as
    JSON escapes (--json) or \\u escapes, never an internal error once the work is done."""
    src = make_tree(tmp_path / "src", {"f.txt": b"f\n"})
    sr = Strongroom.init(str(cli.repo), PASSPHRASE, env=cli.env)
    sr.commit(str(src), message=UNDECODABLE, workers=1)
    (entry,) = json.loads(ok(cli("--json", "log", extra_env=STRICT_STDOUT)).out)
    assert entry["message"] == UNDECODABLE
    assert "caf\\udce9" in ok(cli("log", extra_env=STRICT_STDOUT)).out
    out = ok(cli("checkout", "main", f"{tmp_path}/out-{UNDECODABLE}", extra_env=STRICT_STDOUT)).out
    assert "out-caf\\udce9" in out
    assert tree_snapshot(tmp_path / f"out-{UNDECODABLE}") == tree_snapshot(src)
    out = ok(cli("workspace", "create", f"{tmp_path}/ws-{UNDECODABLE}", "-b", "w", extra_env=STRICT_STDOUT)).out
    assert out.startswith("created ") and "ws-caf\\udce9" in out
