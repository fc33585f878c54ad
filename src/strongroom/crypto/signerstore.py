"""The user's signing keys, in a folder OUTSIDE every repository (``<config dir>/signers``).

Per signer name:
- ``NAME.json``: ``{"format": "sr-signer/1", "name", "alg", "kind": "file"|"pkcs11", "public": OpenSSH line,
  "created_ns", "pkcs11": {module, token, key_label, key_id}}`` — never key material;
- ``NAME.pem`` (kind ``file``): the Ed25519 private key as passphrase-encrypted PKCS#8.

A key in a PKCS#11 token is recorded by reference only; the token holds the private half. The folder is
created 0700 and every file 0600. Opening a repository never reads this folder, so a repository (or its
passphrase) never lets anyone sign as someone else.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strongroom.crypto import hsm
from strongroom.crypto.commitsig import (
    CommitSigner,
    FileSigner,
    HsmSigner,
    PublicKey,
    check_alg,
    check_signer_name,
)
from strongroom.crypto.hsm import HsmKeyRef
from strongroom.crypto.secret import Secret
from strongroom.crypto.signing import Ed25519Signer, write_private_file
from strongroom.errors import CannotWrite, InputError, StrongroomError, WrongPassphrase, refused_write

FORMAT = "sr-signer/1"


def _cannot_write(path: Path, e: OSError) -> StrongroomError:
    """One line for a signing key file that could not be written: CannotWrite (exit 1) when the machine refused
    it (a full disk, a quota), InputError (a path or permission to correct) otherwise."""
    what = f"cannot write signing key file {path}: {e.strerror or e}"
    return CannotWrite(what) if refused_write(e) else InputError(what)


@dataclass(frozen=True)
class LocalSigner:
    """What the folder records about one key (public information only)."""

    name: str
    alg: str
    kind: str  # file | pkcs11
    public: PublicKey
    created_ns: int
    ref: HsmKeyRef | None = None

    def describe(self) -> str:
        if self.ref is None:
            return "key file (passphrase-encrypted)"
        return f"PKCS#11 token {self.ref.token!r}, key {self.ref.label!r} (id {self.ref.key_id})"


class SignerStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"SignerStore({str(self.root)!r})"

    def _meta(self, name: str) -> Path:
        return self.root / f"{check_signer_name(name)}.json"

    def _pem(self, name: str) -> Path:
        return self.root / f"{check_signer_name(name)}.pem"

    def exists(self, name: str) -> bool:
        return self._meta(name).is_file()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name[: -len(".json")] for p in self.root.glob("*.json") if not p.name.startswith("."))

    def info(self, name: str) -> LocalSigner:
        path = self._meta(name)
        try:
            obj = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise InputError(f"no signing key named {name!r} in {self.root}") from None
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read signing key record {path}: {e}") from None
        try:
            if obj["format"] != FORMAT or obj["name"] != name:
                raise ValueError
            kind = str(obj["kind"])
            ref = HsmKeyRef.from_public(obj["pkcs11"]) if kind == "pkcs11" else None
            if ref is not None:  # the user's own key folder: its module was named by them at keygen
                hsm.approve([ref.module])
            if kind not in ("file", "pkcs11"):
                raise ValueError
            public = PublicKey.from_openssh(str(obj["public"]))
            if public.alg != obj["alg"]:
                raise ValueError
            return LocalSigner(name, public.alg, kind, public, int(obj["created_ns"]), ref)
        except (KeyError, TypeError, ValueError, InputError):
            raise InputError(f"signing key record {path} is damaged") from None

    def _write(self, path: Path, data: bytes) -> None:
        write_private_file(path, data)

    def _ensure_root(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _record(self, info: LocalSigner) -> LocalSigner:
        obj: dict[str, Any] = {
            "format": FORMAT,
            "name": info.name,
            "alg": info.alg,
            "kind": info.kind,
            "public": info.public.openssh(info.name),
            "created_ns": info.created_ns,
        }
        if info.ref is not None:
            obj["pkcs11"] = info.ref.public()
        path = self._meta(info.name)
        try:
            self._write(path, json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n")
        except OSError as e:
            raise _cannot_write(path, e) from None
        return info

    def _refuse_existing(self, name: str) -> None:
        if self.exists(name) or self._pem(name).exists():
            raise InputError(f"a signing key named {name!r} already exists in {self.root}")

    def create_file(self, name: str, passphrase: Secret) -> LocalSigner:
        """A new Ed25519 key, saved encrypted under ``passphrase``: the PEM first, then the record, each written
        atomically. The record is what makes the key exist: when it cannot be written (a full disk), the PEM is
        removed again, or every later use of the name would refuse 'already exists'."""
        self._refuse_existing(name)
        pem = self._pem(name)
        try:
            self._ensure_root()
            key = Ed25519Signer.generate(name)
            key.save(pem, passphrase)
        except OSError as e:
            raise _cannot_write(pem, e) from None
        info = LocalSigner(name, "ed25519", "file", PublicKey("ed25519", key.public_key_bytes), time.time_ns())
        try:
            return self._record(info)
        except BaseException:
            with contextlib.suppress(OSError):
                pem.unlink()
            raise

    def create_pkcs11(self, name: str, module: str, token: str, label: str, alg: str, pin: Secret) -> LocalSigner:
        """A new key pair generated inside the token (private half non-extractable); only its reference and
        public key are written here."""
        check_alg(alg)
        self._refuse_existing(name)
        try:
            self._ensure_root()
        except OSError as e:
            raise _cannot_write(self.root, e) from None
        ref, raw = hsm.generate_signing_key(module, token, label, alg, pin)
        info = LocalSigner(name, alg, "pkcs11", PublicKey(alg, raw), time.time_ns(), ref)
        return self._record(info)

    def load(
        self, name: str, passphrase: Callable[[], Secret], pin: Callable[[str], Secret]
    ) -> tuple[LocalSigner, CommitSigner]:
        """The signer named ``name``; the passphrase or PIN is asked for only when the key needs it."""
        info = self.info(name)
        if info.ref is not None:
            return info, HsmSigner(name, info.ref, info.public, pin(info.ref.token))
        try:
            key = Ed25519Signer.load(name, self._pem(name), passphrase())
        except WrongPassphrase:
            raise InputError(
                f"wrong signing passphrase for signing key {name!r} (set STRONGROOM_SIGNING_PASSPHRASE_FILE when "
                "it differs from the repository passphrase)"
            ) from None
        signer = FileSigner(key)
        if signer.public != info.public:
            raise InputError(f"signing key file of {name!r} does not match its record")
        return info, signer
