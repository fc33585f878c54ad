"""Scopes: commit into one, list them, shred one (docs/keys.md, "Scopes and shredding")."""

from __future__ import annotations

import hmac

from strongroom.errors import InputError
from strongroom.service.context import Session, audited
from strongroom.service.results import ScopeInfo, iso
from strongroom.store import lock
from strongroom.store import scopes as store_scopes
from strongroom.store.repository import Repository


def _info(s: store_scopes.Scope, frames_sealed: int = 0) -> ScopeInfo:
    return ScopeInfo(
        name=s.name,
        id=s.scope_id,
        key_id=s.key_id,
        state=s.state,
        created=iso(s.created_ns),
        created_by=s.created_by,
        shredded=iso(s.shredded_ns) if s.shredded_ns else "",
        shredded_by=s.shredded_by,
        frames_sealed=frames_sealed,
    )


def scope_view(session: Session, repo: Repository, name: str, create: bool) -> Repository:
    """The repository as seen by a commit into scope ``name`` (created on first use)."""
    found = store_scopes.find_scope(store_scopes.list_scopes(repo), name)
    if found is None:
        if not create:
            raise InputError(f"no scope {name!r}")
        with lock.publish_lock(repo.backend, "commit --scope", 5.0):  # one scope per name, even in a race
            found = store_scopes.find_scope(store_scopes.list_scopes(repo), name)
            if found is None:
                found = store_scopes.create_scope(repo, name, session.settings.keystore, session.actor(repo))
                session.audit_detail(scope_created=found.scope_id)
        store_scopes.load_scopes(repo, session.settings.keystore)
    if found.state == store_scopes.SHREDDED:
        raise InputError(f"scope {name!r} was shredded: nothing can be written into it again")
    if repo.scope_states.get(found.key_id, ("", ""))[1] != store_scopes.AVAILABLE:
        raise InputError(f"scope {name!r}: its key is not in this machine's keystore ({session.settings.keystore})")
    session.audit_detail(scope=name)
    return repo.scoped(found.key_id)


def list_scopes(session: Session) -> list[ScopeInfo]:
    repo = session.open()
    counts = repo.message_count()
    return [_info(s, counts.get(s.key_id, 0)) for s in store_scopes.load_scopes(repo, session.settings.keystore)]


def scope_state(repo: Repository, name: str) -> str:
    """available, shredded or unavailable ("" when the repository has no scope by that name)."""
    return next((state for n, state in repo.scope_states.values() if n == name), "")


@audited("key.shred", scope="name")
def shred(session: Session, name: str, confirm: str) -> ScopeInfo:
    """Destroy scope ``name``'s KEK for good. ``confirm`` must repeat the name."""
    repo = session.open()
    # surrogatepass: undecodable bytes (surrogate escapes from argv) compare like any other text
    if not hmac.compare_digest(confirm.encode("utf-8", "surrogatepass"), name.encode("utf-8", "surrogatepass")):
        raise InputError(f"confirmation does not match: type the scope's name ({name})")
    scopes = store_scopes.load_scopes(repo, session.settings.keystore)
    named = [s for s in scopes if s.name == name]  # older releases could make two scopes of one name
    if not named:
        raise InputError(f"no scope {name!r} (strongroom key list shows them)")
    if any(s.state == store_scopes.UNAVAILABLE for s in named):
        # This machine's keystore does not hold the key: shredding here would destroy nothing.
        raise InputError(f"scope {name!r}: its key is not in this keystore; shred it where the keystore is")
    with lock.publish_lock(repo.backend, "key shred", 5.0):
        for s in named:
            store_scopes.shred(repo, s, session.settings.keystore, session.actor(repo))
    session.audit_note(scope_id=",".join(s.scope_id for s in named))
    return _info(next(s for s in store_scopes.load_scopes(repo, session.settings.keystore) if s.name == name))
