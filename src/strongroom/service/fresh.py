"""A folder that a command fills from nothing (`init`, `workspace create`): what was there before it wrote, so
that when it fails it removes what it wrote, and only that. Left behind, its files made the folder 'not
empty' for the retry, and an init's keys without a config read as a damaged repository."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat


class FreshFolder:
    """Taken before the command writes into ``path``, which it has checked is absent or an empty folder."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.created = first_missing(path)  # the outermost folder the command creates (makedirs), if any
        self.was_empty = self.created is None and os.path.isdir(path) and not _listdir(path)

    def undo(self) -> None:
        """Remove what was written since: the folders that were missing, or everything in the folder that was
        empty (itself stays). Never raises: it runs while another error is on its way to the user."""
        if self.created is not None:
            remove_tree(self.created)
        elif self.was_empty:
            for name in _listdir(self.path):
                full = os.path.join(self.path, name)
                if os.path.isdir(full) and not os.path.islink(full):
                    remove_tree(full)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(full)


def first_missing(path: str) -> str | None:
    """The outermost folder on the way to ``path`` that does not exist (what makedirs creates first), or None
    when ``path`` exists (a symbolic link counts: it is never removed)."""
    missing = None
    here = os.path.abspath(path)
    while not os.path.lexists(here):
        missing = here
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return missing


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything below it, making read-only folders (a version's 0555) writable first."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError:
        with contextlib.suppress(OSError):
            make_removable(path)
        shutil.rmtree(path, ignore_errors=True)


def make_removable(folder: str) -> None:
    """u+rwx on ``folder`` and every folder below it, so that everything in it can be removed."""
    todo = [folder]
    while todo:
        path = todo.pop()
        st = os.lstat(path)
        if st.st_mode & 0o700 != 0o700:
            os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)
        with os.scandir(path) as found:
            todo.extend(e.path for e in found if e.is_dir(follow_symlinks=False))


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
