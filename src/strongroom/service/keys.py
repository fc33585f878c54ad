"""Use cases on keys: list, add and remove KEKs, change the passphrase, rotate the data key, paper export and
recovery of the master key. docs/keys.md describes the hierarchy."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from strongroom.crypto.keys import fingerprint
from strongroom.crypto.keyslot import KekRequest, check_requests
from strongroom.crypto.secret import Secret
from strongroom.errors import InputError
from strongroom.service.context import Session, audited
from strongroom.service.results import KeyList, KeySlotInfo, PaperSheet, ReencryptResult, iso
from strongroom.service.scopes import list_scopes
from strongroom.service.signers import signer_rows
from strongroom.store import lock
from strongroom.store import reencrypt as store_reencrypt
from strongroom.store.repository import Repository

PAPER_HEADER = "STRONGROOM RECOVERY SHEET"


@dataclass(frozen=True)
class Pkcs11Options:
    module: str = ""
    token: str = ""
    key_label: str = ""


def kek_requests(keks: Sequence[str], pkcs11: Pkcs11Options | None, repo_path: str) -> list[KekRequest]:
    opts = pkcs11 or Pkcs11Options()
    requests = [KekRequest.parse(k, opts.module, opts.token, opts.key_label) for k in keks]
    check_requests(requests)
    for r in requests:
        if r.kind == "keyfile":
            _refuse_inside(r.path, repo_path)
    return requests


def approve_named_modules(session: Session, requests: Sequence[KekRequest]) -> None:
    """The PKCS#11 module the user named on this command line may be loaded (crypto.hsm)."""
    for r in requests:
        if r.kind == "pkcs11":
            session.approve_pkcs11_module(r.module)


def _refuse_inside(keyfile: str, repo_path: str) -> None:
    if os.path.realpath(keyfile).startswith(os.path.realpath(repo_path) + os.sep):
        raise InputError("a key file inside the repository protects nothing: keep it elsewhere")


def _slot_info(slot_id: str, created_ns: int, describe: str, kinds: Sequence[str], opened: bool) -> KeySlotInfo:
    return KeySlotInfo(
        id=slot_id,
        keks=list(kinds),
        description=describe,
        created=iso(created_ns) if created_ns else "",
        opened_this_session=opened,
    )


@audited("key.list")
def key_list(session: Session) -> KeyList:
    repo = session.open()
    used = repo.opened_slot
    slots = [_slot_info(s.slot_id, s.created_ns, s.describe(), s.kinds, s.slot_id == used) for s in repo.key_slots()]
    ring = repo.keyring
    counts = repo.message_count()
    data_keys = [
        {
            "id": kid,
            "created": iso(ring.created[kid]) if kid in ring.created else "",
            "current": kid == ring.current,
            "frames_sealed": counts.get(kid, 0),
        }
        for kid in sorted(ring.data_keys)
    ]
    return KeyList(
        repo_id=repo.config.repo_id,
        master_fingerprint=repo.fingerprint,
        slots=slots,
        data_keys=data_keys,
        log_key=repo.log_signer().verifier().vkey if ring.log_seed is not None else "",
        signers=[s.to_json() for s in signer_rows(session, repo)],
        scopes=[s.to_json() for s in list_scopes(session)],
    )


@audited("key.add-kek", keks="keks")
def add_kek(session: Session, keks: Sequence[str], pkcs11: Pkcs11Options | None = None) -> KeySlotInfo:
    """A new slot that opens the repository on its own (recovery, migration to an HSM)."""
    repo = session.open()
    requests = kek_requests(keks, pkcs11, session.repo_path())
    approve_named_modules(session, requests)
    slot = repo.add_key_slot(requests, session.new_credentials(), session.kdf_params())
    session.audit_note(slot=slot.slot_id)
    return _slot_info(slot.slot_id, slot.created_ns, slot.describe(), slot.kinds, False)


@audited("key.remove-kek", slot="slot_id")
def remove_kek(session: Session, slot_id: str) -> KeySlotInfo:
    repo = session.open()
    slot = repo.remove_key_slot(slot_id)
    return _slot_info(slot.slot_id, slot.created_ns, slot.describe(), slot.kinds, slot.slot_id == repo.opened_slot)


@audited("key.change-passphrase")
def change_passphrase(session: Session) -> KeySlotInfo:
    """Rewrap the slot that opened the repository under a new passphrase, keeping its other KEKs. The new slot
    is written (and proven to open) before the old one is removed, so an interruption loses no way in; a change
    that fails (a full disk) removes the new slot again, so that only the old passphrase opens."""
    repo = session.open()
    old = next((s for s in repo.key_slots() if s.slot_id == repo.opened_slot), None)
    if old is None or "passphrase" not in old.kinds:
        raise InputError("the repository was not opened with a passphrase: nothing to change")
    opening = session.credentials()
    requests = []
    for layer in old.layers:
        if layer.kind == "passphrase":
            requests.append(KekRequest("passphrase"))
        elif layer.kind == "keyfile":
            # The key file that opened the slot (STRONGROOM_KEYFILE when it moved), recorded where it is now;
            # it must hold the same key, and none is ever created (at the old path a new one would be a decoy).
            path = os.path.abspath(opening.keyfile_path(str(layer.params["path"])))
            _refuse_inside(path, session.repo_path())
            requests.append(KekRequest("keyfile", path=path, fingerprint=str(layer.params["fingerprint"])))
        else:
            p = layer.params
            requests.append(KekRequest("pkcs11", module=p["module"], token=p["token"], label=p["key_label"]))
    slot = repo.replace_key_slot(old.slot_id, requests, session.new_credentials(), session.kdf_params())
    session.audit_note(slot=slot.slot_id, replaced=old.slot_id)
    return _slot_info(slot.slot_id, slot.created_ns, slot.describe(), slot.kinds, False)


@audited("key.rotate")
def rotate(session: Session) -> dict[str, int]:
    """A new data key for everything written from now on; nothing is rewritten."""
    repo = session.open()
    previous = repo.keyring.current
    new_id = repo.rotate_key()
    session.audit_note(data_key=new_id)
    return {"previous": previous, "current": new_id}


@audited("key.reencrypt", retire="retire")
def reencrypt(session: Session, retire: int | None = None, wait: float = 0.0) -> ReencryptResult:
    """Rewrite every pack (and index, audit object, refs) sealed under ``retire`` — or under any key but the
    current one — with the current key; then destroy ``retire``. Interruptible: run it again to resume (a
    run again after ``retire`` was destroyed says it is already retired, and changes nothing)."""
    repo = session.open()
    session.progress.start("re-encrypting", 0, 0)
    try:
        with lock.publish_lock(repo.backend, "key reencrypt", wait), lock.exclusive_lock(repo.backend, "key reencrypt"):
            report = store_reencrypt.reencrypt(repo, retire, lambda p, b: session.progress.advance(1, b))
    finally:
        session.progress.finish()
    if not report.already_retired:
        # Refs and the frame counters are resealed under the current key by an (empty) refs edit.
        session.remember(repo, repo.edit_refs(lambda refs: None, "key reencrypt", wait))
    if retire is not None and not report.already_retired:
        with lock.publish_lock(repo.backend, "key reencrypt", wait), lock.exclusive_lock(repo.backend, "key reencrypt"):
            store_reencrypt.destroy_key(repo, retire)
        report.retired = retire
    session.audit_note(
        packs_rewritten=report.packs_rewritten, retired=report.retired, already_retired=report.already_retired or None
    )
    return ReencryptResult(
        packs_rewritten=report.packs_rewritten,
        bytes_rewritten=report.bytes_rewritten,
        index_rewrites=report.index_rewrites,
        objects_resealed=report.objects_resealed,
        current_key=repo.keyring.current,
        retired_key=report.retired,
        already_retired=report.already_retired,
        seconds=report.seconds,
        mb_per_s=round(report.bytes_rewritten / 1e6 / report.seconds, 1) if report.seconds else 0.0,
    )


# ---------------------------------------------------------------------- paper recovery sheet


def _encode_sheet(master: bytes) -> list[str]:
    check = hashlib.sha256(b"strongroom-paper" + master).digest()[:4]
    text = base64.b32encode(master + check).decode().rstrip("=")
    groups = [text[i : i + 4] for i in range(0, len(text), 4)]
    return [" ".join(groups[i : i + 5]) for i in range(0, len(groups), 5)]


def _decode_sheet(text: str) -> Secret:
    body = [ln.split(":", 1)[1] for ln in text.splitlines() if re.match(r"^\s*\d+:", ln)]
    letters = re.sub(r"\s", "", "".join(body)).upper()
    if not letters:
        raise InputError("no key lines found (lines that start with a number and a colon)")
    try:
        raw = base64.b32decode(letters + "=" * (-len(letters) % 8))
    except ValueError:
        raise InputError("the recovery sheet has a character that is not in its alphabet (A-Z, 2-7)") from None
    master, check = raw[:32], raw[32:]
    good = hashlib.sha256(b"strongroom-paper" + master).digest()[:4]
    if len(raw) != 36 or not hmac.compare_digest(check, good):
        raise InputError("the recovery sheet's checksum does not match: a line was mistyped")
    return Secret(master)


def confirmation_word(repo: Repository) -> str:
    return repo.config.repo_id[:8]


@audited("key.export")
def export_paper(session: Session, confirm: str) -> PaperSheet:
    """The master key as a recovery sheet. ``confirm`` must be the repository id's first 8 characters."""
    repo = session.open()
    typed = confirm.strip().lower().encode("utf-8", "surrogatepass")  # undecodable bytes from argv: no match
    if not hmac.compare_digest(typed, confirmation_word(repo).encode()):
        raise InputError(f"confirmation does not match: type {confirmation_word(repo)} (the repository id's start)")
    master = repo.export_master()
    lines = [f"{n + 1:2d}: {row}" for n, row in enumerate(_encode_sheet(master.reveal()))]
    return PaperSheet(repo_id=repo.config.repo_id, fingerprint=repo.fingerprint, lines=lines)


def sheet_text(sheet: PaperSheet) -> str:
    return "\n".join(
        [
            PAPER_HEADER,
            "Whoever holds this sheet can decrypt the repository. Keep it in a safe.",
            f"repository  {sheet.repo_id}",
            f"fingerprint {sheet.fingerprint}",
            "master key (base32, groups of 4; the last characters are a checksum):",
            *sheet.lines,
            "",
        ]
    )


@audited("key.recover")
def recover(session: Session, sheet: str) -> KeySlotInfo:
    """Add a passphrase slot using the master key from a recovery sheet (every other way in was lost)."""
    master = _decode_sheet(sheet)
    repo = Repository.open_with_master(session.backend(), master)
    if fingerprint(master) != repo.fingerprint:  # pragma: no cover - the config MAC already proved it
        raise InputError("that master key does not belong to this repository")
    session.adopt(repo)
    slot = repo.add_key_slot([KekRequest("passphrase")], session.new_credentials(), session.kdf_params())
    session.audit_note(slot=slot.slot_id)
    return _slot_info(slot.slot_id, slot.created_ns, slot.describe(), slot.kinds, False)
