"""Scopes and crypto-shredding, through the CLI: a version committed into a scope is sealed and named under
the scope's own keys (no dedupe across scopes), its key lives only in a keystore outside the repository,
and `key shred` makes it unreadable in every copy, even with the passphrase, while every other version
stays intact and `verify` exits 0 listing the shredded one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from strongroom.backends.local import LocalBackend
from strongroom.crypto.aead import key_id_of
from strongroom.crypto.keys import SCOPE_KEY_BASE
from strongroom.store.pack import pack_path
from strongroom.store.repository import Repository
from tests.conftest import PASSPHRASE, Cli, make_tree, tree_snapshot

SECRET_ROWS = b"patient-0042,1961-02-03,diagnosis:rare\n" * 2000


def _keystore(tmp_path: Path) -> dict[str, str]:
    return {"STRONGROOM_KEYSTORE": str(tmp_path / "keystore")}


def _versions(cli: Cli, env: dict[str, str]) -> list[dict[str, str]]:
    res = cli("--json", "log", extra_env=env)
    assert res.code == 0, res.err
    return list(json.loads(res.out))


def _chunk_ids(root: Path, version: str) -> set[bytes]:
    from strongroom.crypto.secret import Secret
    from strongroom.store.scopes import load_scopes

    repo = Repository.open(LocalBackend(str(root)), Secret(PASSPHRASE.encode()))
    load_scopes(repo, os.environ.get("STRONGROOM_KEYSTORE", ""))
    out: set[bytes] = set()
    stack = [repo.load_commit(bytes.fromhex(version)).tree]
    while stack:
        for e in repo.load_tree(stack.pop()).entries:
            out.update(e.chunks)
            if e.subtree:
                stack.append(e.subtree)
    return out


def _frame_key(root: Path, object_id: bytes) -> int:
    from strongroom.crypto.secret import Secret

    repo = Repository.open(LocalBackend(str(root)), Secret(PASSPHRASE.encode()))
    loc = repo.index.get(object_id)
    assert loc is not None
    return key_id_of(repo.backend.get_range(pack_path(loc.pack_id), loc.offset, 7))


def test_scope_lifecycle(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _keystore(tmp_path)
    monkeypatch.setenv("STRONGROOM_KEYSTORE", env["STRONGROOM_KEYSTORE"])  # for the in-process peeks below
    public = make_tree(tmp_path / "public", {"readme.txt": b"open data\n", "same.csv": SECRET_ROWS})
    private = make_tree(tmp_path / "private", {"patients.csv": SECRET_ROWS, "again.csv": SECRET_ROWS})
    assert cli("init", extra_env=env).code == 0
    assert cli("commit", str(public), "-m", "public", extra_env=env).code == 0
    res = cli("--json", "commit", str(private), "-m", "patients", "--scope", "patient-42", extra_env=env)
    assert res.code == 0, res.err
    scoped = json.loads(res.out)
    assert scoped["bytes_stored"] > 0  # equal content outside the scope is not reused ...
    assert scoped["files_read"] == 2
    versions = _versions(cli, env)
    assert [(v["message"], v["scope"], v["state"]) for v in versions] == [
        ("patients", "patient-42", "ok"),
        ("public", "", "ok"),
    ]
    public_id, scoped_id = versions[1]["id"], versions[0]["id"]
    # ... and never shares an id with it; within the scope, the two equal files share their chunks.
    in_scope, outside = _chunk_ids(cli.repo, scoped_id), _chunk_ids(cli.repo, public_id)
    assert in_scope and not (in_scope & outside)
    # Trees (file names) and chunks are sealed under the scope's key; the commit stays under the repository's.
    assert _frame_key(cli.repo, next(iter(in_scope))) >= SCOPE_KEY_BASE
    assert _frame_key(cli.repo, bytes.fromhex(scoped_id)) < SCOPE_KEY_BASE
    keystore_files = list((tmp_path / "keystore").rglob("*.key"))
    assert len(keystore_files) == 1 and keystore_files[0].stat().st_mode & 0o777 == 0o600
    assert not any(p.name.endswith(".key") for p in cli.repo.rglob("*"))  # the scope KEK is never in the repository

    out = tmp_path / "out"
    assert cli("checkout", scoped_id, str(out), extra_env=env).code == 0
    assert tree_snapshot(out) == tree_snapshot(private)
    copy = tmp_path / "copy-before-shred"
    shutil.copytree(cli.repo, copy)

    # Shredding asks for the name typed again.
    res = cli("key", "shred", "patient-42", extra_env=env)
    assert res.code == 2 and "--confirm" in res.err
    res = cli("key", "shred", "patient-42", "--confirm", "patient-4", extra_env=env)
    assert res.code == 2 and "does not match" in res.err
    assert cli("key", "shred", "patient-42", "--confirm", "patient-42", extra_env=env).code == 0
    assert not list((tmp_path / "keystore").rglob("*.key"))

    versions = _versions(cli, env)
    assert [(v["message"], v["state"]) for v in versions] == [("patients", "shredded"), ("public", "ok")]
    for args in (("ls", scoped_id), ("checkout", scoped_id, str(tmp_path / "o2")), ("cat", scoped_id, "again.csv")):
        res = cli(*args, extra_env=env)
        assert res.code == 1 and "shredded" in res.err, args
    for mode in ((), ("--full",)):
        res = cli("verify", *mode, extra_env=env)
        assert res.code == 0, res.out + res.err
        assert f"shredded\t{scoped_id}" in res.out
    assert cli("--json", "verify", extra_env=env).out.count(scoped_id) == 1
    keys = json.loads(cli("--json", "key", "list", extra_env=env).out)
    assert [(s["name"], s["state"]) for s in keys["scopes"]] == [("patient-42", "shredded")]
    assert "key.shred" in cli("--json", "audit", "log", "--action", "key.shred", extra_env=env).out
    # The other version is intact.
    out3 = tmp_path / "o3"
    assert cli("checkout", public_id, str(out3), extra_env=env).code == 0
    assert tree_snapshot(out3) == tree_snapshot(public)
    # Nothing can be written into a shredded scope again.
    res = cli("commit", str(private), "--scope", "patient-42", extra_env=env)
    assert res.code == 2 and "shredded" in res.err

    # A copy taken before the shredding cannot decrypt it either, with the passphrase and this keystore.
    res = cli("--repo", str(copy), "ls", scoped_id, extra_env=env)
    assert res.code != 0 and b"patient-0042" not in res.out_bytes
    res = cli("--repo", str(copy), "cat", scoped_id, "patients.csv", extra_env=env)
    assert res.code != 0 and b"patient-0042" not in res.out_bytes

    # gc frees what the scope held; the repository still verifies.
    before = sum(size for _, size in LocalBackend(str(cli.repo)).list("data"))
    assert cli("gc", "--keep-unreachable", "0", extra_env=env).code == 0
    after = sum(size for _, size in LocalBackend(str(cli.repo)).list("data"))
    assert after < before
    assert cli("verify", "--full", extra_env=env).code == 0


def test_scope_keys_survive_rotation_and_reencrypt(cli: Cli, tmp_path: Path) -> None:
    env = _keystore(tmp_path)
    src = make_tree(tmp_path / "s", {"x.bin": os.urandom(50_000)})
    assert cli("init", extra_env=env).code == 0
    assert cli("commit", str(src), "--scope", "team-a", extra_env=env).code == 0
    assert cli("key", "rotate", extra_env=env).code == 0
    res = cli("key", "reencrypt", "--retire", "1", extra_env=env)
    assert res.code == 0, res.err
    out = tmp_path / "out"
    assert cli("checkout", "main", str(out), extra_env=env).code == 0
    assert (out / "x.bin").read_bytes() == (src / "x.bin").read_bytes()
    assert cli("verify", "--full", extra_env=env).code == 0


def test_scope_refusals(cli: Cli, tmp_path: Path) -> None:
    env = _keystore(tmp_path)
    src = make_tree(tmp_path / "s", {"a": b"a"})
    assert cli("init", extra_env=env).code == 0
    for bad in ("../x", "", "-dash", "a" * 65, "sp ace"):
        res = cli("commit", str(src), "--scope", bad, extra_env=env)
        assert res.code == 2, bad
    res = cli("key", "shred", "nope", "--confirm", "nope", extra_env=env)
    assert res.code == 2 and "no scope" in res.err
    assert cli("commit", str(src), "--scope", "s1", extra_env=env).code == 0
    # Another machine (an empty keystore): the scope cannot be written, read or shredded from here.
    other = {"STRONGROOM_KEYSTORE": str(tmp_path / "elsewhere")}
    res = cli("commit", str(src), "--scope", "s1", extra_env=other)
    assert res.code == 2 and "keystore" in res.err
    res = cli("ls", "main", extra_env=other)
    assert res.code == 2 and "keystore" in res.err
    res = cli("key", "shred", "s1", "--confirm", "s1", extra_env=other)
    assert res.code == 2 and "keystore" in res.err
    res = cli("verify", extra_env=other)
    assert res.code == 0 and "not checked" in res.err


def test_workspace_merge_and_revert_never_copy_a_scope_out(cli: Cli, tmp_path: Path) -> None:
    """A workspace, a three-way merge or a revert would write a scoped version's names and chunk ids into
    unscoped trees (which a shredding would not reach): each is refused with one line, nothing changed."""
    env = _keystore(tmp_path)
    assert cli("init", extra_env=env).code == 0
    assert cli("commit", str(make_tree(tmp_path / "pub", {"p.txt": b"public"})), extra_env=env).code == 0
    assert cli("branch", "create", "sec", extra_env=env).code == 0
    priv = make_tree(tmp_path / "priv", {"secret.csv": SECRET_ROWS})
    assert cli("commit", str(priv), "--scope", "pat", "--branch", "sec", extra_env=env).code == 0
    assert cli("commit", str(make_tree(tmp_path / "pub2", {"q.txt": b"more"})), extra_env=env).code == 0
    before = cli("--json", "log", extra_env=env).out
    for args, what in (
        (("workspace", "create", str(tmp_path / "ws"), "--branch", "sec"), "workspace"),
        (("merge", "sec", "--into", "main"), "three-way merge"),
        (("revert", "sec", "--branch", "sec"), "revert"),
    ):
        res = cli(*args, extra_env=env)
        assert res.code == 2 and what in res.err and "scope" in res.err, (args, res.err)
    assert cli("--json", "log", extra_env=env).out == before
    assert not (tmp_path / "ws").exists()


def test_a_commit_into_a_scope_shredded_meanwhile_publishes_nothing(tmp_path: Path) -> None:
    from strongroom.crypto.kdf import UNSAFE_TEST_ONLY
    from strongroom.crypto.secret import Secret
    from strongroom.errors import Shredded
    from strongroom.store import scopes

    keystore = str(tmp_path / "keystore")
    backend = LocalBackend(str(tmp_path / "repo"))
    backend.ensure_root()
    Repository.create(backend, Secret(PASSPHRASE.encode()), UNSAFE_TEST_ONLY)
    writer = Repository.open(backend, Secret(PASSPHRASE.encode()))
    scope = scopes.create_scope(writer, "late", keystore, "test")
    view = writer.scoped(scope.key_id)  # a commit into the scope, under way
    admin = Repository.open(backend, Secret(PASSPHRASE.encode()))
    (shred_me,) = scopes.load_scopes(admin, keystore)
    scopes.shred(admin, shred_me, keystore, "test")
    generation = admin.read_refs().generation
    with pytest.raises(Shredded):
        view.edit_refs(lambda refs: None, "commit")
    assert admin.read_refs().generation == generation


def _open_with_scopes(root: Path, keystore: str) -> Repository:
    from strongroom.crypto.secret import Secret
    from strongroom.store.scopes import load_scopes

    repo = Repository.open(LocalBackend(str(root)), Secret(PASSPHRASE.encode()))
    load_scopes(repo, keystore)
    return repo


def _sealed_under(root: Path, key_id: int) -> int:
    """How many frames in the repository's packs are sealed under ``key_id``."""
    from strongroom.crypto.secret import Secret

    repo = Repository.open(LocalBackend(str(root)), Secret(PASSPHRASE.encode()))
    return sum(
        1
        for pid, entries in repo.index.packs.items()
        for e in entries
        if key_id_of(repo.backend.get_range(pack_path(pid), e.offset, 7)) == key_id
    )


@pytest.mark.parametrize("size", [200_000, 40 << 20], ids=["in-process", "in-workers"])
def test_frames_sealed_under_a_scope_key_count_against_its_nonce_budget(cli: Cli, tmp_path: Path, size: int) -> None:
    """Random GCM nonces are safe for a bounded number of messages per key, so every key's count is
    persisted: a scope's key too, whether its chunks are sealed in the command's process or in workers."""
    env = _keystore(tmp_path)
    src = make_tree(tmp_path / "s", {"a.bin": os.urandom(size // 2), "b/c.bin": os.urandom(size - size // 2)})
    assert cli("init", extra_env=env).code == 0
    assert cli("commit", str(src), "--scope", "team-a", extra_env=env).code == 0
    repo = _open_with_scopes(cli.repo, env["STRONGROOM_KEYSTORE"])
    (scope_key,) = repo.scope_states
    counts = repo.message_count()
    in_packs = _sealed_under(cli.repo, scope_key)
    assert in_packs > 2  # chunks and the trees that name them
    assert counts.get(scope_key) == in_packs
    # The repository's own key counted only what it sealed (commit, refs, index, pack headers), not the scope's.
    assert counts[repo.sealer.current] < in_packs + 20


def test_a_scope_key_at_its_message_cap_refuses_to_publish(cli: Cli, tmp_path: Path) -> None:
    from strongroom.crypto.keys import ROTATE_AFTER_MESSAGES
    from strongroom.store import lock

    env = _keystore(tmp_path)
    src = make_tree(tmp_path / "s", {"a.bin": os.urandom(50_000)})
    assert cli("init", extra_env=env).code == 0
    assert cli("commit", str(src), "--scope", "team-a", extra_env=env).code == 0
    repo = _open_with_scopes(cli.repo, env["STRONGROOM_KEYSTORE"])
    (scope_key,) = repo.scope_states
    with lock.publish_lock(repo.backend, "test", 5.0):  # as if this key had sealed nearly 2^30 frames
        repo._write_counters({**repo.message_count(), scope_key: ROTATE_AFTER_MESSAGES - 1})
    before = cli("--json", "log", extra_env=env).out
    (src / "new.bin").write_bytes(os.urandom(50_000))
    res = cli("commit", str(src), "--scope", "team-a", extra_env=env)
    assert res.code == 2 and "team-a" in res.err and "new scope" in res.err and "Traceback" not in res.err
    assert cli("--json", "log", extra_env=env).out == before  # nothing published
    assert _open_with_scopes(cli.repo, env["STRONGROOM_KEYSTORE"]).message_count()[scope_key] >= ROTATE_AFTER_MESSAGES
    # Unscoped commits and other scopes are not affected; the repository verifies.
    assert cli("commit", str(src), "--scope", "team-b", extra_env=env).code == 0
    assert cli("commit", str(src), extra_env=env).code == 0
    assert cli("verify", "--full", extra_env=env).code == 0
