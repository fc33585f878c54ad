"""Client-side memory of each repository: a rollback (older generation) or a swap (other key, other suite,
other refs at the same generation) is refused; newer states are accepted and remembered."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strongroom.errors import RollbackDetected
from strongroom.store.clientstate import ClientState, PinnedSigners
from strongroom.store.refs import Refs
from strongroom.store.trust import TrustedSet, TrustedSigner

FP, SUITE = "f" * 32, "blake3k+aes256gcm/1"


def refs(gen: int, head: bytes = b"\1" * 32) -> Refs:
    return Refs(gen, {"main": head})


@pytest.fixture
def state(tmp_path: Path) -> ClientState:
    return ClientState(str(tmp_path / "state"), "ab" * 32)


def test_first_contact_is_trusted(state: ClientState) -> None:
    assert state.load() is None
    state.check(FP, SUITE, refs(5))


def test_save_then_same_state_is_fine(state: ClientState) -> None:
    state.save(FP, SUITE, refs(5))
    state.check(FP, SUITE, refs(5))
    seen = state.load()
    assert seen is not None and (seen.fingerprint, seen.suite, seen.generation) == (FP, SUITE, 5)


def test_newer_generation_is_accepted(state: ClientState) -> None:
    state.save(FP, SUITE, refs(5))
    state.check(FP, SUITE, refs(6, b"\2" * 32))


def test_rollback_is_detected(state: ClientState) -> None:
    state.save(FP, SUITE, refs(5))
    with pytest.raises(RollbackDetected, match="rolled back") as info:
        state.check(FP, SUITE, refs(4))
    assert info.value.exit_code == 1
    assert "trust-current" in (info.value.hint() or "")


def test_same_generation_with_other_refs_is_a_swap(state: ClientState) -> None:
    state.save(FP, SUITE, refs(5))
    with pytest.raises(RollbackDetected, match="swapped"):
        state.check(FP, SUITE, refs(5, b"\2" * 32))


@pytest.mark.parametrize("fp,suite", [("e" * 32, SUITE), (FP, "other/1")])
def test_other_key_or_suite_is_a_swap(state: ClientState, fp: str, suite: str) -> None:
    state.save(FP, SUITE, refs(5))
    with pytest.raises(RollbackDetected, match="swapped"):
        state.check(fp, suite, refs(9))


def test_save_never_moves_back_unless_forced(state: ClientState) -> None:
    state.save(FP, SUITE, refs(5))
    state.save(FP, SUITE, refs(3))
    assert state.load().generation == 5  # type: ignore[union-attr]
    with pytest.raises(RollbackDetected):
        state.check(FP, SUITE, refs(3))
    state.save(FP, SUITE, refs(3), force=True)  # `trust-current`
    assert state.load().generation == 3  # type: ignore[union-attr]
    state.check(FP, SUITE, refs(3))


def test_state_is_per_repository(tmp_path: Path) -> None:
    a = ClientState(str(tmp_path), "aa" * 32)
    b = ClientState(str(tmp_path), "bb" * 32)
    a.save(FP, SUITE, refs(9))
    b.check("e" * 32, SUITE, refs(1))  # b has never been seen


def test_save_leaves_no_temp_file(state: ClientState) -> None:
    state.save(FP, SUITE, refs(1))
    state.save(FP, SUITE, refs(2))
    folder = Path(state.path).parent
    assert [p.name for p in folder.iterdir()] == [Path(state.path).name]


def test_an_unchanged_state_is_not_rewritten_and_a_new_one_is(state: ClientState) -> None:
    state.save(FP, SUITE, refs(5))
    before = Path(state.path).stat()
    state.save(FP, SUITE, refs(5))  # every read-only command saves what it saw: no write, no fsync
    assert Path(state.path).stat().st_ino == before.st_ino
    state.save(FP, SUITE, refs(6, b"\2" * 32))
    assert Path(state.path).stat().st_ino != before.st_ino
    seen = state.load()
    assert seen is not None and seen.generation == 6


def _signers(generation: int, *revoked: int) -> TrustedSet:
    from strongroom.crypto.commitsig import PublicKey

    entries = [
        TrustedSigner(f"s{i}", PublicKey("ed25519", bytes([i]) * 32), i, "x", "", b"", revoked_ns=int(i in revoked))
        for i in range(3)
    ]
    return TrustedSet(generation, entries)


def test_pinned_signers(tmp_path: Path) -> None:
    pin = PinnedSigners(str(tmp_path), "aa" * 32)
    pin.check(_signers(1))  # first contact: nothing pinned
    pin.save(TrustedSet())
    pin.check(_signers(0))  # an empty set pins nothing
    pin.save(_signers(4, 2))
    pin.check(_signers(4, 2))
    pin.check(_signers(6, 1, 2))  # newer, more revocations: fine
    for bad, why in (
        (_signers(3, 2), "rolled back"),
        (TrustedSet(), "rolled back"),
        (_signers(4, 1, 2), "swapped"),
        (_signers(5), "no longer revoked"),
        (TrustedSet(9, _signers(9, 2).signers[1:]), "replaced"),
    ):
        with pytest.raises(RollbackDetected, match=why):
            pin.check(bad)
    assert Path(pin.path).stat().st_mode & 0o777 == 0o600
    before = Path(pin.path).stat().st_ino
    pin.save(_signers(4, 2))  # unchanged: not rewritten
    pin.save(_signers(3, 2))  # older: kept unless forced
    assert Path(pin.path).stat().st_ino == before
    pin.save(_signers(3), force=True)  # `trust-current`
    pin.check(_signers(3))


def test_the_audit_log_pin_is_named_without_the_catalogs_password(tmp_path: Path) -> None:
    from strongroom.catalog.db import masked_url
    from strongroom.errors import AuditLogReplaced
    from strongroom.store.clientstate import PinnedLog

    url = "postgresql+psycopg://bob:hunter2-secret@db.example:5432/strongroom"

    def pin_of(u: str) -> PinnedLog:
        return PinnedLog(str(tmp_path), "ab" * 32, masked_url(u))

    pin = pin_of(url)
    assert "hunter2" not in masked_url(url) and "hunter2" not in masked_url("weird://bob:hunter2@x")
    assert pin.path == pin_of(url.replace("hunter2-secret", "other")).path
    assert pin.path != pin_of(url.replace("db.example", "db2.example")).path
    pin.check("0011223344556677")  # nothing pinned yet: first contact
    pin.save("0011223344556677", 3)
    pin.check("0011223344556677")
    with pytest.raises(AuditLogReplaced, match="holds log 8899aabbccddeeff, but this client sealed log 0011"):
        pin.check("8899aabbccddeeff")
    written = Path(pin.path).read_bytes()
    assert b"hunter2" not in written and oct(os.stat(pin.path).st_mode & 0o777) == "0o600"


def test_the_audit_log_pin_remembers_how_far_the_log_was_sealed(tmp_path: Path) -> None:
    from strongroom.store.clientstate import PinnedLog

    pin = PinnedLog(str(tmp_path), "ab" * 32, "sqlite:///c.sqlite")
    assert pin.sealed("0011223344556677") == 0
    pin.save("0011223344556677", 40)
    pin.save("0011223344556677", 12)  # a shorter log never lowers it
    assert pin.sealed("0011223344556677") == 40
    assert pin.sealed("8899aabbccddeeff") == 0  # another log: nothing known of it
    pin.save("0011223344556677", 12, force=True)  # trust-current accepts the shorter one
    assert pin.sealed("0011223344556677") == 12
    pin.save("8899aabbccddeeff", 5)  # a log accepted in its place starts from its own size
    assert pin.load() == "8899aabbccddeeff" and pin.sealed("8899aabbccddeeff") == 5
    Path(pin.path).write_text('{"format": "sr-pinned-audit-log/1", "log_id": "0011223344556677"}')
    assert pin.load() == "0011223344556677" and pin.sealed("0011223344556677") == 0  # a pin written by 0.2.0
