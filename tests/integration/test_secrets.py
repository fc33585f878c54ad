"""No secret leaves the process: across a representative session (init, commit, log, ls, cat, diff, stats,
verify, checkout, a wrong passphrase, an internal error with its log file), neither the passphrase nor the
repository's keys appear — raw, hex or base64 — in any output or in any file the client or the repository
holds; and no repr() of the opened library objects shows them."""

from __future__ import annotations

import base64
from pathlib import Path

from strongroom import Strongroom
from strongroom.crypto.secret import Secret
from tests.conftest import Cli, CliResult, injected_bug, make_tree

SECRET_PASSPHRASE = "Zebra-Quokka-Ünïcode-9f1c2e7d-long passphrase"
WRONG_PASSPHRASE = "Otter-Wombat-guess-41b0aa5c"


def encodings(raw: bytes) -> set[bytes]:
    """raw, hex in both cases, and base64 (standard and URL-safe) at each of the three alignments."""
    out = {raw, raw.hex().encode(), raw.hex().upper().encode()}
    for shift in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            core = enc(raw[shift:]).rstrip(b"=")[:-3]  # the characters that do not depend on what follows
            if len(core) >= 12:
                out.add(core)
    return out


def find_leaks(haystacks: dict[str, bytes], secrets: dict[str, bytes]) -> list[str]:
    needles = {(name, n) for name, raw in secrets.items() for n in encodings(raw)}
    return [f"{name} in {where}" for where, data in haystacks.items() for name, n in needles if n in data]


def files_below(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots if root.exists() for p in root.rglob("*") if p.is_file()}


def signing_key_bytes(folder: Path, passphrase: str) -> bytes:
    """The raw Ed25519 private key of the one signing key in ``folder``."""
    from cryptography.hazmat.primitives import serialization

    (pem,) = folder.glob("*.pem")
    key = serialization.load_pem_private_key(pem.read_bytes(), password=passphrase.encode())
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def test_no_secret_in_outputs_files_or_reprs(cli: Cli, tmp_path: Path) -> None:
    pass_file = tmp_path / "secret-store" / "pass"
    pass_file.parent.mkdir()
    pass_file.write_text(SECRET_PASSPHRASE + "\n")
    by_file = {"STRONGROOM_PASSPHRASE_FILE": str(pass_file)}
    src = make_tree(tmp_path / "src", {"a.txt": b"alpha\n" * 500, "b/c.bin": bytes(range(256)) * 64})
    outputs: list[tuple[str, CliResult]] = []

    def run(*args: str, **kw: object) -> CliResult:
        r = cli(*args, **kw)  # type: ignore[arg-type]
        outputs.append((" ".join(args), r))
        return r

    assert run("init", passphrase=None, extra_env=by_file).code == 0
    assert run("commit", str(src), "-m", "one", passphrase=SECRET_PASSPHRASE).code == 0
    (src / "a.txt").write_bytes(b"beta\n" * 500)
    assert run("--passphrase-command", f"cat {pass_file}", "commit", str(src), passphrase=None).code == 0
    for args in (("log",), ("--json", "log"), ("ls", "main"), ("cat", "main", "a.txt"), ("diff", "main~1", "main"),
                 ("--json", "stats"), ("verify", "--full"), ("checkout", "main", str(tmp_path / "out"))):
        assert run(*args, passphrase=None, extra_env=by_file).code == 0, args
    assert run("log", passphrase=WRONG_PASSPHRASE).code == 2
    # An internal error writes a traceback to a log file: that file must not hold secrets either.
    (tmp_path / "src" / "new.txt").write_bytes(b"new\n")
    data = cli.repo / "data"
    moved = tmp_path / "data-aside"
    data.rename(moved)
    data.write_bytes(b"not a folder")
    r = run("--passphrase-command", f"cat {pass_file}", "commit", str(src), passphrase=None)
    assert r.code == 1 and "storage error" in r.err, r.err  # the storage failed: one line, no log
    data.unlink()
    moved.rename(data)
    bug = injected_bug(tmp_path / "bug", "strongroom.store.treebuild:build_tree")
    r = run("--passphrase-command", f"cat {pass_file}", "commit", str(src), passphrase=None, extra_env=bug)
    assert r.code == 3, r.err
    logs = list((tmp_path / "state" / "logs").glob("*.log"))
    assert logs, "the internal error left no log file"

    sr = Strongroom.open(str(cli.repo), SECRET_PASSPHRASE)
    repo = sr._session.open()
    keyring = repo.keyring
    secrets = {
        "passphrase": SECRET_PASSPHRASE.encode(),
        "wrong passphrase": WRONG_PASSPHRASE.encode(),
        "master key": repo._master.reveal(),
        "id key": keyring.id_key.reveal(),
        **{f"data key {k}": v.reveal() for k, v in keyring.data_keys.items()},
        # The committer's signing key (its passphrase is the repository passphrase here: none was set apart).
        "signing key": signing_key_bytes(tmp_path / "config" / "signers", SECRET_PASSPHRASE),
    }

    haystacks = {f"stdout of {cmd}": r.out_bytes for cmd, r in outputs}
    haystacks |= {f"stderr of {cmd}": r.err.encode() for cmd, r in outputs}
    haystacks |= files_below(cli.repo, tmp_path / "state", tmp_path / "cache", tmp_path / "home", tmp_path / "config")
    assert len(haystacks) > 30
    assert find_leaks(haystacks, secrets) == []

    reprs = {
        "Strongroom": repr(sr),
        "Session": repr(sr._session),
        "Settings": repr(sr._session.settings),
        "Repository": repr(repo),
        "Keyring": repr(keyring),
        "Sealer": repr(repo.sealer),
        "passphrase": repr(sr._session.passphrase) + str(sr._session.passphrase),
        "master": repr(repo._master) + str(repo._master),
        "Secret": repr(Secret(SECRET_PASSPHRASE.encode())),
    }
    assert find_leaks({k: v.encode() for k, v in reprs.items()}, secrets) == []


def test_the_scan_finds_what_it_looks_for() -> None:
    """The detector itself: each encoding of a secret embedded in other bytes is found."""
    secret = SECRET_PASSPHRASE.encode()
    for shift in range(3):
        prefix = b"x" * shift
        for blob in (secret, secret.hex().encode(), base64.b64encode(prefix + secret),
                     base64.urlsafe_b64encode(prefix + secret)):
            assert find_leaks({"blob": b"head " + blob + b" tail"}, {"s": secret}), blob
    assert find_leaks({"blob": b"nothing to see"}, {"s": secret}) == []
