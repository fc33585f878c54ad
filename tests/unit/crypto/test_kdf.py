"""Argon2id parameters, derivation and HKDF sub-keys."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from strongroom.crypto import kdf
from strongroom.crypto.kdf import STRONG, UNSAFE_TEST_ONLY, KdfParams, derive_kek, mac, mac_ok, subkey
from strongroom.crypto.secret import Secret

FAST = KdfParams(time_cost=1, memory_kib=64, parallelism=1)


def test_default_is_strong() -> None:
    assert KdfParams() == STRONG
    assert not STRONG.is_weak()
    assert STRONG.memory_kib >= 19456 and STRONG.time_cost >= 2
    assert STRONG.name == "argon2id/t3-m65536-p4"


@pytest.mark.parametrize("params,weak", [
    (UNSAFE_TEST_ONLY, True),
    (KdfParams(2, 19456, 1), False),  # OWASP's minimum for Argon2id
    (KdfParams(2, 19455, 1), True),
    (KdfParams(1, 65536, 4), True),
    (KdfParams(1, 1 << 21, 4), True),
    (KdfParams(10, 1024, 1), True),
    (KdfParams(3, 65536, 1), False),
])
def test_is_weak(params: KdfParams, weak: bool) -> None:
    assert params.is_weak() is weak


def test_derivation_is_deterministic_and_depends_on_every_input() -> None:
    salt = os.urandom(16)
    base = derive_kek(Secret(b"pw"), salt, FAST)
    assert len(base) == 32
    assert derive_kek(Secret(b"pw"), salt, FAST) == base
    assert derive_kek(Secret(b"pW"), salt, FAST) != base
    assert derive_kek(Secret(b"pw"), os.urandom(16), FAST) != base
    assert derive_kek(Secret(b"pw"), salt, KdfParams(2, 64, 1)) != base
    assert derive_kek(Secret(b"pw"), salt, KdfParams(1, 128, 1)) != base


def test_subkeys_are_separated_by_label() -> None:
    master = Secret(os.urandom(32))
    keys = {subkey(master, label).reveal() for label in ("config", "keyring", "fingerprint", "config ")}
    assert len(keys) == 4
    assert subkey(master, "config") == subkey(master, "config")
    assert subkey(master, "config") != subkey(Secret(os.urandom(32)), "config")


def test_mac() -> None:
    key = Secret(os.urandom(32))
    tag = mac(key, b"body")
    assert mac_ok(key, b"body", tag)
    assert not mac_ok(key, b"body!", tag)
    assert not mac_ok(Secret(os.urandom(32)), b"body", tag)
    assert not mac_ok(key, b"body", tag[:-1])
    assert not mac_ok(key, b"body", b"")


def test_work_given_meanwhile_runs_on_the_caller_during_the_derivation(monkeypatch: pytest.MonkeyPatch) -> None:
    params = KdfParams(time_cost=1, memory_kib=1024, parallelism=1)
    expected = kdf.derive_kek(Secret(b"pw"), b"s" * 16, params).reveal()
    job_ran = threading.Event()
    overlapped: list[bool] = []
    real = kdf._argon2id

    def derivation_waiting_for_the_job(passphrase: Secret, salt: bytes, p: KdfParams) -> Secret:
        overlapped.append(job_ran.wait(10))  # only a job running meanwhile, on another thread, sets it
        return real(passphrase, salt, p)

    monkeypatch.setattr(kdf, "_argon2id", derivation_waiting_for_the_job)
    ran_on: list[threading.Thread] = []

    def job() -> None:
        ran_on.append(threading.current_thread())
        job_ran.set()

    threads_before = threading.active_count()
    with kdf.meanwhile(job):
        got = kdf.derive_kek(Secret(b"pw"), b"s" * 16, params)
        again = kdf.derive_kek(Secret(b"pw"), b"s" * 16, params)  # the work ran once, with the first
    assert got.reveal() == expected == again.reveal()
    assert ran_on == [threading.current_thread()]
    assert overlapped[0] is True
    assert threading.active_count() == threads_before  # no thread outlives the derivation: forks may follow


def test_work_queued_in_a_block_without_a_derivation_is_dropped() -> None:
    ran: list[int] = []
    with kdf.meanwhile(lambda: ran.append(1)):
        pass  # a repository opened by key file or token derives nothing
    kdf.derive_kek(Secret(b"pw"), b"s" * 16, KdfParams(time_cost=1, memory_kib=1024, parallelism=1))
    assert ran == []


def test_an_interrupt_in_the_work_still_waits_for_argon2() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), kdf.meanwhile(interrupted):
        kdf.derive_kek(Secret(b"pw"), b"s" * 16, KdfParams(time_cost=2, memory_kib=8192, parallelism=1))
    assert not any(t.name == "strongroom-kdf" for t in threading.enumerate())  # a fork may follow


def test_failing_meanwhile_work_does_not_fail_the_derivation() -> None:
    params = KdfParams(time_cost=1, memory_kib=1024, parallelism=1)

    def broken() -> None:
        raise ImportError("no such module")

    with kdf.meanwhile(broken):
        assert len(kdf.derive_kek(Secret(b"pw"), b"s" * 16, params).reveal()) == 32


def test_an_argon2_error_still_reaches_the_caller() -> None:
    with kdf.meanwhile(lambda: None), pytest.raises(Exception, match=r"(?i)memory"):
        kdf.derive_kek(Secret(b"pw"), b"s" * 16, KdfParams(time_cost=1, memory_kib=1, parallelism=1))


_FORK_RIGHT_AFTER = """
import os, sys
import strongroom.cli.main, strongroom.cli.commands.versions_cmd  # logging arrives after strongroom, as in the CLI
from strongroom.crypto import kdf
from strongroom.crypto.kdf import KdfParams
from strongroom.crypto.secret import Secret
from strongroom.service.context import _import_audit_log
with kdf.meanwhile(_import_audit_log):
    kdf.derive_kek(Secret(b"pw"), b"s" * 16, KdfParams(time_cost=1, memory_kib=1024, parallelism=1))
import threading
assert threading.active_count() == 1, threading.enumerate()
pid = os.fork()  # as the workers are forked right after the repository opens
if pid == 0:
    os._exit(0 if "sqlalchemy" in sys.modules else 1)
print(os.waitpid(pid, 0)[1])
"""


def test_a_fork_right_after_the_derivation_does_not_hang() -> None:
    # A thread importing SQLAlchemy while the process forked once deadlocked on logging's at-fork lock.
    out = subprocess.run([sys.executable, "-c", _FORK_RIGHT_AFTER], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_a_process_that_keeps_derived_keys_skips_argon2_only_for_the_same_inputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent's memory (docs/agent.md): the same passphrase, salt and parameters give the kept key without
    Argon2; any other input, a wrong passphrase above all, pays the full derivation and gets its own key."""
    calls: list[bytes] = []
    real = kdf._argon2id

    def counted(passphrase: Secret, salt: bytes, params: KdfParams) -> Secret:
        calls.append(passphrase.reveal())
        return real(passphrase, salt, params)

    monkeypatch.setattr(kdf, "_argon2id", counted)
    salt = os.urandom(16)
    kdf.remember_derived_keys()
    try:
        first = derive_kek(Secret(b"right"), salt, FAST)
        assert derive_kek(Secret(b"right"), salt, FAST) == first
        assert calls == [b"right"]
        assert derive_kek(Secret(b"wrong"), salt, FAST) != first
        assert derive_kek(Secret(b"right"), os.urandom(16), FAST) != first
        assert derive_kek(Secret(b"right"), salt, KdfParams(2, 64, 1)) != first
        assert calls == [b"right", b"wrong", b"right", b"right"]
        # Inputs whose concatenations are equal stay apart (each part is length-prefixed).
        a = derive_kek(Secret(b"ab"), b"c" * 16, FAST)
        assert derive_kek(Secret(b"a"), b"b" + b"c" * 16, FAST) != a
        assert b"right" not in b"".join(kdf._remembered.keys)  # kept under keyed digests only
    finally:
        kdf.forget_derived_keys()
    derive_kek(Secret(b"right"), salt, FAST)
    assert calls[-1] == b"right" and len(calls) == 7  # forgotten: derived again
