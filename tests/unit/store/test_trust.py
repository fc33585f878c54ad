"""The trusted set: encoding, the endorsement chain, and signature statuses (store.trust)."""

from __future__ import annotations

import dataclasses

from strongroom.core import codec
from strongroom.core.model import Commit, Signature
from strongroom.crypto.commitsig import FileSigner
from strongroom.crypto.signing import Ed25519Signer
from strongroom.store.trust import TrustedSet, endorse, signature_status

REPO = "ab" * 32


def signer(name: str) -> FileSigner:
    return FileSigner(Ed25519Signer.generate(name))


def signed(s: FileSigner, repo_id: str = REPO, **change: object) -> Commit:
    c = Commit(b"\x01" * 32, (), s.name, "host", 1, "msg", "main")
    sig = s.sign(codec.commit_signing_message(repo_id, c))
    c = dataclasses.replace(c, signature=Signature(s.name, "ed25519", s.public.fingerprint, sig))
    return dataclasses.replace(c, **change)  # type: ignore[arg-type]


def test_unsigned_commits_encode_as_before_and_signed_ones_round_trip() -> None:
    c = Commit(b"\x01" * 32, (), "a", "h", 1, "m", "main")
    assert b'"sig"' not in codec.encode_commit(c)
    s = signed(signer("alice"))
    assert codec.decode_commit(codec.encode_commit(s)) == s
    unsigned = dataclasses.replace(s, signature=None)
    assert codec.commit_signing_message(REPO, s) == codec.commit_signing_message(REPO, unsigned)
    assert codec.commit_signing_message(REPO, s).startswith(b"strongroom-commit-sig/1\n" + REPO.encode())


def test_statuses() -> None:
    alice, bob, eve = signer("alice"), signer("bob"), signer("eve")
    ts = TrustedSet()
    ts.signers.append(endorse(REPO, "alice", alice.public, 1, "alice", alice))
    ts.signers.append(endorse(REPO, "bob", bob.public, 2, "alice", alice))
    ts = TrustedSet.decode(ts.encode())
    chain = ts.chain(REPO)

    def status(c: Commit) -> str:
        return signature_status(REPO, c, ts, chain).status

    assert status(signed(alice)) == "valid"
    assert status(signed(bob)) == "valid"
    assert status(signed(alice, message="changed")) == "invalid"
    assert status(signed(alice, signature=None)) == "unsigned"
    assert status(signed(eve)) == "untrusted"
    assert status(signed(alice, repo_id="cd" * 32)) == "invalid"  # a signature from another repository
    ts.signers[1] = dataclasses.replace(ts.signers[1], revoked_ns=3, revoked_by="alice")
    assert status(signed(bob)) == "revoked"


def test_an_entry_that_does_not_chain_to_the_root_is_untrusted() -> None:
    """Someone with the repository key writes their own key into the set, self-endorsed or with a bad
    endorsement: its versions stay untrusted."""
    alice, eve = signer("alice"), signer("eve")
    ts = TrustedSet([], [])
    ts.signers.append(endorse(REPO, "alice", alice.public, 1, "alice", alice))
    ts.signers.append(endorse(REPO, "eve", eve.public, 2, "alice", eve))  # self-endorsed, claims alice
    chain = ts.chain(REPO)
    assert chain[alice.public.fingerprint] is None
    assert chain[eve.public.fingerprint] is not None
    assert signature_status(REPO, signed(eve), ts, chain).status == "untrusted"
    forged = dataclasses.replace(ts.signers[1], endorser=alice.public.fingerprint)
    ts.signers[1] = forged
    assert ts.chain(REPO)[eve.public.fingerprint] is not None
