"""Key slots: the repository master key wrapped by one or more key-encryption keys (KEKs).

A slot (``keys/<id>``, plaintext JSON, format ``sr-key/2``) holds a list of layers and the wrapped master
key. Layer 0 wraps the master key, layer 1 wraps the result of layer 0, and so on: every layer of a slot is
needed to open it (double encryption). Separate slots are alternatives: any one of them opens the
repository on its own.

KEKs:
- ``passphrase``: Argon2id(passphrase, salt) → AES-256-GCM. Parameters and salt are in the layer.
- ``keyfile``: 32 random bytes in a file outside the repository (``strongroom-keyfile/1 <base64>``),
  through HKDF → AES-256-GCM. The layer records the path and a fingerprint of the key, not the key.
- ``pkcs11``: a non-extractable AES-256 key inside a PKCS#11 token; the token runs AES-GCM. The layer
  records module path, token label, key label and key id, so later commands need only the PIN.

Each layer's associated data binds the format, repository id, slot id, layer position and the public
description of every layer, so a layer cannot be moved, reordered or re-described. A SHA-256 checksum
over the JSON tells a damaged slot from a wrong credential. ``sr-key/1`` slots (one passphrase layer,
written by the first release) are still read.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.crypto import hsm, kdf
from strongroom.crypto.aead import open_with, seal_with
from strongroom.crypto.kdf import KdfParams, derive_kek
from strongroom.crypto.keys import b64, canonical_json, unb64
from strongroom.crypto.secret import Secret
from strongroom.errors import DecryptionFailed, HsmError, InputError, IntegrityError, KeyUnavailable, WrongPassphrase

SLOT_FORMAT = "sr-key/2"
LEGACY_FORMAT = "sr-key/1"
KEYFILE_MAGIC = "strongroom-keyfile/1"
KINDS = ("passphrase", "keyfile", "pkcs11")
SALT_BYTES = 16  # a passphrase layer's Argon2id salt
NONCE_BYTES = 12  # every layer's AES-GCM nonce


class Credentials(Protocol):
    """Where the secrets that open KEKs come from (the service asks the user, the environment, a file)."""

    def passphrase(self) -> Secret: ...

    def pin(self, token: str) -> Secret: ...

    def keyfile_path(self, recorded: str) -> str:
        """The key file to read for a layer that recorded ``recorded`` (an override may point elsewhere)."""
        ...


class PassphraseOnly:
    """Credentials holding just a passphrase (library callers, the test suite)."""

    def __init__(self, passphrase: Secret) -> None:
        self._passphrase = passphrase

    def __repr__(self) -> str:
        return "<PassphraseOnly>"

    def passphrase(self) -> Secret:
        return self._passphrase

    def pin(self, token: str) -> Secret:
        raise KeyUnavailable(f"a PIN for PKCS#11 token {token!r} is needed")

    def keyfile_path(self, recorded: str) -> str:
        return recorded


def as_credentials(value: Secret | Credentials) -> Credentials:
    return PassphraseOnly(value) if isinstance(value, Secret) else value


# ---------------------------------------------------------------------- what a user asks for


@dataclass(frozen=True)
class KekRequest:
    """A KEK as named on the command line: ``passphrase``, ``keyfile:PATH`` or ``pkcs11`` (with its token).

    A key file request with a ``fingerprint`` names an existing key file that must hold that key (a slot
    rebuilt around the key file that opened it); it is never created. Without one, a missing PATH gets a
    new key file."""

    kind: str
    path: str = ""
    module: str = ""
    token: str = ""
    label: str = ""
    fingerprint: str = ""

    @classmethod
    def parse(cls, text: str, module: str = "", token: str = "", label: str = "") -> KekRequest:
        kind, _, arg = text.partition(":")
        if kind == "passphrase" and not arg:
            return cls("passphrase")
        if kind == "keyfile" and arg:
            return cls("keyfile", path=os.path.abspath(arg))
        if kind == "pkcs11" and not arg:
            missing = [n for n, v in (("module", module), ("token", token), ("key-label", label)) if not v]
            if missing:
                raise InputError("--kek pkcs11 needs " + ", ".join(f"--pkcs11-{m}" for m in missing))
            return cls("pkcs11", module=module, token=token, label=label)
        raise InputError(f"--kek takes passphrase, keyfile:PATH or pkcs11, not {text!r}")


def check_requests(requests: Sequence[KekRequest]) -> None:
    if not requests:
        raise InputError("at least one --kek is needed")
    if len(requests) > 2:
        raise InputError("at most two --kek options: the master key is wrapped by the first, then the second")
    if len({r.kind for r in requests}) != len(requests):
        raise InputError("two --kek options of the same kind protect nothing more than one; use different kinds")


# ---------------------------------------------------------------------- key files


def create_keyfile(path: str) -> None:
    """Write a new key file (refuses to overwrite one), readable by its owner only."""
    text = f"{KEYFILE_MAGIC} {b64(os.urandom(32))}\n".encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"key file {path} already exists") from None
    except OSError as e:
        raise InputError(f"cannot create key file {path}: {e.strerror}") from None
    try:
        os.write(fd, text)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_keyfile(path: str) -> Secret:
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError as e:
        raise KeyUnavailable(f"cannot read key file {path}: {e.strerror}") from None
    magic, _, body = data.strip().partition(b" ")
    try:
        if magic.decode() != KEYFILE_MAGIC:
            raise ValueError
        key = unb64(body.decode())
    except ValueError:
        raise InputError(f"{path} is not a strongroom key file") from None
    if len(key) != 32:
        raise InputError(f"{path} is not a strongroom key file")
    return Secret(key)


def _keyfile_kek(key: Secret) -> Secret:
    return Secret(HKDF(hashes.SHA256(), 32, salt=None, info=b"strongroom/keyfile-kek").derive(key.reveal()))


def keyfile_fingerprint(key: Secret) -> str:
    return HKDF(hashes.SHA256(), 8, salt=None, info=b"strongroom/keyfile-fingerprint").derive(key.reveal()).hex()


# ---------------------------------------------------------------------- slots


@dataclass(frozen=True)
class Layer:
    kind: str
    params: dict[str, Any]  # public: KDF parameters and salt, key file path, HSM key reference
    nonce: bytes = b""

    def describe(self) -> str:
        p = self.params
        if self.kind == "passphrase":
            kdf = p["kdf"]
            return f"passphrase (argon2id t={kdf['t']} m={kdf['m']} KiB p={kdf['p']})"
        if self.kind == "keyfile":
            return f"keyfile {p['path']} (fingerprint {p['fingerprint']})"
        return f"pkcs11 token {p['token']!r} key {p['key_label']!r} id {p['key_id']} ({p['module']})"


@dataclass(frozen=True)
class KeySlot:
    slot_id: str
    repo_id: str
    created_ns: int
    layers: tuple[Layer, ...]
    wrapped: bytes
    legacy: bool = field(default=False, compare=False)

    def describe(self) -> str:
        return " + ".join(layer.describe() for layer in self.layers)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(layer.kind for layer in self.layers)


def _aad(repo_id: str, slot_id: str, position: int, layers: Sequence[Layer]) -> bytes:
    public = [{"kind": layer.kind, "params": layer.params} for layer in layers]
    return f"{SLOT_FORMAT}|{repo_id}|{slot_id}|{position}|".encode() + canonical_json(public)


def _legacy_aad(repo_id: str, slot_id: str) -> bytes:
    return f"{LEGACY_FORMAT}|{repo_id}|{slot_id}".encode()


def _layer_for(request: KekRequest, creds: Credentials, kdf: KdfParams) -> tuple[Layer, Secret | None]:
    """Resolve a request into a layer's public description (and, for software KEKs, the key itself)."""
    if request.kind == "passphrase":
        salt = os.urandom(SALT_BYTES)
        params = {"kdf": {"t": kdf.time_cost, "m": kdf.memory_kib, "p": kdf.parallelism}, "salt": b64(salt)}
        return Layer("passphrase", params), derive_kek(creds.passphrase(), salt, kdf)
    if request.kind == "keyfile":
        if request.fingerprint:
            key = read_keyfile(request.path)
            if not hmac.compare_digest(keyfile_fingerprint(key), request.fingerprint):
                raise KeyUnavailable(f"key file {request.path} is not the one this repository was locked with")
        else:
            if not os.path.exists(request.path):
                create_keyfile(request.path)
            key = read_keyfile(request.path)
        return Layer("keyfile", {"path": request.path, "fingerprint": keyfile_fingerprint(key)}), _keyfile_kek(key)
    ref, _ = hsm.aes_kek(request.module, request.token, request.label, creds.pin(request.token))
    return Layer("pkcs11", ref.public()), None


def successor_id(repo_id: str, slot_id: str) -> str:
    """The id of the slot that replaces ``slot_id`` (a changed passphrase): derived, not random, so that a
    change run again after one killed before it removed the old slot overwrites the slot it left, rather than
    adding a second one, and so that a slot whose successor exists is known to be a replaced one."""
    return hashlib.sha256(f"strongroom/slot-successor|{repo_id}|{slot_id}".encode()).hexdigest()[:16]


def make_slot(
    repo_id: str,
    master: Secret,
    requests: Sequence[KekRequest],
    creds: Credentials,
    kdf: KdfParams,
    now_ns: int,
    slot_id: str = "",
) -> KeySlot:
    """Wrap the master key with each requested KEK in turn, in a slot named ``slot_id`` (a new random id when
    none is given)."""
    check_requests(requests)
    slot_id = slot_id or os.urandom(8).hex()
    resolved = [_layer_for(r, creds, kdf) for r in requests]
    layers = [layer for layer, _ in resolved]
    data = master.reveal()
    sealed: list[Layer] = []
    for position, (layer, key) in enumerate(resolved):
        aad = _aad(repo_id, slot_id, position, layers)
        if key is not None:
            nonce, data = seal_with(key, data, aad)
        else:
            ref = hsm.HsmKeyRef.from_public(layer.params)
            nonce = os.urandom(NONCE_BYTES)
            data = hsm.aes_gcm_encrypt(ref, creds.pin(ref.token), nonce, data, aad)
        sealed.append(Layer(layer.kind, layer.params, nonce))
    return KeySlot(slot_id, repo_id, now_ns, tuple(sealed), data)


def open_slot(slot: KeySlot, repo_id: str, creds: Credentials) -> Secret:
    """Unwrap the master key, outermost layer first. Wrong credentials raise WrongPassphrase, WrongPin,
    KeyUnavailable or HsmError; nothing else is learnt."""
    if slot.repo_id != repo_id:
        raise IntegrityError("key slot belongs to another repository")
    modules = {str(la.params.get("module")) for la in slot.layers if la.kind == "pkcs11"}
    # A token's module (python-pkcs11 and the library: ~70 ms) is loaded while the passphrase is derived.
    with kdf.meanwhile(lambda: _load_modules(modules)) if modules else contextlib.nullcontext():
        data = slot.wrapped
        for position in reversed(range(len(slot.layers))):
            data = _open_layer(slot.layers[position], data, _layer_aad(slot, repo_id, position), creds)
    if len(data) != 32:
        raise IntegrityError("key slot holds a malformed master key")
    return Secret(data)


def _layer_aad(slot: KeySlot, repo_id: str, position: int) -> bytes:
    return _legacy_aad(repo_id, slot.slot_id) if slot.legacy else _aad(repo_id, slot.slot_id, position, slot.layers)


def _load_modules(modules: set[str]) -> None:
    for module in modules:
        hsm.preload(module)


def _open_layer(layer: Layer, data: bytes, aad: bytes, creds: Credentials) -> bytes:
    p = layer.params
    try:
        if layer.kind == "passphrase":
            kdf = KdfParams(int(p["kdf"]["t"]), int(p["kdf"]["m"]), int(p["kdf"]["p"]))
            return open_with(derive_kek(creds.passphrase(), unb64(p["salt"]), kdf), layer.nonce, data, aad)
        if layer.kind == "keyfile":
            path = creds.keyfile_path(str(p["path"]))
            key = read_keyfile(path)
            if not hmac.compare_digest(keyfile_fingerprint(key), str(p["fingerprint"])):
                raise KeyUnavailable(f"key file {path} is not the one this repository was locked with")
            return open_with(_keyfile_kek(key), layer.nonce, data, aad)
        ref = hsm.HsmKeyRef.from_public(p)
        return hsm.aes_gcm_decrypt(ref, creds.pin(ref.token), layer.nonce, data, aad)
    except DecryptionFailed:
        if layer.kind == "passphrase":
            raise WrongPassphrase() from None
        if layer.kind == "keyfile":
            raise KeyUnavailable("the key file does not open this key slot") from None
        raise HsmError(f"HSM key {p['key_label']!r} does not open this key slot") from None


def encode_slot(slot: KeySlot) -> bytes:
    body: dict[str, Any] = {
        "format": SLOT_FORMAT,
        "id": slot.slot_id,
        "repo_id": slot.repo_id,
        "created_ns": slot.created_ns,
        "layers": [{"kek": la.kind, **la.params, "nonce": b64(la.nonce)} for la in slot.layers],
        "wrapped": b64(slot.wrapped),
    }
    body["checksum"] = hashlib.sha256(canonical_json(body)).hexdigest()
    return json.dumps(body, indent=1, sort_keys=True).encode()


def _check_kdf(kdf: Any) -> dict[str, int]:
    t, m, p = int(kdf["t"]), int(kdf["m"]), int(kdf["p"])
    if not (1 <= t <= 64 and 8 * p <= m <= (4 << 20) and 1 <= p <= 64):
        raise IntegrityError("key slot has out-of-range KDF parameters")
    return {"t": t, "m": m, "p": p}


def _b64_field(value: Any, size: int) -> str:
    """A base64 field of ``size`` bytes (format.md §10), as the slot wrote it. Checked here, so that a bad
    salt or nonce is a damaged slot rather than an error out of Argon2 or AES-GCM when the slot is opened."""
    if not isinstance(value, str) or len(unb64(value)) != size:
        raise IntegrityError("key slot is damaged")
    return value


def _parse_layer(obj: dict[str, Any]) -> Layer:
    kind = obj.pop("kek")
    nonce = unb64(_b64_field(obj.pop("nonce"), NONCE_BYTES))
    if kind == "passphrase":
        params: dict[str, Any] = {"kdf": _check_kdf(obj["kdf"]), "salt": _b64_field(obj["salt"], SALT_BYTES)}
    elif kind == "keyfile":
        params = {"path": str(obj["path"]), "fingerprint": str(obj["fingerprint"])}
    elif kind == "pkcs11":
        params = hsm.HsmKeyRef.from_public(obj).public()
    else:
        raise IntegrityError(f"key slot names an unknown KEK kind {kind!r}")
    if set(obj) - set(params):
        raise IntegrityError("key slot layer has unknown fields")
    return Layer(kind, params, nonce)


def parse_slot(data: bytes) -> KeySlot:
    """Parse and check a key slot; raises IntegrityError when it was damaged."""
    try:
        body = json.loads(data)
        checksum = body.pop("checksum")
        if not hmac.compare_digest(hashlib.sha256(canonical_json(body)).hexdigest(), str(checksum)):
            raise IntegrityError("key slot is damaged")
        if body["format"] == LEGACY_FORMAT and body["kek"] == "passphrase":
            params = {"kdf": _check_kdf(body["kdf"]), "salt": _b64_field(body["salt"], SALT_BYTES)}
            layer = Layer("passphrase", params, unb64(_b64_field(body["nonce"], NONCE_BYTES)))
            return KeySlot(str(body["id"]), str(body["repo_id"]), 0, (layer,), unb64(body["wrapped"]), legacy=True)
        if body["format"] != SLOT_FORMAT:
            raise IntegrityError(f"unsupported key slot format {body['format']!r}")
        layers = tuple(_parse_layer(dict(la)) for la in body["layers"])
        if not 1 <= len(layers) <= 2:
            raise IntegrityError("key slot has a wrong number of layers")
        return KeySlot(str(body["id"]), str(body["repo_id"]), int(body["created_ns"]), layers, unb64(body["wrapped"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError("key slot is damaged") from None
