"""Argon2id parameters, derivation and HKDF sub-keys."""

from __future__ import annotations

import os

import pytest

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
