"""The agent (docs/agent.md): a warm strongroom process that runs the commands clients hand it.

A command started from a shell pays, before any work, for Python's start and imports (about 0.15 s) and for
Argon2id at the repository's strength (about 0.15 s more). The agent has paid for the imports once, and keeps
each key it derives (crypto.kdf) so that the same passphrase on the same key slot skips Argon2 next time.
A client still presents the passphrase on every command: the agent never hands a key out, and a wrong
passphrase pays the full derivation, as it would without the agent.

Only the user who started it may connect (the socket's folder is 0700 and the peer's uid is checked). One
command runs at a time, in this process, with the client's standard streams, environment, folder and umask.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import signal
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strongroom.cli import agentclient
from strongroom.errors import InputError

if TYPE_CHECKING:
    from strongroom.settings import Settings

MAX_REQUEST = 16 << 20
IDLE_EXIT = 3600.0  # seconds without a command before the agent exits and its keys are gone
POLL_S = 0.25
REQUEST_TIMEOUT_S = 10.0
PROMPT_TIMEOUT_S = 600.0  # how long a command waits at a passphrase prompt for the client's answer
SETTLE_S = 2.0  # how long a commit or status waits for watched folders to finish what they heard of
SETTLING = frozenset({"commit", "status"})

RUNNING: Agent | None = None  # the agent this process is, for `agent watch` and its siblings


def default_socket_path() -> str:
    """Like ssh-agent: a fresh 0700 folder of the user's (the runtime folder if there is one)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = runtime if runtime and os.path.isdir(runtime) else None
    try:
        folder = tempfile.mkdtemp(prefix="strongroom-agent-", dir=base)
    except OSError as e:
        raise InputError(f"cannot make the agent's folder in {base or tempfile.gettempdir()}: {e.strerror}") from None
    return os.path.join(folder, f"agent.{os.getpid()}.sock")


def is_secret_variable(name: str) -> bool:
    """The passphrases and PINs a command may bring in its environment (settings.py reads them)."""
    return "PASSPHRASE" in name or name.endswith("_PIN")


@dataclass
class Request:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    umask: int

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Request:
        argv, env, cwd, umask = raw.get("argv"), raw.get("env"), raw.get("cwd"), raw.get("umask")
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise ValueError("argv is not a list of strings")
        if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            raise ValueError("env is not a map of strings")
        if not isinstance(cwd, str) or not isinstance(umask, int) or not 0 <= umask <= 0o777:
            raise ValueError("bad cwd or umask")
        return cls(argv, env, cwd, umask)


class _Client:
    """What the connection's reader thread learns while the command runs: answers, and Ctrl-C."""

    def __init__(self, conn: socket.socket, stopping: Callable[[], bool] = lambda: False) -> None:
        self.conn = conn
        self.stopping = stopping  # the agent was asked to stop (SIGTERM): a prompt stops waiting
        self.answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lock = threading.Lock()
        self.running = False
        self.interrupted = False

    def listen(self) -> None:
        try:
            for raw in self.conn.makefile("rb"):
                try:
                    msg = json.loads(raw)
                except Exception:  # noqa: S112 (a line that is not JSON, or nested too deep, is not a message)
                    continue
                if not isinstance(msg, dict):
                    continue
                if msg.get("interrupt"):
                    self.interrupt()
                elif "answer" in msg:
                    self.answers.put(msg)
        except Exception:  # noqa: S110 (the connection failed: the client is gone, as below)
            pass
        finally:  # whatever ended the reading, a prompt waiting for an answer must not wait forever
            self.interrupt()  # the client is gone: stop its command
            self.answers.put({"answer": None, "why": "interrupted"})

    def interrupt(self) -> None:
        with self.lock:
            if self.running and not self.interrupted:
                self.interrupted = True
                # A real signal, aimed at the main thread: it also breaks a wait in a system call there.
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def prompt(self, label: str, confirm: bool) -> str:
        self.conn.sendall(json.dumps({"ask": label, "confirm": confirm}).encode() + b"\n")
        waited_until = time.monotonic() + PROMPT_TIMEOUT_S
        while True:  # in short waits, so that a SIGTERM to the agent is not held up by a prompt
            try:
                msg = self.answers.get(timeout=POLL_S)
                break
            except queue.Empty:
                if self.stopping():
                    raise KeyboardInterrupt from None
                if time.monotonic() >= waited_until:
                    raise InputError(
                        f"no answer to the {label} prompt within {PROMPT_TIMEOUT_S / 60:.0f} minutes"
                    ) from None
        if not isinstance(msg.get("answer"), str):
            if msg.get("why") == "mismatch":
                raise InputError(f"the {label}s do not match")
            raise KeyboardInterrupt
        return str(msg["answer"])


class Agent:
    def __init__(
        self, path: str, idle_exit: float = IDLE_EXIT, log_path: str | None = None, own_folder: bool = False
    ) -> None:
        self.path = path
        self.own_folder = own_folder  # made for this agent (default_socket_path): removed when it exits
        self.idle_exit = idle_exit
        self.log_path = log_path
        self.build = agentclient.build()
        self.client: _Client | None = None
        self.stopping = False
        self.waited = 0.0  # how long the last command waited for the watched folders
        from strongroom.service.prepare import Watches

        self.watches = Watches()
        # Where a watched folder's `agent watch` recorded its event (its settings, without their secrets): the
        # agent records its refusals there too, in the repositories it has open.
        self.audit_settings: dict[str, Settings] = {}

    # ------------------------------------------------------------------ listening

    def bind(self) -> socket.socket:
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            st = os.stat(folder)
        except OSError as e:
            raise InputError(f"cannot make the agent's folder {folder}: {e.strerror}") from None
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise InputError(f"the agent's folder must be yours and private (0700): {folder}")
        self._clear_old_socket()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(self.path)
        except OSError as e:
            raise InputError(f"cannot listen at {self.path}: {e.strerror or e}") from None
        finally:
            os.umask(old)
        listener.listen(16)
        return listener

    def _clear_old_socket(self) -> None:
        """A socket nobody answers on is left by an agent that was killed: remove it. Anything else stays."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise InputError(f"{self.path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)
                return
        raise InputError(f"an agent already listens at {self.path}")

    def serve(self, listener: socket.socket) -> None:
        from strongroom.service.context import keep_warm

        global RUNNING
        RUNNING = self
        keep_warm()
        for name in [n for n in os.environ if is_secret_variable(n)]:
            del os.environ[name]  # each command brings its own; the agent keeps none of its starter's
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._log(f"listening at {self.path}")
        listener.settimeout(POLL_S)  # the stop flag (SIGTERM, Ctrl-C) and the idle time are looked at this often
        idle_until = time.monotonic() + self.idle_exit
        try:
            while not self.stopping:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    if time.monotonic() >= idle_until:
                        self._log(f"no command for {self.idle_exit:.0f} s: exiting")
                        break
                    continue
                conn.settimeout(None)
                with conn:
                    self._serve_one(conn)
                self.client = None
                idle_until = time.monotonic() + self.idle_exit
        finally:
            RUNNING = None
            self.watches.stop_all()
            signal.signal(signal.SIGINT, previous)
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            if self.own_folder:  # left behind, a folder in the shared temporary folder could be taken over
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(self.path))
            self._log("stopped; the keys it kept are gone with it")

    def _on_sigint(self, signum: int, frame: Any) -> None:
        client = self.client
        if client is not None and client.running:
            raise KeyboardInterrupt  # the command stops; the agent carries on
        if client is not None and client.interrupted:
            return  # a client's Ctrl-C that arrived as its command finished
        self.stopping = True  # Ctrl-C on the agent's own terminal, between commands

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.stopping = True  # a running command finishes first

    # ------------------------------------------------------------------ one command

    def _serve_one(self, conn: socket.socket) -> None:
        pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.getuid():
            self._log(f"refused a connection from uid {uid} (pid {pid}): only uid {os.getuid()} may use this agent")
            self._audit_refusal(pid, uid, gid, "another user")
            return
        fewer_rights = _fewer_rights(conn, pid, gid)
        fds: list[int] = []
        try:
            # One deadline for the whole request: a client that says nothing, or trickles a byte now and then,
            # must not hold the agent (a timeout per recv would be reset by each byte).
            raw, fds = self._receive(conn, time.monotonic() + REQUEST_TIMEOUT_S)
            conn.settimeout(None)
            if fewer_rights is not None:  # read first, so that the client reads the answer, not a reset
                _close_all(fds)
                self._log(f"refused a connection from pid {pid}: {fewer_rights}")
                refused = {"fallback": "refused", "note": f"it refuses this client: {fewer_rights}"}
                conn.sendall(json.dumps(refused).encode() + b"\n")
                self._audit_refusal(pid, uid, gid, fewer_rights)
                return
            if raw.get("stop") is True:
                self.stopping = True
                conn.sendall(b'{"exit":0}\n')
                self._log(f"stop asked by pid {pid}")
                return
            if raw.get("protocol") != agentclient.PROTOCOL or raw.get("build") != self.build or len(fds) != 3:
                conn.sendall(b'{"fallback":"another strongroom build"}\n')
                return
            request = Request.parse(raw)
        except Exception as e:  # whatever a request does to the parser (RecursionError, ...), the agent serves on
            self._log(f"dropped a malformed request from pid {pid}: {type(e).__name__}")
            _close_all(fds)
            with contextlib.suppress(OSError):
                answer = {
                    "fallback": "malformed request",
                    "note": f"it could not read the request ({type(e).__name__})",
                }
                conn.sendall(json.dumps(answer).encode() + b"\n")
            return
        try:
            started = time.monotonic()
            self.waited = 0.0
            try:
                code = self._run(conn, request, fds)
            except Exception as e:  # the agent's own failure: this client gets exit 3, the next one an agent
                self._log(f"pid {pid}: internal error {type(e).__name__}")
                code = 3
            word = agentclient.command_word(request.argv) or "-"
            waited = f" (of which {self.waited:.3f} s for watched folders)" if self.waited >= 0.001 else ""
            self._log(f"pid {pid}: {word} exit {code} in {time.monotonic() - started:.3f} s{waited}")
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
        finally:
            _close_all(fds)

    def _receive(self, conn: socket.socket, deadline: float) -> tuple[dict[str, Any], list[int]]:
        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request took too long")
            return remaining

        conn.settimeout(left())
        data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
        fds = list(fds)
        try:
            if len(data) < agentclient.HEADER.size:
                raise ValueError("short request")
            (size,) = agentclient.HEADER.unpack_from(data)
            if size > MAX_REQUEST:
                raise ValueError("request too large")
            body = bytearray(data[agentclient.HEADER.size :])
            while len(body) < size:
                conn.settimeout(left())
                more = conn.recv(min(1 << 16, size - len(body)))
                if not more:
                    raise ValueError("request cut short")
                body += more
            request = json.loads(bytes(body))
            if not isinstance(request, dict):
                raise ValueError("request is not an object")
        except BaseException:  # the descriptors it sent are closed with the request
            _close_all(fds)
            raise
        return request, fds

    def _run(self, conn: socket.socket, request: Request, fds: list[int]) -> int:
        """Run the command as if this process had been started by the client, then put everything back."""
        from strongroom.cli import main as cli_main
        from strongroom.service.context import between_commands

        argv, env = request.argv, request.env
        try:
            os.chdir(request.cwd)
        except OSError as e:
            conn.sendall(json.dumps({"fallback": f"cannot enter the folder: {e.strerror}"}).encode() + b"\n")
            return -1
        client = self.client = _Client(conn, lambda: self.stopping)
        threading.Thread(target=client.listen, name="strongroom-agent-client", daemon=True).start()
        saved_env = dict(os.environ)
        saved_std = (sys.stdin, sys.stdout, sys.stderr)
        saved_fds = [os.dup(fd) for fd in (0, 1, 2)]
        old_umask = os.umask(request.umask)
        try:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            sys.stdin, sys.stdout, sys.stderr = _streams()
            os.environ.clear()
            os.environ.update(env)
            sys.argv = ["strongroom", *argv]
            cli_main.STATE.reset(prompt=client.prompt)
            with client.lock:
                client.running = True
            settle = SETTLE_S if agentclient.command_word(argv) in SETTLING else 0.0
            try:
                with self.watches.quiet(settle) as self.waited:
                    code = cli_main.main(argv)
            except KeyboardInterrupt:  # between the command's own handlers and here
                sys.stderr.write("strongroom: interrupted\n")
                code = 130
            finally:
                with client.lock:
                    client.running = False
            return code
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            sys.stdin, sys.stdout, sys.stderr = saved_std
            for target, fd in enumerate(saved_fds):
                os.dup2(fd, target)
                os.close(fd)
            os.environ.clear()
            os.environ.update(saved_env)
            os.umask(old_umask)
            os.chdir("/")
            cli_main.STATE.reset()
            between_commands()

    def _audit_refusal(self, pid: int, uid: int, gid: int, reason: str) -> None:
        """Record a refused connection (`agent.refuse`, denied) in the audit log of each repository a watched
        folder keeps open: the agent has no other repository, and no passphrase, of its own. With no folder
        watched, agent.log is the only record."""
        watches = [w for w in self.watches.all() if w.folder in self.audit_settings]
        if not watches:
            return
        from strongroom.service.context import Session

        done: set[tuple[str, str]] = set()
        with self.watches.quiet(0.0):  # a watch and the sealing of the log never use the repository at once
            for w in watches:
                settings = self.audit_settings[w.folder]
                where = (w.repo.config.repo_id, settings.catalog_url(w.repo.config.repo_id))
                if where in done:
                    continue
                done.add(where)
                try:
                    session = Session(settings)
                    session.adopt(w.repo)
                    with session.audited("agent.refuse", paths=[self.path]) as rec:
                        rec.outcome = "denied"
                        rec.detail(peer={"pid": pid, "uid": uid, "gid": gid}, reason=reason)
                except Exception as e:  # the refusal stands; agent.log says it could not be recorded
                    self._log(f"could not record the refusal in the audit log of {w.folder}: {type(e).__name__}")

    def _log(self, text: str) -> None:
        if not self.log_path:
            return
        text = _printable(text)  # a command word or path with a newline must not forge a line of its own
        with contextlib.suppress(OSError), open(self.log_path, "a", encoding="utf-8", errors="backslashreplace") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} agent[{os.getpid()}] {text}\n")


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13; Python names it from 3.12 on only
NAMESPACES = ("mnt", "user")


def _fewer_rights(conn: socket.socket, pid: int, gid: int) -> str | None:
    """Why a client of the agent's uid may not use it, or None. The agent would act with its own groups and
    see its own mounts: a client without one of its groups (``setpriv --clear-groups``, ``newgrp``) or in
    another mount or user namespace (a sandbox) would reach through it what it cannot reach itself. So the
    client must have the agent's group, supplementary groups and namespaces, exactly."""
    if gid != os.getegid():
        return f"its group ({gid}) is not the agent's ({os.getegid()})"
    groups = _peer_groups(conn, pid)
    if groups is None:
        return "cannot read its groups"
    if groups != set(os.getgroups()):
        return "its supplementary groups are not the agent's"
    if pid <= 0:
        return "it is in another PID namespace"
    for ns in NAMESPACES:
        try:
            theirs, ours = os.stat(f"/proc/{pid}/ns/{ns}"), os.stat(f"/proc/self/ns/{ns}")
        except OSError:
            return f"cannot read its {ns} namespace"
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            return f"it is in another {'mount' if ns == 'mnt' else ns} namespace"
    return None


def _peer_groups(conn: socket.socket, pid: int) -> set[int] | None:
    """The client's supplementary groups as of its connect (SO_PEERGROUPS), else as /proc says now."""
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)  # Python allows up to 1024 bytes: 256 groups
        return set(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    except OSError:  # more groups than that (ERANGE), or an older kernel
        pass
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return None


def _printable(text: str) -> str:
    """``text`` with every control or line-breaking character (and every undecodable byte) as an escape."""
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape", "backslashreplace").decode() for c in text
    )


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def _streams() -> tuple[io.TextIOWrapper, io.TextIOWrapper, io.TextIOWrapper]:
    """Fresh text streams on descriptors 0-2 (now the client's): nothing buffered from an earlier client."""
    like = [s or sys.stdout for s in (sys.__stdin__, sys.__stdout__, sys.__stderr__)]
    modes = ("r", "w", "w")
    return tuple(  # type: ignore[return-value]
        open(
            fd,
            modes[fd],
            buffering=1 if fd == 2 or (fd == 1 and os.isatty(1)) else -1,
            encoding=like[fd].encoding,
            errors=like[fd].errors,
            closefd=False,
        )
        for fd in (0, 1, 2)
    )
