"""branch and tag."""

from __future__ import annotations

from typing import Annotated

import typer

from strongroom.cli.main import STATE, session
from strongroom.cli.render import emit_json, line
from strongroom.service import branches as svc
from strongroom.service.results import RefInfo

branch_app = typer.Typer(help="Create, list and delete branches (O(1): nothing is copied).", no_args_is_help=True)
tag_app = typer.Typer(help="Create, list and delete tags (immutable names for versions).", no_args_is_help=True)


def _show(refs: list[RefInfo]) -> None:
    if STATE.json:
        emit_json(refs)
        return
    for r in refs:
        line(f"{r.name}\t{r.version}")


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
