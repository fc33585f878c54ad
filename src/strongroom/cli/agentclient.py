"""The client side of the agent (docs/agent.md): hand this command line to a running agent, if one is named.

Imported before anything else on every run, so it imports only the standard library pieces it needs. The
agent runs the command in its warm process with this process's terminal (its three standard streams are
passed over the socket), environment, folder and umask; this process waits, answers passphrase prompts on
its terminal, forwards Ctrl-C, and exits with the command's code. When no agent is named, or it does not
answer, or it is another strongroom build, the command runs here as usual.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import struct
import sys

TYPE_CHECKING = False  # typing itself is not imported: this module is on the path of every command
if TYPE_CHECKING:
    from typing import Any

AGENT_ENV = "STRONGROOM_AGENT"
PROTOCOL = 1
HEADER = struct.Struct(">I")  # the request's length, sent with the three descriptors


# The global options that take a value (the callback in cli/main.py).
VALUED_OPTIONS = frozenset({"--repo", "-r", "--passphrase-command", "--catalog"})


def command_word(argv: list[str]) -> str | None:
    """The command named on a command line, past the global options; None for none or for --help."""
    args = iter(argv)
    for arg in args:
        if arg == "--":
            return next(args, None)
        if arg in ("--help", "-h"):
            return None
        if arg in VALUED_OPTIONS:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _runs_here(argv: list[str]) -> bool:
    """Help, and starting or stopping an agent, never go to one; `agent watch` and the like must."""
    word = command_word(argv)
    if word is None:
        return True
    if word != "agent":
        return False
    rest = argv[argv.index("agent") + 1 :]
    return "--help" in rest or command_word(rest) in (None, "start", "run", "stop")


def build() -> str:
    """What client and agent must share to run the same code: version and installed location."""
    import strongroom

    return f"{strongroom.__version__} {os.path.dirname(os.path.abspath(strongroom.__file__))}"


def not_ours(conn: socket.socket, path: str) -> str | None:
    """Why the agent at ``path`` (``conn`` connected to it) must not be trusted, or None: it must run as this
    user, and listen in a folder that is this user's, private (0700) and not a symbolic link. A folder in the
    shared temporary folder that was removed (a tmp cleaner) can be made again by another user, who would
    then receive the command line, the environment with its passphrase, and this terminal."""
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if uid != os.getuid():
        return f"it runs as uid {uid}, not as you"
    folder = os.path.dirname(os.path.abspath(path))
    try:
        st = os.lstat(folder)
    except OSError as e:
        return f"cannot look at its folder: {e.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return "its folder is not a plain folder (a symbolic link?)"
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        return "its folder is not yours and private (0700)"
    return None


def forward(argv: list[str]) -> int | None:
    """The command's exit code from the agent, or None to run it in this process."""
    path = os.environ.get(AGENT_ENV)
    if not path or _runs_here(argv):
        return None
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:
        return None  # a closed standard stream cannot be passed on: run here
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError as e:
        conn.close()
        sys.stderr.write(
            f"strongroom: note: the agent ({AGENT_ENV}) does not answer ({e.strerror}); running without it\n"
        )
        return None
    try:
        why = not_ours(conn, path)
    except OSError as e:
        why = f"cannot check who listens ({e.strerror})"
    if why is not None:  # nothing has been sent
        conn.close()
        sys.stderr.write(f"strongroom: note: the agent ({AGENT_ENV}) is not used: {why}; running without it\n")
        return None
    try:
        cwd = os.getcwd()
    except OSError:  # a folder that was deleted: the command, run here, says what it makes of that
        conn.close()
        return None
    umask = os.umask(0o077)
    os.umask(umask)
    request = json.dumps(
        {"protocol": PROTOCOL, "build": build(), "argv": argv, "cwd": cwd, "env": dict(os.environ), "umask": umask},
        separators=(",", ":"),
    ).encode()  # ASCII: names that are not UTF-8 travel as escapes and come back as the same strings
    with conn:
        try:
            socket.send_fds(conn, [HEADER.pack(len(request)) + request], [0, 1, 2])
        except OSError:  # not sent whole: the agent drops a request cut short, so nothing ran there
            sys.stderr.write("strongroom: note: the agent closed the connection; running without it\n")
            return None
        try:
            return _converse(conn)
        except (OSError, ValueError):
            # The command may have run, whole or in part: running it again here could do it twice.
            sys.stderr.write(
                "strongroom: error: lost the agent while it ran the command; it may or may not have finished "
                "(see its log, then check before running it again)\n"
            )
            return 3


def _converse(conn: socket.socket) -> int | None:
    """Answer the agent until it reports the exit code. Ctrl-C is passed on: the agent stops the command."""

    def interrupt(signum: int, frame: Any) -> None:
        conn.sendall(b'{"interrupt":true}\n')

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        reader = conn.makefile("rb")
        for raw in reader:
            msg = json.loads(raw)
            if "exit" in msg:
                return int(msg["exit"])
            if "fallback" in msg:
                note = msg.get("note")
                if isinstance(note, str):  # why this agent would not run it (another build says nothing)
                    note = "".join(c if c.isprintable() else "?" for c in note)
                    sys.stderr.write(
                        f"strongroom: note: the agent did not run the command: {note}; running without it\n"
                    )
                return None
            if "ask" in msg:
                text, why = _ask(str(msg["ask"]), bool(msg.get("confirm")))
                conn.sendall(json.dumps({"answer": text, "why": why}).encode() + b"\n")
        raise ConnectionResetError("the agent closed the connection")  # before it said how the command ended
    finally:
        signal.signal(signal.SIGINT, previous)


def _ask(label: str, confirm: bool) -> tuple[str | None, str]:
    """A passphrase prompt on this terminal: (the text, "") or (None, why not)."""
    import getpass

    try:
        text = getpass.getpass(f"{label}: ")
        if confirm and getpass.getpass(f"{label} again: ") != text:
            return None, "mismatch"
    except (EOFError, KeyboardInterrupt):
        return None, "interrupted"
    return text, ""
