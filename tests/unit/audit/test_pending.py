"""Pending events in the catalog (AuditLog.begin / append(settles=) / update_pending): a command's event is
pending while it runs, settled by its final event, and appended by a later command once its process has
ended; never for a process that may still run, never twice without saying so."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from sqlalchemy import text

from strongroom.audit.events import Event, utc_now
from strongroom.audit.log import AuditLog
from strongroom.catalog.db import sqlite_url
from strongroom.store.process import ProcessMark

DEAD_PID = 2**22 + 7  # above Linux's PID limit: never a running process


def _log(tmp_path: Path) -> AuditLog:
    return AuditLog.open(sqlite_url(str(tmp_path / "c.sqlite")), "ab" * 16)


def _event(action: str, **targets: str) -> Event:
    return Event(0, utc_now(), "carol", "carol", "h", action, dict(targets), "ok", {})


def _rows(log: AuditLog) -> list[Event]:
    return log.query()


def test_a_settled_command_leaves_one_event_and_no_pending_row(tmp_path: Path) -> None:
    log = _log(tmp_path)
    assert log.begin("p1", _event("cat"), ProcessMark.current()) == 0
    log.append([_event("cat", version="ab" * 32)], settles="p1")
    assert log.begin("p2", _event("ls"), ProcessMark.current()) == 0  # nothing left to record
    assert [(e.action, e.outcome) for e in _rows(log)] == [("cat", "ok")]


def test_the_pending_event_of_an_ended_process_is_appended_once_with_its_start(tmp_path: Path) -> None:
    log = _log(tmp_path)
    dead = dataclasses.replace(ProcessMark.current(), pid=DEAD_PID, started=0)
    first = _event("cat", version="main")
    log.begin("p1", first, dead)
    log.update_pending("p1", _event("cat", version="cd" * 32))  # resolved the version it is about to read
    assert log.begin("p2", _event("ls"), ProcessMark.current()) == 1
    assert log.begin("p3", _event("ls"), ProcessMark.current()) == 0  # recorded once
    (ended,) = _rows(log)
    assert (ended.action, ended.outcome, ended.targets["version"]) == ("cat", "failed", "cd" * 32)
    assert ended.details["error"]["class"] == "Interrupted"
    assert ended.details["started"] == first.time  # when it began, not when it last noted something


def test_a_process_that_cannot_be_told_about_stays_pending_and_is_reported(tmp_path: Path) -> None:
    log = _log(tmp_path)
    me = ProcessMark.current()
    log.begin(
        "p1",
        dataclasses.replace(_event("cat"), time="2000-01-01T00:00:00.000000Z"),
        dataclasses.replace(me, pid_ns="pid:[1]", pid=DEAD_PID),
    )
    log.begin("p2", _event("ls"), dataclasses.replace(me, host=me.host + "-elsewhere", pid=DEAD_PID))
    assert log.begin("p3", _event("ls"), me) == 0
    assert _rows(log) == []
    (old,) = log.unsettled(3600)  # the young one is not reported
    assert "'cat' started 2000-01-01" in old and f"PID {DEAD_PID}" in old


def test_a_command_recorded_as_ended_that_then_settles_says_so(tmp_path: Path) -> None:
    """Two machines under one host name (a shared catalog): should one be taken for ended and recorded, its
    own final event, when it comes, is marked rather than silently doubling the record."""
    log = _log(tmp_path)
    log.begin("p1", _event("commit"), dataclasses.replace(ProcessMark.current(), pid=DEAD_PID, started=0))
    log.begin("p2", _event("ls"), ProcessMark.current())
    log.append([_event("commit", branch="main")], settles="p1")
    ended, final = _rows(log)
    assert ended.details["error"]["class"] == "Interrupted" and "recorded_as_ended" not in ended.details
    assert final.details["recorded_as_ended"] is True


def test_a_host_name_that_is_not_utf8_is_recorded_escaped(tmp_path: Path) -> None:
    log = _log(tmp_path)
    odd = dataclasses.replace(ProcessMark.current(), host="lab-\udcff", pid=DEAD_PID)
    log.begin("p1", _event("cat"), odd)  # must not fail: the host column is text
    assert log.begin("p2", _event("ls"), ProcessMark.current()) == 0  # another host: cannot tell
    with log.store.reader() as tx:
        (row,) = log.store.pending(tx)[:1]
    assert row.host == "lab-\\xff" and json.loads(row.process)["host"] == "lab-\udcff"


def test_a_row_whose_process_does_not_parse_is_kept(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.begin("p1", _event("cat"), ProcessMark.current())
    with log.store.writer() as tx:
        tx.execute(text("UPDATE audit_pending SET process = '{\"no\": 1}' WHERE id = 'p1'"))
    assert log.begin("p2", _event("ls"), ProcessMark.current()) == 0
    assert _rows(log) == []
