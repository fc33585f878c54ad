"""init, stats, verify, repair, trust-current, unlock."""

from __future__ import annotations

from typing import Annotated

import typer

from strongroom.cli.commands.key_cmd import KekOption, LabelOption, ModuleOption, TokenOption, pkcs11_options
from strongroom.cli.main import STATE, session
from strongroom.cli.render import damage, emit_json, human_bytes, line, note, safe, table
from strongroom.errors import InputError, UndecodableText
from strongroom.service import gc as gc_svc
from strongroom.service import repo as svc

repair_app = typer.Typer(help="Repair a damaged repository.", no_args_is_help=True)


def init(
    user: Annotated[str, typer.Option(help="Actor recorded on versions when STRONGROOM_USER is unset.")] = "",
    compression: Annotated[int, typer.Option(help="zstd level, 0 turns compression off.")] = svc.DEFAULT_COMPRESSION,
    kek: KekOption = ["passphrase"],  # noqa: B006 - typer reads the default, never mutates it
    pkcs11_module: ModuleOption = "",
    pkcs11_token: TokenOption = "",
    pkcs11_key_label: LabelOption = "",
) -> None:
    """Create an encrypted repository (refuses a folder that is not empty). The PKCS#11 PIN comes from
    STRONGROOM_PKCS11_PIN or a prompt, never an argument."""
    UndecodableText.check(user, "--user")  # recorded on versions and in the audit log: before anything is made
    opts = pkcs11_options(pkcs11_module, pkcs11_token, pkcs11_key_label)
    res = svc.init(session(), user=user, compression=compression, keks=kek, pkcs11=opts)
    if STATE.json:
        emit_json(res)
    else:
        line(f"created repository {res.repo_id[:16]} at {res.path}, locked by {res.keks}")
        for n in res.notes:
            note(n)
        note("keep the passphrase safe: without it the data cannot be recovered by anyone")


def stats() -> None:
    """Raw bytes, stored bytes, dedupe and compression ratios."""
    s = svc.stats(session())
    if STATE.json:
        emit_json(s)
        return
    table(
        ["stat", "value"],
        [
            ["versions", s.versions],
            ["branches", s.branches],
            ["files (all versions)", s.files],
            ["raw bytes", f"{s.raw_bytes} ({human_bytes(s.raw_bytes)})"],
            ["unique bytes", f"{s.unique_bytes} ({human_bytes(s.unique_bytes)})"],
            ["stored bytes", f"{s.stored_bytes} ({human_bytes(s.stored_bytes)})"],
            ["packs", s.packs],
            ["dedupe ratio", s.dedupe_ratio],
            ["compression ratio", s.compression_ratio],
        ],
    )


def verify(
    full: Annotated[bool, typer.Option("--full", help="Decrypt and re-hash every chunk.")] = False,
    structure: Annotated[
        bool, typer.Option("--structure", help="Keyless: re-hash every file against its name.")
    ] = False,
    sample: Annotated[
        str | None, typer.Option("--sample", help="Full check of PERCENT% or slice n/t of the packs.")
    ] = None,
    before_train: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--before-train",
            metavar="DIR VERSION",
            help="The training gate: exit 0 only when DIR holds exactly VERSION and VERSION is validly signed.",
        ),
    ] = None,
) -> None:
    """Check the repository's data and every version's signature; exit 1 listing every damaged object,
    version and file, and every version whose signature is missing, invalid, untrusted or revoked."""
    if sum([full, structure, sample is not None, before_train is not None]) > 1:
        raise InputError("choose one of --full, --structure, --sample and --before-train")
    if before_train is not None:
        _before_train(*before_train)
        return
    mode = "full" if full else "structure" if structure else "default"
    res = svc.verify(session(), mode=mode, sample=sample)
    if STATE.json:
        emit_json(res)
    else:
        for w in res.warnings:
            note(f"warning: {w}")
        damage(res.damage, res.affected)
        for version, scope in sorted(res.shredded.items()):
            line(f"shredded\t{version}\tscope {safe(scope)}")
        for s in res.signatures:
            line(f"signature\t{s['version']}\t{s['status']}\t{safe(s['signer']) or '-'}\t{s['reason']}")
        state = "ok" if res.ok else ("DAMAGED" if res.damage else "SIGNATURES FAIL")
        note(
            f"verify ({res.mode}): {state}; {res.versions} versions, {res.packs_checked} packs, "
            f"{human_bytes(res.bytes_checked)} checked in {res.seconds:.2f}s"
        )
    if not res.ok:
        raise typer.Exit(1)


def _before_train(folder: str, version: str) -> None:
    res = svc.before_train(session(), folder, version)
    if STATE.json:
        emit_json(res)
    else:
        for d in res.differences:
            line(f"{d.kind}\t{safe(d.path)}" + (f"\t{d.detail}" if d.detail else ""))
        sig = res.signature
        if sig.status != "valid":
            line(f"signature\t{sig.status}\t{safe(sig.signer) or '-'}\t{sig.reason}")
        verdict = "ok" if res.ok else "REFUSED"
        note(
            f"before-train {res.version[:12]}: {verdict}; {res.files_checked} files, "
            f"{human_bytes(res.bytes_checked)} read, {len(res.differences)} differences, signature {sig.status}"
            + (f" by {sig.signer}" if sig.signer else "")
        )
    if not res.ok:
        raise typer.Exit(1)


def repair_index() -> None:
    """Rebuild the index from the pack headers, losing nothing that is still readable."""
    res = svc.repair_index(session())
    if STATE.json:
        emit_json(res)
    else:
        line(
            f"index rebuilt: {res.packs} packs, {res.objects} objects; "
            f"{res.index_files_removed} old index files removed"
        )
        for p in res.unreadable_packs:
            note(f"warning: header of {p} unreadable; kept its entries from the old index")


def trust_current() -> None:
    """Accept the repository (its refs and trusted signers) as it is now after a rollback or swap warning."""
    rid = svc.trust_current(session())
    line(f"trusting the current state of repository {rid[:16]}")


def unlock(
    force: Annotated[bool, typer.Option("--force", help="Remove every lock, not only stale ones.")] = False,
) -> None:
    """Remove stale locks (held by processes that no longer run on this host)."""
    removed = svc.unlock(session(), force)
    if STATE.json:
        emit_json(removed)
        return
    for r in removed:
        line(f"removed {r}")
    if not removed:
        note("no stale lock")


def gc(
    keep_unreachable: Annotated[
        float,
        typer.Option(
            "--keep-unreachable", help="Keep versions that became unreachable less than DAYS ago (0 to 36500)."
        ),
    ] = 14,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be freed; change nothing.")] = False,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for a held lock.")] = 0.0,
) -> None:
    """Remove data that no branch, tag or recently moved ref needs."""
    res = gc_svc.gc(session(), keep_unreachable, dry_run, wait)
    if STATE.json:
        emit_json(res)
        return
    verb = "would remove" if res.dry_run else "removed"
    line(
        f"{verb} {res.objects_removed} objects ({human_bytes(res.bytes_removable)}): "
        f"{res.packs_deleted} packs deleted, {res.packs_repacked} repacked; {res.live_objects} objects kept"
    )
    if res.temporaries_removed:
        line(f"{verb} {res.temporaries_removed} temporary files left by writes that were killed")
    if not res.dry_run:
        note(f"freed {human_bytes(res.bytes_freed)} on disk")


def register(app: typer.Typer) -> None:
    app.command()(gc)
    app.command()(init)
    app.command()(stats)
    app.command()(verify)
    repair_app.command("index")(repair_index)
    app.add_typer(repair_app, name="repair")
    app.command("trust-current")(trust_current)
    app.command()(unlock)
