"""branch and tag."""

from __future__ import annotations

from typing import Annotated

import typer

from strongroom.cli.main import STATE, session
from strongroom.cli.render import emit_json, line
from strongroom.errors import UndecodableText
from strongroom.service import branches as svc
from strongroom.service import merge as merge_svc
from strongroom.service.results import RefInfo

branch_app = typer.Typer(help="Create, list and delete branches (O(1): nothing is copied).", no_args_is_help=True)
tag_app = typer.Typer(help="Create, list and delete tags (immutable names for versions).", no_args_is_help=True)


def _show(refs: list[RefInfo]) -> None:
    if STATE.json:
        emit_json(refs)
        return
    for r in refs:
        line(f"{r.name}\t{r.version}" + ("\tprotected" if r.protected else ""))


@branch_app.command("create")
def branch_create(
    name: Annotated[str, typer.Argument()],
    from_version: Annotated[str | None, typer.Option("--from", help="Version to start from (default: main).")] = None,
) -> None:
    """Create branch NAME at a version."""
    _show([svc.branch_create(session(), name, from_version)])


@branch_app.command("list")
def branch_list() -> None:
    """Every branch and the version it points at."""
    _show(svc.list_refs(session(), "branch"))


@branch_app.command("delete")
def branch_delete(name: Annotated[str, typer.Argument()]) -> None:
    """Delete branch NAME (its versions stay reachable from other refs, or until gc)."""
    _show([svc.branch_delete(session(), name)])


@branch_app.command("protect")
def branch_protect(
    name: Annotated[str, typer.Argument()],
    require_check: Annotated[
        list[str] | None,
        typer.Option("--require-check", help="Command run on the candidate (split like a shell, not run by one)."),
    ] = None,
    require_signed: Annotated[
        bool,
        typer.Option("--require-signed", help="Accept only versions validly signed by a trusted, unrevoked signer."),
    ] = False,
) -> None:
    """Let NAME take new versions only by merge, and only when every check exits 0 (and, with
    --require-signed, every new version is validly signed)."""
    p = merge_svc.protect(session(), name, require_check or [], require_signed=require_signed)
    signed = bool(p and p.require_signed)
    if STATE.json:
        emit_json({"branch": name, "checks": list(p.checks) if p else [], "require_signed": signed})
    else:
        line(
            f"{name}\tprotected"
            + ("\trequire-signed" if signed else "")
            + "".join(f"\tcheck: {c}" for c in (p.checks if p else ()))
        )


@branch_app.command("unprotect")
def branch_unprotect(name: Annotated[str, typer.Argument()]) -> None:
    """Remove the protection of NAME."""
    merge_svc.protect(session(), name, [], on=False)
    line(f"{name}\tunprotected")


def merge(
    source: Annotated[str, typer.Argument(help="Version or branch to merge.")],
    into: Annotated[str, typer.Option("--into", help="Branch that receives the merge.")],
    message: Annotated[str, typer.Option("-m", "--message")] = "",
    strategy: Annotated[str | None, typer.Option("--strategy", help="ours or theirs, for conflicting paths.")] = None,
) -> None:
    """Three-way, file-level merge of SOURCE into a branch (a fast-forward where possible)."""
    UndecodableText.check(message, "-m")
    res = merge_svc.merge(session(), source, into, message, strategy)
    emit_json(res) if STATE.json else line(f"{res.kind}\t{res.branch}\t{res.version}")


def revert(
    version: Annotated[str, typer.Argument()],
    branch: Annotated[str | None, typer.Option("--branch", "-b")] = None,
    message: Annotated[str, typer.Option("-m", "--message")] = "",
) -> None:
    """Make a new version that undoes VERSION."""
    UndecodableText.check(message, "-m")
    res = merge_svc.revert(session(), version, branch, message)
    emit_json(res) if STATE.json else line(f"{res.kind}\t{res.branch}\t{res.version}")


def reset(branch: Annotated[str, typer.Argument()], version: Annotated[str, typer.Argument()]) -> None:
    """Move BRANCH to VERSION (refused on a protected branch)."""
    res = merge_svc.reset(session(), branch, version)
    emit_json(res) if STATE.json else line(f"{res.kind}\t{res.branch}\t{res.version}")


@tag_app.command("create")
def tag_create(
    name: Annotated[str, typer.Argument()],
    version: Annotated[str, typer.Argument()],
    force: Annotated[bool, typer.Option("--force", help="Move an existing tag.")] = False,
) -> None:
    """Name VERSION with tag NAME."""
    _show([svc.tag_create(session(), name, version, force)])


@tag_app.command("list")
def tag_list() -> None:
    """Every tag and its version."""
    _show(svc.list_refs(session(), "tag"))


@tag_app.command("delete")
def tag_delete(name: Annotated[str, typer.Argument()]) -> None:
    """Delete tag NAME."""
    _show([svc.tag_delete(session(), name)])


def register(app: typer.Typer) -> None:
    app.add_typer(branch_app, name="branch")
    app.add_typer(tag_app, name="tag")
    for fn in (merge, revert, reset):
        app.command()(fn)
