"""The four contenders: how each one initialises, commits, lists, restores and verifies.

Every tool gets its own folder under the round's scratch folder (repository, caches, client state), all removed
after the round. All of them back up the same source path, so restic's and borg's file caches (keyed by path) and
strongroom's (keyed by folder) are in effect for the commits after the first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

PASSPHRASE = "bench-passphrase-not-secret"
# variables that could leak a developer's own configuration into a run
_SCRUB_PREFIXES = ("STRONGROOM_", "RESTIC_", "BORG_")


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
    env["LC_ALL"] = "C.UTF-8"
    return env


@dataclass
class Tool:
    key: str  # short id used in JSON
    label: str  # column heading
    home: str  # this tool's scratch folder for the round
    data: str  # absolute path of the source folder (the same for every tool)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def repo(self) -> str:
        return os.path.join(self.home, "repo")

    @property
    def cache_dirs(self) -> list[str]:
        return []

    # each returns (argv, cwd)
    def init(self) -> tuple[list[str], str]:
        raise NotImplementedError

    def commit(self, tag: str) -> tuple[list[str], str]:
        raise NotImplementedError

    def list_versions(self) -> tuple[list[str], str]:
        raise NotImplementedError

    def restore(self, tag: str, dest: str) -> tuple[list[str], str]:
        raise NotImplementedError

    def restored_root(self, dest: str) -> str:
        """Where the copy of the source folder ends up inside dest."""
        raise NotImplementedError

    def verify(self) -> tuple[list[str], str]:
        raise NotImplementedError

    def prepare_restore_dest(self, dest: str) -> None:
        """Create dest if the tool wants it to exist."""


class Strongroom(Tool):
    def __init__(self, home: str, data: str, exe: str) -> None:
        super().__init__("strongroom", "strongroom", home, data)
        self.exe = exe
        self.env = base_env() | {
            "STRONGROOM_PASSPHRASE": PASSPHRASE,
            "STRONGROOM_STATE_DIR": os.path.join(home, "state"),
            "STRONGROOM_CACHE_DIR": os.path.join(home, "cache"),
            "STRONGROOM_CONFIG_DIR": os.path.join(home, "config"),  # signing keys: one fresh key per run
            "STRONGROOM_KEYSTORE": os.path.join(home, "keystore"),
            "STRONGROOM_USER": "bench",
        }

    @property
    def cache_dirs(self) -> list[str]:
        return [os.path.join(self.home, "cache"), os.path.join(self.home, "state")]

    def _sr(self, *args: str) -> list[str]:
        return [self.exe, "--repo", self.repo, *args]

    def init(self) -> tuple[list[str], str]:
        return self._sr("init"), self.home

    def commit(self, tag: str) -> tuple[list[str], str]:
        return self._sr("commit", self.data, "-m", tag), self.home

    def list_versions(self) -> tuple[list[str], str]:
        return self._sr("log"), self.home

    def restore(self, tag: str, dest: str) -> tuple[list[str], str]:
        return self._sr("checkout", "main", dest), self.home

    def restored_root(self, dest: str) -> str:
        return dest

    def verify(self) -> tuple[list[str], str]:
        return self._sr("verify", "--full"), self.home


class Restic(Tool):
    def __init__(self, home: str, data: str) -> None:
        super().__init__("restic", "restic", home, data)
        self.env = base_env() | {
            "RESTIC_PASSWORD": PASSPHRASE,
            "RESTIC_REPOSITORY": self.repo,
            "RESTIC_CACHE_DIR": os.path.join(home, "cache"),
        }

    @property
    def cache_dirs(self) -> list[str]:
        return [os.path.join(self.home, "cache")]

    def init(self) -> tuple[list[str], str]:
        return ["restic", "init"], self.home

    def commit(self, tag: str) -> tuple[list[str], str]:
        # the parent snapshot (and with it the file cache) is found by host + absolute paths
        return ["restic", "backup", "--quiet", "--tag", tag, self.data], self.home

    def list_versions(self) -> tuple[list[str], str]:
        return ["restic", "snapshots"], self.home

    def restore(self, tag: str, dest: str) -> tuple[list[str], str]:
        return ["restic", "restore", "latest", "--target", dest], self.home

    def restored_root(self, dest: str) -> str:
        return os.path.join(dest, self.data.lstrip("/"))

    def verify(self) -> tuple[list[str], str]:
        return ["restic", "check", "--read-data"], self.home


class Borg(Tool):
    def __init__(self, home: str, data: str, compression: str, key: str, label: str) -> None:
        super().__init__(key, label, home, data)
        self.compression = compression
        self.env = base_env() | {
            "BORG_PASSPHRASE": PASSPHRASE,
            "BORG_REPO": self.repo,
            "BORG_BASE_DIR": os.path.join(home, "base"),
        }

    @property
    def cache_dirs(self) -> list[str]:
        return [os.path.join(self.home, "base")]

    def init(self) -> tuple[list[str], str]:
        return ["borg", "init", "-e", "repokey-blake2"], self.home

    def commit(self, tag: str) -> tuple[list[str], str]:
        # run from the source's parent with a relative path: the same cwd + path every time, so the files cache
        # (keyed by the absolute path) hits, and extract recreates just "<name>/..."
        parent, name = os.path.split(self.data)
        return ["borg", "create", "--compression", self.compression, f"::{tag}", name], parent

    def list_versions(self) -> tuple[list[str], str]:
        return ["borg", "list"], self.home

    def restore(self, tag: str, dest: str) -> tuple[list[str], str]:
        return ["borg", "extract", f"::{tag}"], dest

    def prepare_restore_dest(self, dest: str) -> None:
        os.makedirs(dest)

    def restored_root(self, dest: str) -> str:
        return os.path.join(dest, os.path.basename(self.data))

    def verify(self) -> tuple[list[str], str]:
        return ["borg", "check", "--verify-data"], self.home
