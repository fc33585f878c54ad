"""Use cases on versions: commit, log, ls, diff, cat, checkout; and resolving a version name."""

from __future__ import annotations

import os
import stat as statmod
import time
from collections.abc import Iterator

from strongroom.core.dag import ancestors, split_tilde, validate_ref_name, walk_first_parent
from strongroom.core.diff import diff_flat, diff_folders
from strongroom.core.ids import ID_LEN, ObjectKind, is_hex_prefix
from strongroom.core.model import DIR, FILE, Entry
from strongroom.errors import InputError, PolicyDenied, StrongroomError, UnknownPath, UnknownVersion
from strongroom.service import signers
from strongroom.service.context import Session, audited
from strongroom.service.results import CheckoutSummary, CommitInfo, CommitSummary, DiffEntry, LsEntry, iso
from strongroom.service.scopes import scope_state, scope_view
from strongroom.store import lock
from strongroom.store.ingest import CommitRequest, commit_folder
from strongroom.store.repository import Repository
from strongroom.store.restore import checkout as restore_checkout
from strongroom.store.restore import walk
from strongroom.store.scopes import check_scope_name

DEFAULT_BRANCH = "main"


def resolve(repo: Repository, name: str) -> bytes:
    """A full id, a unique prefix of at least 8 hex digits, a branch or tag, or BRANCH~N."""
    refs = repo.read_refs()
    base, n = split_tilde(name)
    head: bytes | None = refs.branches.get(base) or refs.tags.get(base)
    if head is None:
        low = base.lower()
        if len(low) == ID_LEN * 2 and is_hex_prefix(low):
            cand = bytes.fromhex(low)
            head = cand if repo.index.has(cand, ObjectKind.COMMIT) else None
        elif is_hex_prefix(low):
            found = [
                oid
                for oid in repo.index.locations
                if oid.hex().startswith(low) and repo.index.has(oid, ObjectKind.COMMIT)
            ]
            if len(found) > 1:
                raise InputError(f"version prefix {base} is ambiguous ({len(found)} versions)")
            head = found[0] if found else None
    if head is None:
        raise UnknownVersion(name)
    return walk_first_parent(head, n, repo.load_commit, base) if n else head


def _info(cid: bytes, repo: Repository, checker: signers.Checker) -> CommitInfo:
    c = repo.load_commit(cid)
    sig = checker.check(cid, c)
    scope = c.extra.get("scope", "")
    state = scope_state(repo, scope) if scope else "ok"
    return CommitInfo(
        cid.hex(),
        [p.hex() for p in c.parents],
        c.branch,
        c.author,
        c.host,
        iso(c.time_ns),
        c.message,
        c.source,
        signer=sig.signer,
        signature=sig.status,
        signature_reason=sig.reason,
        scope=scope,
        state=state if state in ("shredded", "unavailable") else "ok",
    )


@audited("commit", branch="branch", paths="source", message="message")
def commit(
    session: Session,
    source: str,
    message: str = "",
    branch: str = DEFAULT_BRANCH,
    excludes: list[str] | None = None,
    skip_unreadable: bool = False,
    wait: float = 0.0,
    workers: int = 0,
    pinned_parent: bytes | None = None,
    overlay: tuple[dict[str, Entry], dict[str, Entry]] | None = None,
    always_ignore: tuple[str, ...] = (),
    scope: str | None = None,
) -> CommitSummary:
    validate_ref_name(branch)
    if not os.path.isdir(source):
        raise InputError(f"not a folder: {source}")
    if scope is not None:
        check_scope_name(scope)
    repo = session.open()
    if branch in repo.read_refs().protected:
        raise PolicyDenied(f"branch {branch} is protected: it takes new versions only by merge")
    t0 = time.perf_counter()
    # The signing key is loaded (its passphrase or PIN asked for) before any data is read.
    sign, signer_name, notes = signers.committer(session, repo)
    whole = repo
    if scope is not None:
        repo = scope_view(session, repo, scope, create=True)
    req = CommitRequest(
        source=source,
        branch=branch,
        message=message,
        author=session.user(repo),
        excludes=excludes or [],
        skip_unreadable=skip_unreadable,
        workers=workers,
        cache_path=session.file_cache_path(repo, source),
        pack_memo_path=session.pack_memo_path(whole),
        wait=wait,
        pinned_parent=pinned_parent,
        overlay=overlay,
        always_ignore=always_ignore,
        sign=sign,
        scope=scope or "",
    )
    with repo.reading("commit"):  # gc must not delete packs this commit is about to reference
        res = commit_folder(
            repo, req, lambda f, b: session.progress.start("commit", f, b), lambda f, b: session.progress.advance(f, b)
        )
    session.progress.finish()
    session.audit_note(version=res.commit_id.hex())
    notes = [*notes, *res.notes]
    try:
        whole.compact_index()
    except (StrongroomError, OSError) as e:  # upkeep: the version is published, so the commit stands
        notes = [*notes, f"the version is stored, but merging the index files failed: {e} (a later commit tries again)"]
    try:
        session.remember(repo, repo.read_refs())
    except OSError as e:  # the refs seen are kept for rollback checks, which a later command can still make
        notes = [*notes, f"the version is stored, but this client could not note the refs it saw: {e.strerror or e}"]
    return CommitSummary(
        id=res.commit_id.hex(),
        branch=branch,
        parent=res.parent.hex() if res.parent else None,
        files=res.files,
        bytes=res.bytes_total,
        files_read=res.files_read,
        bytes_read=res.bytes_read,
        bytes_stored=res.bytes_stored,
        packs=res.packs,
        unchanged=res.unchanged,
        skipped=res.skipped,
        seconds=round(time.perf_counter() - t0, 3),
        signer=signer_name,
        notes=notes,
    )


@audited("log", branch="branch")
def log(session: Session, branch: str | None = None) -> list[CommitInfo]:
    repo = session.open()
    refs = repo.read_refs()
    if branch is not None:
        if branch not in refs.branches:
            raise UnknownVersion(branch)
        heads = [refs.branches[branch]]
    else:
        heads = list(refs.branches.values())
    checker = signers.Checker(repo)
    return [_info(cid, repo, checker) for cid, _ in ancestors(heads, repo.load_commit)]


def _find(repo: Repository, tree_id: bytes, path: str, version: str) -> tuple[str, Entry | None]:
    """The entry at path ('' is the root, returned as None)."""
    path = path.strip("/")
    if not path:
        return "", None
    tid = tree_id
    parts = path.split("/")
    entry: Entry | None = None
    for i, part in enumerate(parts):
        entry = repo.load_tree(tid).find(part)
        if entry is None or (i < len(parts) - 1 and entry.type != DIR):
            raise UnknownPath(version, path)
        if entry.type == DIR and entry.subtree is not None:
            tid = entry.subtree
    return path, entry


def _ls_entry(rel: str, e: Entry) -> LsEntry:
    return LsEntry(
        rel, {"f": "file", "d": "dir", "l": "symlink"}[e.type], e.size, oct(e.mode), iso(e.mtime_ns), e.target
    )


@audited("ls", version="version", paths="path")
def ls(session: Session, version: str, path: str = "") -> list[LsEntry]:
    repo = session.open()
    cid = resolve(repo, version)
    session.audit_note(version=cid.hex())
    c = repo.load_commit(cid)
    rel, entry = _find(repo, c.tree, path, version)
    if entry is None:
        return [_ls_entry(r, e) for r, e in walk(repo, c.tree)]
    if entry.type != DIR or entry.subtree is None:
        return [_ls_entry(rel, entry)]
    return [_ls_entry(rel, entry)] + [_ls_entry(r, e) for r, e in walk(repo, entry.subtree, rel)]


@audited("diff", a="a", b="b")
def diff(session: Session, a: str, b: str) -> list[DiffEntry]:
    """Files added, removed, modified and renamed from A to B, with the folders files do not show (empty ones
    added or removed, a mode changed; their paths end in ``/``), in path order."""
    repo = session.open()
    ta = repo.load_commit(resolve(repo, a)).tree
    tb = repo.load_commit(resolve(repo, b)).tree
    if ta == tb:
        return []
    every_a, every_b = dict(walk(repo, ta)), dict(walk(repo, tb))
    files_a = {r: e for r, e in every_a.items() if e.type != DIR}
    files_b = {r: e for r, e in every_b.items() if e.type != DIR}
    out = [
        DiffEntry(c.status, c.path, c.size, c.old_path if c.status == "renamed" else None, c.old_size)
        for c in diff_flat(files_a, files_b)
    ]
    for c in diff_folders(every_a, every_b):
        p = c.path.rstrip("/")
        if c.status == "modified":
            out.append(DiffEntry(c.status, c.path, 0, mode=oct(every_b[p].mode), old_mode=oct(every_a[p].mode)))
        else:
            out.append(DiffEntry(c.status, c.path, 0))
    return sorted(out, key=lambda d: d.path)


@audited("cat", version="version", paths="path")
def cat(session: Session, version: str, path: str) -> Iterator[bytes]:
    repo = session.open()
    cid = resolve(repo, version)
    session.audit_note(version=cid.hex())
    c = repo.load_commit(cid)
    _rel, entry = _find(repo, c.tree, path, version)
    if entry is None or entry.type != FILE:
        raise InputError(f"not a file in version {version}: {path}")
    with lock.read_lock(repo.backend, "cat"):
        for cid in entry.chunks:
            yield repo.read_object(cid, ObjectKind.CHUNK)


@audited("checkout", version="version", paths="includes", dest="dest")
def checkout(session: Session, version: str, dest: str, includes: list[str] | None = None) -> CheckoutSummary:
    repo = session.open()
    cid = resolve(repo, version)
    session.audit_note(version=cid.hex())
    c = repo.load_commit(cid)
    t0 = time.perf_counter()
    with lock.read_lock(repo.backend, "checkout"):
        res = restore_checkout(
            repo,
            c.tree,
            dest,
            includes,
            progress_start=lambda f, b: session.progress.start("checkout", f, b),
            progress=lambda f, b: session.progress.advance(f, b),
        )
    session.progress.finish()
    return CheckoutSummary(
        cid.hex(), dest, res.files, res.bytes, res.folders, res.links, round(time.perf_counter() - t0, 3)
    )


def mode_string(mode: int) -> str:
    return statmod.filemode(mode)
