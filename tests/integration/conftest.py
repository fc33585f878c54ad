"""Fixtures of the integration tests that need a running process of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from tests.conftest import Cli


class Agent:
    def __init__(self, cli: Cli, folder: str, *extra: str) -> None:
        self.socket = os.path.join(folder, "agent.sock")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "strongroom", "agent", "run", "--socket", self.socket, *extra],
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.announced = self.proc.stdout.readline().decode()
        assert self.announced.startswith(f"STRONGROOM_AGENT={self.socket}; export STRONGROOM_AGENT;")
        self.env = {"STRONGROOM_AGENT": self.socket}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def agent(cli: Cli) -> Iterator[Agent]:
    folder = tempfile.mkdtemp(prefix="sr-agent-")  # socket paths are limited to 108 bytes: not under tmp_path
    a = Agent(cli, folder)
    try:
        yield a
    finally:
        a.stop()
        shutil.rmtree(folder, ignore_errors=True)
