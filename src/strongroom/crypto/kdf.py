"""Argon2id key derivation (RFC 9106) and HKDF sub-keys."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import blake3
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


class _Pending(threading.local):
    def __init__(self) -> None:
        self.jobs: list[Callable[[], object]] = []


_pending = _Pending()


@contextlib.contextmanager
def meanwhile(job: Callable[[], object]) -> Iterator[None]:
    """Run job on this thread while the first key derivation in the block runs Argon2 on another one.

    Argon2 holds the CPU for a tenth of a second or more in C, without the GIL; the session imports the
    audit log's SQLAlchemy in that time. The Argon2 thread only computes and is joined before the derivation
    returns, so no thread outlives it (forked workers follow). The job runs at most once and its errors are
    ignored: it is only a head start (an import that fails is reported where it is used)."""
    _pending.jobs.append(job)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            _pending.jobs.remove(job)


class _Remembered:
    """Derived keys kept by a long-lived process (the agent, docs/agent.md), so that a passphrase presented
    again skips Argon2. Looked up by a digest keyed with a random per-process key: nothing kept reveals the
    passphrase, and a wrong passphrase still pays the full derivation."""

    def __init__(self) -> None:
        self.lookup_key: bytes | None = None
        self.keys: dict[bytes, Secret] = {}


_remembered = _Remembered()


def remember_derived_keys() -> None:
    """From now on this process keeps each key it derives (for the life of the process)."""
    if _remembered.lookup_key is None:
        _remembered.lookup_key = os.urandom(32)


def forget_derived_keys() -> None:
    _remembered.keys.clear()
    _remembered.lookup_key = None


def derive_kek(passphrase: Secret, salt: bytes, params: KdfParams) -> Secret:
    if _remembered.lookup_key is None:
        return _derive(passphrase, salt, params)
    h = blake3.blake3(key=_remembered.lookup_key)
    for part in (passphrase.reveal(), salt, params.name.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    slot = h.digest()
    kek = _remembered.keys.get(slot)
    if kek is None:
        kek = _remembered.keys[slot] = _derive(passphrase, salt, params)
    return kek


def _derive(passphrase: Secret, salt: bytes, params: KdfParams) -> Secret:
    jobs, _pending.jobs = _pending.jobs, []
    if not jobs:
        return _argon2id(passphrase, salt, params)
    outcome: list[Secret | BaseException] = []

    def derive() -> None:
        try:
            outcome.append(_argon2id(passphrase, salt, params))
        except BaseException as e:  # handed to the caller below
            outcome.append(e)

    worker = threading.Thread(target=derive, name="strongroom-kdf", daemon=True)
    worker.start()
    try:
        for job in jobs:
            with contextlib.suppress(Exception):
                job()
    finally:
        _join(worker)  # even on Ctrl-C: a caller that carries on may fork next
    result = outcome.pop()
    if isinstance(result, BaseException):
        try:
            raise result
        finally:
            del result  # its traceback holds the passphrase: no cycle through this frame keeps it alive
    return result


def _join(thread: threading.Thread) -> None:
    """Join even across Ctrl-C (Argon2 ends within a second or so), then let the interrupt through."""
    interrupted: KeyboardInterrupt | None = None
    while thread.is_alive():
        try:
            thread.join()
        except KeyboardInterrupt as e:
            interrupted = e
    if interrupted is not None:
        raise interrupted


def _argon2id(passphrase: Secret, salt: bytes, params: KdfParams) -> Secret:
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
