"""A fault-injection backend, driven by a per-call map (restic's errorOnceBackend and borg's failing chunker).

    fb = FaultyBackend(MemoryBackend())
    fb.plan("put", "data/", ".E")     # the 2nd pack write fails with EIO, every other one works
    fb.plan("get", "data/", "F*")     # every pack read returns one flipped byte

A plan is a string of per-call actions for the calls of one operation whose object name starts with the
prefix: ``.`` passes, ``E`` raises an I/O error (BackendError, as LocalBackend turns an OSError into),
``S`` returns short data, ``F`` returns data with one byte flipped, ``Z`` returns nothing. A trailing ``*``
repeats the last action for every later call; without it, calls past the end pass. For ``put``, ``E``
stores nothing (backend writes are atomic); the read faults make no sense for writes and are refused.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from strongroom.backends.base import Backend, BackendError

READS = ("get", "get_range")
WRITES = ("put", "put_exclusive", "delete")


@dataclass
class _Plan:
    op: str
    prefix: str
    actions: str
    repeat: bool
    calls: int = 0


@dataclass
class FaultyBackend:
    inner: Backend
    plans: list[_Plan] = field(default_factory=list)
    injected: list[tuple[str, str, str]] = field(default_factory=list)  # (op, name, action) that fired

    def plan(self, op: str, prefix: str, actions: str) -> FaultyBackend:
        assert op in READS + WRITES, op
        repeat = actions.endswith("*")
        actions = actions.rstrip("*")
        assert set(actions) <= set(".ESFZ"), actions
        if op in WRITES:
            assert set(actions) <= {".", "E"}, "writes only fail with E"
        self.plans.append(_Plan(op, prefix, actions, repeat))
        return self

    def clear(self) -> None:
        self.plans.clear()

    def _action(self, op: str, name: str) -> str:
        for p in self.plans:
            if p.op == op and name.startswith(p.prefix):
                i = p.calls
                p.calls += 1
                if i < len(p.actions):
                    act = p.actions[i]
                elif p.repeat and p.actions:
                    act = p.actions[-1]
                else:
                    act = "."
                if act != ".":
                    self.injected.append((op, name, act))
                return act
        return "."

    @staticmethod
    def _eio(op: str, name: str) -> BackendError:
        return BackendError(f"{op} {name}: {os.strerror(errno.EIO)}")

    def _read(self, op: str, name: str, data: bytes) -> bytes:
        act = self._action(op, name)
        if act == "E":
            raise self._eio(op, name)
        if act == "S":
            return data[: len(data) // 2]
        if act == "Z":
            return b""
        if act == "F" and data:
            i = len(data) // 2
            return data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1 :]
        return data

    # ------------------------------------------------------------------ the Backend protocol

    def put(self, name: str, data: bytes | memoryview) -> None:
        if self._action("put", name) == "E":
            raise self._eio("put", name)
        self.inner.put(name, data)

    def put_exclusive(self, name: str, data: bytes) -> bool:
        if self._action("put_exclusive", name) == "E":
            raise self._eio("put_exclusive", name)
        return self.inner.put_exclusive(name, data)

    def delete(self, name: str) -> None:
        if self._action("delete", name) == "E":
            raise self._eio("delete", name)
        self.inner.delete(name)

    def get(self, name: str) -> bytes:
        return self._read("get", name, self.inner.get(name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self._read("get_range", name, self.inner.get_range(name, offset, length))

    def size(self, name: str) -> int | None:
        return self.inner.size(name)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        return self.inner.list(prefix)

    def folder_stamps(self, prefix: str) -> dict[str, int] | None:
        return self.inner.folder_stamps(prefix)

    def describe(self) -> str:
        return f"faulty({self.inner.describe()})"
