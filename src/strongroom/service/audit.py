"""Use cases of the audit log: log, tail, verify, prove, consistency, check-proof, export, rebuild, custody.

Reading the log is itself recorded (``audit.*`` events): who looked at the record of data access is part
of the record.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import time
from collections.abc import Iterator
from typing import Any

from strongroom.audit import custody as custody_q
from strongroom.audit.events import Event, parse_time
from strongroom.audit.log import AuditLog, VerifyReport, check_proof, truncated
from strongroom.catalog.db import sqlite_intact
from strongroom.crypto.signing import Ed25519Verifier
from strongroom.errors import CatalogError, InputError, UndecodableText, UnknownPath
from strongroom.service.context import Session, audited
from strongroom.service.versions import resolve


def _log(session: Session, check_pin: bool = True) -> AuditLog:
    log = session.audit_log(check_pin)
    if log is None:
        raise InputError("no repository: give --repo PATH or set STRONGROOM_REPO")
    return log


def _path_filter(events: list[Event], pattern: str | None) -> list[Event]:
    if not pattern:
        return events
    return [
        e
        for e in events
        if any(fnmatch.fnmatchcase(p, pattern) or p.startswith(pattern.rstrip("/") + "/") for p in e.paths)
    ]


@audited("audit.log", actor="actor", filter_action="action", since="since", until="until", paths="path")
def log(
    session: Session,
    actor: str | None = None,
    action: str | None = None,
    since: str | None = None,
    until: str | None = None,
    path: str | None = None,
) -> list[Event]:
    _text_filter(actor, "--actor")
    _text_filter(action, "--action")
    session.open()
    events = _log(session).query(
        actor=actor,
        action=action,
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
    )
    return _path_filter(events, path)


def _text_filter(value: str | None, what: str) -> None:
    """A filter on recorded text must be UTF-8: events hold undecodable bytes escaped (caf\\xe9), so such a
    filter could match nothing, and SQLite refuses it."""
    if value is not None:
        UndecodableText.check(value, what)


def _count(value: int, what: str) -> int:
    """A number of events or a tree size, as SQLite can hold it (signed 64 bits)."""
    if not 0 <= value < 1 << 63:
        raise InputError(f"{what} must be between 0 and 2^63 - 1")
    return value


@audited("audit.tail", lines="lines")
def tail(session: Session, lines: int = 20) -> list[Event]:
    session.open()
    return _log(session).query(limit=_count(max(lines, 0), "--lines"), newest=True)


def follow(session: Session, after_seq: int, poll: float = 1.0) -> Iterator[Event]:
    """Events appended after ``after_seq``, as they come (``audit tail --follow``; recorded once, by tail)."""
    log = _log(session)
    while True:
        batch = log.query(after_seq=after_seq)
        for e in batch:
            after_seq = e.seq
            yield e
        if not batch:
            time.sleep(poll)


UNSETTLED_AFTER_S = 3600.0  # a pending event older than this, of a process no one can tell has ended, is reported


@audited("audit.verify")
def verify(session: Session) -> VerifyReport:
    repo = session.open()
    t0 = time.perf_counter()
    log = _log(session)
    report = log.verify(repo)
    report.warnings += log.unsettled(UNSETTLED_AFTER_S)
    floor = session.pinned_log(log.repo_id).sealed(log.log_id)
    if report.ok and report.covered < floor:
        report.ok, report.first_bad, report.reason = False, report.covered, truncated(report.covered, floor)
        report.truncated = True
    report.seconds = round(time.perf_counter() - t0, 3)
    if not report.ok:
        session.audit_detail(first_bad=report.first_bad)
        if session._audit_stack:
            session._audit_stack[-1].fail(report.reason)
    return report


@audited("audit.prove", seq="seq")
def prove(session: Session, seq: int) -> dict[str, Any]:
    return _log(session).prove(session.open(), _count(seq, "the sequence number"))


@audited("audit.consistency", old_size="old_size", new_size="new_size")
def consistency(session: Session, old_size: int, new_size: int) -> dict[str, Any]:
    return _log(session).consistency(session.open(), _count(old_size, "OLD_SIZE"), _count(new_size, "NEW_SIZE"))


def check_proof_doc(session: Session, doc: dict[str, Any], key: str | None) -> str:
    """Verify a proof offline: with the verifier key given (C2SP vkey text), or the repository's log key."""
    if key:
        text = key
        if os.path.isfile(key):
            try:
                with open(key, encoding="utf-8") as f:
                    text = f.read().strip()
            except (OSError, UnicodeDecodeError) as e:
                raise InputError(f"cannot read a verifier key from {key}: {e}") from None
        verifier = Ed25519Verifier.from_vkey(text)
        return check_proof(doc, verifier)
    with session.audited("audit.check-proof"):
        repo = session.open()
        return check_proof(doc, repo.log_signer().verifier())


@audited("audit.key")
def log_key(session: Session) -> str:
    """The verifier key of the repository's log (C2SP vkey text), for check-proof --key elsewhere."""
    return session.open().log_signer().verifier().vkey


@audited("audit.export", since="since", format="fmt")
def export(session: Session, fmt: str = "jsonl", since: str | None = None) -> list[Event]:
    if fmt != "jsonl":
        raise InputError(f"--format takes jsonl, not {fmt!r}")
    session.open()
    return _log(session).query(since=parse_time(since) if since else None)


@audited("audit.rebuild", log_id="log_id")
def rebuild(session: Session, log_id: str | None = None) -> dict[str, Any]:
    """Recreate the catalog from the repository's sealed segments and checkpoints."""
    repo = session.open(check_audit_log=False)
    try:
        log = _log(session, check_pin=False)
    except CatalogError as e:
        log = fresh_catalog(session, repo.config.repo_id, e)
    logs = log.repository_logs(repo)
    if log_id is None:
        # the log this client sealed into this catalog, else the catalog's own, else the longest
        pinned = session.pinned_log(repo.config.repo_id).load()
        if pinned in logs:
            log_id = pinned
        elif log.log_id not in logs:
            if not logs:
                raise InputError("the repository holds no audit log to rebuild from")
            log_id = max(logs, key=lambda k: logs[k])
    elif log_id not in logs:
        raise InputError(f"the repository holds no audit log {log_id}")
    events, checkpoints = log.rebuild(repo, log_id)
    session.pin_audit_log()
    return {"log_id": log.log_id, "events": events, "checkpoints": checkpoints, "logs": logs}


def fresh_catalog(session: Session, repo_id: str, failure: CatalogError | None = None) -> AuditLog:
    """The SQLite catalog is moved aside (kept as evidence) and a new one is created: after ``failure`` to
    open it, only if it is damaged. One that is intact but failed for another reason (a full disk, an I/O
    error) is left alone and the failure stands: setting it aside would start a new log in place of a good
    one."""
    url = session.settings.catalog_url(repo_id)
    if not url.startswith("sqlite:///"):
        raise CatalogError("the catalog cannot be opened; repair or recreate the database, then rebuild")
    path = url[len("sqlite:///") :]
    if failure is not None and os.path.exists(path) and sqlite_intact(path):
        raise failure
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, f"{path}.broken-{stamp}{suffix}")
    session._audit_log = None
    log = session.audit_log(check_pin=False)
    assert log is not None
    return log


@audited("custody", version="version", paths="paths", actor="actor")
def custody(session: Session, version: str | None, paths: list[str], actor: str | None = None) -> dict[str, Any]:
    _text_filter(actor, "--actor")
    repo = session.open()
    events = _log(session).query()
    if actor is not None and version is None:
        return custody_q.touched_by(actor, events)
    if version is None:
        raise InputError("give a VERSION, or --actor USER")
    cid = resolve(repo, version)
    session.audit_note(version=cid.hex())
    report = custody_q.custody(repo, cid, paths, events)
    if paths and not report["files"]:
        raise UnknownPath(version, ", ".join(paths))
    if actor is not None:
        for f in report["files"]:
            f["history"] = [h for h in f["history"] if h["author"] == actor]
            f["reads"] = [r for r in f["reads"] if r["actor"] == actor]
    return report


def check_report_destination(session: Session, path: str) -> None:
    """Refuse a report file that would overwrite the repository, the catalog, or the client's state, cache,
    signing keys or keystore (a report written there destroys them), or a file the user may not write."""
    settings = session.settings
    places = [
        ("the repository", settings.repo),
        ("the client state", settings.state_dir),
        ("the cache", settings.cache_dir),
        ("the config folder", settings.config_dir),
        ("the keystore", settings.keystore),
    ]
    if settings.catalog:
        from strongroom.catalog.db import sqlite_file

        places.append(("the catalog", sqlite_file(settings.catalog)))
    target = os.path.realpath(path)
    for what, place in places:
        if not place:
            continue
        root = os.path.realpath(place)
        if target == root or target.startswith(root.rstrip(os.sep) + os.sep):
            raise InputError(f"--html: refusing to write inside {what}: {path}")
    if os.path.lexists(path) and not os.access(path, os.W_OK):  # the rename that writes it would get past its mode
        raise InputError(f"cannot write {path}: Permission denied")
