"""ProcessMark tells that a process has ended, so that what it left (a lock, a pending audit event) is taken
over; it must never call a running process ended, even when its PID is checked from another process."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from strongroom.store import process
from strongroom.store.process import ProcessMark, process_start


def test_this_process_runs() -> None:
    me = ProcessMark.current()
    assert me.started > 0
    assert not me.gone()


def test_an_ended_process_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        mark = dataclasses.replace(ProcessMark.current(), pid=child.pid, started=process_start(child.pid))
        assert mark.started > 0 and not mark.gone()
    finally:
        child.kill()
        child.wait()
    assert mark.gone()


def test_a_reused_pid_is_not_the_process_that_was_marked() -> None:
    me = ProcessMark.current()
    assert dataclasses.replace(me, started=me.started - 1).gone()


def test_a_process_of_another_host_or_namespace_is_taken_as_running() -> None:
    me = ProcessMark.current()
    assert not dataclasses.replace(me, host=me.host + "-elsewhere", pid=2**22 + 7).gone()
    assert not dataclasses.replace(me, pid_ns="pid:[1]", pid=2**22 + 7).gone()


def test_a_mark_from_before_the_last_boot_is_gone() -> None:
    me = ProcessMark.current()
    if not me.boot:
        return  # no boot id outside Linux
    assert dataclasses.replace(me, boot="0" * 36).gone()


def test_another_machine_under_the_same_host_name_is_taken_as_running() -> None:
    me = ProcessMark.current()
    if not me.machine:
        return  # no machine id here
    twin = dataclasses.replace(me, machine="0" * 32, boot="another boot", pid=2**22 + 7, started=0)
    assert not twin.gone()  # cloned VMs, a shared catalog: its boot id and PIDs mean nothing here


def test_a_held_file_decides_whatever_the_namespace(tmp_path) -> None:  # type: ignore[no-untyped-def]
    held = str(tmp_path / "running" / "a")
    assert process.hold(held)
    elsewhere = dataclasses.replace(ProcessMark.current(), pid_ns="pid:[1]", pid=2**22 + 7, hold=held)
    assert not elsewhere.gone()  # a PID that means nothing here, but the file is held: it runs
    process.release(held)
    open(held, "w").close()  # left behind by a process the kernel has released it for
    assert elsewhere.gone()
    assert dataclasses.replace(elsewhere, hold=str(tmp_path / "missing")).gone() is False  # falls back: no telling


def test_marks_parse_with_fields_they_do_not_know() -> None:
    me = ProcessMark.current()
    assert ProcessMark.parse(dict(me.to_json(), uid=1000, later="x")) == me
    assert ProcessMark.parse({"host": "h"}) is None
    assert ProcessMark.parse("not a mark") is None


def test_a_lock_of_a_reused_pid_is_stale() -> None:
    from strongroom.store.lock import Holder

    me = ProcessMark.current()
    mine = Holder("locks/publish", me.pid, me.host, 0, "commit", me.boot, me.pid_ns, me.started, me.machine)
    assert not mine.is_stale()
    assert dataclasses.replace(mine, started=me.started - 1).is_stale()
