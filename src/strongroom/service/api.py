"""The Python library API: a thin object over the same service functions the CLI calls.

from strongroom import Strongroom
repo = Strongroom.init("/data/repo", passphrase="...")
v1 = repo.commit("/data/images", message="raw").id
repo.checkout(v1, "/tmp/restore")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from strongroom.crypto.secret import Secret
from strongroom.service import repo as repo_svc
from strongroom.service import versions as ver_svc
from strongroom.service.context import ProgressSink, Session
from strongroom.service.results import (
    CheckoutSummary,
    CommitInfo,
    CommitSummary,
    DiffEntry,
    InitResult,
    LsEntry,
    Stats,
    VerifyResult,
)
from strongroom.settings import Settings


class Strongroom:
    """An opened repository. The passphrase is held as a redacted Secret, never in a repr."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def __repr__(self) -> str:
        return f"Strongroom({self._session.settings.repo!r})"

    @staticmethod
    def _make_session(
        path: str,
        passphrase: str | bytes,
        env: Mapping[str, str] | None,
        user: str | None,
        progress: ProgressSink | None,
    ) -> Session:
        settings = Settings.from_env(env, repo=path)
        if user is not None:
            settings = dataclasses.replace(settings, user=user)
        # as a passphrase from the prompt, a file or the environment is turned into bytes (context.py)
        raw = passphrase.encode("utf-8", "surrogateescape") if isinstance(passphrase, str) else passphrase
        s = Session(settings, passphrase=Secret(raw))
        if progress is not None:
            s.progress = progress
        return s

    @classmethod
    def init(
        cls,
        path: str,
        passphrase: str | bytes,
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        compression: int = repo_svc.DEFAULT_COMPRESSION,
    ) -> Strongroom:
        s = cls._make_session(path, passphrase, env, user, None)
        repo_svc.init(s, compression=compression)
        return cls(s)

    @classmethod
    def open(
        cls,
        path: str,
        passphrase: str | bytes,
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        progress: ProgressSink | None = None,
    ) -> Strongroom:
        s = cls._make_session(path, passphrase, env, user, progress)
        s.open()
        return cls(s)

    @property
    def repo_id(self) -> str:
        return self._session.open().config.repo_id

    def commit(
        self,
        folder: str,
        message: str = "",
        branch: str = "main",
        excludes: list[str] | None = None,
        skip_unreadable: bool = False,
        workers: int = 0,
    ) -> CommitSummary:
        return ver_svc.commit(self._session, folder, message, branch, excludes, skip_unreadable, workers=workers)

    def log(self, branch: str | None = None) -> list[CommitInfo]:
        return ver_svc.log(self._session, branch)

    def ls(self, version: str, path: str = "") -> list[LsEntry]:
        return ver_svc.ls(self._session, version, path)

    def diff(self, a: str, b: str) -> list[DiffEntry]:
        return ver_svc.diff(self._session, a, b)

    def read(self, version: str, path: str) -> bytes:
        return b"".join(ver_svc.cat(self._session, version, path))

    def checkout(self, version: str, dest: str, include: list[str] | None = None) -> CheckoutSummary:
        return ver_svc.checkout(self._session, version, dest, include)

    def verify(self, mode: str = "default", sample: str | None = None) -> VerifyResult:
        return repo_svc.verify(self._session, mode, sample)

    def stats(self) -> Stats:
        return repo_svc.stats(self._session)

    def resolve(self, version: str) -> str:
        return ver_svc.resolve(self._session.open(), version).hex()


__all__ = ["InitResult", "Strongroom"]
