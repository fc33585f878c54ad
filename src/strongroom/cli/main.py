"""The `strongroom` command: global options, the Session, and the ONE place errors become exit codes.

Exit codes: 0 success; 1 the command ran and found a problem; 2 bad usage or bad input; 3 an internal
error (a bug), with one line pointing at a log file that holds the traceback.
"""

from __future__ import annotations

import contextlib
import gc
import getpass
import os
import sys
import time
import traceback
import warnings
from typing import Annotated, Any

import typer

from strongroom.cli import launch
from strongroom.cli.progress import TerminalProgress
from strongroom.cli.render import safe as one_line  # an error line names what the user typed
from strongroom.errors import CannotWrite, StrongroomError, StrongroomWarning, refused_write
from strongroom.service.context import PassphrasePrompt, Session
from strongroom.settings import Settings

app = typer.Typer(
    name="strongroom",
    help="Encrypted, deduplicated, versioned storage for ML training data, with provenance.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class State:
    session: Session | None = None
    json: bool = False
    settings: Settings | None = None
    prompt: PassphrasePrompt | None = None  # the agent asks on its client's terminal instead

    def reset(self, prompt: PassphrasePrompt | None = None) -> None:
        """Forget the last command (the agent runs many in one process)."""
        self.session, self.json, self.settings, self.prompt = None, False, None, prompt


STATE = State()


def _prompt(label: str, confirm: bool) -> str:
    text = getpass.getpass(f"{label}: ")
    if confirm and getpass.getpass(f"{label} again: ") != text:
        from strongroom.errors import InputError

        raise InputError(f"the {label}s do not match")
    return text


@app.callback()
def _global(
    repo: Annotated[str | None, typer.Option("--repo", "-r", help="Repository folder (or STRONGROOM_REPO).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print exactly one JSON document.")] = False,
    passphrase_command: Annotated[
        str | None, typer.Option("--passphrase-command", help="Command that prints the passphrase.")
    ] = None,
    catalog: Annotated[
        str | None, typer.Option("--catalog", help="Catalog database, an SQLAlchemy URL (or STRONGROOM_CATALOG).")
    ] = None,
) -> None:
    if launch.gc_deferred:  # off while the command was imported and built: what exists by now stays
        launch.gc_deferred = False
        gc.freeze()
        gc.enable()
    settings = Settings.from_env(repo=repo, passphrase_command=passphrase_command, catalog=catalog)
    STATE.settings = settings
    STATE.json = json_out
    STATE.session = Session(settings, progress=TerminalProgress(), prompt=STATE.prompt or _prompt)


def session() -> Session:
    assert STATE.session is not None
    return STATE.session


def _log_internal_error(exc: BaseException) -> str:
    """Write the traceback to a log file and return its path (or why it could not be written)."""
    try:
        try:
            settings = STATE.settings or Settings.from_env()
            log_dir = settings.log_dir
        except StrongroomError:
            log_dir = os.path.join(os.path.expanduser("~"), ".local", "state", "strongroom", "logs")
        os.makedirs(log_dir, mode=0o700, exist_ok=True)
        path = os.path.join(log_dir, f"error-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log")
        # the messages may hold undecodable names (surrogate escapes): never let them stop the log
        with open(path, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(f"strongroom {' '.join(sys.argv[1:2])}\n")  # the subcommand only: arguments may name secrets
            traceback.print_exception(exc, file=f)
        return path
    except Exception as e:
        return f"no log: {type(e).__name__}"


def _is_usage_error(e: Exception) -> bool:
    """Click's usage errors (typer ships its own copy of click, so match the shape, not a class)."""
    return callable(getattr(e, "format_message", None)) and getattr(e, "exit_code", None) == 2


_built: tuple[int, typer.core.TyperGroup] | None = None  # (command modules registered, their click group)


def _command() -> typer.core.TyperGroup:
    """The click group of the registered commands, built once per set of them (the agent runs many)."""
    global _built
    from strongroom.cli.commands import registered_count

    if _built is None or _built[0] != registered_count():
        group = typer.main.get_command(app)
        assert isinstance(group, typer.core.TyperGroup)
        _built = (registered_count(), group)
    return _built[1]


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """A StrongroomWarning is one line on stderr, as errors are; others keep Python's format."""
    if issubclass(category, StrongroomWarning):
        sys.stderr.write(one_line(f"strongroom: warning: {message}") + "\n")
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    from strongroom.cli.commands import register

    warnings.showwarning = _show_warning
    warnings.simplefilter("always", StrongroomWarning)  # every time: an agent runs many commands in one process

    register(app, sys.argv[1:] if argv is None else argv)
    try:
        result = _command().main(args=argv, prog_name="strongroom", standalone_mode=False)
        if result == 130:  # typer's answer to Ctrl-C inside a command, returned rather than raised
            sys.stderr.write("strongroom: interrupted\n")
        return result if isinstance(result, int) else 0
    except typer.Exit as e:
        if e.exit_code == 130:  # click's answer to Ctrl-C inside a command
            sys.stderr.write("strongroom: interrupted\n")
        return int(e.exit_code)
    except typer.Abort:
        sys.stderr.write("strongroom: interrupted\n")
        return 130
    except StrongroomError as e:
        if e.exit_code == 3:
            path = _log_internal_error(e)
            sys.stderr.write(one_line(f"strongroom: internal error: {e} (details in {path})") + "\n")
            return 3
        hint = e.hint()
        sys.stderr.write(one_line(f"strongroom: error: {e}" + (f" ({hint})" if hint else "")) + "\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("strongroom: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        if isinstance(e, OSError) and refused_write(e):  # standard output on a full disk, most often: no bug
            where = f"cannot write {os.fsdecode(e.filename)}" if e.filename else "a write was refused"
            sys.stderr.write(one_line(f"strongroom: error: {where}: {e.strerror or e}") + "\n")
            return CannotWrite.exit_code
        if _is_usage_error(e):
            message = e.format_message().splitlines()  # type: ignore[attr-defined]
            sys.stderr.write(one_line(f"strongroom: error: {message[0] if message else e}") + "\n")
            return 2
        path = _log_internal_error(e)
        sys.stderr.write(one_line(f"strongroom: internal error (a bug): {type(e).__name__}; details in {path}") + "\n")
        return 3


def run() -> None:
    code = main(sys.argv[1:])
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    sys.exit(code)
