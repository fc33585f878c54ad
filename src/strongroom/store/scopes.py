"""Scopes: erasure that reaches every copy (crypto-shredding).

A scope has its own data key, id key and chunker secret. A version committed with ``--scope NAME`` seals its
chunks and trees (file names included) under the scope's data key and names them with the scope's id key,
so nothing is shared with other scopes or with unscoped data. Its commit object stays under the repository
key, so the history stays walkable and the version can be listed as "shredded" after the end.

The scope's keys are wrapped by a scope KEK that is never written into the repository or any backup of it:
32 random bytes in a keystore file outside the repository (``<keystore>/<repository id>/<scope id>.key``,
mode 0600). ``shred`` records the shredding in the repository (a new, uniquely named object, so backups
carry it) and then destroys the keystore file. From then on no copy of the repository can decrypt the
scope's objects, whatever passphrase or master key is held.

Objects: ``scopes/<scope id>`` — one frame (kind SCOPE) of canonical JSON ``sr-scope/1``: id, name, key
id (≥ 2^31, so it never meets a repository data key id), created time and actor, and the wrapped keys
(nonce, AES-256-GCM under the scope KEK with associated data ``sr-scope/1|<repo id>|<scope id>|<key id>``).
``scopes/<scope id>-shredded`` — one frame (kind SCOPE) recording who shredded it and when.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass

from strongroom.core import codec
from strongroom.core.ids import ObjectKind
from strongroom.crypto.aead import open_with, seal_with
from strongroom.crypto.keys import CHUNKER_SEED_BITS, SCOPE_KEY_BASE, b64, unb64
from strongroom.crypto.keyslot import create_keyfile, read_keyfile
from strongroom.crypto.secret import Secret
from strongroom.errors import DecryptionFailed, InputError, IntegrityError, KeyUnavailable, StrongroomError
from strongroom.store.repository import Repository

SCOPE_FORMAT = "sr-scope/1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

AVAILABLE, SHREDDED, UNAVAILABLE = "available", "shredded", "unavailable"


@dataclass
class Scope:
    scope_id: str
    name: str
    key_id: int
    created_ns: int
    created_by: str
    nonce: bytes
    wrapped: bytes
    shredded_ns: int = 0
    shredded_by: str = ""
    state: str = UNAVAILABLE


def check_scope_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InputError("a scope name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    return name


def keystore_path(keystore: str, repo_id: str, scope_id: str) -> str:
    return os.path.join(keystore, repo_id, f"{scope_id}.key")


def _aad(repo_id: str, scope_id: str, key_id: int) -> bytes:
    return f"{SCOPE_FORMAT}|{repo_id}|{scope_id}|{key_id}".encode()


def _record_name(scope_id: str) -> str:
    return f"scopes/{scope_id}"


def _shred_name(scope_id: str) -> str:
    return f"scopes/{scope_id}-shredded"


def _read(repo: Repository, name: str) -> dict[str, object]:
    try:
        obj = json.loads(repo.sealer.open(repo.backend.get(name), ObjectKind.SCOPE, repo.context))
    except (StrongroomError, ValueError):
        raise IntegrityError(f"{name} is damaged") from None
    if not isinstance(obj, dict) or obj.get("format") != SCOPE_FORMAT:
        raise IntegrityError(f"{name} is damaged")
    return obj


def _write(repo: Repository, name: str, body: dict[str, object]) -> None:
    repo.ensure_current_key()
    repo.backend.put(name, repo.sealer.seal(codec.dumps_canonical(body), ObjectKind.SCOPE, repo.context))


def list_scopes(repo: Repository) -> list[Scope]:
    names = {n for n, _ in repo.backend.list("scopes")}
    out = []
    for name in sorted(names):
        if name.endswith("-shredded"):
            continue
        obj = _read(repo, name)
        try:
            scope = Scope(
                scope_id=str(obj["id"]),
                name=str(obj["name"]),
                key_id=int(str(obj["key_id"])),
                created_ns=int(str(obj["created_ns"])),
                created_by=str(obj["created_by"]),
                nonce=unb64(str(obj["nonce"])),
                wrapped=unb64(str(obj["wrapped"])),
            )
        except (KeyError, ValueError):
            raise IntegrityError(f"{name} is damaged") from None
        if name != _record_name(scope.scope_id) or scope.key_id < SCOPE_KEY_BASE:
            raise IntegrityError(f"{name} is damaged")
        if _shred_name(scope.scope_id) in names:
            mark = _read(repo, _shred_name(scope.scope_id))
            scope.shredded_ns = int(str(mark.get("shredded_ns", 0)))
            scope.shredded_by = str(mark.get("shredded_by", ""))
            scope.state = SHREDDED
        out.append(scope)
    out.sort(key=lambda s: (s.created_ns, s.scope_id))
    return out


def _unwrap(repo: Repository, scope: Scope, kek: Secret) -> tuple[Secret, Secret, int]:
    try:
        plain = open_with(kek, scope.nonce, scope.wrapped, _aad(repo.config.repo_id, scope.scope_id, scope.key_id))
    except DecryptionFailed:
        raise KeyUnavailable(f"the keystore key of scope {scope.name!r} does not open it") from None
    if len(plain) != 72:
        raise IntegrityError(f"scope {scope.name!r} holds malformed keys")
    return Secret(plain[:32]), Secret(plain[32:64]), int.from_bytes(plain[64:], "big")


def load_scopes(repo: Repository, keystore: str) -> list[Scope]:
    """Register every scope with the repository: its keys when the keystore holds them, else its state, so
    that reads of its objects say "shredded" or "unavailable" instead of failing as damage."""
    scopes = list_scopes(repo)
    for scope in scopes:
        keys = None
        if scope.state != SHREDDED:
            path = keystore_path(keystore, repo.config.repo_id, scope.scope_id)
            if os.path.exists(path):
                keys = _unwrap(repo, scope, read_keyfile(path))
                scope.state = AVAILABLE
        repo.register_scope(scope.key_id, scope.name, scope.state, keys, scope.scope_id)
    return scopes


def create_scope(repo: Repository, name: str, keystore: str, actor: str) -> Scope:
    """A new scope: its KEK goes to the keystore first, then its record to the repository."""
    check_scope_name(name)
    scope_id = os.urandom(8).hex()
    key_id = SCOPE_KEY_BASE | int.from_bytes(os.urandom(4), "big") & (SCOPE_KEY_BASE - 1)
    path = keystore_path(keystore, repo.config.repo_id, scope_id)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    create_keyfile(path)
    _fsync_dir(os.path.dirname(path))  # the key file's name is durable before the record that needs it
    _fsync_dir(os.path.dirname(os.path.dirname(path)))
    data_key, id_key = os.urandom(32), os.urandom(32)
    seed = (int.from_bytes(os.urandom(8), "big") & ((1 << CHUNKER_SEED_BITS) - 1)) or 1
    nonce, wrapped = seal_with(
        read_keyfile(path), data_key + id_key + seed.to_bytes(8, "big"), _aad(repo.config.repo_id, scope_id, key_id)
    )
    now = time.time_ns()
    body: dict[str, object] = {
        "format": SCOPE_FORMAT,
        "id": scope_id,
        "name": name,
        "key_id": key_id,
        "created_ns": now,
        "created_by": actor,
        "nonce": b64(nonce),
        "wrapped": b64(wrapped),
    }
    _write(repo, _record_name(scope_id), body)
    scope = Scope(scope_id, name, key_id, now, actor, nonce, wrapped, state=AVAILABLE)
    repo.register_scope(key_id, name, AVAILABLE, (Secret(data_key), Secret(id_key), seed), scope_id)
    return scope


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def find_scope(scopes: list[Scope], name: str) -> Scope | None:
    """The scope named ``name`` (the oldest, should two processes have created it at once)."""
    return next((s for s in scopes if s.name == name), None)


def shred(repo: Repository, scope: Scope, keystore: str, actor: str) -> None:
    """Record the shredding in the repository, then destroy the scope KEK. Run again after an interruption:
    a scope recorded as shredded is never opened again, and its keystore file is destroyed on the rerun."""
    if scope.state != SHREDDED:
        body: dict[str, object] = {
            "format": SCOPE_FORMAT,
            "id": scope.scope_id,
            "shredded_ns": time.time_ns(),
            "shredded_by": actor,
        }
        _write(repo, _shred_name(scope.scope_id), body)
    path = keystore_path(keystore, repo.config.repo_id, scope.scope_id)
    if os.path.exists(path):
        # Overwrite before unlinking: on a plain disk the bytes go; on SSDs, copy-on-write filesystems and
        # backups of the keystore they may survive (docs/keys.md says so).
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.write(os.urandom(max(size, 64)))
            f.flush()
            os.fsync(f.fileno())
        os.unlink(path)
        _fsync_dir(os.path.dirname(path))
    repo.register_scope(scope.key_id, scope.name, SHREDDED, None, scope.scope_id)
    scope.state = SHREDDED
