"""One module per command group; each registers its commands on the app."""

from __future__ import annotations

import typer

_done = False


def register(app: typer.Typer) -> None:
    global _done
    if _done:
        return
    from strongroom.cli.commands import (
        audit_cmd,
        key_cmd,
        refs_cmd,
        repo_cmd,
        signer_cmd,
        versions_cmd,
        workspace_cmd,
    )

    repo_cmd.register(app)
    refs_cmd.register(app)
    versions_cmd.register(app)
    workspace_cmd.register(app)
    audit_cmd.register(app)
    key_cmd.register(app)
    signer_cmd.register(app)
    from strongroom.cli.commands import backup_cmd

    backup_cmd.register(app)
    _done = True
