"""signer keygen/add/list/revoke/export: signing keys (outside the repository) and the trusted set (inside)."""

from __future__ import annotations

from typing import Annotated

import typer

from strongroom.cli.commands.key_cmd import ModuleOption, TokenOption
from strongroom.cli.main import STATE, session
from strongroom.cli.render import emit_json, line, note, safe, table
from strongroom.service import signers as svc
from strongroom.service.results import SignerInfo

signer_app = typer.Typer(
    help="Signing keys (kept in the user's config folder or a PKCS#11 token) and the repository's trusted signers.",
    no_args_is_help=True,
)


def _show(rows: list[SignerInfo]) -> None:
    if STATE.json:
        emit_json(rows)
        return
    table(
        ["signer", "alg", "fingerprint", "status", "created", "added by", "revoked", "private key"],
        [
            [
                safe(r.name),
                r.alg,
                r.fingerprint,
                r.status + (f" ({r.reason})" if r.reason else ""),
                r.created,
                safe(r.added_by) or "-",
                f"{r.revoked} by {safe(r.revoked_by)}" if r.revoked else "-",
                r.local or "-",
            ]
            for r in rows
        ],
    )


@signer_app.command("keygen")
def keygen(
    name: Annotated[str, typer.Argument(help="Signer name (usually the identity that will commit).")],
    alg: Annotated[str, typer.Option("--alg", help="ed25519 or ecdsa-p256 (ecdsa-p256 needs --pkcs11).")] = "ed25519",
    pkcs11: Annotated[bool, typer.Option("--pkcs11", help="Generate the key pair inside a PKCS#11 token.")] = False,
    pkcs11_module: ModuleOption = "",
    pkcs11_token: TokenOption = "",
    pkcs11_key_label: Annotated[
        str, typer.Option("--pkcs11-key-label", help="Label of the new key pair in the token.")
    ] = "",
) -> None:
    """Make a signing key in the user's config folder (under the signing passphrase: STRONGROOM_SIGNING_PASSPHRASE_FILE,
    else the repository passphrase source) or in a token (PIN from STRONGROOM_PKCS11_PIN or a prompt)."""
    info = svc.keygen(session(), name, alg, pkcs11, pkcs11_module, pkcs11_token, pkcs11_key_label)
    if STATE.json:
        emit_json(info)
        return
    line(info.public)
    note(f"created signing key {info.name} ({info.alg}, {info.fingerprint}) in {info.local}")
    note(f"a trusted signer trusts it in a repository with: strongroom signer add {info.name} '{info.public}'")


@signer_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Signer name.")],
    public_key: Annotated[
        str, typer.Argument(help="OpenSSH public key line: ssh-ed25519 ... or ecdsa-sha2-nistp256 ...")
    ],
) -> None:
    """Trust NAME's key in this repository (endorsed by your own trusted signing key)."""
    _show([svc.add(session(), name, public_key)])


@signer_app.command("list")
def list_cmd() -> None:
    """The repository's trusted signers and the keys in your config folder; never key material."""
    _show(svc.signer_list(session()))


@signer_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="Signer name.")]) -> None:
    """Revoke NAME's key: every version it signed stops verifying."""
    _show([svc.revoke(session(), name)])


@signer_app.command("export")
def export(name: Annotated[str, typer.Argument(help="Signer name.")]) -> None:
    """Print NAME's OpenSSH public key line."""
    text = svc.export(session(), name)
    if STATE.json:
        emit_json({"name": name, "public": text})
    else:
        line(text)


def register(app: typer.Typer) -> None:
    app.add_typer(signer_app, name="signer")
