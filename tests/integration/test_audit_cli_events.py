"""One test per CLI command not covered elsewhere (test_audit_log.py covers init, commit, checkout, cat, ls,
diff, log, verify, stats, branch create/delete/protect, tag create, workspace create/commit, merge, gc and a
denied commit): run the real command as a subprocess, then read the events it appended straight from the
catalog file (reading with sqlite3 appends nothing) and assert action, outcome, actor and targets.
Denied and failed outcomes included.

One repository per test module (per xdist worker), so each test costs one or two commands."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE, Cli, make_tree


@dataclass
class World:
    cli: Cli
    base: Path
    v1: str
    v2: str

    def db(self) -> Path:
        found = list((self.base / "state" / "catalogs").glob("*.sqlite"))
        assert len(found) == 1
        return found[0]

    def top(self) -> int:
        con = sqlite3.connect(self.db())
        try:
            return int(con.execute("SELECT coalesce(max(seq), -1) FROM audit_events").fetchone()[0])
        finally:
            con.close()

    def since(self, seq: int) -> list[dict[str, Any]]:
        con = sqlite3.connect(self.db())
        try:
            rows = con.execute(
                "SELECT seq, actor, action, targets, outcome, details FROM audit_events WHERE seq > ? ORDER BY seq",
                (seq,),
            ).fetchall()
        finally:
            con.close()
        return [
            {"seq": r[0], "actor": r[1], "action": r[2], "targets": json.loads(r[3]), "outcome": r[4],
             "details": json.loads(r[5])}
            for r in rows
        ]

    def run(self, *args: str, code: int = 0, **kw: Any) -> list[dict[str, Any]]:
        """Run one command; return the events it appended (it must append at least one)."""
        before = self.top()
        r = self.cli(*args, **kw)
        assert r.code == code, (args, r.code, r.out, r.err)
        events = self.since(before)
        assert events, f"{args} appended no event"
        assert PASSPHRASE not in json.dumps(events)
        return events


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("cli-events")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(
        HOME=str(base / "home"),
        STRONGROOM_STATE_DIR=str(base / "state"),
        STRONGROOM_CACHE_DIR=str(base / "cache"),
        STRONGROOM_UNSAFE_TEST_WEAK_KDF="1",
        PYTEST_CURRENT_TEST=os.environ.get("PYTEST_CURRENT_TEST", "cli-events"),
    )
    cli = Cli(base / "repo", env)
    assert cli("init", "--user", "erin").code == 0
    src = make_tree(base / "src", {"a.txt": b"1", "d/b.txt": b"b"})
    assert cli("commit", str(src), "-m", "one").code == 0
    (src / "a.txt").write_bytes(b"2")
    assert cli("commit", str(src), "-m", "two").code == 0
    log = json.loads(cli("--json", "log").out)
    v2, v1 = log[0]["id"], log[1]["id"]
    return World(cli, base, v1, v2)


def _one(events: list[dict[str, Any]], action: str) -> dict[str, Any]:
    found = [e for e in events if e["action"] == action]
    assert len(found) == 1, [e["action"] for e in events]
    return found[0]


# ----------------------------------------------------------------------------- refs


def test_branch_list_and_tag_list_are_refs_list(world: World) -> None:
    e = _one(world.run("branch", "list"), "refs.list")
    assert e["outcome"] == "ok" and e["details"]["kind"] == "branch" and e["actor"] == "erin"
    e = _one(world.run("tag", "list"), "refs.list")
    assert e["details"]["kind"] == "tag"


def test_tag_delete_ok_and_failed(world: World) -> None:
    world.run("tag", "create", "cli-t", "main")
    e = _one(world.run("tag", "delete", "cli-t"), "tag.delete")
    assert e["outcome"] == "ok" and e["targets"]["tag"] == "cli-t"
    e = _one(world.run("tag", "delete", "cli-t", code=2), "tag.delete")
    assert e["outcome"] == "failed" and e["details"]["error"]["class"]


def test_branch_unprotect_and_denied_reset(world: World) -> None:
    world.run("branch", "create", "guarded", "--from", world.v2)
    world.run("branch", "protect", "guarded")
    e = _one(world.run("reset", "guarded", world.v1, code=1), "reset")
    assert e["outcome"] == "denied" and e["targets"]["branch"] == "guarded"
    assert e["details"]["error"]["class"] == "PolicyDenied"
    e = _one(world.run("branch", "unprotect", "guarded"), "branch.protect")
    assert e["outcome"] == "ok" and e["targets"]["branch"] == "guarded" and e["details"]["on"] is False


def test_reset_ok(world: World) -> None:
    world.run("branch", "create", "movable", "--from", world.v2)
    e = _one(world.run("reset", "movable", world.v1), "reset")
    assert e["outcome"] == "ok" and e["targets"]["branch"] == "movable" and e["targets"]["version"] == world.v1


def test_revert_ok(world: World) -> None:
    world.run("branch", "create", "rev", "--from", world.v2)
    e = _one(world.run("revert", world.v2, "--branch", "rev"), "revert")
    assert e["outcome"] == "ok" and e["targets"]["branch"] == "rev" and e["targets"]["version"] == world.v2


def test_merge_into_protected_branch_is_denied(world: World) -> None:
    world.run("branch", "create", "prot2", "--from", world.v1)
    world.run("branch", "protect", "prot2", "--require-check", "false")
    world.run("branch", "create", "feature2", "--from", world.v2)
    e = _one(world.run("merge", "feature2", "--into", "prot2", code=1), "merge")
    assert e["outcome"] == "denied" and e["targets"]["branch"] == "prot2"


# ----------------------------------------------------------------------------- workspaces


def test_workspace_status_switch_discard(world: World) -> None:
    ws = world.base / "ws"
    world.run("workspace", "create", str(ws), "--branch", "wsb", "--from", world.v2)
    e = _one(world.run("status", str(ws)), "workspace.status")
    assert e["outcome"] == "ok" and e["details"]["folder"] == str(ws)
    e = _one(world.run("workspace", "switch", str(ws), world.v1), "workspace.switch")
    assert e["outcome"] == "ok" and e["targets"]["version"] == world.v1
    e = _one(world.run("workspace", "discard", str(ws)), "workspace.discard")
    assert e["outcome"] == "ok"
    e = _one(world.run("status", str(ws), code=2), "workspace.status")
    assert e["outcome"] == "failed"


# ----------------------------------------------------------------------------- repository maintenance


def test_repair_index(world: World) -> None:
    e = _one(world.run("repair", "index"), "repair.index")
    assert e["outcome"] == "ok" and e["actor"] == "erin"


def test_trust_current(world: World) -> None:
    e = _one(world.run("trust-current"), "trust-current")
    assert e["outcome"] == "ok"


def test_unlock(world: World) -> None:
    e = _one(world.run("unlock", "--force"), "unlock")
    assert e["outcome"] == "ok" and e["details"]["force"] is True


def test_a_wrong_passphrase_is_recorded_as_failed(world: World) -> None:
    e = _one(world.run("ls", "main", code=2, passphrase="not the passphrase"), "ls")
    assert e["outcome"] == "failed" and "not the passphrase" not in json.dumps(e)


# ----------------------------------------------------------------------------- audit commands


def test_audit_log_and_tail_record_their_filters(world: World) -> None:
    e = _one(world.run("audit", "log", "--actor", "erin", "--action", "commit", "--json"), "audit.log")
    assert e["outcome"] == "ok" and e["details"]["actor"] == "erin" and e["details"]["filter_action"] == "commit"
    e = _one(world.run("audit", "tail", "-n", "3"), "audit.tail")
    assert e["details"]["lines"] == 3


def test_audit_verify_export_key(world: World) -> None:
    assert _one(world.run("audit", "verify"), "audit.verify")["outcome"] == "ok"
    e = _one(world.run("audit", "export", "--format", "jsonl"), "audit.export")
    assert e["outcome"] == "ok" and e["details"]["format"] == "jsonl"
    e = _one(world.run("audit", "export", "--format", "xml", code=2), "audit.export")
    assert e["outcome"] == "failed" and e["details"]["error"]["class"] == "InputError"
    assert _one(world.run("audit", "key"), "audit.key")["outcome"] == "ok"


def test_audit_prove_consistency_check_proof(world: World) -> None:
    before = world.top()
    r = world.cli("audit", "prove", "1")
    assert r.code == 0, r.err
    e = _one(world.since(before), "audit.prove")
    assert e["outcome"] == "ok" and e["details"]["seq"] == 1
    proof = world.base / "proof.json"
    proof.write_text(r.out)
    e = _one(world.run("audit", "check-proof", str(proof)), "audit.check-proof")
    assert e["outcome"] == "ok"
    e = _one(world.run("audit", "prove", "999999", code=2), "audit.prove")
    assert e["outcome"] == "failed" and e["details"]["seq"] == 999999
    e = _one(world.run("audit", "consistency", "1", "2"), "audit.consistency")
    assert e["outcome"] == "ok" and e["details"]["old_size"] == 1 and e["details"]["new_size"] == 2
    e = _one(world.run("audit", "consistency", "5", "2", code=2), "audit.consistency")
    assert e["outcome"] == "failed"


def test_audit_rebuild_and_custody(world: World) -> None:
    # A rebuild keeps the sealed events only: one the catalog held unsealed (a wrong passphrase's failure
    # cannot be sealed without the key) is gone, so the rebuild's own event may not come after the old top.
    r = world.cli("audit", "rebuild")
    assert r.code == 0, r.err
    e = [e for e in world.since(-1) if e["action"] == "audit.rebuild"][-1]
    assert e["outcome"] == "ok"
    e = _one(world.run("custody", "main", "a.txt", "--json"), "custody")
    assert e["outcome"] == "ok" and e["targets"]["paths"] == ["a.txt"] and e["targets"]["version"] == world.v2
    e = _one(world.run("custody", "main", "no-such-file", code=2), "custody")
    assert e["outcome"] == "failed"


# ----------------------------------------------------------------------------- incidents


def test_incident_commands_are_recorded(world: World) -> None:
    before = world.top()
    r = world.cli("incident", "open", "--reason", "canary touched")
    assert r.code == 0, r.err
    world.cli("incident", "list")
    actions = [e["action"] for e in world.since(before)]
    assert any(a.startswith("incident") for a in actions), actions
