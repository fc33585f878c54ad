"""The session a command runs in: settings, the passphrase source, progress, and the opened repository.

Every use case in service/ takes a Session; the CLI and the library API (and later the HTTP service)
build one and call the same functions.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from strongroom.backends.local import LocalBackend
from strongroom.crypto.secret import Secret
from strongroom.errors import InputError, NotARepository
from strongroom.settings import Settings
from strongroom.store.clientstate import ClientState
from strongroom.store.refs import Refs
from strongroom.store.repository import Repository


class ProgressSink(Protocol):
    def start(self, label: str, files: int, total_bytes: int) -> None: ...

    def advance(self, files: int, nbytes: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, label: str, files: int, total_bytes: int) -> None:
        pass

    def advance(self, files: int, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


PassphrasePrompt = Callable[[bool], str]


@dataclass
class Session:
    settings: Settings
    progress: ProgressSink = field(default_factory=NoProgress)
    prompt: PassphrasePrompt | None = None
    passphrase: Secret | None = None
    _opened: Repository | None = None

    # ------------------------------------------------------------------ identity

    @property
    def author(self) -> str:
        return self.settings.user or self.settings.os_user

    def actor(self, repo: Repository | None = None) -> str:
        user = self.settings.user or (repo.config.user if repo else "") or self.settings.os_user
        return f"{user}@{socket.gethostname()}"

    # ------------------------------------------------------------------ passphrase

    def get_passphrase(self, confirm: bool = False) -> Secret:
        if self.passphrase is not None:
            return self.passphrase
        s = self.settings
        text: str | None = None
        if s.passphrase_command:
            try:
                out = subprocess.run(shlex.split(s.passphrase_command), capture_output=True, check=True, timeout=60)
            except (OSError, subprocess.SubprocessError, ValueError):
                raise InputError("--passphrase-command failed") from None
            text = out.stdout.decode("utf-8", "surrogateescape").rstrip("\r\n")
        elif s.passphrase_file:
            try:
                with open(s.passphrase_file, encoding="utf-8", errors="surrogateescape") as f:
                    text = f.readline().rstrip("\r\n")
            except OSError as e:
                raise InputError(f"cannot read STRONGROOM_PASSPHRASE_FILE: {e.strerror}") from None
        elif s.passphrase_env is not None:
            text = s.passphrase_env
        elif self.prompt is not None and s.interactive:
            text = self.prompt(confirm)
        if text is None:
            raise InputError(
                "no passphrase: run on a terminal, or set STRONGROOM_PASSPHRASE_FILE, --passphrase-command "
                "or STRONGROOM_PASSPHRASE"
            )
        if not text:
            raise InputError("the passphrase is empty")
        self.passphrase = Secret(text.encode("utf-8", "surrogateescape"))
        return self.passphrase

    # ------------------------------------------------------------------ repository

    def repo_path(self) -> str:
        if not self.settings.repo:
            raise InputError("no repository: give --repo PATH or set STRONGROOM_REPO")
        return self.settings.repo

    def backend(self) -> LocalBackend:
        return LocalBackend(self.repo_path())

    def client_state(self, repo: Repository) -> ClientState:
        return ClientState(self.settings.state_dir, repo.config.repo_id)

    def open(self, check_rollback: bool = True) -> Repository:
        """Open the repository, unlock its keys and refuse it when it was rolled back or swapped."""
        if self._opened is not None:
            return self._opened
        path = self.repo_path()
        if not os.path.isfile(os.path.join(path, "config")):
            raise NotARepository(path)
        repo = Repository.open(self.backend(), self.get_passphrase())
        if check_rollback:
            refs = repo.read_refs()
            state = self.client_state(repo)
            state.check(repo.fingerprint, repo.config.suite, refs)
            state.save(repo.fingerprint, repo.config.suite, refs)
        self._opened = repo
        return repo

    def remember(self, repo: Repository, refs: Refs) -> None:
        self.client_state(repo).save(repo.fingerprint, repo.config.suite, refs)

    def file_cache_path(self, repo: Repository, source: str) -> str:
        tag = repo.hasher(os.path.abspath(source).encode("utf-8", "surrogateescape")).hex()[:32]
        return os.path.join(self.settings.cache_dir, repo.config.repo_id, f"files-{tag}")
