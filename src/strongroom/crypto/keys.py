"""The key hierarchy below the master key: the master key protects the keyring, which holds the data keys,
the id key, the chunker secret and the log key. (KEKs wrap the master key: ``crypto.keyslot``.)
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any

from strongroom.crypto.aead import open_with, seal_with
from strongroom.crypto.kdf import subkey
from strongroom.crypto.secret import Secret
from strongroom.errors import DecryptionFailed, IntegrityError

KEYRING_FORMAT = "sr-keyring/1"
# Random 96-bit GCM nonces stay safe for 2^32 messages per key (SP 800-38D 8.3). We rotate to a fresh
# data key long before: at 2^30 frames, checked at every publish.
ROTATE_AFTER_MESSAGES = 1 << 30
# Scope data keys (store.scopes) take ids from 2^31 up, repository data keys count up from 1: never equal.
SCOPE_KEY_BASE = 1 << 31
CHUNKER_SEED_BITS = 63  # pyfastcdc's compiled chunker rejects seeds of 2^63 and above


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def unb64(s: str) -> bytes:
    return base64.b64decode(s.encode(), validate=True)


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def new_master_key() -> Secret:
    return Secret(os.urandom(32))


def fingerprint(master: Secret) -> str:
    """Public fingerprint of a master key: tells one repository's key from another's, reveals nothing."""
    return subkey(master, "fingerprint").reveal()[:16].hex()


@dataclass
class Keyring:
    """Decrypted keyring: data keys by id (the newest is current), the id key, the chunker secret."""

    data_keys: dict[int, Secret]
    current: int
    id_key: Secret
    chunker_seed: int
    created: dict[int, int] = field(default_factory=dict)
    # Ed25519 seed of the repository's log key: signs audit checkpoints and backup manifests. It lives
    # sealed inside the repository, so every copy can verify and re-sign its own log.
    log_seed: Secret | None = None

    def __repr__(self) -> str:
        return f"<Keyring data_keys={sorted(self.data_keys)} current={self.current}>"

    @classmethod
    def generate(cls, now_ns: int) -> Keyring:
        seed = int.from_bytes(os.urandom(8), "big") & ((1 << CHUNKER_SEED_BITS) - 1)
        return cls(
            {1: Secret(os.urandom(32))}, 1, Secret(os.urandom(32)), seed or 1, {1: now_ns}, Secret(os.urandom(32))
        )

    def rotate(self, now_ns: int) -> int:
        new_id = max(self.data_keys) + 1
        self.data_keys[new_id] = Secret(os.urandom(32))
        self.created[new_id] = now_ns
        self.current = new_id
        return new_id

    def destroyed(self, key_id: int) -> bool:
        """Whether data key ``key_id`` existed and was destroyed (`key reencrypt --retire`): ids count up from 1
        and the newest is always kept, so an id below the newest that the keyring lacks is one it dropped."""
        return 0 < key_id < max(self.data_keys) and key_id not in self.data_keys

    def encode(self) -> bytes:
        return canonical_json(
            {
                "format": KEYRING_FORMAT,
                "current": self.current,
                "data_keys": {str(k): b64(v.reveal()) for k, v in self.data_keys.items()},
                "created": {str(k): v for k, v in self.created.items()},
                "id_key": b64(self.id_key.reveal()),
                "chunker_seed": self.chunker_seed,
                **({"log_seed": b64(self.log_seed.reveal())} if self.log_seed is not None else {}),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Keyring:
        try:
            obj = json.loads(data)
            if obj["format"] != KEYRING_FORMAT:
                raise IntegrityError("unsupported keyring format")
            ring = cls(
                data_keys={int(k): Secret(unb64(v)) for k, v in obj["data_keys"].items()},
                current=int(obj["current"]),
                id_key=Secret(unb64(obj["id_key"])),
                chunker_seed=int(obj["chunker_seed"]),
                created={int(k): int(v) for k, v in obj.get("created", {}).items()},
                log_seed=Secret(unb64(obj["log_seed"])) if "log_seed" in obj else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            raise IntegrityError("keyring is malformed") from None
        keys = [*ring.data_keys.values(), ring.id_key, *([ring.log_seed] if ring.log_seed is not None else [])]
        if ring.current not in ring.data_keys or any(len(k) != 32 for k in keys):
            raise IntegrityError("keyring is malformed")
        return ring


def seal_keyring(master: Secret, repo_id: str, keyring: Keyring) -> bytes:
    nonce, ct = seal_with(subkey(master, "keyring"), keyring.encode(), f"{KEYRING_FORMAT}|{repo_id}".encode())
    return nonce + ct


def open_keyring(master: Secret, repo_id: str, data: bytes) -> Keyring:
    if len(data) < 28:
        raise IntegrityError("keyring is damaged")
    try:
        plain = open_with(subkey(master, "keyring"), data[:12], data[12:], f"{KEYRING_FORMAT}|{repo_id}".encode())
    except DecryptionFailed:
        raise IntegrityError("keyring is damaged or belongs to another key") from None
    return Keyring.decode(plain)
