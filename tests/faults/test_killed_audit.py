"""A command killed with SIGKILL still leaves an audit event: it records its event as pending before it changes
or reads anything, and the next command appends the pending event of a process that has ended as an
interrupted failure, once, sealed and verifiable like any other."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import PASSPHRASE, Cli, injected_kill, make_tree


def _events(cli: Cli, *args: str) -> list[dict[str, Any]]:
    r = cli("audit", "log", "--json", *args)
    assert r.code == 0, r.err
    return list(json.loads(r.out))


def _interrupted(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if (e["details"].get("error") or {}).get("class") == "Interrupted"]


def test_a_commit_killed_after_its_version_landed_is_recorded_by_the_next_command(tmp_path: Path, cli: Cli) -> None:
    assert cli("init", "--user", "erin").code == 0
    src = make_tree(tmp_path / "src", {"a.txt": b"one"})
    assert cli("commit", str(src), "-m", "first").code == 0
    (src / "a.txt").write_bytes(b"two")
    killed = cli(
        "commit",
        str(src),
        "-m",
        "landed, then killed",
        extra_env=injected_kill(tmp_path / "hook", "strongroom.store.repository:Repository.update_refs", "after"),
    )
    assert killed.code == -signal.SIGKILL
    log = json.loads(cli("--json", "log").out)
    assert log[0]["message"] == "landed, then killed"  # the change landed before the kill

    events = _events(cli, "--action", "commit")
    assert len(events) == 2, events
    (gone,) = _interrupted(events)
    assert gone["outcome"] == "failed"
    assert gone["actor"] == "erin"
    assert gone["targets"]["branch"] == "main"
    assert gone["details"]["started"] <= gone["time"]

    # recorded once, sealed under a signed checkpoint like every other event
    assert len(_interrupted(_events(cli))) == 1
    r = cli("audit", "verify")
    assert r.code == 0, r.out + r.err


def _reading_cat(tmp_path: Path, cli: Cli) -> subprocess.Popen[bytes]:
    """A `cat` of a 4 MiB file that has delivered its first 64 KiB and is held back by the full pipe."""
    assert cli("init").code == 0
    src = make_tree(tmp_path / "src", {"big.bin": os.urandom(4 << 20)})
    assert cli("commit", str(src)).code == 0
    cat = subprocess.Popen(
        [sys.executable, "-m", "strongroom", "--repo", str(cli.repo), "cat", "main", "big.bin"],
        env=dict(cli.env, STRONGROOM_PASSPHRASE=PASSPHRASE),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert cat.stdout is not None
    assert len(cat.stdout.read(65536)) == 65536
    return cat


def test_a_read_killed_part_way_is_listed_in_custody(tmp_path: Path, cli: Cli) -> None:
    cat = _reading_cat(tmp_path, cli)
    assert cat.stdout is not None
    cat.send_signal(signal.SIGKILL)
    cat.wait(30)
    cat.stdout.close()

    r = cli("custody", "main", "big.bin", "--json")
    assert r.code == 0, r.err
    (f,) = json.loads(r.out)["files"]
    assert [(x["action"], x["outcome"]) for x in f["reads"]] == [("cat", "failed")]
    text = cli("custody", "main", "big.bin").out
    assert "read:cat (failed, partial?)" in text


def test_a_running_command_is_not_taken_for_an_interrupted_one(tmp_path: Path, cli: Cli) -> None:
    cat = _reading_cat(tmp_path, cli)  # it runs, blocked on the full pipe
    assert cat.stdout is not None
    time.sleep(0.2)
    assert _interrupted(_events(cli)) == []  # another command meanwhile leaves its pending event alone
    rest = cat.stdout.read()
    assert cat.wait(60) == 0
    assert 65536 + len(rest) == 4 << 20
    reads = _events(cli, "--action", "cat")
    assert [(e["outcome"], e["details"].get("error")) for e in reads] == [("ok", None)]
    assert _interrupted(_events(cli)) == []


def test_a_workspace_commit_killed_after_its_version_landed_records_that_version(tmp_path: Path, cli: Cli) -> None:
    """The commit a workspace commit runs notes the version it made: the pending event carries it, so the
    interrupted event says which version landed."""
    assert cli("init").code == 0
    src = make_tree(tmp_path / "src", {"a.txt": b"one"})
    assert cli("commit", str(src)).code == 0
    ws = tmp_path / "ws"
    assert cli("workspace", "create", str(ws), "--branch", "main").code == 0
    (ws / "a.txt").write_bytes(b"two")
    hook = injected_kill(tmp_path / "hook", "strongroom.store.repository:Repository.compact_index")
    assert cli("commit", str(ws), "-m", "ws-killed", extra_env=hook).code == -signal.SIGKILL
    landed = json.loads(cli("--json", "log").out)[0]
    assert landed["message"] == "ws-killed"
    (gone,) = _interrupted(_events(cli))
    assert gone["action"] == "workspace.commit"
    assert [i["targets"].get("version") for i in gone["details"]["inner"]] == [landed["id"]]


def test_a_command_whose_event_could_not_be_recorded_is_recorded_by_the_next(tmp_path: Path, cli: Cli) -> None:
    assert cli("init").code == 0
    src = make_tree(tmp_path / "src", {"a.txt": b"one"})
    (db,) = (tmp_path / "state" / "catalogs").glob("*.sqlite")
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_events WHEN NEW.action = 'commit' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    con.commit()
    r = cli("commit", str(src), "-m", "unrecorded")
    assert r.code == 1 and "commit completed, but its audit event could not be recorded" in r.err
    con.execute("DROP TRIGGER refuse")
    con.commit()
    con.close()
    (late,) = _interrupted(_events(cli))
    assert late["action"] == "commit" and late["details"]["finished"] == "ok"
    assert "finished (ok), but its event could not be recorded then" in late["details"]["error"]["message"]
    assert cli("audit", "verify").code == 0
