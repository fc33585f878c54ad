"""agent: start, run and stop the warm process that runs commands for you (docs/agent.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shlex
import socket
import subprocess
import sys
from typing import Annotated

import typer

from strongroom.cli import agent as agent_module
from strongroom.cli import agentclient
from strongroom.cli.agent import IDLE_EXIT, Agent, default_socket_path, is_secret_variable
from strongroom.cli.main import STATE, session
from strongroom.cli.render import emit_json, human_bytes, line, table
from strongroom.errors import InputError, ProblemFound
from strongroom.settings import Settings

agent_app = typer.Typer(
    help="A warm process that runs your strongroom commands without Python's start-up and with the keys it "
    "derived kept: start it, and export STRONGROOM_AGENT as it prints.",
    no_args_is_help=True,
)

SocketOption = Annotated[
    str | None, typer.Option("--socket", help="Socket path (default: a new private folder, as ssh-agent does).")
]
IdleOption = Annotated[
    float,
    typer.Option("--idle-exit", help="Minutes without a command after which the agent exits, forgetting its keys."),
]


def _agent(socket_path: str | None, idle_minutes: float, own_folder: bool = False) -> Agent:
    if not math.isfinite(idle_minutes) or idle_minutes <= 0:
        raise InputError("--idle-exit must be a number of minutes above 0")
    assert STATE.settings is not None
    os.makedirs(STATE.settings.log_dir, mode=0o700, exist_ok=True)
    return Agent(
        os.path.abspath(socket_path) if socket_path else default_socket_path(),
        idle_exit=idle_minutes * 60,
        log_path=os.path.join(STATE.settings.log_dir, "agent.log"),
        own_folder=own_folder or not socket_path,
    )


def _announce(path: str, pid: int) -> None:
    if STATE.json:
        emit_json({"socket": path, "pid": pid, "env": agentclient.AGENT_ENV})
    else:
        line(f"{agentclient.AGENT_ENV}={shlex.quote(path)}; export {agentclient.AGENT_ENV}; # agent pid {pid}")
    sys.stdout.flush()


@agent_app.command("start")
def start(socket_path: SocketOption = None, idle_exit: IdleOption = IDLE_EXIT / 60) -> None:
    """Start an agent in the background and print the line that points your shell at it:
    eval "$(strongroom agent start)"."""
    agent = _agent(socket_path, idle_exit)  # the options are checked here, with their errors on this terminal
    path = agent.path
    # A fresh process, not a fork of this one: its environment (/proc/PID/environ) never held a passphrase.
    env = {k: v for k, v in os.environ.items() if not is_secret_variable(k)}
    argv = [sys.executable, "-m", "strongroom", "--json", "agent", "run", "--socket", path]
    own = ["--own-folder"] if agent.own_folder else []  # the agent removes the folder made for it when it exits
    proc = subprocess.Popen(
        [*argv, "--idle-exit", repr(idle_exit), "--detached", *own],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    announced = proc.stdout.readline()
    if not announced:
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        proc.wait()
        if agent.own_folder:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))
        raise InputError(err[-1].removeprefix("strongroom: error: ") if err else "the agent did not start")
    proc.stdout.close()
    proc.stderr.close()
    _announce(path, int(json.loads(announced)["pid"]))


@agent_app.command("run")
def run(
    socket_path: SocketOption = None,
    idle_exit: IdleOption = IDLE_EXIT / 60,
    detached: Annotated[bool, typer.Option("--detached", hidden=True)] = False,
    own_folder: Annotated[bool, typer.Option("--own-folder", hidden=True)] = False,
) -> None:
    """Run an agent in the foreground (for a service manager); SIGTERM stops it."""
    _without_secret_variables()
    agent = _agent(socket_path, idle_exit, own_folder)
    listener = agent.bind()
    _announce(agent.path, os.getpid())
    if detached:  # started by `agent start`: nothing is read from these once the line is out
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
    agent.serve(listener)


def _without_secret_variables() -> None:
    """Start again, same process, same command line, without the passphrase and PIN variables: deleting them
    from os.environ would leave them in /proc/PID/environ (the environment the process started with) for the
    agent's whole life. If the new start cannot be made, carry on: serve() drops them from os.environ."""
    if not any(is_secret_variable(name) for name in os.environ):
        return
    env = {k: v for k, v in os.environ.items() if not is_secret_variable(k)}
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError):
        os.execve(sys.executable, sys.orig_argv, env)  # noqa: S606 (this very command line, no shell)


@agent_app.command("stop")
def stop(socket_path: SocketOption = None) -> None:
    """Stop the agent named by --socket or STRONGROOM_AGENT; the keys it kept are gone with it."""
    path = socket_path or os.environ.get(agentclient.AGENT_ENV)
    if not path:
        raise InputError(f"no agent named: give --socket or set {agentclient.AGENT_ENV}")
    request = json.dumps({"stop": True}).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(path)
            why = agentclient.not_ours(conn, path)
            if why is not None:
                raise ProblemFound(f"the socket {path} is not your agent's: {why}")
            conn.sendall(agentclient.HEADER.pack(len(request)) + request)
            answer = conn.makefile("rb").readline()
    except OSError as e:
        raise ProblemFound(f"no agent answers at {path} ({e.strerror})") from None
    with contextlib.suppress(ValueError):
        if json.loads(answer).get("exit") == 0:
            line(f"stopped the agent at {path}")
            return
    raise ProblemFound(f"the agent at {path} did not stop")


def _this_agent() -> Agent:
    running = agent_module.RUNNING
    if running is None:
        raise InputError(f"this command runs in an agent: start one and set {agentclient.AGENT_ENV}")
    return running


@agent_app.command("watch")
def watch(
    folder: Annotated[str, typer.Argument(help="The folder you commit (a plain folder or a workspace).")],
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="The --exclude patterns your commits of it use.")
    ] = None,
    scope: Annotated[
        str | None, typer.Option("--scope", help="The scope your commits of it go to: read ahead under its keys.")
    ] = None,
) -> None:
    """Read the folder's files as they change, so that its next commit has little left to read. Runs in the
    agent, which keeps the repository open for it until `agent unwatch` or the agent's exit."""
    from strongroom.service import prepare

    running = _this_agent()
    watcher, summary = prepare.watch(session(), folder, exclude or [], scope)
    running.watches.add(watcher)
    running.audit_settings[watcher.folder] = _without_secrets(session().settings)
    if STATE.json:
        emit_json(summary)
    else:
        kind = "workspace" if summary.workspace else "folder"
        line(f"watching {kind} {summary.folder} for repository {summary.repo_id[:16]}")


@agent_app.command("unwatch")
def unwatch(folder: Annotated[str, typer.Argument(help="A folder `agent watch` was given.")]) -> None:
    """Stop watching a folder (its commits then read what changed themselves)."""
    running, root = _this_agent(), os.path.abspath(folder)
    watched = {w.folder: w for w in running.watches.all()}.get(root)
    s = session()
    if watched is not None:
        s.adopt(watched.repo)  # the event goes to the log of the repository the watch kept open, as `watch`'s did
    with s.audited("unwatch", paths=[root]):  # recorded once the watch has stopped, sealed with its repository
        if not running.watches.remove(root):
            raise InputError(f"not watched: {folder}")
        running.audit_settings.pop(root, None)
    line(f"no longer watching {root}")


def _without_secrets(settings: Settings) -> Settings:
    """What the agent keeps of a watch's settings to record events later: no passphrase, PIN or its source."""
    return dataclasses.replace(
        settings,
        passphrase_file=None,
        passphrase_env=None,
        passphrase_command=None,
        new_passphrase_file=None,
        new_passphrase_env=None,
        pkcs11_pin=None,
        signing_passphrase_file=None,
        signing_passphrase_env=None,
    )


@agent_app.command("status")
def status() -> None:
    """The agent's watched folders, with what each has read ahead and any error it met."""
    watches = _this_agent().watches.all()
    if STATE.json:
        emit_json(
            {
                "pid": os.getpid(),
                "watches": [
                    {"folder": w.folder, "backlog": w.backlog(), "waiting": w.waiting(), **vars(w.stats)}
                    for w in watches
                ],
            }
        )
        return
    line(f"agent pid {os.getpid()}, {len(watches)} watched folder(s)")
    if watches:
        table(
            [
                "folder",
                "files read ahead",
                "bytes read",
                "bytes stored",
                "backlog",
                "waiting",
                "events lost",
                "errors",
                "last error",
            ],
            [
                [
                    w.folder,
                    w.stats.files_read,
                    human_bytes(w.stats.bytes_read),
                    human_bytes(w.stats.bytes_stored),
                    w.backlog(),
                    w.waiting(),
                    w.stats.overflows,
                    w.stats.errors,
                    w.stats.last_error,
                ]
                for w in watches
            ],
        )


def register(app: typer.Typer) -> None:
    app.add_typer(agent_app, name="agent")
