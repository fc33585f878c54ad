"""ProcessMark tells that a process has ended, so that what it left (a lock, a pending audit event) is taken
over; it must never call a running process ended, even when its PID is checked from another process."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from strongroom.store.lock import ProcessMark, process_start


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
