"""Checkout restores special mode bits (set-user-ID, set-group-ID, sticky) exactly: ownership is restored
before the mode, since chown clears the set-ID bits."""

from __future__ import annotations

import os
from pathlib import Path

from strongroom import Strongroom
from tests.conftest import make_tree, tree_snapshot


def test_special_mode_bits_survive_a_checkout(repo: Strongroom, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"suid": b"#!/bin/sh\n", "sgid": b"x", "ro": b"r", "shared/f": b"f"})
    modes = {"suid": 0o4755, "sgid": 0o2750, "ro": 0o400}
    for name, mode in modes.items():
        os.chmod(src / name, mode)
    os.chmod(src / "shared", 0o1777)
    os.chmod(src / "shared" / "f", 0o2644)
    v = repo.commit(str(src)).id
    repo.checkout(v, str(tmp_path / "dest"))
    restored = tree_snapshot(tmp_path / "dest")
    assert restored == tree_snapshot(src)
    assert restored["suid"][2] == 0o4755 and restored["shared"][2] == 0o1777
