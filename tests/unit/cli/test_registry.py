"""The CLI registers only the module of the invoked command: its table must name every command each module
registers, and the command word must be found past the global options."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import typer
from typer.main import get_command_name

from strongroom.cli import agentclient
from strongroom.cli.commands import MODULES, command_word
from strongroom.cli.main import app


@pytest.mark.parametrize("module", sorted(MODULES))
def test_the_table_names_what_each_module_registers(module: str) -> None:
    app = typer.Typer()
    importlib.import_module(f"strongroom.cli.commands.{module}").register(app)
    names = [c.name or get_command_name(c.callback.__name__) for c in app.registered_commands if c.callback]
    names += [g.name for g in app.registered_groups if g.name]
    assert tuple(names) == MODULES[module]


def test_no_command_is_claimed_by_two_modules() -> None:
    names = [n for ns in MODULES.values() for n in ns]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["commit", "data", "-m", "x"], "commit"),
        (["--repo", "/r", "log"], "log"),
        (["-r", "/r", "--json", "--catalog", "sqlite:///c", "key", "list"], "key"),
        (["--repo=/r", "ls", "main"], "ls"),
        (["--passphrase-command", "pass show x", "checkout", "main", "out"], "checkout"),
        (["--json"], None),
        (["--help"], None),
        (["-r", "/r", "--help", "log"], None),
        (["--", "status"], "status"),
        ([], None),
    ],
)
def test_the_command_word_is_found_past_the_global_options(argv: list[str], word: str | None) -> None:
    assert command_word(argv) == word


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    return subprocess.run([sys.executable, "-m", "strongroom", *args], capture_output=True, text=True, env=env)


def test_help_lists_every_command() -> None:
    out = _cli("--help")
    assert out.returncode == 0
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert {n for ns in MODULES.values() for n in ns} <= listed


def test_an_unknown_command_is_one_line_and_exit_2() -> None:
    out = _cli("--repo", "/nowhere", "comit")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["strongroom: error: No such command 'comit'. Did you mean 'commit'?"]


def test_the_global_options_that_take_a_value_are_the_callbacks() -> None:
    group = typer.main.get_command(app)
    valued = {name for p in group.params if not getattr(p, "is_flag", False) for name in p.opts + p.secondary_opts}
    assert valued == agentclient.VALUED_OPTIONS
