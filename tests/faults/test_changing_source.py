"""A source folder that changes while a commit reads it: a file rewritten mid-read is read again (never stored
as a mix of old and new bytes that never existed on disk), and a folder swapped for a symlink after the scan
never lets a file from outside the folder into the version."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom import Strongroom
from strongroom.errors import UnreadableSource
from strongroom.store import chunker as chunker_mod
from strongroom.store import ingest
from tests.conftest import PASSPHRASE


def _rewrite_while_read(monkeypatch: pytest.MonkeyPatch, path: Path, contents: list[bytes]) -> None:
    """Each time the commit has read the first chunk of ``path``, a writer saves the next of ``contents``."""
    real = chunker_mod.Chunker.cut_fd

    def cut_and_rewrite(self: Any, fd: int) -> Iterator[bytes]:
        for i, chunk in enumerate(real(self, fd)):
            if i == 0 and os.fstat(fd).st_ino == path.stat().st_ino and contents:
                with open(path, "r+b") as f:
                    f.write(contents.pop(0))
            yield chunk

    monkeypatch.setattr(chunker_mod.Chunker, "cut_fd", cut_and_rewrite)


def test_a_file_rewritten_while_read_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    model = src / "model.bin"
    old, new = os.urandom(12 << 20), os.urandom(12 << 20)
    model.write_bytes(old)
    repo = Strongroom.init(str(tmp_path / "repo"), PASSPHRASE)
    _rewrite_while_read(monkeypatch, model, [new])  # once: the second read sees the finished file
    repo.commit(str(src), message="x", workers=1)
    assert repo.read("main", "model.bin") == new


def test_a_file_that_keeps_changing_is_refused_or_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "kept.txt").write_bytes(b"steady\n")
    model = src / "model.bin"
    model.write_bytes(os.urandom(12 << 20))
    repo = Strongroom.init(str(tmp_path / "repo"), PASSPHRASE)
    _rewrite_while_read(monkeypatch, model, [os.urandom(12 << 20) for _ in range(10)])
    with pytest.raises(UnreadableSource, match="changed while being read"):
        repo.commit(str(src), message="x", workers=1)
    summary = repo.commit(str(src), message="x", workers=1, skip_unreadable=True)
    assert "model.bin" in summary.skipped
    assert [e.path for e in repo.ls("main")] == ["kept.txt"]


def test_a_folder_swapped_for_a_symlink_after_the_scan_lets_nothing_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "secret.txt").write_text("harmless data\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("OUTSIDE THE SOURCE FOLDER\n")
    real_scan = ingest.scan

    def scan_then_swap(root: str, rules: Any) -> Any:
        found = real_scan(root, rules)
        (src / "d").rename(src / "d.old")
        (src / "d").symlink_to(outside)
        return found

    monkeypatch.setattr(ingest, "scan", scan_then_swap)
    repo = Strongroom.init(str(tmp_path / "repo"), PASSPHRASE)
    with pytest.raises(UnreadableSource, match="no longer a file inside the folder"):
        repo.commit(str(src), message="x", workers=1)
    assert repo.log() == []
