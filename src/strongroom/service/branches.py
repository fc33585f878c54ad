"""Branches and tags: O(1) names for versions, changed by compare-and-swap of the refs."""

from __future__ import annotations

from strongroom.core.dag import validate_ref_name
from strongroom.errors import BranchMoved, InputError, PolicyDenied, UnknownVersion
from strongroom.service.context import Session, audited
from strongroom.service.results import RefInfo
from strongroom.service.versions import resolve
from strongroom.store.refs import Refs


def _head_of(session: Session, version: str | None) -> bytes:
    repo = session.open()
    if version is None:
        refs = repo.read_refs()
        if "main" in refs.branches:
            return refs.branches["main"]
        raise InputError("the repository has no version yet: give --from VERSION")
    return resolve(repo, version)


@audited("branch.create", branch="name", version="from_version")
def branch_create(session: Session, name: str, from_version: str | None = None) -> RefInfo:
    validate_ref_name(name)
    head = _head_of(session, from_version)
    session.audit_note(version=head.hex())
    repo = session.open()

    def add(refs: Refs) -> None:
        if name in refs.branches:
            raise InputError(f"branch {name} already exists")
        refs.branches[name] = head

    session.remember(repo, repo.edit_refs(add, "branch create"))
    return RefInfo(name, head.hex(), "branch")


@audited("branch.delete", branch="name")
def branch_delete(session: Session, name: str, at: bytes | None = None) -> RefInfo:
    """Delete a branch; with ``at``, only while it still names that version (else BranchMoved, and it stays)."""
    repo = session.open()
    removed: list[bytes] = []

    def drop(refs: Refs) -> None:
        if name not in refs.branches:
            raise UnknownVersion(f"branch {name}")
        if name in refs.protected:
            raise PolicyDenied(f"branch {name} is protected: deleting it is refused")
        if at is not None and refs.branches[name] != at:
            raise BranchMoved()
        removed.append(refs.branches.pop(name))

    session.remember(repo, repo.edit_refs(drop, "branch delete"))
    return RefInfo(name, removed[0].hex(), "branch")


@audited("tag.create", tag="name", version="version", force="force")
def tag_create(session: Session, name: str, version: str, force: bool = False) -> RefInfo:
    validate_ref_name(name)
    target = _head_of(session, version)
    session.audit_note(version=target.hex())
    repo = session.open()

    def add(refs: Refs) -> None:
        if name in refs.tags and not force and refs.tags[name] != target:
            raise InputError(f"tag {name} already exists (tags are immutable; --force moves it)")
        refs.tags[name] = target

    session.remember(repo, repo.edit_refs(add, "tag create"))
    return RefInfo(name, target.hex(), "tag")


@audited("tag.delete", tag="name")
def tag_delete(session: Session, name: str) -> RefInfo:
    repo = session.open()
    removed: list[bytes] = []

    def drop(refs: Refs) -> None:
        if name not in refs.tags:
            raise UnknownVersion(f"tag {name}")
        removed.append(refs.tags.pop(name))

    session.remember(repo, repo.edit_refs(drop, "tag delete"))
    return RefInfo(name, removed[0].hex(), "tag")


@audited("refs.list", kind="kind")
def list_refs(session: Session, kind: str) -> list[RefInfo]:
    refs = session.open().read_refs()
    table = refs.branches if kind == "branch" else refs.tags
    return [
        RefInfo(name, head.hex(), kind, kind == "branch" and name in refs.protected)
        for name, head in sorted(table.items())
    ]
