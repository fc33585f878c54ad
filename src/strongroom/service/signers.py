"""Signed versions: the committer's signing key, the repository's trusted set, and signature checks.

Keys live in the user's key folder (``Settings.signers_dir``), never in a repository: a file key under the
user's signing passphrase, or a key pair in a PKCS#11 token. The trusted set lives in the repository
(store.trust). docs/signing.md describes the whole.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

from strongroom.core.codec import commit_signing_message
from strongroom.core.dag import ancestors
from strongroom.core.model import Commit, Signature
from strongroom.crypto.commitsig import ALGS, CommitSigner, PublicKey, check_alg, check_signer_name
from strongroom.crypto.signerstore import LocalSigner, SignerStore
from strongroom.errors import InputError, PolicyDenied, StrongroomError
from strongroom.service.context import Session, audited
from strongroom.service.results import SignatureCheck, SignerInfo, iso
from strongroom.store.repository import Repository
from strongroom.store.trust import (
    REVOKED,
    UNSIGNED,
    TrustedSet,
    TrustedSigner,
    endorse,
    signature_status,
)

Sign = Callable[[Commit], Commit]


def key_folder(session: Session) -> SignerStore:
    return SignerStore(session.settings.signers_dir)


def _load(session: Session, name: str) -> tuple[LocalSigner, CommitSigner]:
    return key_folder(session).load(name, lambda: session.get_signing_passphrase(), session.get_pin)


def identity(session: Session, repo: Repository) -> str:
    return check_signer_name(session.user(repo))


def _ensure_key(session: Session, name: str) -> list[str]:
    """Create a file key for ``name`` when the key folder has none."""
    folder = key_folder(session)
    if folder.exists(name):
        return []
    folder.create_file(name, session.get_signing_passphrase(confirm=True))
    session.audit_detail(signing_key_created=name)
    return [f"created signing key {name} in {folder.root}"]


def _trust_as_root(repo: Repository, signer: CommitSigner, by: str) -> bool:
    """Make ``signer`` the root of an empty trusted set; False when the set already has entries."""
    made: list[bool] = []

    def change(trusted: TrustedSet) -> None:
        if trusted.signers:
            made.append(False)
            return
        trusted.signers.append(endorse(repo.config.repo_id, signer.name, signer.public, time.time_ns(), by, signer))
        made.append(True)

    repo.edit_signers(change, "signer trust")
    return made[0]


def committer(session: Session, repo: Repository) -> tuple[Sign, str, list[str]]:
    """The function that signs this session's commits, the signer's name, and notes for the user.

    The committer's key is created when it has none; an empty trusted set takes it as its root. A key the set
    does not trust still signs (its versions then fail verify) and the notes say who must add it."""
    name = identity(session, repo)
    notes = _ensure_key(session, name)
    info, signer = _load(session, name)
    trusted = repo.read_signers()
    if not trusted.signers and _trust_as_root(repo, signer, session.user(repo)):
        notes.append(f"signer {name} ({info.public.fingerprint}) is now the root of this repository's trusted set")
    else:
        entry = trusted.by_fingerprint(info.public.fingerprint)
        if entry is None or entry.revoked:
            state = "revoked" if entry is not None else "not trusted"
            notes.append(
                f"signer {name} ({info.public.fingerprint}) is {state} in this repository: its versions fail "
                f"`strongroom verify` until a trusted signer runs `strongroom signer add {name} "
                f"'{info.public.openssh(name)}'`"
            )
    repo_id = repo.config.repo_id

    def sign(commit: Commit) -> Commit:
        unsigned = dataclasses.replace(commit, signature=None)
        value = signer.sign(commit_signing_message(repo_id, unsigned))
        return dataclasses.replace(unsigned, signature=Signature(name, info.alg, info.public.fingerprint, value))

    return sign, name, notes


def prepare_identity(session: Session, name: str) -> None:
    """At init, before anything is created: the secret that ``name``'s signing key needs, so that a missing or
    wrong one is refused while nothing exists (after the repository, it left one with no trusted set, and a
    rerun of init is refused). A new key needs the signing passphrase; an existing one is loaded."""
    folder = key_folder(session)
    if folder.exists(name):
        if folder.info(name).ref is None:
            session.get_signing_passphrase(confirm=True)  # confirmed as before when it is the repository's
        _load(session, name)
    else:
        session.get_signing_passphrase(confirm=True)


def trust_identity(session: Session, repo: Repository) -> list[str]:
    """At init: a key for the current identity (created when missing), trusted as the set's root."""
    name = identity(session, repo)
    notes = _ensure_key(session, name)
    info, signer = _load(session, name)
    if _trust_as_root(repo, signer, session.user(repo)):
        notes.append(f"trusting signer {name} ({info.public.fingerprint})")
    return notes


# ---------------------------------------------------------------------- checking


class Checker:
    """Signature status of versions against one reading of the trusted set."""

    def __init__(self, repo: Repository) -> None:
        self.repo_id = repo.config.repo_id
        self.trusted = repo.read_signers()
        self.chain = self.trusted.chain(self.repo_id)

    def check(self, cid: bytes, commit: Commit) -> SignatureCheck:
        st = signature_status(self.repo_id, commit, self.trusted, self.chain)
        return SignatureCheck(cid.hex(), st.status, st.signer, st.fingerprint, st.reason)


def require_signed(repo: Repository, new: bytes, old: bytes | None, branch: str) -> None:
    """Refuse (PolicyDenied) unless every version that ``branch`` would gain is validly signed by a trusted,
    unrevoked signer."""
    checker = Checker(repo)
    known = {cid for cid, _ in ancestors([old], repo.load_commit)} if old is not None else set()
    bad: list[SignatureCheck] = []
    for cid, commit in ancestors([new], repo.load_commit):
        if cid in known:
            continue
        res = checker.check(cid, commit)
        if res.status != "valid":
            bad.append(res)
    if bad:
        shown = "; ".join(f"{b.version[:12]} {b.status}: {b.reason}" for b in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise PolicyDenied(f"branch {branch} requires signed versions; branch unchanged: {shown}{more}")


def check_versions(repo: Repository, versions: Iterable[tuple[bytes, Commit]]) -> list[SignatureCheck]:
    checker = Checker(repo)
    return [checker.check(cid, c) for cid, c in versions]


# ---------------------------------------------------------------------- commands


def _info(entry: TrustedSigner | None, local: LocalSigner | None, why: str | None) -> SignerInfo:
    if entry is not None:
        status = "revoked" if entry.revoked else ("trusted" if why is None else "unendorsed")
        return SignerInfo(
            name=entry.name,
            alg=entry.alg,
            fingerprint=entry.fingerprint,
            status=status,
            created=iso(local.created_ns) if local else iso(entry.added_ns),
            added_by=entry.added_by,
            revoked=iso(entry.revoked_ns) if entry.revoked else "",
            revoked_by=entry.revoked_by,
            local=local.describe() if local else "",
            public=entry.public.openssh(entry.name),
            reason=why or "",
        )
    assert local is not None
    return SignerInfo(
        name=local.name,
        alg=local.alg,
        fingerprint=local.public.fingerprint,
        status="local",
        created=iso(local.created_ns),
        local=local.describe(),
        public=local.public.openssh(local.name),
    )


def _local_infos(session: Session) -> dict[str, LocalSigner]:
    folder = key_folder(session)
    out = {}
    for name in folder.names():
        try:
            out[name] = folder.info(name)
        except InputError:
            continue
    return out


def signer_rows(session: Session, repo: Repository | None) -> list[SignerInfo]:
    local = _local_infos(session)
    by_fp = {v.public.fingerprint: v for v in local.values()}
    rows: list[SignerInfo] = []
    if repo is not None:
        trusted = repo.read_signers()
        chain = trusted.chain(repo.config.repo_id)
        for e in trusted.signers:
            rows.append(_info(e, by_fp.pop(e.fingerprint, None), chain.get(e.fingerprint)))
    rows.extend(_info(None, v, None) for v in sorted(by_fp.values(), key=lambda v: v.name))
    return rows


@audited("signer.list")
def signer_list(session: Session) -> list[SignerInfo]:
    """The repository's trusted set (when a repository is given) and the keys in the user's key folder."""
    repo = session.open() if session.settings.repo else None
    return signer_rows(session, repo)


@audited("signer.keygen", signer="name", alg="alg", pkcs11="pkcs11")
def keygen(
    session: Session,
    name: str,
    alg: str = "ed25519",
    pkcs11: bool = False,
    module: str = "",
    token: str = "",
    key_label: str = "",
) -> SignerInfo:
    """A new signing key in the user's key folder (a file key) or in a PKCS#11 token. It is trusted nowhere
    until a trusted signer adds it (`signer add`)."""
    check_signer_name(name)
    check_alg(alg)
    folder = key_folder(session)
    if folder.exists(name):
        raise InputError(f"a signing key named {name!r} already exists in {folder.root}")
    if pkcs11:
        if not (module and token):
            raise InputError("--pkcs11 needs --pkcs11-module and --pkcs11-token")
        session.approve_pkcs11_module(module)
        info = folder.create_pkcs11(
            name, module, token, key_label or f"strongroom-sign-{name}", alg, session.get_pin(token)
        )
    else:
        if alg != "ed25519":
            raise InputError("a key file holds an Ed25519 key; ECDSA P-256 keys live in a token (--pkcs11)")
        info = folder.create_file(name, session.get_signing_passphrase(confirm=True))
    session.audit_note(fingerprint=info.public.fingerprint)
    return _info(None, info, None)


@audited("signer.add", signer="name")
def add(session: Session, name: str, public_line: str) -> SignerInfo:
    """Trust ``name`` with the key of an OpenSSH public key line; endorsed by the acting user's own trusted key."""
    check_signer_name(name)
    public = PublicKey.from_openssh(public_line)
    repo = session.open()
    me = identity(session, repo)
    _ensure_key(session, me)
    _, signer = _load(session, me)
    if not repo.read_signers().signers:
        _trust_as_root(repo, signer, session.user(repo))
    added: list[TrustedSigner] = []

    def change(trusted: TrustedSet) -> None:
        chain = trusted.chain(repo.config.repo_id)
        mine = trusted.by_fingerprint(signer.public.fingerprint)
        if mine is None or mine.revoked or chain.get(mine.fingerprint) is not None:
            raise PolicyDenied(f"only a trusted signer can add signers, and {me} is not one in this repository")
        existing = trusted.by_fingerprint(public.fingerprint)
        if existing is not None:
            if existing.revoked:
                raise InputError(f"key {public.fingerprint} was revoked ({existing.name}); a revoked key stays revoked")
            if existing.name != name:
                raise InputError(f"key {public.fingerprint} is already trusted as {existing.name}")
            added.append(existing)
            return
        if trusted.active(name) is not None:
            raise InputError(f"signer {name} is already trusted with another key; revoke it first")
        entry = endorse(repo.config.repo_id, name, public, time.time_ns(), session.user(repo), signer)
        trusted.signers.append(entry)
        added.append(entry)

    repo.edit_signers(change, "signer add")
    session.audit_note(fingerprint=public.fingerprint)
    local = _local_infos(session).get(name)
    return _info(added[0], local if local and local.public == public else None, None)


@audited("signer.revoke", signer="name")
def revoke(session: Session, name: str) -> SignerInfo:
    """Revoke the trusted key of ``name``: every version it signed, older ones included, stops verifying.
    Refused when no other unrevoked signer that chains to the root would be left."""
    check_signer_name(name)
    repo = session.open()
    me = identity(session, repo)
    _, signer = _load(session, me)  # the revoker proves it holds a trusted key
    done: list[TrustedSigner] = []

    def change(trusted: TrustedSet) -> None:
        chain = trusted.chain(repo.config.repo_id)
        mine = trusted.by_fingerprint(signer.public.fingerprint)
        if mine is None or mine.revoked or chain.get(mine.fingerprint) is not None:
            raise PolicyDenied(f"only a trusted signer can revoke signers, and {me} is not one in this repository")
        entry = trusted.active(name)
        if entry is None:
            raise InputError(f"no trusted, unrevoked signer named {name}")
        i = trusted.signers.index(entry)
        trusted.signers[i] = dataclasses.replace(entry, revoked_ns=time.time_ns(), revoked_by=session.user(repo))
        # Never the last one: with no trusted signer left no one could add one again (the set is not empty, so
        # no new root is taken), every version would fail verify and a --require-signed branch accept nothing.
        left = trusted.chain(repo.config.repo_id)
        if not any(not s.revoked and s.fingerprint in left and left[s.fingerprint] is None for s in trusted.signers):
            raise InputError(
                f"refusing to revoke {name}, the last trusted signer: no one could add signers again; "
                "add another signer first (strongroom signer add)"
            )
        done.append(trusted.signers[i])

    repo.edit_signers(change, "signer revoke")
    session.audit_note(fingerprint=done[0].fingerprint)
    return _info(done[0], None, None)


@audited("signer.export", signer="name")
def export(session: Session, name: str) -> str:
    """The OpenSSH public key line of ``name``: from the user's key folder, else from the trusted set."""
    check_signer_name(name)
    folder = key_folder(session)
    if folder.exists(name):
        return folder.info(name).public.openssh(name)
    if session.settings.repo:
        trusted = session.open().read_signers()
        entry = trusted.active(name) or next((s for s in reversed(trusted.signers) if s.name == name), None)
        if entry is not None:
            return entry.public.openssh(name)
    raise InputError(f"no signing key named {name!r} (in {folder.root} or the repository's trusted set)")


def status_of(repo: Repository, cid: bytes) -> SignatureCheck:
    try:
        commit = repo.load_commit(cid)
    except StrongroomError as e:
        return SignatureCheck(cid.hex(), UNSIGNED, "", "", f"unreadable: {e}")
    return Checker(repo).check(cid, commit)


__all__ = ["ALGS", "REVOKED", "Checker", "committer", "require_signed", "status_of", "trust_identity"]
