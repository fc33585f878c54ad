"""Shared fixtures. `clean_env` (autouse) strips STRONGROOM_* from the environment, points state and cache
at tmp, and turns on the test-only weak KDF so hundreds of repository opens stay fast."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom import Strongroom
from tests.hsm import softhsm  # noqa: F401 - a real PKCS#11 token for every test that asks

PASSPHRASE = "correct horse battery staple 7f3a"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("STRONGROOM_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STRONGROOM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("STRONGROOM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STRONGROOM_CONFIG_DIR", str(tmp_path / "config"))  # signing keys
    monkeypatch.setenv("STRONGROOM_UNSAFE_TEST_WEAK_KDF", "1")
    yield


@dataclass
class CliResult:
    code: int
    out: str
    err: str
    out_bytes: bytes


@dataclass
class Cli:
    """Runs `strongroom` as a subprocess, the way users and scripts do."""

    repo: Path
    env: dict[str, str]

    def __call__(
        self,
        *args: str,
        passphrase: str | None = PASSPHRASE,
        input: bytes | None = None,
        extra_env: dict[str, str] | None = None,
        timeout: float = 120,
        cwd: Path | None = None,
        stdout_to: Path | None = None,
    ) -> CliResult:
        """Run one command; stdout_to, when given, is the file its standard output goes to."""
        env = dict(self.env)
        if passphrase is not None:
            env["STRONGROOM_PASSPHRASE"] = passphrase
        env.update(extra_env or {})
        with open(stdout_to, "wb") if stdout_to else contextlib.nullcontext(subprocess.PIPE) as out:
            proc = subprocess.run(
                [sys.executable, "-m", "strongroom", "--repo", str(self.repo), *args],
                env=env,
                stdout=out,
                stderr=subprocess.PIPE,
                input=input,
                timeout=timeout,
                cwd=cwd,
            )
        proc.stdout = proc.stdout or b""
        return CliResult(
            proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"), proc.stdout
        )


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_PASSPHRASE")}
    env["PYTEST_CURRENT_TEST"] = os.environ.get("PYTEST_CURRENT_TEST", "cli")
    return Cli(tmp_path / "repo", env)


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def repo(repo_path: Path) -> Strongroom:
    return Strongroom.init(str(repo_path), PASSPHRASE)


def injected_bug(folder: Path, target: str = "strongroom.store.ingest:commit_folder") -> dict[str, str]:
    """Environment for a CLI run in which target (module:function) raises RuntimeError, a stand-in for a bug:
    a sitecustomize on PYTHONPATH patches it before strongroom is imported (strongroom knows nothing of it)."""
    module, name = target.split(":")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import importlib\n"
        "def _bug(*args, **kwargs):\n"
        "    raise RuntimeError('an injected bug')\n"
        f"setattr(importlib.import_module({module!r}), {name!r}, _bug)\n"
    )
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)}


def injected_kill(folder: Path, target: str, when: str = "before", first_arg: str = "", at: int = 1) -> dict[str, str]:
    """Environment for a CLI run that SIGKILLs itself, as a crash would (no cleanup, no finally), when target
    (module:function or module:Class.method) is called: "before" it runs or "after" it returned. With first_arg,
    only a call with a string argument that starts with it (LocalBackend.put of "keys/..."); with ``at`` N, at
    the Nth such call (the earlier ones run as usual). A sitecustomize on PYTHONPATH patches it before
    strongroom is imported, as in injected_bug."""
    module, attr = target.split(":")
    owner, _, name = attr.rpartition(".")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import functools, importlib, os, signal\n"
        f"_owner = importlib.import_module({module!r})\n"
        f"for _part in [p for p in {owner!r}.split('.') if p]:\n"
        "    _owner = getattr(_owner, _part)\n"
        f"_real = getattr(_owner, {name!r})\n"
        "_calls = [0]\n"
        "@functools.wraps(_real)\n"
        "def _killing(*args, **kwargs):\n"
        f"    hit = any(isinstance(a, str) and a.startswith({first_arg!r}) for a in args) or not {first_arg!r}\n"
        "    _calls[0] += hit\n"
        f"    hit = hit and _calls[0] == {at}\n"
        f"    if hit and {when!r} == 'before':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    result = _real(*args, **kwargs)\n"
        f"    if hit and {when!r} == 'after':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return result\n"
        f"setattr(_owner, {name!r}, _killing)\n"
    )
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)}


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def tree_snapshot(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Path → (kind, content or link target, mode) of everything below root."""
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if os.path.islink(full):
                out[rel] = ("l", os.readlink(full), 0)
            elif os.path.isdir(full):
                out[rel] = ("d", b"", st.st_mode & 0o7777)
            else:
                out[rel] = ("f", Path(full).read_bytes(), st.st_mode & 0o7777)
    return out
