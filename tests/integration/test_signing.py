"""Signed versions (docs/signing.md): signatures, the trusted set, verify, the before-train gate, protected
branches that require signatures, and signers in a real SoftHSM2 token.

Most commands run through the real CLI entry point in-process (`strongroom.cli.main.main`), which keeps this
module fast; the exit-code contract of a bad public key is also checked with a subprocess.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.cli.main import main
from strongroom.core import codec
from strongroom.core.ids import ObjectKind
from strongroom.store.repository import Repository
from strongroom.store.treebuild import ObjectWriter
from tests.conftest import PASSPHRASE, Cli, make_tree
from tests.hsm import SoftHsm, unique_label


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str


class InProcess:
    def __init__(self, repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.repo = repo
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        self.outputs: list[str] = []

    def __call__(self, *args: str, user: str = "alice", env: dict[str, str] | None = None) -> Run:
        with self.monkeypatch.context() as m:
            m.setenv("STRONGROOM_PASSPHRASE", PASSPHRASE)
            m.setenv("STRONGROOM_USER", user)
            for k, v in (env or {}).items():
                m.setenv(k, v)
            self.capsys.readouterr()
            code = main(["--repo", str(self.repo), *args])
            cap = self.capsys.readouterr()
        self.outputs.append(cap.out + cap.err)
        return Run(code, cap.out, cap.err)


@pytest.fixture
def sr(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> InProcess:
    return InProcess(tmp_path / "repo", capsys, monkeypatch)


def ok(r: Run) -> Run:
    assert r.code == 0, r.err
    return r


def fails(r: Run, code: int, *needles: str) -> Run:
    assert r.code == code, (r.code, r.out, r.err)
    for n in needles:
        assert n in r.out + r.err, (n, r.out, r.err)
    return r


def _open(path: Path) -> Repository:
    from strongroom import Strongroom

    return Strongroom.open(str(path), PASSPHRASE)._session.open()


def _forge(path: Path, change: dict[str, object]) -> str:
    """What someone with the repository key but no signing key can do: write a new version of main's head
    (a changed field, the old signature kept or dropped) and point main at it."""
    repo = _open(path)
    head = repo.read_refs().branches["main"]
    commit = dataclasses.replace(repo.load_commit(head), **change)  # type: ignore[arg-type]
    writer = ObjectWriter(repo)
    new = writer.put(ObjectKind.COMMIT, codec.encode_commit(commit))
    writer.finish()
    repo.update_refs("main", head, new, "forge")
    return new.hex()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src", {"a.txt": b"alpha\n" * 100, "d/b.bin": bytes(range(256)) * 40})


def test_signature_round_trip_and_json_log(sr: InProcess, src: Path) -> None:
    init = ok(sr("--json", "init"))
    assert json.loads(init.out)["signer"] == "alice"
    v1 = ok(sr("commit", str(src), "-m", "one")).out.strip()
    entries = json.loads(ok(sr("--json", "log")).out)
    assert [(e["id"], e["signer"], e["signature"]) for e in entries] == [(v1, "alice", "valid")]
    commit = _open(sr.repo).load_commit(bytes.fromhex(v1))
    assert commit.signature is not None and commit.signature.alg == "ed25519"
    assert ok(sr("verify")).out == ""
    listed = json.loads(ok(sr("--json", "signer", "list")).out)
    assert [(s["name"], s["status"]) for s in listed] == [("alice", "trusted")]
    # The signing key is outside the repository, encrypted.
    keys = list((Path(os.environ["STRONGROOM_CONFIG_DIR"]) / "signers").iterdir())
    assert sorted(p.name for p in keys) == ["alice.json", "alice.pem"]
    assert b"ENCRYPTED PRIVATE KEY" in (keys[1] if keys[1].suffix == ".pem" else keys[0]).read_bytes()
    assert not any(p.name.endswith(".pem") for p in sr.repo.rglob("*"))


def test_forged_and_unsigned_versions_fail_verify(sr: InProcess, src: Path) -> None:
    ok(sr("init"))
    ok(sr("commit", str(src), "-m", "honest"))
    forged = _forge(sr.repo, {"message": "honest (edited)"})
    r = fails(sr("verify"), 1, forged, "invalid")
    assert "signature\t" in r.out
    assert ok(sr("log")).out.splitlines()[0].endswith("\tinvalid:alice")
    unsigned = _forge(sr.repo, {"message": "no signature", "signature": None})
    fails(sr("verify"), 1, unsigned, "unsigned")
    fails(sr("verify", "--full"), 1, unsigned)
    assert ok(sr("verify", "--structure")).code == 0  # keyless: cannot judge signatures


def test_untrusted_added_revoked(sr: InProcess, src: Path) -> None:
    ok(sr("init"))
    ok(sr("commit", str(src), "-m", "by alice"))
    (src / "a.txt").write_bytes(b"bob was here\n")
    r = ok(sr("commit", str(src), "-m", "by bob", user="bob"))
    assert "not trusted" in r.err and "signer add bob" in r.err
    fails(sr("verify"), 1, "untrusted", "bob")
    line = ok(sr("signer", "export", "bob")).out.strip()
    assert line.startswith("ssh-ed25519 ")
    fails(sr("signer", "add", "carol", line, user="bob"), 1, "only a trusted signer")  # bob is not trusted
    ok(sr("signer", "add", "bob", line))
    ok(sr("verify"))
    assert ok(sr("log")).out.splitlines()[0].endswith("valid:bob")
    ok(sr("signer", "revoke", "bob"))
    fails(sr("verify"), 1, "revoked", "bob")
    rows = json.loads(ok(sr("--json", "signer", "list")).out)
    assert {r["name"]: r["status"] for r in rows} == {"alice": "trusted", "bob": "revoked"}
    fails(sr("signer", "add", "bob", line), 2, "revoked")


def test_the_last_trusted_signer_is_never_revoked(sr: InProcess, src: Path) -> None:
    """With no trusted signer left no one could add one again (the set is not empty, so no new root is taken):
    every version would fail verify for good. Refused, one line, exit 2, nothing changed."""
    ok(sr("init"))
    ok(sr("commit", str(src), "-m", "by alice"))
    before = (sr.repo / "signers").read_bytes()
    r = fails(sr("signer", "revoke", "alice"), 2, "last trusted signer", "add another signer first")
    assert len(r.err.strip().splitlines()) == 1
    assert (sr.repo / "signers").read_bytes() == before
    ok(sr("verify"))
    ok(sr("signer", "keygen", "bob", user="bob"))
    ok(sr("signer", "add", "bob", ok(sr("signer", "export", "bob")).out.strip()))
    ok(sr("signer", "revoke", "alice", user="bob"))  # bob remains
    fails(sr("signer", "revoke", "bob", user="bob"), 2, "last trusted signer")
    rows = json.loads(ok(sr("--json", "signer", "list", user="bob")).out)
    assert {r["name"]: r["status"] for r in rows} == {"alice": "revoked", "bob": "trusted"}


def test_openssh_lines_accepted_and_garbage_refused(sr: InProcess, cli: Cli) -> None:
    ok(sr("init"))
    ed = Ed25519PrivateKey.generate().public_key()
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    fmt = serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ok(sr("signer", "add", "ed-user", ed.public_bytes(*fmt).decode() + " ed@example"))
    ok(sr("signer", "add", "ec-user", p256.public_bytes(*fmt).decode()))
    rows = {r["name"]: r for r in json.loads(ok(sr("--json", "signer", "list")).out)}
    assert rows["ed-user"]["alg"] == "ed25519" and rows["ec-user"]["alg"] == "ecdsa-p256"
    assert rows["ec-user"]["fingerprint"].startswith("SHA256:")
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(*fmt).decode()
    for bad in ("ssh-ed25519 AAAAnot-base64", "garbage", p384, "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ"):
        fails(sr("signer", "add", "x", bad), 2)
    r = cli("signer", "add", "x", "ssh-ed25519 garbage")  # the contract, in a real process
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    fails(sr("signer", "add", "../evil", ed.public_bytes(*fmt).decode()), 2, "invalid signer name")


def test_before_train_gate(sr: InProcess, src: Path, tmp_path: Path) -> None:
    ok(sr("init"))
    os.symlink("a.txt", src / "link")
    version = ok(sr("commit", str(src))).out.strip()
    data = tmp_path / "train"
    ok(sr("checkout", version, str(data)))
    res = json.loads(ok(sr("--json", "verify", "--before-train", str(data), "main")).out)
    assert res["ok"] and res["signature"]["status"] == "valid" and res["files_checked"] == 3
    assert res["bytes_checked"] == 600 + 256 * 40
    (data / "extra.txt").write_bytes(b"x")
    (data / "d" / "b.bin").unlink()
    with open(data / "a.txt", "r+b") as f:  # same size, one byte changed
        f.write(b"A")
    r = fails(sr("verify", "--before-train", str(data), version), 1)
    assert r.out.splitlines() == ["changed\ta.txt\tcontent differs", "missing\td/b.bin", "extra\textra.txt\tfile"]
    res = json.loads(fails(sr("--json", "verify", "--before-train", str(data), version), 1).out)
    assert {(d["path"], d["kind"]) for d in res["differences"]} == {
        ("a.txt", "changed"),
        ("d/b.bin", "missing"),
        ("extra.txt", "extra"),
    }
    # Exact content, but the version is not validly signed: refused too.
    ok(sr("checkout", version, str(tmp_path / "train2")))
    unsigned = _forge(sr.repo, {"signature": None})
    fails(sr("verify", "--before-train", str(tmp_path / "train2"), unsigned), 1, "unsigned")
    fails(sr("verify", "--before-train", str(tmp_path / "nowhere"), version), 2, "not a folder")


def test_protected_branch_requires_signed_versions(sr: InProcess, src: Path) -> None:
    ok(sr("init"))
    ok(sr("commit", str(src), "-m", "base"))
    ok(sr("branch", "protect", "main", "--require-signed"))
    ok(sr("branch", "create", "exp"))
    (src / "a.txt").write_bytes(b"mallory\n")
    ok(sr("commit", str(src), "-b", "exp", "-m", "untrusted", user="mallory"))
    head = json.loads(ok(sr("--json", "branch", "list")).out)
    before = {b["name"]: b["version"] for b in head}["main"]
    fails(sr("merge", "exp", "--into", "main"), 1, "requires signed versions", "untrusted")
    after = {b["name"]: b["version"] for b in json.loads(ok(sr("--json", "branch", "list")).out)}["main"]
    assert after == before
    ok(sr("branch", "create", "good"))
    (src / "a.txt").write_bytes(b"alice again\n")
    ok(sr("commit", str(src), "-b", "good", "-m", "signed"))
    ok(sr("merge", "good", "--into", "main"))


@pytest.fixture
def hsm_env(softhsm: SoftHsm) -> Iterator[dict[str, str]]:
    yield {"STRONGROOM_PKCS11_PIN": softhsm.pin}


@pytest.mark.parametrize("alg", ["ed25519", "ecdsa-p256"])
def test_hsm_signers(sr: InProcess, src: Path, softhsm: SoftHsm, hsm_env: dict[str, str], alg: str) -> None:
    ok(sr("init"))
    name = f"hsm-{alg}"
    r = ok(
        sr(
            "signer", "keygen", name, "--alg", alg, "--pkcs11",
            "--pkcs11-module", softhsm.module, "--pkcs11-token", softhsm.token,
            "--pkcs11-key-label", unique_label("sign"),
            user=name, env=hsm_env,
        )
    )  # fmt: skip
    line = r.out.strip()
    assert line.startswith("ssh-ed25519 " if alg == "ed25519" else "ecdsa-sha2-nistp256 ")
    record = json.loads((Path(os.environ["STRONGROOM_CONFIG_DIR"]) / "signers" / f"{name}.json").read_text())
    assert record["kind"] == "pkcs11" and "PRIVATE" not in json.dumps(record)
    ok(sr("signer", "add", name, line))
    version = ok(sr("commit", str(src), "-m", "from the token", user=name, env=hsm_env)).out.strip()
    assert ok(sr("log")).out.splitlines()[0].endswith(f"valid:{name}")
    ok(sr("verify"))
    sig = _open(sr.repo).load_commit(bytes.fromhex(version)).signature
    assert sig is not None and sig.alg == alg and len(sig.value) == 64
    fails(sr("commit", str(src), user=name, env={"STRONGROOM_PKCS11_PIN": "0000-wrong"}), 2, "wrong PIN")
    keys = json.loads(ok(sr("--json", "key", "list")).out)
    assert {s["name"] for s in keys["signers"]} == {"alice", name}
    assert not any(softhsm.pin in o or "0000-wrong" in o for o in sr.outputs)


def test_software_ecdsa_keys_are_refused(sr: InProcess) -> None:
    fails(sr("signer", "keygen", "x", "--alg", "ecdsa-p256"), 2, "--pkcs11")
    fails(sr("signer", "keygen", "x", "--alg", "rsa"), 2, "unknown signing algorithm")


def test_separate_signing_passphrase(sr: InProcess, src: Path, tmp_path: Path) -> None:
    sp = tmp_path / "signing-pass"
    sp.write_text("a different signing passphrase 5e1\n")
    env = {"STRONGROOM_SIGNING_PASSPHRASE_FILE": str(sp)}
    ok(sr("init", env=env))
    ok(sr("commit", str(src), env=env))
    fails(sr("commit", str(src)), 2, "wrong signing passphrase")  # the repository passphrase does not open it
    ok(sr("--json", "log"))
    secret = b"a different signing passphrase 5e1"
    for o in sr.outputs:
        assert secret.decode() not in o and base64.b64encode(secret).decode()[:16] not in o


def _rewrite_signers(path: Path, change: object) -> None:
    """What someone with the repository key can do to the trusted set (no client state involved)."""
    from strongroom.backends.local import LocalBackend
    from strongroom.crypto.secret import Secret
    from strongroom.store.trust import SIGNERS_NAME, seal_signers

    repo = Repository.open(LocalBackend(str(path)), Secret(PASSPHRASE.encode()))
    trusted = repo.read_signers()
    change(repo, trusted)  # type: ignore[operator]
    repo.backend.put(SIGNERS_NAME, seal_signers(repo.sealer, repo.context, trusted))


def test_a_client_pins_the_trusted_set(sr: InProcess, src: Path, tmp_path: Path) -> None:
    """The trusted set lives in the repository, so a holder of the repository key can roll it back to before
    a revocation, undo a revocation, or replace it with a set rooted at their own key. A client that has seen
    the set refuses each (exit 1, naming trust-current) instead of calling forged versions valid."""
    from strongroom.crypto.commitsig import FileSigner
    from strongroom.crypto.signing import Ed25519Signer
    from strongroom.store.trust import TrustedSet, endorse

    def refused(why: str) -> None:
        for args in (("verify",), ("log",), ("signer", "list")):
            r = fails(sr(*args), 1, why, "trust-current")
            assert "Traceback" not in r.err

    def replace(repo: Repository, trusted: TrustedSet) -> None:
        mallory = FileSigner(Ed25519Signer.generate("mallory"))
        root = endorse(repo.config.repo_id, "mallory", mallory.public, 1, "mallory", mallory)
        trusted.signers = [root]
        trusted.generation += 5

    ok(sr("init"))
    at_init = (sr.repo / "signers").read_bytes()
    _rewrite_signers(sr.repo, replace)  # 0. right after init, the set init wrote is already pinned
    refused("trusted signers replaced")
    (sr.repo / "signers").write_bytes(at_init)
    ok(sr("commit", str(src), "-m", "by alice"))
    (src / "a.txt").write_bytes(b"bob was here\n")
    ok(sr("commit", str(src), "-m", "by bob", user="bob"))
    ok(sr("signer", "add", "bob", ok(sr("signer", "export", "bob")).out.strip()))
    before_revocation = (sr.repo / "signers").read_bytes()
    ok(sr("signer", "revoke", "bob"))
    after_revocation = (sr.repo / "signers").read_bytes()

    # 1. The file put back to its copy from before the revocation, on the client that revoked.
    (sr.repo / "signers").write_bytes(before_revocation)
    refused("trusted signers rolled back")
    (sr.repo / "signers").write_bytes(after_revocation)
    fails(sr("verify"), 1, "revoked")  # the real set is accepted again

    # 2. The revocation undone under a newer generation.
    def unrevoke(repo: Repository, trusted: TrustedSet) -> None:
        trusted.signers = [dataclasses.replace(s, revoked_ns=0, revoked_by="") for s in trusted.signers]
        trusted.generation += 1

    _rewrite_signers(sr.repo, unrevoke)
    refused("is no longer revoked")
    (sr.repo / "signers").write_bytes(after_revocation)

    # 3. A whole new set, rooted at another key, that trusts the versions it forges.
    _rewrite_signers(sr.repo, replace)
    refused("trusted signers replaced")
    (sr.repo / "signers").write_bytes(after_revocation)

    # 4. An unrevoked copy of bob's entry before the revoked one: a set never lists a key twice.
    def duplicate(repo: Repository, trusted: TrustedSet) -> None:
        bob = trusted.signers[1]
        trusted.signers.insert(1, dataclasses.replace(bob, revoked_ns=0, revoked_by=""))
        trusted.generation += 1

    _rewrite_signers(sr.repo, duplicate)
    fails(sr("verify"), 1, "trusted signers")
    assert "valid:bob" not in sr("log").out
    (sr.repo / "signers").write_bytes(after_revocation)

    # 5. A revoked key (its private key leaked) adding a key dated before its own revocation.
    carol = FileSigner(Ed25519Signer.generate("carol"))
    ok(sr("signer", "add", "carol", carol.public.openssh("carol")))
    ok(sr("signer", "revoke", "carol"))

    def backdate(repo: Repository, trusted: TrustedSet) -> None:
        revoked = trusted.by_fingerprint(carol.public.fingerprint)
        assert revoked is not None and revoked.revoked
        mallory = FileSigner(Ed25519Signer.generate("mallory"))
        trusted.signers.append(
            endorse(repo.config.repo_id, "mallory", mallory.public, revoked.revoked_ns - 1, "carol", carol)
        )
        trusted.generation += 1

    _rewrite_signers(sr.repo, backdate)
    refused("which this client saw revoked")

    # 6. The set deleted.
    (sr.repo / "signers").unlink()
    refused("rolled back")

    # trust-current accepts what is there now, as for refs; a fresh client (no state) has nothing pinned.
    (sr.repo / "signers").write_bytes(before_revocation)
    ok(sr("trust-current"))
    ok(sr("verify"))
    (sr.repo / "signers").write_bytes(after_revocation)
    fails(sr("verify"), 1, "revoked")
    (sr.repo / "signers").write_bytes(before_revocation)
    ok(sr("verify", env={"STRONGROOM_STATE_DIR": str(tmp_path / "fresh-state")}))
