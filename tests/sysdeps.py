"""System components the tests need (PostgreSQL, xfsprogs), installed by scripts/ensure-system-deps.sh.
Under CI=true a test that cannot get its component fails; elsewhere it skips with the reason."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

ENSURE = Path(__file__).resolve().parent.parent / "scripts" / "ensure-system-deps.sh"


def unavailable(needed_under_ci: str, skipped: str, reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{needed_under_ci} under CI=true: {reason}", pytrace=False)
    pytest.skip(f"{skipped}: {reason}")


def ensure(package: str, key: str, fail: Callable[[str], NoReturn]) -> str:
    """Install package if missing; the value the script prints as ``key=...`` on its last line."""
    if not ENSURE.exists():
        fail(f"{ENSURE} is missing")
    p = subprocess.run(["sh", str(ENSURE), package], capture_output=True, text=True, timeout=900, check=False)
    last = (p.stdout.strip().splitlines() or [""])[-1]
    if p.returncode != 0 or not last.startswith(f"{key}="):
        fail((p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or [f"exit {p.returncode}"])[-1])
    return last.removeprefix(f"{key}=")
