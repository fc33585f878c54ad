"""One module per command group; each registers its commands on the app.

Only the module holding the invoked command is imported and registered: building every command's parser
(and importing every service module behind them) took about a tenth of a second on each run. Help, or a
command word not found here, registers them all.
"""

from __future__ import annotations

import importlib

import typer

from strongroom.cli.agentclient import command_word

# The top-level commands each module registers, in help order; a test keeps this table in step with them.
MODULES: dict[str, tuple[str, ...]] = {
    "repo_cmd": ("gc", "init", "stats", "verify", "trust-current", "unlock", "repair"),
    "refs_cmd": ("merge", "revert", "reset", "branch", "tag"),
    "versions_cmd": ("commit", "log", "ls", "diff", "cat", "checkout"),
    "workspace_cmd": ("status", "workspace"),
    "audit_cmd": ("custody", "audit"),
    "key_cmd": ("key",),
    "signer_cmd": ("signer",),
    "backup_cmd": ("remote", "backup", "incident"),
    "agent_cmd": ("agent",),
}
_registered: set[str] = set()


def register(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Register the module of the command argv names, or every module (argv None, help, unknown word)."""
    word = command_word(argv) if argv is not None else None
    wanted = [m for m, names in MODULES.items() if word in names] or list(MODULES)
    for module in wanted:
        if module not in _registered:
            importlib.import_module(f"strongroom.cli.commands.{module}").register(app)
            _registered.add(module)


def registered_count() -> int:
    return len(_registered)
