"""Key management through the CLI, the way an operator uses it: a repository locked by a passphrase and a
SoftHSM2 token (both needed), key slots added and removed, a passphrase changed, the data key rotated
without rewriting data, a paper recovery sheet that really recovers, and every refusal a one-line exit 2
that changes nothing. No PIN, passphrase or key material appears in any output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from strongroom.crypto.secret import Secret
from tests.conftest import PASSPHRASE, Cli, injected_kill, make_tree, tree_snapshot
from tests.hsm import SoftHsm, unique_label
from tests.integration.test_secrets import encodings
from tests.s3server import MakeBucket, make_bucket, moto_endpoint, s3_env  # noqa: F401

NEW_PASSPHRASE = "new passphrase 31c9-Lemur"


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("strongroom: error:"), err
    return lines[0]


def _hsm_init(cli: Cli, softhsm: SoftHsm, label: str) -> None:
    res = cli("init", "--kek", "passphrase", "--kek", "pkcs11", *softhsm.kek_args(label), extra_env=softhsm.env)
    assert res.code == 0, res.err
    assert "pkcs11" in res.out and label in res.out


def test_double_encryption_with_passphrase_and_hsm(cli: Cli, softhsm: SoftHsm, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"train.csv": b"a,b\n1,2\n" * 1000, "img/x.bin": os.urandom(50_000)})
    _hsm_init(cli, softhsm, unique_label())
    assert cli("commit", str(src), "-m", "v1", extra_env=softhsm.env).code == 0
    out = tmp_path / "out"
    assert cli("checkout", "main", str(out), extra_env=softhsm.env).code == 0
    assert tree_snapshot(out) == tree_snapshot(src)

    # A stolen passphrase alone (no PIN for the token): exit 2, one line.
    no_pin = dict(softhsm.env)
    del no_pin["STRONGROOM_PKCS11_PIN"]
    res = cli("log", extra_env=no_pin)
    assert res.code == 2 and "PIN" in _one_error_line(res.err)
    # The token and its PIN without the passphrase.
    res = cli("log", passphrase="not the passphrase", extra_env=softhsm.env)
    assert res.code == 2 and "wrong passphrase" in _one_error_line(res.err)
    # A wrong PIN.
    res = cli("log", extra_env={**softhsm.env, "STRONGROOM_PKCS11_PIN": "111111"})
    assert res.code == 2 and "wrong PIN" in _one_error_line(res.err)
    # The token's configuration gone (a missing token).
    res = cli("log", extra_env={**softhsm.env, "SOFTHSM2_CONF": str(tmp_path / "none.conf")})
    assert res.code == 2
    _one_error_line(res.err)
    assert cli("verify", "--full", extra_env=softhsm.env).code == 0


def test_init_refusals_change_nothing(cli: Cli, softhsm: SoftHsm, tmp_path: Path) -> None:
    label = unique_label()
    cases = [
        (["--kek", "pkcs11", *softhsm.kek_args(label)], {**softhsm.env, "STRONGROOM_PKCS11_PIN": "000000"}, "PIN"),
        (["--kek", "pkcs11", "--pkcs11-module", "/no/such.so", "--pkcs11-token", "t", "--pkcs11-key-label", "k"],
         softhsm.env, "does not exist"),
        (["--kek", "pkcs11", "--pkcs11-module", softhsm.module, "--pkcs11-token", "nope", "--pkcs11-key-label", "k"],
         softhsm.env, "no PKCS#11 token"),
        (["--kek", "pkcs11"], softhsm.env, "--pkcs11-module"),
        (["--kek", "passphrase", "--kek", "passphrase"], {}, "same kind"),
        (["--kek", "hsm"], {}, "--kek takes"),
        (["--kek", f"keyfile:{cli.repo / 'inside.key'}"], {}, "inside the repository"),
    ]  # fmt: skip
    for args, env, message in cases:
        res = cli("init", *args, extra_env=env)
        assert res.code == 2, (args, res.err)
        assert message in _one_error_line(res.err), (args, res.err)
        assert not cli.repo.exists(), args


def test_key_file_slot_added_then_passphrase_slot_removed(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": b"alpha" * 100})
    assert cli("init").code == 0
    assert cli("commit", str(src)).code == 0
    keyfile = tmp_path / "keys" / "repo.key"
    keyfile.parent.mkdir()
    res = cli("--json", "key", "add-kek", "--kek", f"keyfile:{keyfile}")
    assert res.code == 0, res.err
    added = json.loads(res.out)
    assert added["keks"] == ["keyfile"] and keyfile.stat().st_mode & 0o777 == 0o600

    slots = json.loads(cli("--json", "key", "list").out)["slots"]
    assert len(slots) == 2
    first = next(s for s in slots if s["keks"] == ["passphrase"])
    # The key file alone opens the repository (no passphrase anywhere), from where it was recorded...
    assert cli("log", passphrase=None).code == 0
    moved = tmp_path / "usb" / "repo.key"
    moved.parent.mkdir()
    keyfile.rename(moved)
    keyfile = moved
    assert cli("log", passphrase=None).code == 2
    # ... or from where STRONGROOM_KEYFILE says it is now.
    assert cli("ls", "main", passphrase="wrong", extra_env={"STRONGROOM_KEYFILE": str(keyfile)}).code == 0
    assert cli("key", "remove-kek", first["id"]).code == 0
    assert cli("log").code == 2  # the passphrase no longer opens it
    res = cli("key", "remove-kek", added["id"], passphrase=None, extra_env={"STRONGROOM_KEYFILE": str(keyfile)})
    assert res.code == 2 and "last key slot" in _one_error_line(res.err)
    res = cli("key", "remove-kek", "feedfacefeedface", passphrase=None, extra_env={"STRONGROOM_KEYFILE": str(keyfile)})
    assert res.code == 2 and "no key slot" in _one_error_line(res.err)


def test_a_moved_key_file_given_by_override_keeps_working_for_key_changes(cli: Cli, tmp_path: Path) -> None:
    """STRONGROOM_KEYFILE says where an existing slot's key file is now: it opens that slot, and no more. A new
    slot's key file is the one its --kek names; change-passphrase keeps the key file that opened the slot,
    recorded where it is now, and never writes a new (decoy) key file at the old recorded path."""
    (tmp_path / "keys").mkdir()
    old = tmp_path / "keys" / "repo.key"
    assert cli("init", "--kek", "passphrase", "--kek", f"keyfile:{old}").code == 0
    moved = tmp_path / "moved.key"
    old.rename(moved)
    key_bytes = moved.read_bytes()
    override = {"STRONGROOM_KEYFILE": str(moved)}
    assert cli("log", extra_env=override).code == 0

    second = tmp_path / "second.key"
    res = cli("--json", "key", "add-kek", "--kek", f"keyfile:{second}", extra_env=override)
    assert res.code == 0, res.err
    assert second.exists() and second.read_bytes() != key_bytes
    assert str(second) in json.loads(res.out)["description"]
    assert cli("log", passphrase=None).code == 0  # the new slot opens with its own key file, where it recorded it

    res = cli("--json", "key", "change-passphrase", extra_env={**override, "STRONGROOM_NEW_PASSPHRASE": NEW_PASSPHRASE})
    assert res.code == 0, res.err
    assert not old.exists()  # no new key file at the old path
    assert moved.read_bytes() == key_bytes
    changed = json.loads(res.out)
    assert changed["keks"] == ["passphrase", "keyfile"] and str(moved) in changed["description"]
    # The rewrapped slot records where the key file is now: no override needed any more.
    second.unlink()
    assert cli("log", passphrase=NEW_PASSPHRASE).code == 0
    assert cli("log").code == 2  # the old passphrase's slot is gone


def test_init_with_a_key_file_only_asks_for_the_signing_passphrase_first(cli: Cli, tmp_path: Path) -> None:
    """A repository locked by a key file needs no passphrase, but init also makes the signing key: without a
    signing passphrase it is refused before anything is created (it left a repository with no trusted set,
    which a rerun of init refused)."""
    keyfile = tmp_path / "repo.key"
    res = cli("init", "--kek", f"keyfile:{keyfile}", passphrase=None)
    line = _one_error_line(res.err)
    assert res.code == 2 and "no signing passphrase" in line and "STRONGROOM_SIGNING_PASSPHRASE_FILE" in line
    assert not cli.repo.exists() and not keyfile.exists()

    signing = tmp_path / "signing-pass"
    signing.write_text("a signing passphrase 0d4e\n")
    env = {"STRONGROOM_SIGNING_PASSPHRASE_FILE": str(signing)}
    res = cli("init", "--kek", f"keyfile:{keyfile}", passphrase=None, extra_env=env)
    assert res.code == 0, res.err
    assert cli("commit", str(make_tree(tmp_path / "src", {"a": b"x"})), passphrase=None, extra_env=env).code == 0
    assert cli("verify", passphrase=None).code == 0

    # The key now exists: a wrong signing passphrase is found before a second repository is created.
    other = Cli(tmp_path / "other", cli.env)
    signing.write_text("not the signing passphrase\n")
    res = other("init", "--kek", f"keyfile:{tmp_path / 'other.key'}", passphrase=None, extra_env=env)
    assert res.code == 2 and "wrong signing passphrase" in _one_error_line(res.err)
    assert not other.repo.exists() and not (tmp_path / "other.key").exists()


@pytest.mark.parametrize("salt", ["not base64!", 12345])
def test_a_damaged_first_release_slot_is_skipped(cli: Cli, salt: object) -> None:
    """A storage writer can keep a slot's (unkeyed) checksum consistent: an sr-key/1 slot with a bad salt is a
    damaged slot, skipped like any other, not an internal error that stops every command."""
    import hashlib

    assert cli("init").code == 0
    repo_id = json.loads((cli.repo / "config").read_text())["id"]
    body = {"format": "sr-key/1", "kek": "passphrase", "id": "0000000000000000", "repo_id": repo_id,
            "kdf": {"t": 1, "m": 64, "p": 1}, "salt": salt, "nonce": "AAAAAAAAAAAAAAAA", "wrapped": "AAAA"}  # fmt: skip
    body["checksum"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    (cli.repo / "keys" / "0000000000000000").write_text(json.dumps(body))
    res = cli("log")
    assert res.code == 0, res.err
    assert len(json.loads(cli("--json", "key", "list").out)["slots"]) == 1
    # Alone, it is reported as damage (exit 1, one line).
    for name in os.listdir(cli.repo / "keys"):
        if name != "0000000000000000":
            os.remove(cli.repo / "keys" / name)
    res = cli("log")
    assert res.code == 1 and "key slot is damaged" in _one_error_line(res.err)


def test_change_passphrase(cli: Cli, softhsm: SoftHsm, tmp_path: Path) -> None:
    _hsm_init(cli, softhsm, unique_label())
    assert cli("commit", str(make_tree(tmp_path / "s", {"f": b"x"})), extra_env=softhsm.env).code == 0
    env = {**softhsm.env, "STRONGROOM_NEW_PASSPHRASE": NEW_PASSPHRASE}
    res = cli("--json", "key", "change-passphrase", extra_env=env)
    assert res.code == 0, res.err
    assert json.loads(res.out)["keks"] == ["passphrase", "pkcs11"]  # the token stays required
    assert cli("log", extra_env=softhsm.env).code == 2
    assert cli("log", passphrase=NEW_PASSPHRASE, extra_env=softhsm.env).code == 0
    slots = json.loads(cli("--json", "key", "list", passphrase=NEW_PASSPHRASE, extra_env=softhsm.env).out)["slots"]
    assert len(slots) == 1
    # Without a new passphrase source off a terminal: exit 2, nothing changed.
    res = cli("key", "change-passphrase", passphrase=NEW_PASSPHRASE, extra_env=softhsm.env)
    assert res.code == 2 and "new passphrase" in _one_error_line(res.err)
    assert cli("log", passphrase=NEW_PASSPHRASE, extra_env=softhsm.env).code == 0


CHANGE_STEPS = {  # where a `key change-passphrase` is killed: a call of (function, "before" or "after" it) on keys/
    "before the new slot is stored": ("strongroom.backends.local:LocalBackend.put", "before"),
    "once the new slot is stored": ("strongroom.backends.local:LocalBackend.put", "after"),
    "once the old slot is removed": ("strongroom.backends.local:LocalBackend.delete", "after"),
}


def _slot_files(cli: Cli, passphrase: str) -> list[str]:
    """The key slots (key list) when they are the slot files there are, and each opens with only passphrase."""
    res = cli("--json", "key", "list", passphrase=passphrase)
    assert res.code == 0, res.err
    slots = json.loads(res.out)["slots"]
    assert sorted(s["id"] for s in slots) == sorted(os.listdir(cli.repo / "keys"))
    assert all(s["keks"] == ["passphrase"] for s in slots)
    return [s["id"] for s in slots]


@pytest.mark.parametrize("step", list(CHANGE_STEPS))
def test_change_passphrase_killed_at_each_step_then_run_again(cli: Cli, tmp_path: Path, step: str) -> None:
    """SIGKILL at each step of `key change-passphrase`, then the same command again with the old passphrase, as
    someone unsure whether it worked would: one slot is left, which the new passphrase opens and the old does
    not. (Once the new slot was stored, the run again used to add a second slot for the new passphrase.)"""
    src = make_tree(tmp_path / "src", {"a": os.urandom(5000)})
    assert cli("init").code == 0
    assert cli("commit", str(src)).code == 0
    new = {"STRONGROOM_NEW_PASSPHRASE": NEW_PASSPHRASE}
    target, when = CHANGE_STEPS[step]
    hook = injected_kill(tmp_path / "hook", target, when, first_arg="keys/")
    killed = cli("key", "change-passphrase", extra_env={**new, **hook})
    assert killed.code == -signal.SIGKILL, killed.err
    again = cli("key", "change-passphrase", extra_env=new)
    if step == "once the old slot is removed":  # the change was made: the old passphrase opens nothing
        assert again.code == 2 and "passphrase" in _one_error_line(again.err)
    else:
        assert again.code == 0, again.err
    assert len(_slot_files(cli, NEW_PASSPHRASE)) == 1
    assert cli("log").code == 2
    assert cli("log", passphrase=NEW_PASSPHRASE).code == 0


def test_a_change_killed_before_removing_the_old_slot_then_made_from_the_new_one(cli: Cli, tmp_path: Path) -> None:
    """A change killed once the new slot was stored leaves the old slot too; a change made next from the new
    passphrase (not the same one run again) removes the old slot as well: only the latest passphrase opens."""
    assert cli("init").code == 0
    hook = injected_kill(tmp_path / "hook", "strongroom.backends.local:LocalBackend.put", "after", first_arg="keys/")
    killed = cli("key", "change-passphrase", extra_env={"STRONGROOM_NEW_PASSPHRASE": NEW_PASSPHRASE, **hook})
    assert killed.code == -signal.SIGKILL, killed.err
    assert len(os.listdir(cli.repo / "keys")) == 2
    third = "third passphrase 0d4e-Heron"
    res = cli("key", "change-passphrase", passphrase=NEW_PASSPHRASE, extra_env={"STRONGROOM_NEW_PASSPHRASE": third})
    assert res.code == 0, res.err
    assert len(_slot_files(cli, third)) == 1
    assert cli("log").code == 2 and cli("log", passphrase=NEW_PASSPHRASE).code == 2
    assert cli("log", passphrase=third).code == 0


def test_two_killed_changes_then_one_from_the_first_passphrase_leave_only_it(cli: Cli, tmp_path: Path) -> None:
    """A→B killed, then B→C killed (each leaving both slots), then A→D run to the end: D is the user's last
    word, so neither B nor C still opens (the slots the killed changes stored from D's place are removed)."""
    assert cli("init").code == 0
    hook = injected_kill(tmp_path / "hook", "strongroom.backends.local:LocalBackend.put", "after", first_arg="keys/")
    b, c, d = "passphrase B 51f0-Otter", "passphrase C 9a2e-Lynx", "passphrase D 77c3-Wren"
    for opener, new in ((PASSPHRASE, b), (b, c)):
        env = {"STRONGROOM_NEW_PASSPHRASE": new, **hook}
        killed = cli("key", "change-passphrase", passphrase=opener, extra_env=env)
        assert killed.code == -signal.SIGKILL, killed.err
    assert len(os.listdir(cli.repo / "keys")) == 3
    res = cli("key", "change-passphrase", extra_env={"STRONGROOM_NEW_PASSPHRASE": d})
    assert res.code == 0, res.err
    assert len(os.listdir(cli.repo / "keys")) == 1
    assert [cli("log", passphrase=p).code for p in (PASSPHRASE, b, c, d)] == [2, 2, 2, 0]


def test_rotate_keeps_old_data_readable_and_seals_new_data_with_the_new_key(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": os.urandom(30_000)})
    assert cli("init").code == 0
    assert cli("commit", str(src), "-m", "before").code == 0
    res = cli("--json", "key", "rotate")
    assert res.code == 0 and json.loads(res.out) == {"previous": 1, "current": 2}
    (src / "b").write_bytes(os.urandom(30_000))
    assert cli("commit", str(src), "-m", "after").code == 0
    keys = json.loads(cli("--json", "key", "list").out)["data_keys"]
    assert [(k["id"], k["current"]) for k in keys] == [(1, False), (2, True)]
    assert all(k["frames_sealed"] > 0 for k in keys)
    out = tmp_path / "out"
    assert cli("checkout", "main~1", str(out)).code == 0 and (out / "a").read_bytes() == (src / "a").read_bytes()
    assert cli("verify", "--full").code == 0


def test_paper_sheet_recovers_a_repository_whose_key_slots_are_all_lost(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"model.bin": os.urandom(40_000)})
    assert cli("init").code == 0
    assert cli("commit", str(src)).code == 0
    repo_id = json.loads(cli("--json", "key", "list").out)["repo_id"]
    res = cli("key", "export", "--paper", "--confirm", "nope")
    assert res.code == 2 and repo_id[:8] in _one_error_line(res.err)
    assert "export" in cli("--json", "audit", "log", "--action", "key.export").out
    res = cli("key", "export", "--paper")  # off a terminal, no confirmation
    assert res.code == 2
    res = cli("key", "export", "--paper", "--confirm", repo_id[:8])
    assert res.code == 0 and "RECOVERY SHEET" in res.out
    sheet = tmp_path / "sheet.txt"
    sheet.write_text(res.out)

    shutil.rmtree(cli.repo / "keys")  # every way in is gone
    (cli.repo / "keys").mkdir()
    res = cli("log")
    assert res.code == 1 and "key recover" in _one_error_line(res.err)
    typo = tmp_path / "typo.txt"
    lines = sheet.read_text().splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.strip().startswith("1:"))
    lines[i] = lines[i][:-1] + ("A" if lines[i][-1] != "A" else "B")
    typo.write_text("\n".join(lines))
    env = {"STRONGROOM_NEW_PASSPHRASE": NEW_PASSPHRASE}
    res = cli("key", "recover", str(typo), passphrase=None, extra_env=env)
    assert res.code == 2 and "checksum" in _one_error_line(res.err)
    res = cli("key", "recover", str(sheet), passphrase=None, extra_env=env)
    assert res.code == 0, res.err
    out = tmp_path / "out"
    assert cli("checkout", "main", str(out), passphrase=NEW_PASSPHRASE).code == 0
    assert (out / "model.bin").read_bytes() == (src / "model.bin").read_bytes()


def test_no_pin_or_passphrase_in_any_output(cli: Cli, softhsm: SoftHsm, tmp_path: Path) -> None:
    outputs = []
    env = {**softhsm.env, "STRONGROOM_NEW_PASSPHRASE": NEW_PASSPHRASE}
    label = unique_label()
    src = make_tree(tmp_path / "src", {"a": b"data"})
    for args in (
        ("init", "--kek", "passphrase", "--kek", "pkcs11", *softhsm.kek_args(label)),
        ("commit", str(src)),
        ("key", "list"),
        ("--json", "key", "list"),
        ("key", "rotate"),
        ("key", "add-kek", "--kek", "passphrase"),
        ("key", "change-passphrase"),
    ):
        res = cli(*args, extra_env=env)
        assert res.code == 0, (args, res.err)
        outputs.append(res.out_bytes + res.err.encode())
    res = cli("--json", "audit", "log", passphrase=NEW_PASSPHRASE, extra_env=env)
    assert res.code == 0 and "key.change-passphrase" in res.out
    outputs.append(res.out_bytes)
    outputs.append(cli("log", extra_env={**env, "STRONGROOM_PKCS11_PIN": "7319-wrong-pin"}).err.encode())
    blob = b"\n".join(outputs)
    for secret in (softhsm.pin, "7319-wrong-pin", PASSPHRASE, NEW_PASSPHRASE):
        for needle in encodings(secret.encode()):
            assert needle not in blob, secret


def test_backup_of_a_double_encrypted_repository_restores_with_passphrase_and_token(
    cli: Cli,
    softhsm: SoftHsm,
    tmp_path: Path,
    moto_endpoint: str,  # noqa: F811
    make_bucket: MakeBucket,  # noqa: F811
    s3_env: dict[str, str],  # noqa: F811
) -> None:
    """Issue 6: the bucket alone plus the repository's KEKs (passphrase and token) rebuild everything; the
    passphrase alone does not."""
    env = {**softhsm.env, **s3_env}
    src = make_tree(tmp_path / "src", {"a.bin": os.urandom(100_000), "b/c.txt": b"labels\n" * 100})
    res = cli("init", "--kek", "passphrase", "--kek", "pkcs11", *softhsm.kek_args(unique_label()), extra_env=env)
    assert res.code == 0, res.err
    assert cli("commit", str(src), extra_env=env).code == 0
    bucket = make_bucket(lock=True)
    url = f"s3://{bucket}/hsm/repo"
    res = cli("remote", "add", "off", url, "--endpoint", moto_endpoint, "--lock", "governance", "--retain-days", "1",
              extra_env=env)  # fmt: skip
    assert res.code == 0, res.err
    assert cli("backup", "push", "off", extra_env=env).code == 0
    no_pin = {k: v for k, v in env.items() if k != "STRONGROOM_PKCS11_PIN"}
    rebuilt = tmp_path / "rebuilt"
    res = cli("backup", "restore", url, "--endpoint", moto_endpoint, "--to", str(rebuilt), extra_env=no_pin)
    assert res.code == 2 and "PIN" in res.err
    res = cli("backup", "restore", url, "--endpoint", moto_endpoint, "--to", str(rebuilt), extra_env=env)
    assert res.code == 0, res.err
    out = tmp_path / "out"
    res = cli("--repo", str(rebuilt), "checkout", "main", str(out), extra_env=env)
    assert res.code == 0, res.err
    assert tree_snapshot(out) == tree_snapshot(src)


class _WrongPin:
    """The passphrase, and a PIN the token refuses."""

    def passphrase(self) -> Secret:
        return Secret(PASSPHRASE.encode())

    def pin(self, token: str) -> Secret:
        return Secret(b"999999")

    def keyfile_path(self, recorded: str) -> str:
        return recorded


def test_a_wrong_pin_is_tried_once_per_token(
    cli: Cli, softhsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token locks itself after a few wrong PINs: one typed mistake must cost one failed login, however many
    key slots use that token."""
    import contextlib
    from collections.abc import Iterator
    from typing import Any

    from strongroom.backends.local import LocalBackend
    from strongroom.crypto import hsm
    from strongroom.errors import WrongPin
    from strongroom.store.repository import Repository

    label = unique_label()
    _hsm_init(cli, softhsm, label)
    res = cli("key", "add-kek", "--kek", f"keyfile:{tmp_path / 'k.key'}", "--kek", "pkcs11", *softhsm.kek_args(label),
              extra_env=softhsm.env)  # fmt: skip
    assert res.code == 0, res.err
    refused: list[str] = []
    real = hsm.token_session

    @contextlib.contextmanager
    def counting(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            with real(*args, **kwargs) as session:
                yield session
        except WrongPin:
            refused.append(args[1])
            raise

    monkeypatch.setenv("SOFTHSM2_CONF", softhsm.conf)
    monkeypatch.setattr(hsm, "token_session", counting)
    with pytest.raises(WrongPin):
        Repository.open(LocalBackend(str(cli.repo)), _WrongPin())
    assert refused == [softhsm.token]


def test_removing_a_key_slot_takes_the_publish_lock(cli: Cli, tmp_path: Path) -> None:
    """Two removals at once must not each leave the other's slot as the last one: the count is checked and the
    slot deleted under the publish lock."""

    keyfile = tmp_path / "k.key"
    assert cli("init").code == 0
    assert cli("key", "add-kek", "--kek", f"keyfile:{keyfile}").code == 0
    slots = json.loads(cli("--json", "key", "list").out)["slots"]
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (cli.repo / "locks").mkdir(exist_ok=True)
        holder = {"pid": sleeper.pid, "host": socket.gethostname(), "time_ns": 0, "command": "commit"}
        (cli.repo / "locks" / "publish").write_text(json.dumps(holder))
        res = cli("key", "remove-kek", slots[0]["id"])
        assert res.code == 1 and f"PID {sleeper.pid}" in res.err
        assert len(json.loads(cli("--json", "key", "list").out)["slots"]) == 2
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cli("key", "remove-kek", slots[0]["id"]).code == 0


def _forged_slot(repo: Path, module: str) -> None:
    """What someone with write access to the repository folder alone can add: a key slot with a valid (unkeyed)
    checksum whose token layer names a library of their choosing, tried first (oldest)."""
    import hashlib

    repo_id = json.loads((repo / "config").read_text())["id"]
    body = {
        "format": "sr-key/2", "id": "0000000000000000", "repo_id": repo_id, "created_ns": 0,
        "layers": [
            {"kek": "pkcs11", "module": module, "token": "t", "key_label": "k", "key_id": "00",
             "nonce": "AAAAAAAAAAAAAAAA"},
            {"kek": "passphrase", "kdf": {"t": 1, "m": 64, "p": 1}, "salt": "AAAAAAAAAAAAAAAAAAAAAA==",
             "nonce": "AAAAAAAAAAAAAAAA"},
        ],
        "wrapped": "A" * 64,
    }  # fmt: skip
    body["checksum"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    (repo / "keys" / "0000000000000000").write_text(json.dumps(body))


def test_a_key_slot_cannot_make_the_client_load_a_library(cli: Cli, softhsm: SoftHsm) -> None:
    """A PKCS#11 module is code: loading one runs its constructors in the client. A slot planted in the
    repository names a library planted beside it; opening the repository with the right passphrase must not
    load it (the dynamic loader's own trace, LD_DEBUG, shows every library it initialises)."""
    assert cli("init").code == 0
    planted = cli.repo / "data" / "planted.so"
    planted.parent.mkdir(exist_ok=True)
    shutil.copy(softhsm.module, planted)  # any real shared library will do
    _forged_slot(cli.repo, str(planted))
    trace = {"LD_DEBUG": "files"}
    res = cli("log", extra_env=trace)
    assert res.code == 0, res.err  # the real slot opens, as before
    assert str(planted) not in res.err
    # The control: the same trace does show the library once this machine approves it (and the forged slot
    # then fails on its own, as a slot of the wrong token would).
    res = cli("log", extra_env={**trace, "STRONGROOM_PKCS11_MODULES": str(planted), **softhsm.env})
    assert res.code == 0, res.err
    assert str(planted) in res.err


def test_a_module_named_at_init_is_remembered_on_this_machine(cli: Cli, softhsm: SoftHsm, tmp_path: Path) -> None:
    """--pkcs11-module approves the module for later commands here; another machine (another configuration
    folder) must approve it itself, and is told how."""
    _hsm_init(cli, softhsm, unique_label())
    assert cli("log", extra_env=softhsm.env).code == 0
    elsewhere = {**softhsm.env, "STRONGROOM_CONFIG_DIR": str(tmp_path / "other-config")}
    res = cli("log", extra_env=elsewhere)
    assert res.code == 2
    assert "STRONGROOM_PKCS11_MODULES" in _one_error_line(res.err)
    res = cli("log", extra_env={**elsewhere, "STRONGROOM_PKCS11_MODULES": softhsm.module})
    assert res.code == 0, res.err
