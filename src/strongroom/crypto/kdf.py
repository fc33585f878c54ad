"""Argon2id key derivation (RFC 9106) and HKDF sub-keys."""

from __future__ import annotations

from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.crypto.secret import Secret


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id parameters; the default is RFC 9106's second recommended option (t=3, 64 MiB, p=4)."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4

    @property
    def name(self) -> str:
        return f"argon2id/t{self.time_cost}-m{self.memory_kib}-p{self.parallelism}"

    def is_weak(self) -> bool:
        return self.memory_kib < 19456 or self.time_cost < 2


STRONG = KdfParams()
# Only for the test suite (settings refuse it elsewhere): keeps hundreds of repository opens fast.
UNSAFE_TEST_ONLY = KdfParams(time_cost=1, memory_kib=64, parallelism=1)


def derive_kek(passphrase: Secret, salt: bytes, params: KdfParams) -> Secret:
    return Secret(
        hash_secret_raw(
            passphrase.reveal(),
            salt,
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            type=Type.ID,
        )
    )


def subkey(master: Secret, label: str) -> Secret:
    return Secret(HKDF(hashes.SHA256(), 32, salt=None, info=b"strongroom/" + label.encode()).derive(master.reveal()))


def mac(key: Secret, data: bytes) -> bytes:
    h = hmac.HMAC(key.reveal(), hashes.SHA256())
    h.update(data)
    return h.finalize()


def mac_ok(key: Secret, data: bytes, tag: bytes) -> bool:
    h = hmac.HMAC(key.reveal(), hashes.SHA256())
    h.update(data)
    try:
        h.verify(tag)
    except Exception:
        return False
    return True
