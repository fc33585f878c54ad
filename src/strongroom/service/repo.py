"""Use cases on a whole repository: init, stats, verify, repair, trust-current, unlock."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from strongroom.backends.local import LocalBackend
from strongroom.core.dag import ancestors
from strongroom.core.ids import ObjectKind
from strongroom.core.model import DIR, FILE
from strongroom.crypto.commitsig import check_signer_name
from strongroom.errors import (
    InputError,
    IntegrityError,
    KeyUnavailable,
    NotARepository,
    RepositoryExists,
    RollbackDetected,
    Shredded,
    StrongroomError,
)
from strongroom.service import signers
from strongroom.service.context import Session, audited
from strongroom.service.fresh import FreshFolder
from strongroom.service.keys import Pkcs11Options, approve_named_modules, kek_requests
from strongroom.service.results import (
    BeforeTrainResult,
    Difference,
    InitResult,
    RepairResult,
    SignatureCheck,
    Stats,
    VerifyResult,
)
from strongroom.service.scopes import scope_view
from strongroom.service.versions import resolve
from strongroom.store import check, compare, lock
from strongroom.store.index import Index
from strongroom.store.pack import PackEntry, pack_path
from strongroom.store.repository import DEFAULT_COMPRESSION as DEFAULT_COMPRESSION
from strongroom.store.repository import Repository


def init(
    session: Session,
    user: str = "",
    compression: int = DEFAULT_COMPRESSION,
    keks: Sequence[str] = ("passphrase",),
    pkcs11: Pkcs11Options | None = None,
) -> InitResult:
    """Create a repository whose master key is wrapped by each KEK in ``keks`` in turn (all are needed).

    An init that fails (a refused PIN, a full disk) removes what it wrote: the folders it created, or what it
    put into the empty folder it was given. Keys, a keyring and refs without a config are taken for a damaged
    repository by every command, and a second init refuses the folder. Only after the failure is recorded in
    the audit log: sealing that event writes into the repository too."""
    fresh = FreshFolder(session.repo_path())
    try:
        return _init(session, user, compression, keks, pkcs11)
    except BaseException:
        fresh.undo()
        raise


@audited("init", keks="keks")
def _init(
    session: Session,
    user: str,
    compression: int,
    keks: Sequence[str],
    pkcs11: Pkcs11Options | None,
) -> InitResult:
    path = session.repo_path()
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise RepositoryExists(path)
    if not 0 <= compression <= 19:
        raise InputError("--compression takes a zstd level from 0 (off) to 19")
    requests = kek_requests(keks, pkcs11, path)
    approve_named_modules(session, requests)
    # the identity names this client's signing key: refused before anything is created, not after, as is a
    # signing passphrase that is not at hand (a repository locked by a key file or a token needs none itself)
    signers.prepare_identity(session, check_signer_name(session.settings.user or user or session.settings.os_user))
    kdf = session.kdf_params()
    backend = LocalBackend(path)
    backend.ensure_root()
    repo = Repository.create(
        backend, session.credentials(confirm=True), kdf, keks=requests, user=user, compression=compression
    )
    session.adopt(repo)
    session.remember(repo, repo.read_refs())
    notes = signers.trust_identity(session, repo)
    slot = repo.key_slots()[0]
    return InitResult(
        path,
        repo.config.repo_id,
        kdf.name,
        repo.config.suite,
        repo.config.chunker,
        slot.describe(),
        signer=signers.identity(session, repo),
        notes=notes,
    )


@audited("stats")
def stats(session: Session) -> Stats:
    repo = session.open()
    refs = repo.read_refs()
    versions = list(ancestors(refs.heads(), repo.load_commit))
    raw = files = 0
    unique: set[bytes] = set()
    tree_cache: dict[bytes, tuple[int, int, set[bytes]]] = {}

    def tree_totals(tid: bytes) -> tuple[int, int, set[bytes]]:
        if tid in tree_cache:
            return tree_cache[tid]
        nbytes = nfiles = 0
        chunks: set[bytes] = set()
        for e in repo.load_tree(tid).entries:
            if e.type == FILE:
                nbytes += e.size
                nfiles += 1
                chunks.update(e.chunks)
            elif e.type == DIR and e.subtree is not None:
                b, f, c = tree_totals(e.subtree)
                nbytes += b
                nfiles += f
                chunks |= c
        tree_cache[tid] = (nbytes, nfiles, chunks)
        return tree_cache[tid]

    for _, c in versions:
        try:
            b, f, ch = tree_totals(c.tree)
        except Shredded:
            continue  # erased on purpose: nothing of it is stored any more
        except KeyUnavailable:
            continue  # a scope whose key is not in this keystore: not counted here
        raw += b
        files += f
        unique |= ch
    index = repo.index
    unique_bytes = sum(loc.raw_length for cid in unique if (loc := index.get(cid, ObjectKind.CHUNK)) is not None)
    stored = sum(size for _, size in repo.backend.list("data"))
    return Stats(
        versions=len(versions),
        branches=len(refs.branches),
        files=files,
        raw_bytes=raw,
        unique_bytes=unique_bytes,
        stored_bytes=stored,
        packs=len(index.packs),
        dedupe_ratio=round(raw / unique_bytes, 3) if unique_bytes else 1.0,
        compression_ratio=round(unique_bytes / stored, 3) if stored else 1.0,
    )


@audited("verify", mode="mode", sample="sample")
def verify(session: Session, mode: str = "default", sample: str | None = None) -> VerifyResult:
    t0 = time.perf_counter()
    bad_signatures: list[SignatureCheck] = []
    if mode == "structure":
        path = session.repo_path()
        if not any(os.path.exists(os.path.join(path, n)) for n in ("config", "keys", "keyring", "refs")):
            raise NotARepository(path)
        report = check.verify_structure(session.backend())
    else:
        repo = session.open()
        chosen = check.parse_sample(sample) if sample else None
        with lock.read_lock(repo.backend, "verify"):
            report = check.verify(
                repo,
                full=mode == "full",
                sample=chosen,
                progress=lambda f, b: session.progress.advance(f, b),
            )
        try:
            bad_signatures = [s for s in signers.check_versions(repo, report.commits) if s.status != "valid"]
        except RollbackDetected:
            raise  # a set this client pinned was replaced: refused like a rolled-back repository
        except StrongroomError as e:  # a damaged trusted set: no version can be shown to be signed
            report.damage.append(check.Damage("signers", str(e)))
            bad_signatures = []
    return VerifyResult(
        mode=report.mode,
        ok=report.ok and not bad_signatures,
        versions=report.versions,
        packs_checked=report.packs_checked,
        bytes_checked=report.bytes_checked,
        objects_checked=report.objects_checked,
        damage=[{"object": d.what, "reason": d.reason} for d in report.damage],
        affected=report.affected,
        warnings=report.warnings,
        seconds=round(time.perf_counter() - t0, 3),
        shredded=dict(report.shredded),
        signatures=[
            {"version": s.version, "status": s.status, "signer": s.signer, "reason": s.reason} for s in bad_signatures
        ],
    )


@audited("verify.before-train", version="version", paths="folder")
def before_train(session: Session, folder: str, version: str) -> BeforeTrainResult:
    """The gate a training job runs: ok only when ``folder`` holds exactly the content of ``version`` (every
    file read and hashed; no file missing, extra or changed) and the version is validly signed by a trusted,
    unrevoked signer."""
    t0 = time.perf_counter()
    if not os.path.isdir(folder):
        raise InputError(f"not a folder: {folder}")
    repo = session.open()
    cid = resolve(repo, version)
    session.audit_note(version=cid.hex())
    sig = signers.status_of(repo, cid)
    commit = repo.load_commit(cid)
    tree = commit.tree
    scope = commit.extra.get("scope")
    view = scope_view(session, repo, scope, create=False) if scope else repo  # the scope's chunker and ids
    with lock.read_lock(repo.backend, "verify --before-train"):
        cmp = compare.compare(view, tree, folder, progress=lambda f, b: session.progress.advance(f, b))
    session.progress.finish()
    diffs = [Difference(d.path, d.kind, d.detail) for d in cmp.differences]
    ok = sig.status == "valid" and not diffs
    if not ok:
        session.audit_detail(differences=len(diffs), signature=sig.status)
    return BeforeTrainResult(
        folder=os.path.abspath(folder),
        version=cid.hex(),
        ok=ok,
        signature=sig,
        files_checked=cmp.files,
        bytes_checked=cmp.bytes,
        differences=diffs,
        seconds=round(time.perf_counter() - t0, 3),
    )


def _check_entries(repo: Repository, pack_id: str, entries: list[PackEntry]) -> None:
    """A header that disagrees with the index is trusted only once every frame it lists opens and matches its
    id: headers are sealed with the repository's context alone, so a header moved from another pack of the
    same repository decrypts too (and would lose what the pack really holds)."""
    data = repo.backend.get(pack_path(pack_id))
    for e in entries:
        frame = data[e.offset : e.offset + e.length]
        if len(frame) != e.length:
            raise IntegrityError(f"pack {pack_id[:16]}: its header lists a frame past its end")
        try:
            repo.open_frame(e.object_id, e.kind, frame)
        except (KeyUnavailable, Shredded):
            continue  # a scope's frame this client cannot open: its header is all there is to go by


@audited("repair.index")
def repair_index(session: Session) -> RepairResult:
    """Rebuild the index from the pack headers. A pack whose header cannot be read keeps the entries the
    old index had for it, so nothing still readable is lost."""
    repo = session.open()
    old = repo.load_index()
    fresh = Index()
    unreadable: list[str] = []
    # Exclusive as for gc: replacing the index deletes index files that readers (a verify, a backup push's
    # snapshot) may have listed.
    with lock.publish_lock(repo.backend, "repair index"), lock.exclusive_lock(repo.backend, "repair index"):
        for name, size in repo.backend.list("data"):
            pid = name.rsplit("/", 1)[-1]
            try:
                entries = repo.read_pack_header(pid, size)
                if old.packs.get(pid) != entries:
                    _check_entries(repo, pid, entries)
                fresh.add_pack(pid, entries)
            except StrongroomError:
                unreadable.append(name)
                if pid in old.packs:
                    fresh.add_pack(pid, old.packs[pid])
        removed = repo.replace_index(fresh)
    return RepairResult(len(fresh.packs), len(fresh), unreadable, removed)


@audited("trust-current")
def trust_current(session: Session) -> str:
    repo = session.open(check_rollback=False)
    refs = repo.read_refs()
    session.client_state(repo).save(repo.fingerprint, repo.config.suite, refs, force=True)
    session.pinned_signers(repo).save(repo.read_signers(), force=True)
    log = session.audit_log(check_pin=False)
    if log is not None and not log.signed_by(repo):
        # An accepted swap: the catalog's log is the replaced repository's. Keep it aside as evidence and
        # start this repository's own log.
        from strongroom.service.audit import fresh_catalog

        fresh_catalog(session, repo.config.repo_id)
    session.pin_audit_log(force=True)  # the catalog's log, even a new or shorter one, is the one to seal into
    return repo.config.repo_id


@audited("unlock", force="force")
def unlock(session: Session, force: bool = False) -> list[str]:
    backend = session.backend()
    if backend.size("config") is None:
        raise NotARepository(session.repo_path())
    now = time.time_ns()
    return [f"{h.name}: {h.describe(now)}" for h in lock.clear(backend, force)]
