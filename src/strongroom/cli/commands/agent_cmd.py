"""agent: start, run and stop the warm process that runs commands for you (docs/agent.md)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
from typing import Annotated

import typer

from strongroom.cli import agent as agent_module
from strongroom.cli import agentclient
from strongroom.cli.agent import IDLE_EXIT, Agent, default_socket_path
from strongroom.cli.main import STATE, session
from strongroom.cli.render import emit_json, human_bytes, line, table
from strongroom.errors import InputError, ProblemFound

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


def _agent(socket_path: str | None, idle_minutes: float) -> Agent:
    if idle_minutes <= 0:
        raise InputError("--idle-exit must be more than 0 minutes")
    assert STATE.settings is not None
    os.makedirs(STATE.settings.log_dir, mode=0o700, exist_ok=True)
    return Agent(
        os.path.abspath(socket_path) if socket_path else default_socket_path(),
        idle_exit=idle_minutes * 60,
        log_path=os.path.join(STATE.settings.log_dir, "agent.log"),
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
    agent = _agent(socket_path, idle_exit)
    listener = agent.bind()  # here, so that a client can connect as soon as the line is printed
    read_pid, write_pid = os.pipe()
    first = os.fork()
    if first == 0:  # pragma: no cover - the daemon's side is tested through its socket
        os.close(read_pid)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        os.write(write_pid, str(os.getpid()).encode())
        os.close(write_pid)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        code = 0
        try:
            agent.serve(listener)
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(write_pid)
    listener.close()
    os.waitpid(first, 0)
    with os.fdopen(read_pid, "rb") as f:
        pid = int(f.read() or b"0")
    if not pid:
        raise ProblemFound("the agent did not start (see agent.log in the log folder)")
    _announce(agent.path, pid)


@agent_app.command("run")
def run(socket_path: SocketOption = None, idle_exit: IdleOption = IDLE_EXIT / 60) -> None:
    """Run an agent in the foreground (for a service manager); Ctrl-C stops it."""
    agent = _agent(socket_path, idle_exit)
    listener = agent.bind()
    _announce(agent.path, os.getpid())
    agent.serve(listener)


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
) -> None:
    """Read the folder's files as they change, so that its next commit has little left to read. Runs in the
    agent, which keeps the repository open for it until `agent unwatch` or the agent's exit."""
    from strongroom.service import prepare

    running = _this_agent()
    watcher, summary = prepare.watch(session(), folder, exclude or [])
    running.watches.add(watcher)
    if STATE.json:
        emit_json(summary)
    else:
        kind = "workspace" if summary.workspace else "folder"
        line(f"watching {kind} {summary.folder} for repository {summary.repo_id[:16]}")


@agent_app.command("unwatch")
def unwatch(folder: Annotated[str, typer.Argument(help="A folder `agent watch` was given.")]) -> None:
    """Stop watching a folder (its commits then read what changed themselves)."""
    if not _this_agent().watches.remove(os.path.abspath(folder)):
        raise InputError(f"not watched: {folder}")
    line(f"no longer watching {os.path.abspath(folder)}")


@agent_app.command("status")
def status() -> None:
    """The agent's watched folders, with what each has read ahead and any error it met."""
    watches = _this_agent().watches.all()
    if STATE.json:
        emit_json(
            {
                "pid": os.getpid(),
                "watches": [{"folder": w.folder, "backlog": w.backlog(), **vars(w.stats)} for w in watches],
            }
        )
        return
    line(f"agent pid {os.getpid()}, {len(watches)} watched folder(s)")
    if watches:
        table(
            ["folder", "files read ahead", "bytes read", "bytes stored", "backlog", "errors", "last error"],
            [
                [
                    w.folder,
                    w.stats.files_read,
                    human_bytes(w.stats.bytes_read),
                    human_bytes(w.stats.bytes_stored),
                    w.backlog(),
                    w.stats.errors,
                    w.stats.last_error,
                ]
                for w in watches
            ],
        )


def register(app: typer.Typer) -> None:
    app.add_typer(agent_app, name="agent")
