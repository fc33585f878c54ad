"""A progress bar (files, bytes, MB/s, ETA) on a terminal; nothing at all off one."""

from __future__ import annotations

import sys
from typing import Any


class TerminalProgress:
    def __init__(self) -> None:
        self._progress: Any = None
        self._bytes: Any = None
        self._files: Any = None

    def start(self, label: str, files: int, total_bytes: int) -> None:
        if not sys.stderr.isatty() or (files == 0 and total_bytes == 0):
            return
        # Imported here: most runs have no terminal, and rich.progress costs every command ~60 ms to import.
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            MofNCompleteColumn(),
            transient=True,
        )
        self._bytes = self._progress.add_task(label, total=max(total_bytes, 1))
        self._files = self._progress.add_task("files", total=max(files, 1), visible=False)
        self._progress.start()

    def advance(self, files: int, nbytes: int) -> None:
        if self._progress is not None and self._bytes is not None and self._files is not None:
            self._progress.advance(self._bytes, nbytes)
            self._progress.advance(self._files, files)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
