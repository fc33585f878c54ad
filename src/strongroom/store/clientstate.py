"""What this client last saw of each repository, kept outside it (per repository id).

A repository that comes back with older refs (a lower generation), or whose key or suite differs under
the same id, is refused until the user confirms with `trust-current` (borg's RepositoryReplay idea).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from strongroom.errors import RollbackDetected
from strongroom.store.refs import Refs


@dataclass(frozen=True)
class Seen:
    fingerprint: str
    suite: str
    generation: int
    refs_digest: str


class ClientState:
    def __init__(self, state_dir: str, repo_id: str) -> None:
        self.path = os.path.join(state_dir, "repos", f"{repo_id}.json")

    def load(self) -> Seen | None:
        try:
            with open(self.path, "rb") as f:
                obj = json.load(f)
            return Seen(obj["fingerprint"], obj["suite"], int(obj["generation"]), obj["refs_digest"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def check(self, fingerprint: str, suite: str, refs: Refs) -> None:
        seen = self.load()
        if seen is None:
            return
        if seen.fingerprint != fingerprint or seen.suite != suite:
            raise RollbackDetected(
                "repository swapped: it has the id this client knows but another key or cipher suite"
            )
        if refs.generation < seen.generation:
            raise RollbackDetected(
                f"repository rolled back: its refs are generation {refs.generation}, "
                f"this client already saw generation {seen.generation}"
            )
        if refs.generation == seen.generation and refs.digest() != seen.refs_digest:
            raise RollbackDetected(
                "repository swapped: its refs differ from what this client saw at the same generation"
            )

    def save(self, fingerprint: str, suite: str, refs: Refs, force: bool = False) -> None:
        seen = self.load()
        if seen is not None and not force and refs.generation < seen.generation:
            return
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(
                {
                    "fingerprint": fingerprint,
                    "suite": suite,
                    "generation": refs.generation,
                    "refs_digest": refs.digest(),
                },
                f,
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
