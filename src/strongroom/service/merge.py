"""merge, revert, reset and protected branches."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time

from strongroom.core.dag import ancestors, validate_ref_name
from strongroom.core.merge import STRATEGIES, merge_base, merge_folders, three_way
from strongroom.core.model import Commit, Entry
from strongroom.errors import CheckFailed, InputError, MergeConflict, PolicyDenied, UnknownVersion
from strongroom.service import signers
from strongroom.service.context import Session, audited
from strongroom.service.results import MergeResult
from strongroom.service.versions import resolve
from strongroom.store.refs import Protection, Refs
from strongroom.store.repository import Repository
from strongroom.store.restore import checkout as restore_checkout
from strongroom.store.treebuild import ObjectWriter, flatten

CHECK_TIMEOUT = 3600


def _flat(repo: Repository, commit_id: bytes | None) -> tuple[dict[str, Entry], dict[str, Entry]]:
    if commit_id is None:
        return {}, {}
    return flatten(repo, repo.load_commit(commit_id).tree)


def refuse_scoped(repo: Repository, what: str, *versions: bytes | None) -> None:
    """Writing new trees from a scoped version would copy its file names out of the scope: refused."""
    for v in versions:
        if v is None:
            continue
        scope = repo.load_commit(v).extra.get("scope")
        if scope:
            raise InputError(
                f"{what} would copy version {v.hex()[:12]} of scope {scope!r} out of its scope; "
                "check it out and commit it with --scope instead"
            )


def _conflict(paths: list[str]) -> MergeConflict:
    shown = ", ".join(paths[:20]) + (f" and {len(paths) - 20} more" if len(paths) > 20 else "")
    return MergeConflict(f"{len(paths)} conflicting path(s): {shown}")


CHECKOUT_PREFIX = "strongroom-check-"


def _sweep_dead_checkouts() -> None:
    """Remove the candidate checkouts (decrypted data) that merges killed during their checks left behind:
    folders of this user named for a process that no longer runs."""
    root = tempfile.gettempdir()
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        if not name.startswith(CHECKOUT_PREFIX):
            continue
        pid = name[len(CHECKOUT_PREFIX) :].split("-", 1)[0]
        path = os.path.join(root, name)
        try:
            if not pid.isdigit() or os.lstat(path).st_uid != os.getuid() or not os.path.isdir(path):
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def run_checks(repo: Repository, tree_id: bytes, checks: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """Run each check in a private checkout of the candidate; returns (check, exit code, output) of failures."""
    if not checks:
        return []
    _sweep_dead_checkouts()
    work = tempfile.mkdtemp(prefix=f"{CHECKOUT_PREFIX}{os.getpid()}-")
    os.chmod(work, 0o700)
    try:
        dest = os.path.join(work, "candidate")
        restore_checkout(repo, tree_id, dest)
        failures = []
        for check in checks:
            try:
                proc = subprocess.run(
                    shlex.split(check), cwd=dest, capture_output=True, timeout=CHECK_TIMEOUT, check=False
                )
                code, out = proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")
            except (OSError, ValueError, subprocess.TimeoutExpired) as e:
                code, out = 127, str(e)
            if code != 0:
                failures.append((check, code, out))
        return failures
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _enforce_signed(repo: Repository, protection: Protection | None, new: bytes, head: bytes, branch: str) -> None:
    if protection is not None and protection.require_signed:
        signers.require_signed(repo, new, head, branch)


def _enforce_checks(repo: Repository, protection: Protection | None, tree_id: bytes, branch: str) -> list[str]:
    if protection is None:
        return []
    failures = run_checks(repo, tree_id, protection.checks)
    if failures:
        check, code, out = failures[0]
        raise CheckFailed(check, code, branch, out)
    return list(protection.checks)


@audited("merge", branch="into", source="source", strategy="strategy")
def merge(
    session: Session, source: str, into: str, message: str = "", strategy: str | None = None, wait: float = 0.0
) -> MergeResult:
    if strategy is not None and strategy not in STRATEGIES:
        raise InputError(f"--strategy takes ours or theirs, not {strategy!r}")
    repo = session.open()
    refs = repo.read_refs()
    if into not in refs.branches:
        raise UnknownVersion(f"branch {into}")
    head = refs.branches[into]
    src = resolve(repo, source)
    session.audit_note(version=src.hex())
    head_line = [cid for cid, _ in ancestors([head], repo.load_commit)]
    if src in set(head_line):
        return MergeResult(into, head.hex(), "up-to-date", [], [])
    src_line = [cid for cid, _ in ancestors([src], repo.load_commit)]
    protection = refs.protected.get(into)
    if head in set(src_line):
        with repo.reading("merge"):  # SOURCE may be a version no ref holds yet: gc must leave it meanwhile
            tree = repo.load_commit(src).tree
            _enforce_signed(repo, protection, src, head, into)
            checks = _enforce_checks(repo, protection, tree, into)
            session.remember(
                repo, repo.update_refs(into, head, src, "merge", wait, merging=True, protection=protection)
            )
        return MergeResult(into, src.hex(), "fast-forward", [], checks)
    base = merge_base(head_line, set(src_line))
    refuse_scoped(repo, "a three-way merge", base, head, src)
    # Held from the first object written until the branch names it: gc must not take the new version for
    # unreachable while the checks run.
    with repo.reading("merge"):
        writer = ObjectWriter(repo)
        tree = _merged_tree(repo, writer, base, head, src, strategy)
        sign, _, _ = signers.committer(session, repo)
        commit = Commit(
            tree,
            (head, src),
            session.user(repo),
            socket.gethostname(),
            time.time_ns(),
            message or f"merge {source} into {into}",
            into,
        )
        new = writer.commit(sign(commit))
        writer.finish()  # packs first: if a check fails they stay unreferenced, for gc to collect
        _enforce_signed(repo, protection, new, head, into)
        checks = _enforce_checks(repo, protection, tree, into)
        session.remember(repo, repo.update_refs(into, head, new, "merge", wait, merging=True, protection=protection))
    return MergeResult(into, new.hex(), "merge", [], checks)


def _merged_tree(
    repo: Repository,
    writer: ObjectWriter,
    base: bytes | None,
    ours: bytes,
    theirs: bytes | None,
    strategy: str | None = None,
) -> bytes:
    """Store the tree of the three-way merge of ``base``, ``ours`` and ``theirs``; MergeConflict if any path
    conflicts (files or a folder's mode changed differently on both sides, or a file where the other side keeps
    a folder)."""
    base_files, base_dirs = _flat(repo, base)
    ours_files, ours_dirs = _flat(repo, ours)
    theirs_files, theirs_dirs = _flat(repo, theirs)
    plan = three_way(base_files, ours_files, theirs_files, strategy)
    folders, clashes = merge_folders(base_dirs, ours_dirs, theirs_dirs, plan.merged, strategy)
    if plan.conflicts or clashes:
        raise _conflict(sorted({*plan.conflicts, *clashes}))
    return writer.tree_from_flat(plan.merged, folders)


@audited("revert", version="version", branch="branch")
def revert(session: Session, version: str, branch: str | None = None, message: str = "") -> MergeResult:
    """A new version on the branch that undoes what VERSION changed relative to its first parent."""
    repo = session.open()
    target = resolve(repo, version)
    session.audit_note(version=target.hex())
    commit = repo.load_commit(target)
    refs = repo.read_refs()
    name = branch or (commit.branch if commit.branch in refs.branches else "main")
    if name not in refs.branches:
        raise UnknownVersion(f"branch {name}")
    if name in refs.protected:
        raise PolicyDenied(f"branch {name} is protected: it takes new versions only by merge")
    head = refs.branches[name]
    parent = commit.parents[0] if commit.parents else None
    refuse_scoped(repo, "revert", target, head, parent)
    with repo.reading("revert"):  # as in merge: gc must not collect the new version meanwhile
        writer = ObjectWriter(repo)
        tree = _merged_tree(repo, writer, target, head, parent)
        sign, _, _ = signers.committer(session, repo)
        new = writer.commit(
            sign(
                Commit(
                    tree,
                    (head,),
                    session.user(repo),
                    socket.gethostname(),
                    time.time_ns(),
                    message or f"revert {target.hex()[:12]}",
                    name,
                )
            )
        )
        writer.finish()
        session.remember(repo, repo.update_refs(name, head, new, "revert"))
    return MergeResult(name, new.hex(), "revert", [], [])


@audited("reset", branch="branch", version="version")
def reset(session: Session, branch: str, version: str) -> MergeResult:
    repo = session.open()
    target = resolve(repo, version)
    session.audit_note(version=target.hex())

    def move(refs: Refs) -> None:
        if branch not in refs.branches:
            raise UnknownVersion(f"branch {branch}")
        if branch in refs.protected:
            raise PolicyDenied(f"branch {branch} is protected: reset is refused")
        refs.branches[branch] = target

    session.remember(repo, repo.edit_refs(move, "reset"))
    return MergeResult(branch, target.hex(), "reset", [], [])


@audited("branch.protect", branch="branch", checks="checks", on="on", require_signed="require_signed")
def protect(
    session: Session, branch: str, checks: list[str], on: bool = True, require_signed: bool = False
) -> Protection | None:
    validate_ref_name(branch)
    for c in checks:
        try:
            words = shlex.split(c)
        except ValueError as e:  # an unclosed quote
            raise InputError(f"--require-check {c!r}: {e}") from None
        if not words:
            raise InputError("an empty --require-check command")
    repo = session.open()
    result: list[Protection | None] = []

    def change(refs: Refs) -> None:
        if branch not in refs.branches:
            raise UnknownVersion(f"branch {branch}")
        if on:
            refs.protected[branch] = Protection(require_signed, tuple(checks))
            result.append(refs.protected[branch])
        else:
            refs.protected.pop(branch, None)
            result.append(None)

    session.remember(repo, repo.edit_refs(change, "branch protect" if on else "branch unprotect"))
    return result[0]
