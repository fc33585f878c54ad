"""A real PKCS#11 token (SoftHSM2): the KEK is generated non-extractable, wraps and unwraps the master key
inside the token, and every failure (wrong PIN, missing module, token or key, an extractable key, a wrong
slot) is one clear error."""

from __future__ import annotations

import os
import threading

import pytest

from strongroom.crypto import hsm
from strongroom.crypto.kdf import KdfParams
from strongroom.crypto.keys import new_master_key
from strongroom.crypto.keyslot import KekRequest, PassphraseOnly, encode_slot, make_slot, open_slot, parse_slot
from strongroom.crypto.secret import Secret
from strongroom.errors import HsmError, KeyUnavailable, WrongPassphrase, WrongPin
from tests.hsm import SoftHsm, unique_label

REPO = os.urandom(32).hex()
PASS = Secret(b"correct horse")
PARAMS = KdfParams(time_cost=1, memory_kib=64, parallelism=1)


class WithPin(PassphraseOnly):
    def __init__(self, passphrase: Secret, pin: str) -> None:
        super().__init__(passphrase)
        self._pin = Secret(pin.encode())

    def pin(self, token: str) -> Secret:
        return self._pin


def _request(h: SoftHsm, label: str) -> KekRequest:
    return KekRequest.parse("pkcs11", h.module, h.token, label)


def test_kek_is_generated_non_extractable_with_an_id_and_reused(softhsm: SoftHsm) -> None:
    label = unique_label()
    pin = Secret(softhsm.pin.encode())
    ref, created = hsm.aes_kek(softhsm.module, softhsm.token, label, pin)
    assert created and len(bytes.fromhex(ref.key_id)) == 8
    again, created_again = hsm.aes_kek(softhsm.module, softhsm.token, label, pin)
    assert (again, created_again) == (ref, False)
    import pkcs11

    with hsm.token_session(softhsm.module, softhsm.token, pin) as s:
        key = s.get_key(id=bytes.fromhex(ref.key_id), object_class=pkcs11.ObjectClass.SECRET_KEY)
        assert key[pkcs11.Attribute.EXTRACTABLE] is False
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[pkcs11.Attribute.VALUE]


def test_double_encryption_needs_both_passphrase_and_token(softhsm: SoftHsm) -> None:
    master = new_master_key()
    creds = WithPin(PASS, softhsm.pin)
    slot = make_slot(REPO, master, [KekRequest("passphrase"), _request(softhsm, unique_label())], creds, PARAMS, 1)
    slot = parse_slot(encode_slot(slot))
    assert slot.kinds == ("passphrase", "pkcs11")
    assert open_slot(slot, REPO, creds) == master
    with pytest.raises(KeyUnavailable, match="PIN"):  # a stolen passphrase alone
        open_slot(slot, REPO, PassphraseOnly(PASS))
    with pytest.raises(WrongPassphrase):  # the token alone
        open_slot(slot, REPO, WithPin(Secret(b"guess"), softhsm.pin))
    with pytest.raises(WrongPin):
        open_slot(slot, REPO, WithPin(PASS, "000000"))


def test_token_then_passphrase_order_also_works(softhsm: SoftHsm) -> None:
    master = new_master_key()
    creds = WithPin(PASS, softhsm.pin)
    slot = make_slot(REPO, master, [_request(softhsm, unique_label()), KekRequest("passphrase")], creds, PARAMS, 1)
    assert open_slot(parse_slot(encode_slot(slot)), REPO, creds) == master


def test_a_wrapping_under_another_hsm_key_does_not_open(softhsm: SoftHsm) -> None:
    master = new_master_key()
    creds = WithPin(PASS, softhsm.pin)
    a = make_slot(REPO, master, [_request(softhsm, unique_label())], creds, PARAMS, 1)
    b = make_slot(REPO, master, [_request(softhsm, unique_label())], creds, PARAMS, 1)
    swapped = type(a)(a.slot_id, a.repo_id, a.created_ns, b.layers, a.wrapped)
    with pytest.raises(HsmError, match="does not open"):
        open_slot(swapped, REPO, creds)


def test_missing_module_token_and_key(softhsm: SoftHsm, tmp_path: object) -> None:
    pin = Secret(softhsm.pin.encode())
    with pytest.raises(HsmError, match="not approved on this machine"):
        hsm.aes_kek("/nonexistent/libpkcs11.so", softhsm.token, "x", pin)
    hsm.approve(["/nonexistent/libpkcs11.so"])
    with pytest.raises(HsmError, match="does not exist"):
        hsm.aes_kek("/nonexistent/libpkcs11.so", softhsm.token, "x", pin)
    with pytest.raises(HsmError, match="no PKCS#11 token labelled"):
        hsm.aes_kek(softhsm.module, "no-such-token", "x", pin)
    ref = hsm.HsmKeyRef(softhsm.module, softhsm.token, "gone", os.urandom(8).hex())
    with pytest.raises(HsmError, match="has no key with id"):
        hsm.aes_gcm_decrypt(ref, pin, os.urandom(12), os.urandom(48), b"")
    with pytest.raises(WrongPin):
        hsm.aes_kek(softhsm.module, softhsm.token, "x", Secret(b"999999"))


def test_an_extractable_key_is_refused(softhsm: SoftHsm) -> None:
    import pkcs11

    label = unique_label("weak")
    pin = Secret(softhsm.pin.encode())
    with hsm.token_session(softhsm.module, softhsm.token, pin, write=True) as s:
        s.generate_key(pkcs11.KeyType.AES, 256, id=os.urandom(8), label=label, store=True,
                       template={pkcs11.Attribute.EXTRACTABLE: True, pkcs11.Attribute.SENSITIVE: False})  # fmt: skip
    with pytest.raises(HsmError, match="extractable"):
        hsm.aes_kek(softhsm.module, softhsm.token, label, pin)


def test_duplicate_labels_are_refused_at_init(softhsm: SoftHsm) -> None:
    import pkcs11

    label = unique_label("dup")
    pin = Secret(softhsm.pin.encode())
    with hsm.token_session(softhsm.module, softhsm.token, pin, write=True) as s:
        for _ in range(2):
            template = {pkcs11.Attribute.EXTRACTABLE: False, pkcs11.Attribute.SENSITIVE: True}
            s.generate_key(pkcs11.KeyType.AES, 256, id=os.urandom(8), label=label, store=True, template=template)
    with pytest.raises(HsmError, match="several keys labelled"):
        hsm.aes_kek(softhsm.module, softhsm.token, label, pin)


@pytest.mark.parametrize("alg", ["ed25519", "ecdsa-p256"])
def test_signing_keys_in_the_token_verify_with_cryptography(softhsm: SoftHsm, alg: str) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    pin = Secret(softhsm.pin.encode())
    ref, public = hsm.generate_signing_key(softhsm.module, softhsm.token, unique_label("sig"), alg, pin)
    sig = hsm.sign(ref, alg, pin, b"version 1")
    assert len(sig) == 64
    if alg == "ed25519":
        Ed25519PublicKey.from_public_bytes(public).verify(sig, b"version 1")
    else:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        key.verify(encode_dss_signature(r, s), b"version 1", ec.ECDSA(hashes.SHA256()))


def test_the_token_module_is_loaded_while_the_passphrase_is_derived(
    softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    master = new_master_key()
    creds = WithPin(PASS, softhsm.pin)
    slot = make_slot(REPO, master, [KekRequest("passphrase"), _request(softhsm, unique_label())], creds, PARAMS, 1)
    from strongroom.crypto import kdf

    loaded = threading.Event()
    overlapped: list[bool] = []
    real_derive, real_preload = kdf._argon2id, hsm.preload

    def derive_waiting_for_the_load(passphrase: Secret, salt: bytes, params: KdfParams) -> Secret:
        overlapped.append(loaded.wait(10))  # set only by a preload running meanwhile on the caller's thread
        return real_derive(passphrase, salt, params)

    def preload(module: str) -> None:
        real_preload(module)
        loaded.set()

    monkeypatch.setattr(kdf, "_argon2id", derive_waiting_for_the_load)
    monkeypatch.setattr(hsm, "preload", preload)
    assert open_slot(parse_slot(encode_slot(slot)), REPO, creds) == master
    assert overlapped == [True]
