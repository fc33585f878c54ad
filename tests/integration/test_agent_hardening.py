"""The agent against processes that are not quite its user (docs/agent.md, "What the agent keeps"): a client
sends nothing to a socket it cannot trust, and the agent serves only clients with all of its own rights."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, Cli
from tests.integration.conftest import Agent

# A stand-in for someone else's socket: accepts one connection and prints how many bytes it received.
FAKE_AGENT = """
import os, socket, sys
path, uid = sys.argv[1], int(sys.argv[2])
if uid != os.getuid():
    os.setgid(uid); os.setuid(uid)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(1)
print("ready", flush=True)
conn, _ = s.accept()
conn.settimeout(5)
got = b""
try:
    while True:
        more = conn.recv(65536)
        if not more:
            break
        got += more
except OSError:
    pass
print(len(got), flush=True)
"""


def _fake_agent(folder: str, uid: int) -> tuple[subprocess.Popen[str], str]:
    path = os.path.join(folder, "agent.sock")
    proc = subprocess.Popen([sys.executable, "-c", FAKE_AGENT, path, str(uid)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc, path


def _received(proc: subprocess.Popen[str]) -> int:
    out, _ = proc.communicate(timeout=30)
    return int(out.strip())


@pytest.mark.parametrize("owner", ["another user", "a folder others can enter"])
def test_a_client_sends_nothing_to_a_socket_it_cannot_trust(cli: Cli, owner: str) -> None:
    """Another user's socket in a folder they made again (after a tmp cleaner removed ours), or a socket in a
    folder that is not private: the client neither sends its command line, environment and passphrase nor
    passes its terminal, says why once, and runs the command itself."""
    assert cli("init").code == 0
    folder = tempfile.mkdtemp(prefix="sr-agent-")
    try:
        if owner == "another user":
            if os.getuid() != 0:
                pytest.skip("needs root to act as another user")
            os.chown(folder, 65534, 65534)
            uid = 65534
        else:
            os.chmod(folder, 0o755)
            uid = os.getuid()
        proc, path = _fake_agent(folder, uid)
        res = cli("log", extra_env={"STRONGROOM_AGENT": path})
        assert _received(proc) == 0
        assert res.code == 0, res.err
        assert PASSPHRASE not in res.err
        lines = res.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("strongroom: note: the agent (STRONGROOM_AGENT) is not used:")
        assert lines[0].endswith("; running without it")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_client_sends_nothing_through_a_linked_folder(cli: Cli, tmp_path: Path) -> None:
    assert cli("init").code == 0
    folder = tempfile.mkdtemp(prefix="sr-agent-")
    link = folder + "-link"
    try:
        proc, _ = _fake_agent(folder, os.getuid())
        os.symlink(folder, link)
        res = cli("log", extra_env={"STRONGROOM_AGENT": os.path.join(link, "agent.sock")})
        assert _received(proc) == 0
        assert res.code == 0, res.err
        assert "not a plain folder" in res.err
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.unlink(link)


def test_agent_stop_leaves_no_folder_behind(cli: Cli) -> None:
    """The folder `agent start` made in the shared temporary folder goes with the agent: left behind, and
    removed later by a tmp cleaner, its name could be taken by another user."""
    res = cli("--json", "agent", "start")
    assert res.code == 0, res.err
    started = json.loads(res.out)
    folder = os.path.dirname(started["socket"])
    assert os.path.isdir(folder)
    assert cli("agent", "stop", extra_env={"STRONGROOM_AGENT": started["socket"]}).code == 0
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{started['pid']}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(folder)


def test_agent_stop_refuses_a_socket_that_is_not_its_users(cli: Cli) -> None:
    folder = tempfile.mkdtemp(prefix="sr-agent-")
    try:
        os.chmod(folder, 0o755)
        proc, path = _fake_agent(folder, os.getuid())
        res = cli("agent", "stop", extra_env={"STRONGROOM_AGENT": path})
        assert _received(proc) == 0
        assert (res.code, res.err) == (
            1,
            f"strongroom: error: the socket {path} is not your agent's: its folder is not yours and private (0700)\n",
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _build() -> str:
    return subprocess.run(
        [sys.executable, "-c", "from strongroom.cli.agentclient import build; print(build())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _send(agent: Agent, body: bytes) -> bytes:
    """One raw request (with this process's descriptors 0-2); the agent's whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(60)
        conn.connect(agent.socket)
        socket.send_fds(conn, [len(body).to_bytes(4, "big")], [0, 1, 2])
        conn.sendall(body)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while more := conn.recv(65536):
            answer += more
        return answer


def test_a_request_that_breaks_the_parser_is_answered_and_the_agent_serves_on(cli: Cli, agent: Agent) -> None:
    """Nested 200,000 deep, the JSON parser raises RecursionError: that request is refused, not the agent."""
    answer = _send(agent, b"[" * 200_000 + b"]" * 200_000)
    assert json.loads(answer) == {
        "fallback": "malformed request",
        "note": "it could not read the request (RecursionError)",
    }
    assert agent.proc.poll() is None
    res = cli("init", extra_env=agent.env)
    assert res.code == 0, res.err
    assert "note" not in res.err  # run by the agent


def test_a_client_trickling_its_request_is_dropped_after_ten_seconds(cli: Cli, agent: Agent) -> None:
    """A byte every 2 s never lets a 10 s wait per read expire: the whole request has 10 s."""
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(agent.socket)
        socket.send_fds(conn, [(1000).to_bytes(4, "big") + b"{"], [0, 1, 2])
        conn.settimeout(2)
        answer = b""
        while time.monotonic() - started < 30:
            try:
                conn.sendall(b" ")
                answer = conn.recv(1000)
            except TimeoutError:
                continue
            except OSError:
                break
            if answer:
                break
    assert time.monotonic() - started < 14
    assert json.loads(answer)["fallback"] == "malformed request"
    assert cli("init", extra_env=agent.env).code == 0


def _at_prompt(cli: Cli, agent: Agent) -> tuple[socket.socket, list[int]]:
    """A client whose command (log, no passphrase given, on a terminal) waits at the agent's prompt."""
    parent, child = os.openpty()
    env = {k: v for k, v in cli.env.items() if k != "STRONGROOM_PASSPHRASE"}
    request = json.dumps(
        {
            "protocol": 1,
            "build": _build(),
            "argv": ["--repo", str(cli.repo), "log"],
            "cwd": "/",
            "env": env,
            "umask": 18,
        }
    ).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(30)
    conn.connect(agent.socket)
    socket.send_fds(conn, [len(request).to_bytes(4, "big") + request], [child, child, child])
    assert json.loads(conn.makefile("rb").readline()) == {"ask": "passphrase", "confirm": False}
    return conn, [parent, child]


def test_an_answer_that_is_not_an_object_neither_hangs_the_agent_nor_keeps_it_from_stopping(
    cli: Cli, agent: Agent
) -> None:
    assert cli("init").code == 0
    conn, fds = _at_prompt(cli, agent)
    conn.sendall(b"[]\n")  # not an answer: ignored; the client then goes away, and its command is stopped
    conn.close()
    again = cli("log", extra_env=agent.env, timeout=30)
    assert again.code == 0, again.err
    conn, more = _at_prompt(cli, agent)
    conn.sendall(b"[]\n")
    agent.proc.terminate()  # SIGTERM while a command waits at a prompt: it is interrupted, the agent stops
    assert json.loads(conn.makefile("rb").readline()) == {"exit": 130}
    assert agent.proc.wait(10) == 0
    conn.close()
    for fd in fds + more:
        os.close(fd)


def test_a_command_line_cannot_forge_or_break_the_agent_log(cli: Cli, agent: Agent) -> None:
    forged = "2026-01-01T00:00:00 agent[1] pid 1: commit exit 0 in 0.001 s"
    res = cli(f"status\n{forged}", extra_env=agent.env)
    assert res.code == 2
    env = dict(cli.env, **agent.env)
    undecodable = subprocess.run(
        [sys.executable, "-m", "strongroom", b"\xff"], env=env, capture_output=True, timeout=60
    )
    assert undecodable.returncode == 2, undecodable.stderr
    assert cli("init", extra_env=agent.env).code == 0  # the agent still serves
    log = (Path(os.environ["STRONGROOM_STATE_DIR"]) / "logs" / "agent.log").read_text().splitlines()
    assert not any(line.startswith(forged) for line in log)
    assert any(f"status\\n{forged} exit 2" in line for line in log)
    assert any(": \\udcff exit 2 " in line for line in log)


def _agent_log() -> str:
    return (Path(os.environ["STRONGROOM_STATE_DIR"]) / "logs" / "agent.log").read_text()


@pytest.mark.parametrize(
    "client, agent_prefix, why",
    [
        (["setpriv", "--groups=65534"], [], "its supplementary groups are not the agent's"),
        ([], ["setpriv", "--groups=65534"], "its supplementary groups are not the agent's"),  # a client with fewer
        (["unshare", "-m"], [], "it is in another mount namespace"),
    ],
)
def test_a_client_with_other_groups_or_namespaces_is_refused(
    cli: Cli, client: list[str], agent_prefix: list[str], why: str
) -> None:
    """The agent acts with its own groups and mounts: a client of its uid with fewer groups (or in a sandbox)
    would reach through it what it cannot reach itself. The agent refuses it with the reason, and the client
    runs its command with its own rights."""
    if os.getuid() != 0 or not shutil.which("setpriv") or not shutil.which("unshare"):
        pytest.skip("needs root, setpriv and unshare")
    assert cli("init").code == 0
    folder = tempfile.mkdtemp(prefix="sr-agent-")
    sock = os.path.join(folder, "agent.sock")
    proc = subprocess.Popen(
        [*agent_prefix, sys.executable, "-m", "strongroom", "agent", "run", "--socket", sock],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"STRONGROOM_AGENT=")
        env = dict(cli.env, STRONGROOM_PASSPHRASE=PASSPHRASE, STRONGROOM_AGENT=sock)
        res = subprocess.run(
            [*client, sys.executable, "-m", "strongroom", "--repo", str(cli.repo), "log"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        assert res.stderr == (
            f"strongroom: note: the agent did not run the command: it refuses this client: {why}; running without it\n"
        )
        log = _agent_log()
        assert f": {why}" in log
        assert " log exit " not in log  # not run by the agent
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _events(action: str) -> list[dict[str, object]]:
    """The events of one action in the catalogs (read with sqlite3, which appends nothing)."""
    found = []
    for db in (Path(os.environ["STRONGROOM_STATE_DIR"]) / "catalogs").glob("*.sqlite"):
        con = sqlite3.connect(db)
        try:
            rows = con.execute(
                "SELECT action, targets, outcome, details FROM audit_events WHERE action = ? ORDER BY seq", (action,)
            ).fetchall()
        finally:
            con.close()
        found += [{"targets": json.loads(r[1]), "outcome": r[2], "details": json.loads(r[3])} for r in rows]
    return found


def test_refused_connections_and_unwatch_are_audited(cli: Cli, agent: Agent, tmp_path: Path) -> None:
    """`agent watch` is an audit event; so are `agent unwatch` and each connection the agent refuses (in the
    log of the repository a watched folder keeps open in it)."""
    if os.getuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv")
    data = tmp_path / "data"
    data.mkdir()
    assert cli("init").code == 0
    assert cli("agent", "watch", str(data), extra_env=agent.env).code == 0
    env = dict(cli.env, STRONGROOM_PASSPHRASE=PASSPHRASE, **agent.env)
    other = subprocess.run(
        ["setpriv", "--groups=65534", sys.executable, "-m", "strongroom", "--repo", str(cli.repo), "log"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode == 0, other.stderr
    (refused,) = _events("agent.refuse")
    assert refused["outcome"] == "denied"
    assert refused["targets"]["paths"] == [agent.socket]  # type: ignore[index]
    assert refused["details"]["reason"] == "its supplementary groups are not the agent's"  # type: ignore[index]
    assert refused["details"]["peer"]["uid"] == 0  # type: ignore[index]
    os.chmod(os.path.dirname(agent.socket), 0o755)  # as the agent never leaves them: another user connects
    os.chmod(agent.socket, 0o666)
    probe = "import os, socket, sys\nos.setgid(65534); os.setuid(65534)\n"
    probe += "socket.socket(socket.AF_UNIX).connect(sys.argv[1])\n"
    subprocess.run([sys.executable, "-c", probe, agent.socket], check=True, timeout=30)
    os.chmod(os.path.dirname(agent.socket), 0o700)
    os.chmod(agent.socket, 0o600)
    deadline = time.monotonic() + 10
    while len(_events("agent.refuse")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    another = _events("agent.refuse")[1]
    assert (another["outcome"], another["details"]["reason"]) == ("denied", "another user")  # type: ignore[index]
    assert another["details"]["peer"]["uid"] == 65534  # type: ignore[index]
    assert cli("agent", "unwatch", str(data), extra_env=agent.env).code == 0
    (unwatched,) = _events("unwatch")
    assert (unwatched["outcome"], unwatched["targets"]["paths"]) == ("ok", [str(data)])  # type: ignore[index]
    assert cli("audit", "verify").code == 0


def test_agent_run_leaves_no_passphrase_in_its_environment(cli: Cli) -> None:
    """Deleting a variable from os.environ leaves it in /proc/PID/environ: `agent run` starts itself again
    (same pid) without the passphrase and PIN variables it was given."""
    folder = tempfile.mkdtemp(prefix="sr-agent-")
    sock = os.path.join(folder, "agent.sock")
    env = dict(cli.env, STRONGROOM_PASSPHRASE=PASSPHRASE, STRONGROOM_PKCS11_PIN="1234")
    proc = subprocess.Popen(
        [sys.executable, "-m", "strongroom", "--json", "agent", "run", "--socket", sock],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["pid"] == proc.pid
        with open(f"/proc/{proc.pid}/environ", "rb") as f:
            environ = f.read()
        assert PASSPHRASE.encode() not in environ
        assert b"STRONGROOM_PASSPHRASE" not in environ and b"STRONGROOM_PKCS11_PIN" not in environ
        assert b"STRONGROOM_STATE_DIR" in environ
        assert cli("init", extra_env={"STRONGROOM_AGENT": sock}).code == 0
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        shutil.rmtree(folder, ignore_errors=True)
