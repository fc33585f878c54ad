"""commit, log, ls, diff, cat, checkout."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from strongroom.cli import render
from strongroom.cli.main import STATE, session
from strongroom.cli.render import emit_json, human_bytes, is_tty, line, note, safe, table
from strongroom.errors import UndecodableText
from strongroom.service import versions as svc
from strongroom.service import workspace as ws_svc
from strongroom.service.results import CommitInfo

_TYPE_LETTER = {"file": "f", "dir": "d", "symlink": "l"}


def commit(
    folder: Annotated[str, typer.Argument(help="Folder to snapshot.")],
    message: Annotated[str, typer.Option("-m", "--message")] = "",
    branch: Annotated[
        str | None, typer.Option("--branch", "-b", help="Default: main, or a workspace's branch.")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Glob to leave out (repeatable).")] = None,
    skip_unreadable: Annotated[
        bool, typer.Option("--skip-unreadable", help="Skip and report unreadable files.")
    ] = False,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for a held lock.")] = 0.0,
    scope: Annotated[
        str | None,
        typer.Option("--scope", help="Seal this version under a scope's own keys (made on first use); see key shred."),
    ] = None,
) -> None:
    """Snapshot FOLDER as a new version of BRANCH and print its id."""
    UndecodableText.check(message, "-m")  # a message is stored for good: text, not bytes
    res = ws_svc.commit_any(session(), folder, message, branch, exclude or [], skip_unreadable, wait, scope)
    if STATE.json:
        emit_json(res)
        return
    line(res.id)
    for n in res.notes:
        note(n)
    for s in res.skipped:
        note(f"skipped: {safe(s)}")
    note(
        f"{res.files} files, {human_bytes(res.bytes)}; read {res.files_read} files ({human_bytes(res.bytes_read)}), "
        f"stored {human_bytes(res.bytes_stored)} in {res.seconds:.2f}s" + (" (no change)" if res.unchanged else "")
    )


def log(branch: Annotated[str | None, typer.Option("--branch", "-b")] = None) -> None:
    """Versions, newest first."""
    entries = svc.log(session(), branch)
    if STATE.json:
        emit_json(
            [
                {
                    k: getattr(e, k)
                    for k in (
                        "id",
                        "parents",
                        "branch",
                        "author",
                        "time",
                        "message",
                        "signer",
                        "signature",
                        "scope",
                        "state",
                    )
                }
                for e in entries
            ]
        )
        return
    if is_tty():
        table(
            ["version", "branch", "time", "author", "signed", "message"],
            [[e.id[:12], e.branch, e.time, e.author, _signed(e), _state(e) + safe(e.message)] for e in entries],
        )
    else:
        for e in entries:
            line(
                "\t".join(
                    [e.id, e.branch, e.time, e.author, safe(e.message), _signed(e)] + ([e.state] if e.scope else [])
                )
            )


def _state(e: CommitInfo) -> str:
    return (
        f"[{e.state}: scope {safe(e.scope)}] " if e.state != "ok" else (f"[scope {safe(e.scope)}] " if e.scope else "")
    )


def _signed(e: CommitInfo) -> str:
    """``valid:alice``, ``unsigned``, ``revoked:bob`` ..."""
    return f"{e.signature}:{safe(e.signer)}" if e.signer else e.signature


def ls(
    version: Annotated[str, typer.Argument(help="Version: id, prefix, branch, tag or BRANCH~N.")],
    path: Annotated[str, typer.Argument(help="Path relative to the version's root.")] = "",
) -> None:
    """List the files of a version (below PATH)."""
    entries = svc.ls(session(), version, path)
    if STATE.json:
        emit_json(entries)
        return
    for e in entries:
        suffix = f" -> {safe(e.target or '')}" if e.type == "symlink" else ""
        line(f"{_TYPE_LETTER[e.type]}\t{e.mode}\t{e.size}\t{e.mtime}\t{safe(e.path)}{suffix}")


def diff(a: Annotated[str, typer.Argument()], b: Annotated[str, typer.Argument()]) -> None:
    """Files added, removed, modified and renamed from version A to version B, and the folders no file shows
    (an empty one added or removed, a mode changed; their paths end in /)."""
    changes = svc.diff(session(), a, b)
    if STATE.json:
        emit_json(changes)
        return
    render.changes(changes, "no differences")


def cat(version: Annotated[str, typer.Argument()], path: Annotated[str, typer.Argument()]) -> None:
    """Write one file of a version to standard output."""
    out = sys.stdout.buffer
    for piece in svc.cat(session(), version, path):
        out.write(piece)
    out.flush()


def checkout(
    version: Annotated[str, typer.Argument()],
    dest: Annotated[str, typer.Argument(help="Absent or empty folder.")],
    include: Annotated[list[str] | None, typer.Option("--include", help="Only paths matching this glob.")] = None,
) -> None:
    """Restore a version (or part of it) into DEST, byte for byte, with modes and mtimes."""
    res = svc.checkout(session(), version, dest, include or [])
    if STATE.json:
        emit_json(res)
        return
    line(
        f"restored {res.files} files ({human_bytes(res.bytes)}) of {res.version[:12]} "
        f"into {safe(res.dest)} in {res.seconds:.2f}s"
    )


def register(app: typer.Typer) -> None:
    for fn in (commit, log, ls, diff, cat, checkout):
        app.command()(fn)
