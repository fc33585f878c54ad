"""JSON-serializable results shared by the shells (CLI, library, HTTP)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Result:
    def to_json(self) -> Any:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclasses.dataclass
class InitResult(Result):
    path: str
    repo_id: str
    kdf: str
    suite: str
    chunker: str
    keks: str = ""
    signer: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class CommitInfo(Result):
    id: str
    parents: list[str]
    branch: str
    author: str
    host: str
    time: str
    message: str
    source: str
    signer: str = ""
    signature: str = ""  # valid | invalid | unsigned | untrusted | revoked
    signature_reason: str = ""
    scope: str = ""  # the scope the version was committed into, if any
    state: str = "ok"  # ok | shredded (its scope's key was destroyed) | unavailable (not in this keystore)


@dataclasses.dataclass
class CommitSummary(Result):
    id: str
    branch: str
    parent: str | None
    files: int
    bytes: int
    files_read: int
    bytes_read: int
    bytes_stored: int
    packs: int
    unchanged: bool
    skipped: list[str]
    seconds: float
    signer: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class LsEntry(Result):
    path: str
    type: str
    size: int
    mode: str
    mtime: str
    target: str | None = None


@dataclasses.dataclass
class DiffEntry(Result):
    status: str
    path: str
    size: int
    old_path: str | None = None
    old_size: int | None = None
    mode: str | None = None  # a folder whose mode changed: its modes after and before (octal)
    old_mode: str | None = None


@dataclasses.dataclass
class Stats(Result):
    versions: int
    branches: int
    files: int
    raw_bytes: int
    unique_bytes: int
    stored_bytes: int
    packs: int
    dedupe_ratio: float
    compression_ratio: float


@dataclasses.dataclass
class CheckoutSummary(Result):
    version: str
    dest: str
    files: int
    bytes: int
    folders: int
    links: int
    seconds: float


@dataclasses.dataclass
class VerifyResult(Result):
    mode: str
    ok: bool
    versions: int
    packs_checked: int
    bytes_checked: int
    objects_checked: int
    damage: list[dict[str, str]]
    affected: dict[str, list[str]]
    warnings: list[str]
    seconds: float
    signatures: list[dict[str, str]] = dataclasses.field(default_factory=list)  # the versions that fail
    shredded: dict[str, str] = dataclasses.field(default_factory=dict)  # version → scope: erased, not damaged


@dataclasses.dataclass
class RepairResult(Result):
    packs: int
    objects: int
    unreadable_packs: list[str]
    index_files_removed: int


@dataclasses.dataclass
class RefInfo(Result):
    name: str
    version: str
    kind: str
    protected: bool = False


@dataclasses.dataclass
class MergeResult(Result):
    branch: str
    version: str
    kind: str  # merge | fast-forward | up-to-date | revert | reset
    conflicts: list[str]
    checks_passed: list[str]


@dataclasses.dataclass
class GcResult(Result):
    dry_run: bool
    packs_deleted: int
    packs_repacked: int
    objects_removed: int
    bytes_removable: int
    bytes_freed: int
    live_objects: int
    temporaries_removed: int  # temporary files killed writes left (would remove, in a dry run)


@dataclasses.dataclass
class WorkspaceInfo(Result):
    folder: str
    branch: str
    base: str
    paths: list[str]
    files: int
    bytes_written: int  # decrypted from the repository and written
    interrupted_switch: str | None
    bytes_reflinked: int = 0  # cloned from another workspace's unchanged files (shared blocks)
    adopted: str | None = None  # a version committed from here whose commit was cut off before it finished
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class KeySlotInfo(Result):
    id: str
    keks: list[str]
    description: str
    created: str
    opened_this_session: bool


@dataclasses.dataclass
class KeyList(Result):
    repo_id: str
    master_fingerprint: str
    slots: list[KeySlotInfo]
    data_keys: list[dict[str, Any]]
    log_key: str
    signers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    scopes: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class PaperSheet(Result):
    repo_id: str
    fingerprint: str
    lines: list[str]

    def __repr__(self) -> str:
        return f"PaperSheet(repo_id={self.repo_id!r}, lines=<redacted>)"


@dataclasses.dataclass
class ReencryptResult(Result):
    packs_rewritten: int
    bytes_rewritten: int
    index_rewrites: int
    objects_resealed: int
    current_key: int
    retired_key: int | None
    already_retired: bool  # retired_key was destroyed before this run (a run again after one that did it)
    seconds: float
    mb_per_s: float


@dataclasses.dataclass
class SignerInfo(Result):
    """A signing key: in this repository's trusted set, in the user's key folder, or both. Public data only."""

    name: str
    alg: str
    fingerprint: str
    status: str  # trusted | revoked | unendorsed | local (in the key folder, not trusted here)
    created: str
    added_by: str = ""
    revoked: str = ""
    revoked_by: str = ""
    local: str = ""  # where the private key lives when it is on this machine
    public: str = ""  # the OpenSSH line
    reason: str = ""


@dataclasses.dataclass
class SignatureCheck(Result):
    version: str
    status: str  # valid | invalid | unsigned | untrusted | revoked
    signer: str
    fingerprint: str
    reason: str


@dataclasses.dataclass
class Difference(Result):
    path: str
    kind: str  # missing | extra | changed | type
    detail: str


@dataclasses.dataclass
class BeforeTrainResult(Result):
    folder: str
    version: str
    ok: bool
    signature: SignatureCheck
    files_checked: int
    bytes_checked: int
    differences: list[Difference]
    seconds: float


@dataclasses.dataclass
class ScopeInfo(Result):
    name: str
    id: str
    key_id: int
    state: str  # available | shredded | unavailable (its key is not in this machine's keystore)
    created: str
    created_by: str
    shredded: str = ""
    shredded_by: str = ""
    frames_sealed: int = 0  # under the scope's key: its nonce budget (docs/format.md §14)
