"""A source folder that changes while a commit reads it: a file rewritten mid-read is read again (never stored
as a mix of old and new bytes that never existed on disk), a folder swapped for a symlink after the scan
never lets a file from outside the folder into the version, and a file mapped for writing (numpy.memmap),
whose bytes change without its stamps, is read again by the next commit."""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom import Strongroom
from strongroom.errors import UnreadableSource
from strongroom.store import chunker as chunker_mod
from strongroom.store import ingest
from strongroom.store.filecache import RACY_WINDOW_NS
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


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_mapped_for_writing_is_read_again_by_the_next_commit(tmp_path: Path, workers: int) -> None:
    """Bytes written through a page that is already dirty change no stamp (the kernel updates mtime when a
    clean page is first written). The file cache must not vouch for a file a writer has mapped: the second
    commit used to keep VERSION-1 from the cache while the file held VERSION-2."""
    src = tmp_path / "src"
    src.mkdir()
    path = src / "arr.bin"
    path.write_bytes(b"A" * (1 << 20))
    repo = Strongroom.init(str(tmp_path / "repo"), PASSPHRASE)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
        mapped[0:10] = b"VERSION-1:"
        time.sleep(RACY_WINDOW_NS / 1e9 + 0.2)  # past the racy-clean second: the stamps alone would be trusted
        repo.commit(str(src), message="one", workers=workers)
        assert repo.read("main", "arr.bin")[:10] == b"VERSION-1:"
        stamps = os.stat(path).st_mtime_ns, os.stat(path).st_ctime_ns
        mapped[0:10] = b"VERSION-2:"
        unchanged = (os.stat(path).st_mtime_ns, os.stat(path).st_ctime_ns) == stamps
        summary = repo.commit(str(src), message="two", workers=workers)
        assert repo.read("main", "arr.bin")[:10] == b"VERSION-2:", f"stamps unchanged: {unchanged}"
        assert summary.files_read == 1
    repo.commit(str(src), message="three", workers=workers)  # unmapped and closed now: cached again
    assert repo.commit(str(src), message="four", workers=workers).files_read == 0
