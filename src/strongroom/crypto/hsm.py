"""Keys inside a PKCS#11 token (an HSM, or SoftHSM2 in tests), through python-pkcs11.

The token does the cryptography; key material never leaves it:
- AES-256 key-encryption keys, generated non-extractable and sensitive, used with AES-GCM (the token
  takes our random 96-bit nonce and the associated data) to wrap the repository master key.
- Ed25519 and ECDSA P-256 signing keys (private half non-extractable). SoftHSM2 lacks ECDSA_SHA256, so
  P-256 signs a SHA-256 digest we compute with plain ECDSA.

A PKCS#11 module is a shared library: loading one runs its code in this process. So only modules this
machine approved are ever loaded (``approve``: the ones a user named on the command line, in
STRONGROOM_PKCS11_MODULES, or in their configuration); a key slot read from a repository names its module
but cannot make the client load a library of the repository writer's choosing.

Every key is found by its id (labels are not unique in SoftHSM2) and its label is checked as well. Errors
from the token are mapped to ``HsmError`` (exit 2) with a reason a person can act on; a wrong PIN is
``WrongPin``. No PIN or key material appears in any message or repr.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from strongroom.crypto.secret import Secret
from strongroom.errors import DecryptionFailed, HsmError, WrongPin

_libs: dict[str, Any] = {}
_approved: set[str] = set()  # real paths of the modules this process may load
_lock = threading.Lock()

ED25519_OID = "1.3.101.112"
P256_OID = "1.2.840.10045.3.1.7"


@dataclass(frozen=True)
class HsmKeyRef:
    """Where a key lives: everything later commands need besides the PIN."""

    module: str
    token: str
    label: str
    key_id: str  # hex

    def public(self) -> dict[str, str]:
        return {"module": self.module, "token": self.token, "key_label": self.label, "key_id": self.key_id}

    @classmethod
    def from_public(cls, obj: dict[str, Any]) -> HsmKeyRef:
        ref = cls(str(obj["module"]), str(obj["token"]), str(obj["key_label"]), str(obj["key_id"]))
        bytes.fromhex(ref.key_id)
        return ref


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:  # pragma: no cover - a dependency of the package
        raise HsmError("python-pkcs11 is not installed") from None
    return pkcs11


def preload(module: str) -> None:
    """Import python-pkcs11 and load the token's module ahead of use: about 70 ms that a caller can spend
    while Argon2 runs (kdf.meanwhile). Errors are left for the real use to report."""
    with contextlib.suppress(HsmError):
        _lib(module)


def approve(modules: Iterable[str]) -> None:
    """Let this process load these PKCS#11 modules (named by the user, never by a repository)."""
    with _lock:
        _approved.update(os.path.realpath(m) for m in modules if m)


def approved(module: str) -> bool:
    with _lock:
        return os.path.realpath(module) in _approved


def _lib(module: str) -> Any:
    if not approved(module):
        raise HsmError(
            f"PKCS#11 module {module} is not approved on this machine: name it in STRONGROOM_PKCS11_MODULES "
            "(a repository cannot choose the code strongroom loads)"
        )
    pkcs11 = _pkcs11()
    if not os.path.isfile(module):
        raise HsmError(f"PKCS#11 module {module} does not exist")
    with _lock:
        if module not in _libs:
            try:
                _libs[module] = pkcs11.lib(module)
            except pkcs11.exceptions.PKCS11Error:
                raise HsmError(f"PKCS#11 module {module} could not be loaded") from None
            except RuntimeError as e:  # python-pkcs11 allows one module per process
                raise HsmError(f"PKCS#11 module {module} could not be loaded: {e}") from None
        return _libs[module]


@contextmanager
def token_session(module: str, token: str, pin: Secret, write: bool = False) -> Iterator[Any]:
    """An open, logged-in session on the token labelled ``token``."""
    pkcs11 = _pkcs11()
    exc = pkcs11.exceptions
    lib = _lib(module)
    try:
        tok = lib.get_token(token_label=token)
    except exc.NoSuchToken:
        raise HsmError(f"no PKCS#11 token labelled {token!r} in {module}") from None
    except exc.MultipleTokensReturned:
        raise HsmError(f"several PKCS#11 tokens are labelled {token!r}") from None
    try:
        session = tok.open(user_pin=pin.reveal().decode("utf-8", "surrogateescape"), rw=write)
    except exc.PinIncorrect:
        raise WrongPin(token) from None
    except exc.PinLocked:
        raise HsmError(f"the PIN of token {token!r} is locked") from None
    except exc.PKCS11Error as e:
        raise HsmError(f"cannot log in to token {token!r}: {type(e).__name__}") from None
    try:
        yield session
    finally:
        with contextlib.suppress(exc.PKCS11Error):  # the token may already have dropped the session
            session.close()


def _find(session: Any, object_class: Any, key_id: bytes | None = None, label: str | None = None) -> list[Any]:
    pkcs11 = _pkcs11()
    attrs: dict[Any, Any] = {pkcs11.Attribute.CLASS: object_class}
    if key_id is not None:
        attrs[pkcs11.Attribute.ID] = key_id
    if label is not None:
        attrs[pkcs11.Attribute.LABEL] = label
    return list(session.get_objects(attrs))


def _require_non_extractable(key: Any, label: str) -> None:
    attr = _pkcs11().Attribute
    if key[attr.EXTRACTABLE] or not key[attr.SENSITIVE]:
        raise HsmError(f"HSM key {label!r} is extractable; strongroom needs a non-extractable, sensitive key")


def aes_kek(module: str, token: str, label: str, pin: Secret) -> tuple[HsmKeyRef, bool]:
    """The AES-256 KEK labelled ``label``: the existing one, or a new non-extractable one with a random id.
    Returns (reference, created)."""
    pkcs11 = _pkcs11()
    with token_session(module, token, pin, write=True) as s:
        found = _find(s, pkcs11.ObjectClass.SECRET_KEY, label=label)
        if len(found) > 1:
            raise HsmError(f"token {token!r} holds several keys labelled {label!r}; give each key a unique label")
        if found:
            key = found[0]
            if key.key_type != pkcs11.KeyType.AES or key.key_length != 256:
                raise HsmError(f"HSM key {label!r} is not an AES-256 key")
            _require_non_extractable(key, label)
            if not key.id:
                raise HsmError(f"HSM key {label!r} has no id; strongroom finds keys by id")
            return HsmKeyRef(module, token, label, bytes(key.id).hex()), False
        key_id = os.urandom(8)
        flags = pkcs11.MechanismFlag
        try:
            s.generate_key(
                pkcs11.KeyType.AES,
                256,
                id=key_id,
                label=label,
                store=True,
                template={pkcs11.Attribute.EXTRACTABLE: False, pkcs11.Attribute.SENSITIVE: True},
                capabilities=flags.ENCRYPT | flags.DECRYPT,
            )
        except pkcs11.exceptions.PKCS11Error as e:
            raise HsmError(f"token {token!r} could not generate an AES-256 key: {type(e).__name__}") from None
        return HsmKeyRef(module, token, label, key_id.hex()), True


def _aes_key(session: Any, ref: HsmKeyRef) -> Any:
    pkcs11 = _pkcs11()
    found = _find(session, pkcs11.ObjectClass.SECRET_KEY, key_id=bytes.fromhex(ref.key_id))
    if not found:
        raise HsmError(f"token {ref.token!r} has no key with id {ref.key_id} (label {ref.label!r})")
    key = found[0]
    if key.label != ref.label:
        raise HsmError(f"HSM key {ref.key_id} is labelled {key.label!r}, not {ref.label!r}")
    _require_non_extractable(key, ref.label)
    return key


def aes_gcm_encrypt(ref: HsmKeyRef, pin: Secret, nonce: bytes, plain: bytes, aad: bytes) -> bytes:
    pkcs11 = _pkcs11()
    from pkcs11.mechanisms import GCMParams

    with token_session(ref.module, ref.token, pin) as s:
        key = _aes_key(s, ref)
        try:
            return bytes(key.encrypt(plain, mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)))
        except pkcs11.exceptions.PKCS11Error as e:
            raise HsmError(f"HSM key {ref.label!r} could not encrypt: {type(e).__name__}") from None


def aes_gcm_decrypt(ref: HsmKeyRef, pin: Secret, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    pkcs11 = _pkcs11()
    from pkcs11.mechanisms import GCMParams

    with token_session(ref.module, ref.token, pin) as s:
        key = _aes_key(s, ref)
        try:
            plain = key.decrypt(ciphertext, mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad))
        except pkcs11.exceptions.PKCS11Error:
            # SoftHSM2 reports a bad tag as a generic error: treat any failure as "does not open".
            raise DecryptionFailed("the HSM key does not open this wrapping") from None
        return bytes(plain)


# ---------------------------------------------------------------------- signing keys


def _curve(alg: str) -> str:
    if alg == "ed25519":
        return ED25519_OID
    if alg == "ecdsa-p256":
        return P256_OID
    raise HsmError(f"unknown signing algorithm {alg!r} (ed25519 or ecdsa-p256)")


def generate_signing_key(module: str, token: str, label: str, alg: str, pin: Secret) -> tuple[HsmKeyRef, bytes]:
    """A new key pair in the token (private half non-extractable). Returns (reference, public key): the raw
    32 bytes for Ed25519, an uncompressed SEC1 point (65 bytes) for P-256."""
    pkcs11 = _pkcs11()
    from pkcs11.util.ec import encode_named_curve_parameters

    key_type = pkcs11.KeyType.EC_EDWARDS if alg == "ed25519" else pkcs11.KeyType.EC
    oid = _curve(alg)
    key_id = os.urandom(8)
    with token_session(module, token, pin, write=True) as s:
        try:
            params = s.create_domain_parameters(
                key_type, {pkcs11.Attribute.EC_PARAMS: encode_named_curve_parameters(oid)}, local=True
            )
            pub, _ = params.generate_keypair(
                store=True,
                id=key_id,
                label=label,
                private_template={pkcs11.Attribute.EXTRACTABLE: False, pkcs11.Attribute.SENSITIVE: True},
            )
        except pkcs11.exceptions.PKCS11Error as e:
            raise HsmError(f"token {token!r} could not generate a {alg} key: {type(e).__name__}") from None
        return HsmKeyRef(module, token, label, key_id.hex()), _ec_point(pub[pkcs11.Attribute.EC_POINT])


def _ec_point(der: bytes) -> bytes:
    """EC_POINT is a DER OCTET STRING around the raw point; unwrap it."""
    from asn1crypto.core import OctetString  # type: ignore[import-untyped]

    return bytes(OctetString.load(bytes(der)).native)


def sign(ref: HsmKeyRef, alg: str, pin: Secret, message: bytes) -> bytes:
    """Ed25519: the 64-byte signature. P-256: the raw r ‖ s (64 bytes) over SHA-256(message)."""
    pkcs11 = _pkcs11()
    with token_session(ref.module, ref.token, pin) as s:
        found = _find(s, pkcs11.ObjectClass.PRIVATE_KEY, key_id=bytes.fromhex(ref.key_id))
        if not found:
            raise HsmError(f"token {ref.token!r} has no private key with id {ref.key_id} (label {ref.label!r})")
        key = found[0]
        _require_non_extractable(key, ref.label)
        try:
            if alg == "ed25519":
                return bytes(key.sign(message, mechanism=pkcs11.Mechanism.EDDSA))
            return bytes(key.sign(hashlib.sha256(message).digest(), mechanism=pkcs11.Mechanism.ECDSA))
        except pkcs11.exceptions.PKCS11Error as e:
            raise HsmError(f"HSM key {ref.label!r} could not sign: {type(e).__name__}") from None
