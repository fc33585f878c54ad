"""workspace create/switch/discard, status."""

from __future__ import annotations

from typing import Annotated

import typer

from strongroom.cli import render
from strongroom.cli.main import STATE, session
from strongroom.cli.render import emit_json, human_bytes, line, note, safe
from strongroom.service import workspace as svc
from strongroom.service.results import WorkspaceInfo

workspace_app = typer.Typer(help="Writable working folders tied to a branch.", no_args_is_help=True)


def _show(info: WorkspaceInfo, verb: str) -> None:
    if STATE.json:
        emit_json(info)
        return
    line(f"{verb} {safe(info.folder)}: branch {safe(info.branch)} at {info.base[:12]}")
    for n in info.notes:
        note(safe(n))
    if info.bytes_written or info.bytes_reflinked:
        shared = f", {human_bytes(info.bytes_reflinked)} reflinked" if info.bytes_reflinked else ""
        note(f"{info.files} files in the workspace, {human_bytes(info.bytes_written)} written{shared}")


@workspace_app.command("create")
def create(
    folder: Annotated[str, typer.Argument(help="Absent or empty folder.")],
    branch: Annotated[str, typer.Option("--branch", "-b", help="Branch the workspace commits to (created if new).")],
    from_version: Annotated[str | None, typer.Option("--from", help="Version a new branch starts from.")] = None,
    paths: Annotated[list[str] | None, typer.Option("--paths", help="Only files matching these globs.")] = None,
) -> None:
    """Materialise a version into FOLDER as a writable workspace of BRANCH.

    A file that another workspace of the repository holds unchanged is reflinked (shared blocks,
    copy-on-write) where the filesystem supports it, e.g. XFS or Btrfs; otherwise it is written. Files
    are never hard-linked. The output counts bytes written and bytes reflinked (--json: bytes_written,
    bytes_reflinked)."""
    _show(svc.create(session(), folder, branch, from_version, paths or []), "created")


@workspace_app.command("switch")
def switch(folder: Annotated[str, typer.Argument()], version: Annotated[str, typer.Argument()]) -> None:
    """Move a clean workspace to VERSION, rewriting only the files that differ.

    Rewritten files are reflinked from another workspace of the repository when it holds them unchanged
    and the filesystem supports it, else written (--json: bytes_written, bytes_reflinked)."""
    _show(svc.switch(session(), folder, version), "switched")


@workspace_app.command("discard")
def discard(folder: Annotated[str, typer.Argument()]) -> None:
    """Remove a workspace folder (committed versions are untouched)."""
    _show(svc.discard(session(), folder), "discarded")


def status(folder: Annotated[str, typer.Argument()]) -> None:
    """What changed in a workspace since its base version (unchanged files are not read)."""
    info, changes = svc.status(session(), folder)
    if STATE.json:
        emit_json({"workspace": info.to_json(), "changes": [c.to_json() for c in changes]})
        return
    note(f"workspace {info.folder}: branch {info.branch}, base {info.base[:12]}")
    if info.adopted:
        note(f"version {info.adopted[:12]}, committed from here by a commit that was cut off, is now the base")
    if info.interrupted_switch:
        note(f"an interrupted switch to {info.interrupted_switch[:12]}: run `workspace switch` to it again")
    render.changes(changes, "no changes")


def register(app: typer.Typer) -> None:
    app.add_typer(workspace_app, name="workspace")
    app.command()(status)
