"""key: KEKs (passphrase, key file, PKCS#11 token), data-key rotation, paper recovery sheet."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from strongroom.cli.main import STATE, session
from strongroom.cli.render import emit_json, line, note, table
from strongroom.errors import InputError
from strongroom.service import keys as svc
from strongroom.service import scopes as svc_scopes
from strongroom.service.results import KeySlotInfo

key_app = typer.Typer(help="Key-encryption keys, data-key rotation and the paper recovery sheet.", no_args_is_help=True)

KekOption = Annotated[
    list[str],
    typer.Option(
        "--kek",
        help="passphrase, keyfile:PATH or pkcs11. Given twice, the master key is wrapped by the first and "
        "then the second: both are needed to open the repository.",
    ),
]
ModuleOption = Annotated[str, typer.Option("--pkcs11-module", help="Path of the PKCS#11 module (.so).")]
TokenOption = Annotated[str, typer.Option("--pkcs11-token", help="Label of the PKCS#11 token.")]
LabelOption = Annotated[
    str, typer.Option("--pkcs11-key-label", help="Label of the AES-256 key in the token (made when missing).")
]


def pkcs11_options(module: str, token: str, label: str) -> svc.Pkcs11Options:
    return svc.Pkcs11Options(module=module, token=token, key_label=label)


def _typed(confirm: str | None, command: str, flag: str, warning: str, question: str) -> str:
    """A typed confirmation: the --confirm value, or an answer typed on the terminal after a warning."""
    if confirm is not None:
        return confirm
    if not sys.stdin.isatty():
        raise InputError(f"{command} needs a typed confirmation: run on a terminal or give {flag}")
    note(warning)
    return str(typer.prompt(question))


def _show_slot(slot: KeySlotInfo, verb: str) -> None:
    if STATE.json:
        emit_json(slot)
    else:
        line(f"{verb} key slot {slot.id}: {slot.description}")


@key_app.command("list")
def key_list() -> None:
    """Key slots (KEKs), data keys and the log key, with creation times and fingerprints; never key material."""
    res = svc.key_list(session())
    if STATE.json:
        emit_json(res)
        return
    line(f"repository {res.repo_id}  master key fingerprint {res.master_fingerprint}")
    table(
        ["slot", "created", "KEKs (all needed)", ""],
        [[s.id, s.created or "-", s.description, "(opened this)" if s.opened_this_session else ""] for s in res.slots],
    )
    table(
        ["data key", "created", "frames sealed", ""],
        [[d["id"], d["created"] or "-", d["frames_sealed"], "current" if d["current"] else ""] for d in res.data_keys],
    )
    if res.scopes:
        table(
            ["scope", "created", "state", "by", "frames sealed"],
            [
                [s["name"], s["created"], s["state"], s["shredded_by"] or s["created_by"], s["frames_sealed"]]
                for s in res.scopes
            ],
        )
    if res.log_key:
        line(f"log key {res.log_key}")
    if res.signers:
        table(
            ["signer", "alg", "fingerprint", "status", "created", "private key"],
            [
                [s["name"], s["alg"], s["fingerprint"], s["status"], s["created"], s["local"] or "-"]
                for s in res.signers
            ],
        )


@key_app.command("add-kek")
def add_kek(
    kek: KekOption,
    pkcs11_module: ModuleOption = "",
    pkcs11_token: TokenOption = "",
    pkcs11_key_label: LabelOption = "",
) -> None:
    """Add a key slot that opens the repository on its own (a new passphrase comes from
    STRONGROOM_NEW_PASSPHRASE_FILE or a prompt)."""
    opts = pkcs11_options(pkcs11_module, pkcs11_token, pkcs11_key_label)
    _show_slot(svc.add_kek(session(), kek, opts), "added")


@key_app.command("remove-kek")
def remove_kek(slot: Annotated[str, typer.Argument(help="Slot id, as key list shows it.")]) -> None:
    """Remove a key slot (never the last one)."""
    _show_slot(svc.remove_kek(session(), slot), "removed")


@key_app.command("change-passphrase")
def change_passphrase() -> None:
    """Rewrap the slot you opened with under a new passphrase (STRONGROOM_NEW_PASSPHRASE_FILE or a prompt)."""
    _show_slot(svc.change_passphrase(session()), "new")


@key_app.command("rotate")
def rotate() -> None:
    """New data key for everything written from now on; old ones stay for reading. Instant: nothing is rewritten."""
    res = svc.rotate(session())
    if STATE.json:
        emit_json(res)
    else:
        line(f"data key {res['current']} is current (was {res['previous']})")


@key_app.command("reencrypt")
def reencrypt(
    retire: Annotated[
        int | None, typer.Option("--retire", help="Data key id to destroy once nothing needs it (key list).")
    ] = None,
) -> None:
    """Rewrite every pack under the current data key (then destroy --retire). Safe to interrupt: run it again."""
    res = svc.reencrypt(session(), retire)
    if STATE.json:
        emit_json(res)
        return
    if res.already_retired:
        line(f"data key {res.retired_key} is already retired (destroyed); nothing left to do")
        return
    line(
        f"re-encrypted {res.packs_rewritten} packs ({res.bytes_rewritten} bytes, {res.mb_per_s} MB/s), "
        f"{res.objects_resealed} other objects; data key {res.current_key} is current"
    )
    if res.retired_key is not None:
        line(f"data key {res.retired_key} destroyed")


@key_app.command("shred")
def shred(
    scope: Annotated[str, typer.Argument(help="The scope to erase for good.")],
    confirm: Annotated[str | None, typer.Option("--confirm", help="The scope's name again (for scripts).")] = None,
) -> None:
    """Destroy SCOPE's key: every version committed into it becomes unreadable in every copy and backup."""
    confirm = _typed(
        confirm,
        "key shred",
        "--confirm SCOPE",
        f"Shredding erases every version of scope {scope} for good, in every copy and backup.",
        "type the scope's name to continue",
    )
    res = svc_scopes.shred(session(), scope, confirm)
    if STATE.json:
        emit_json(res)
    else:
        line(f"scope {res.name} shredded ({res.shredded} by {res.shredded_by})")


@key_app.command("export")
def export(
    paper: Annotated[bool, typer.Option("--paper", help="Print a recovery sheet of the master key.")] = False,
    confirm: Annotated[
        str | None, typer.Option("--confirm", help="The repository id's first 8 characters (for scripts).")
    ] = None,
) -> None:
    """Print the master key as a recovery sheet for a safe (after a typed confirmation)."""
    if not paper:
        raise InputError("key export needs --paper (the only export format)")
    confirm = _typed(
        confirm,
        "key export --paper",
        "--confirm",
        "The sheet lets anyone who holds it decrypt every version. Print it, store it in a safe.",
        "type the first 8 characters of the repository id to continue",
    )
    sheet = svc.export_paper(session(), confirm)
    if STATE.json:
        emit_json(sheet)
    else:
        sys.stdout.write(svc.sheet_text(sheet))


@key_app.command("recover")
def recover(
    sheet: Annotated[str, typer.Argument(help="File holding the typed-in recovery sheet, or - for stdin.")],
) -> None:
    """Add a passphrase slot from a paper recovery sheet when every other way in is lost."""
    try:
        if sheet == "-":
            text = sys.stdin.read()
        else:
            with open(sheet, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        raise InputError(f"cannot read {sheet}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{sheet} is not a recovery sheet (not UTF-8 text)") from None
    _show_slot(svc.recover(session(), text), "added")


def register(app: typer.Typer) -> None:
    app.add_typer(key_app, name="key")
