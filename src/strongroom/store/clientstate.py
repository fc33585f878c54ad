"""What this client last saw of each repository, kept outside it (per repository id).

A repository that comes back with older refs (a lower generation), or whose key or suite differs under
the same id, is refused until the user confirms with `trust-current` (borg's RepositoryReplay idea).

The trusted set of signers is pinned the same way (`PinnedSigners`): its root key, generation, digest and
revoked keys. Someone who holds the repository key can rewrite that set; a client that has seen it refuses
a set with another root, an older generation, or a revoked key made trusted again.

The client also remembers which workspace folders it materialised from each repository
(`WorkspaceRegistry`), so that a new workspace can reflink the files another one already holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from strongroom.crypto.idhash import sha256_hex
from strongroom.crypto.signing import write_private_file
from strongroom.errors import AuditLogReplaced, RollbackDetected
from strongroom.store.refs import Refs
from strongroom.store.trust import TrustedSet


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
        if seen == Seen(fingerprint, suite, refs.generation, refs.digest()):
            return  # nothing new: every command that only reads would otherwise rewrite it (and fsync)
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        body = {"fingerprint": fingerprint, "suite": suite, "generation": refs.generation, "refs_digest": refs.digest()}
        write_private_file(Path(self.path), json.dumps(body).encode())


@dataclass(frozen=True)
class SeenSigners:
    root: str  # fingerprint of the set's first entry ("" for an empty set)
    generation: int
    digest: str
    revoked: tuple[str, ...]
    known: tuple[str, ...] = ()  # every key of the set

    @classmethod
    def of(cls, trusted: TrustedSet) -> SeenSigners:
        root = trusted.signers[0].fingerprint if trusted.signers else ""
        revoked = tuple(sorted(s.fingerprint for s in trusted.signers if s.revoked))
        known = tuple(sorted(s.fingerprint for s in trusted.signers))
        return cls(root, trusted.generation, sha256_hex(trusted.encode()), revoked, known)


class PinnedSigners:
    """What this client last saw of a repository's trusted signers: `repos/<repo id>.signers.json`."""

    FORMAT = "sr-pinned-signers/1"

    def __init__(self, state_dir: str, repo_id: str) -> None:
        self.path = os.path.join(state_dir, "repos", f"{repo_id}.signers.json")

    def load(self) -> SeenSigners | None:
        try:
            with open(self.path, "rb") as f:
                obj = json.load(f)
            if obj["format"] != self.FORMAT:
                return None
            revoked = tuple(str(fp) for fp in obj["revoked"])
            known = tuple(str(fp) for fp in obj.get("known", []))
            return SeenSigners(str(obj["root"]), int(obj["generation"]), str(obj["digest"]), revoked, known)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def check(self, trusted: TrustedSet) -> None:
        seen = self.load()
        if seen is None or not seen.root:
            return  # first contact, or the set was empty: nothing pinned yet
        now = SeenSigners.of(trusted)
        if now.generation < seen.generation:
            raise RollbackDetected(
                f"trusted signers rolled back: they are generation {now.generation}, "
                f"this client already saw generation {seen.generation}"
            )
        if now.root != seen.root:
            raise RollbackDetected(
                f"trusted signers replaced: their root key is {now.root or 'missing'}, this client pinned {seen.root}"
            )
        if now.generation == seen.generation and now.digest != seen.digest:
            raise RollbackDetected("trusted signers swapped: they differ from what this client saw at that generation")
        restored = sorted(set(seen.revoked) - set(now.revoked))
        if restored:
            raise RollbackDetected(f"trusted signers changed: revoked key {restored[0]} is no longer revoked")
        # Endorsement times are the endorser's claim: a leaked, revoked key could add keys dated before its
        # revocation. A key this client first sees endorsed by a key it already saw revoked is refused.
        for s in trusted.signers:
            if seen.known and s.fingerprint not in seen.known and s.endorser in seen.revoked:
                raise RollbackDetected(
                    f"trusted signers changed: new key {s.fingerprint} ({s.name}) is endorsed by {s.endorser}, "
                    "which this client saw revoked"
                )

    def save(self, trusted: TrustedSet, force: bool = False) -> None:
        seen, now = self.load(), SeenSigners.of(trusted)
        if seen == now or (seen is not None and not force and now.generation < seen.generation):
            return
        body = {"format": self.FORMAT, "root": now.root, "generation": now.generation, "digest": now.digest}
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        lists = {"revoked": list(now.revoked), "known": list(now.known)}
        write_private_file(Path(self.path), json.dumps({**body, **lists}).encode())

    def check_and_save(self, trusted: TrustedSet) -> None:
        self.check(trusted)
        self.save(trusted)


class PinnedLog:
    """Which audit log this client sealed into one catalog of a repository, and how far:
    `repos/<repo id>.audit-<catalog key>.json`, the key naming the catalog's URL without its password.

    A catalog that later holds another log (reset, replaced by one that starts a "new" log with events of
    someone's choosing, or pointed at another database) is refused until `audit rebuild` puts the sealed
    log back or `trust-current` accepts the new one. A client that never sealed into a catalog pins the
    log it finds there the first time it seals (first contact, as for refs). The size of the newest
    checkpoint it sealed or saw (``sealed``) only grows: a log found shorter lost its newest events, from
    the catalog and the repository alike, and is neither signed on nor verified as intact."""

    FORMAT = "sr-pinned-audit-log/1"

    def __init__(self, state_dir: str, repo_id: str, catalog_url: str) -> None:
        """``catalog_url`` with its password masked (catalog.db.masked_url): the pin's name must not depend
        on, or reveal a hash of, a password."""
        key = sha256_hex(catalog_url.encode("utf-8", "surrogateescape"))[:16]
        self.path = os.path.join(state_dir, "repos", f"{repo_id}.audit-{key}.json")

    def _read(self) -> tuple[str, int] | None:
        try:
            with open(self.path, "rb") as f:
                obj = json.load(f)
            if obj["format"] != self.FORMAT:
                return None
            return str(obj["log_id"]), max(0, int(obj.get("sealed", 0)))  # pins of 0.2.0 name no size
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def load(self) -> str | None:
        pin = self._read()
        return pin[0] if pin else None

    def sealed(self, log_id: str) -> int:
        """How many events this client knows to be sealed in log ``log_id`` (0 for another log)."""
        pin = self._read()
        return pin[1] if pin and pin[0] == log_id else 0

    def check(self, log_id: str) -> None:
        pinned = self.load()
        if pinned is not None and pinned != log_id:
            raise AuditLogReplaced(
                f"audit log replaced: the catalog holds log {log_id}, but this client sealed log {pinned} "
                "into it (the catalog was reset, replaced, or pointed at another database)"
            )

    def save(self, log_id: str, sealed: int, force: bool = False) -> None:
        """Pin ``log_id`` at ``sealed`` events; the size of the same log never goes down unless ``force``
        (`trust-current` accepts a shorter log)."""
        pin = self._read()
        if pin is not None and pin[0] == log_id and not force:
            if sealed <= pin[1]:
                return
        elif pin == (log_id, sealed):
            return
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        body = json.dumps({"format": self.FORMAT, "log_id": log_id, "sealed": sealed}).encode()
        # Atomic, without fsync: written after the catalog and the repository hold the checkpoint durably, so
        # a power loss can only leave an older, smaller pin (a weaker check), never a larger one.
        write_private_file(Path(self.path), body, durable=False)


class WorkspaceRegistry:
    """The workspace folders of one repository on this client: `workspaces/<repo id>.json` in the state
    folder (0600, in a folder created 0700), changed under an exclusive lock on `<repo id>.lock` beside it.
    It names folders only; a lost or damaged file costs reflink sharing, nothing else."""

    FORMAT = "sr-workspaces/1"

    def __init__(self, state_dir: str, repo_id: str) -> None:
        self.path = os.path.join(state_dir, "workspaces", f"{repo_id}.json")

    def _read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                obj = json.load(f)
            if obj["format"] != self.FORMAT:
                return []
            return [str(p) for p in obj["folders"] if isinstance(p, str)]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def _write(self, folders: list[str]) -> None:
        write_private_file(Path(self.path), json.dumps({"format": self.FORMAT, "folders": folders}, indent=1).encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        fd = os.open(self.path[: -len(".json")] + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def folders(self, alive: Callable[[str], bool]) -> list[str]:
        """The registered folders for which ``alive`` holds; the others are dropped from the file."""
        if not os.path.exists(self.path):
            return []
        with self._locked():
            have = self._read()
            kept = [p for p in have if alive(p)]
            if kept != have:
                self._write(kept)
        return kept

    def add(self, folder: str) -> None:
        folder = os.path.abspath(folder)
        with self._locked():
            have = self._read()
            if folder not in have:
                self._write([*have, folder])

    def remove(self, folder: str) -> None:
        folder = os.path.abspath(folder)
        if not os.path.exists(self.path):
            return
        with self._locked():
            have = self._read()
            if folder in have:
                self._write([p for p in have if p != folder])
