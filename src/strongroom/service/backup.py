"""Use cases of offsite backup: remotes, push, list, verify, restore, and incidents that halt pushes."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from strongroom.backends.base import BackendError, ObjectMissing
from strongroom.backends.local import LocalBackend
from strongroom.backends.registry import parse_s3
from strongroom.backup.manifest import MANIFEST_NAME
from strongroom.backup.remotes import (
    Incident,
    IncidentOpen,
    IncidentStore,
    Remote,
    RemoteStore,
    RemoteUnusable,
    check_endpoint,
    check_location,
)
from strongroom.errors import DestinationNotEmpty, InputError, StrongroomError, UndecodableText
from strongroom.service.context import Session, audited
from strongroom.service.results import Result, iso
from strongroom.store import check, lock

if TYPE_CHECKING:  # boto3 is imported only by the commands that talk to a bucket (it costs 0.2 s per start)
    from strongroom.backends.s3 import S3Backend
    from strongroom.backup.engine import DrillReport, PushReport, RestoreReport
    from strongroom.backup.lifecycle import PruneReport, ReleaseReport, VersionRestore
    from strongroom.store.repository import Repository


@dataclass
class RemoteInfo(Result):
    name: str
    url: str
    endpoint: str | None
    region: str | None
    lock: str | None
    retain_days: int
    max_retain_days: int
    bucket: str = ""
    push_profile: str | None = None
    legal_hold_profile: str | None = None
    delete_profile: str | None = None


@dataclass
class BackupEntry(Result):
    version_id: str
    modified: str
    valid: bool
    created: str
    objects: int
    bytes: int
    reason: str = ""


def _info(r: Remote, bucket: str = "") -> RemoteInfo:
    return RemoteInfo(
        r.name,
        r.url,
        r.endpoint,
        r.region,
        r.lock_mode,
        r.retain_days,
        r.max_retain_days,
        bucket,
        r.push_profile,
        r.hold_profile,
        r.delete_profile,
    )


def _s3(url: str, endpoint: str | None, region: str | None, profile: str | None = None) -> S3Backend:
    from strongroom.backends.s3 import S3Backend

    loc = parse_s3(url)
    return S3Backend(loc.bucket, loc.prefix, endpoint_url=endpoint, region=region, profile=profile)


def _remote(session: Session, name: str, role: str = "push") -> tuple[Remote, S3Backend]:
    """The remote and a client for it with the credential of ``role`` (push, legal-hold or delete)."""
    store = RemoteStore(session.settings.state_dir)
    r = store.get(name)
    return r, _s3(r.url, r.endpoint, r.region, store.profile(r, role))


def _own_prefix(s3: S3Backend, repo: Repository) -> None:
    """A prefix holds one repository: refuse (exit 2) one whose ``config`` is another repository's."""
    from strongroom.backup import engine

    engine.check_prefix(s3, repo.config.repo_id)


def check_bucket(s3: S3Backend, need_lock: bool) -> str:
    """Versioning always, Object Lock when retention is asked for; says exactly what is missing."""
    try:
        status = s3.status()
    except ObjectMissing:
        raise RemoteUnusable(f"cannot use {s3.describe()}: bucket {s3.bucket} does not exist") from None
    except StrongroomError as e:
        raise RemoteUnusable(f"cannot use {s3.describe()}: {e}") from None
    missing = status.missing(need_lock)
    if missing:
        raise RemoteUnusable(
            f"bucket {s3.bucket} cannot hold a locked backup: "
            + "; ".join(missing)
            + (
                " (Object Lock can only be turned on when a bucket is created)"
                if "Object Lock is not enabled" in missing
                else ""
            )
        )
    return f"versioning {status.versioning}, Object Lock {'on' if status.object_lock else 'off'}" + (
        f", default retention {status.default_retention}" if status.default_retention else ""
    )


def remote_add(
    session: Session,
    name: str,
    url: str,
    endpoint: str | None = None,
    region: str | None = None,
    lock_mode: str | None = None,
    retain_days: int = 0,
    max_retain_days: int = 3650,
    push_profile: str | None = None,
    legal_hold_profile: str | None = None,
    delete_profile: str | None = None,
) -> RemoteInfo:
    remote = Remote(
        name,
        url,
        endpoint,
        region,
        lock_mode.upper() if lock_mode else None,
        retain_days,
        max_retain_days,
        push_profile,
        legal_hold_profile,
        delete_profile,
    )
    store = RemoteStore(session.settings.state_dir)
    if any(r.name == name for r in store.all()):
        raise InputError(f"remote {name!r} exists")
    status = check_bucket(_s3(url, endpoint, region, push_profile), need_lock=remote.lock_mode is not None)
    store.add(remote)
    return _info(remote, status)


def remote_set(
    session: Session,
    name: str,
    push_profile: str | None = None,
    legal_hold_profile: str | None = None,
    delete_profile: str | None = None,
) -> RemoteInfo:
    """Name the AWS profile each role of a remote uses (names only; the credentials stay in AWS's files)."""
    if push_profile is None and legal_hold_profile is None and delete_profile is None:
        raise InputError("remote set needs --push-profile, --legal-hold-profile or --delete-profile")
    store = RemoteStore(session.settings.state_dir)
    remote = store.update(
        name, push_profile=push_profile, hold_profile=legal_hold_profile, delete_profile=delete_profile
    )
    return _info(remote)


def remote_list(session: Session) -> list[RemoteInfo]:
    return [_info(r) for r in RemoteStore(session.settings.state_dir).all()]


@audited("backup.push", remote="name")
def push(session: Session, name: str, workers: int = 8, check: bool = False) -> PushReport:
    from strongroom.backup import engine

    remote, s3 = _remote(session, name)
    incidents = IncidentStore(session.settings.state_dir)
    opened = incidents.open_ones()
    if opened:  # before asking for the passphrase
        session.audit_detail(incident=opened[0].id)
        raise IncidentOpen(opened[0].id, opened[0].reason)
    check_bucket(s3, need_lock=remote.lock_mode is not None)
    repo = session.open()
    _own_prefix(s3, repo)
    with lock.read_lock(repo.backend, "backup push"):
        report = engine.push(repo, s3, remote, incidents.open_ones, workers=workers, check=check)
    session.audit_detail(
        manifest_version=report.manifest_version,
        uploaded=report.uploaded,
        resumed=report.resumed,
        bytes_sent=report.bytes_sent,
        extended=report.extended,
        healed=report.healed,
    )
    return report


def backup_list(session: Session, name: str) -> list[BackupEntry]:
    """Every manifest version in the bucket, newest first, and whether its signature checks."""
    from strongroom.backup import engine

    _, s3 = _remote(session, name)
    repo = session.open()
    accept = engine.accept_for(repo)
    out = []
    try:
        for v in engine.manifest_versions(s3):
            try:
                m = accept(s3.get_version(MANIFEST_NAME, v.version_id))
                out.append(
                    BackupEntry(
                        v.version_id, v.modified.isoformat(), True, iso(m.created_ns), len(m.entries), m.total_bytes
                    )
                )
            except StrongroomError as e:
                out.append(BackupEntry(v.version_id, v.modified.isoformat(), False, "", 0, 0, str(e)))
    except BackendError as e:
        raise RemoteUnusable(f"cannot list {s3.describe()}: {e}") from None
    return out


@audited("backup.verify", remote="name", sample="sample")
def verify(session: Session, name: str, sample: str | None = None) -> DrillReport:
    from strongroom.backup import engine

    _, s3 = _remote(session, name)
    repo = session.open()
    _own_prefix(s3, repo)
    chosen = check.parse_sample(sample) if sample else None
    try:
        report = engine.verify(s3, engine.accept_for(repo), session.credentials(), chosen)
    except BackendError as e:
        raise RemoteUnusable(f"verify of {s3.describe()} failed: {e}") from None
    session.audit_detail(
        manifest_version=report.manifest_version, ok=report.ok, damaged=len(report.damage), unread=len(report.unread)
    )
    if not report.ok and session._audit_stack:
        session._audit_stack[-1].fail(
            f"{len(report.damage)} damaged or missing objects"
            + (f", {len(report.unread)} the bucket did not serve" if report.unread else "")
        )
    return report


@audited("backup.release", remote="name", version="version", retain_days="retain_days", legal_hold="legal_hold")
def release(
    session: Session, name: str, version: str, retain_days: int | None = None, legal_hold: bool = False
) -> ReleaseReport:
    """Extend retention (never shorten) and set a legal hold on every object ``version`` needs. A legal
    hold uses the remote's legal-hold credential, never the push one; retention alone uses the push one."""
    from strongroom.backup import lifecycle
    from strongroom.service.versions import resolve

    remote, s3 = _remote(session, name, "legal-hold" if legal_hold else "push")
    repo = session.open()
    _own_prefix(s3, repo)
    cid = resolve(repo, version)
    session.audit_note(version=cid.hex())
    try:
        report = lifecycle.release(repo, s3, remote, cid, retain_days=retain_days, legal_hold=legal_hold)
    except BackendError as e:
        raise RemoteUnusable(f"release on {s3.describe()} failed: {e}") from None
    session.audit_detail(objects=report.objects, manifest_version=report.manifest_version)
    return report


@audited("backup.prune", remote="name", keep_last="keep_last", keep_within="keep_within", dry_run="dry_run")
def prune(
    session: Session,
    name: str,
    keep_last: int | None = None,
    keep_within: int | None = None,
    dry_run: bool = False,
    now: float | None = None,
) -> PruneReport:
    """Delete what no kept backup names, with the remote's delete credential (the push one cannot)."""
    from strongroom.backup import lifecycle

    _, s3 = _remote(session, name, "delete")
    repo = session.open()
    _own_prefix(s3, repo)
    try:
        report = lifecycle.prune(repo, s3, keep_last=keep_last, keep_within_days=keep_within, dry_run=dry_run, now=now)
    except BackendError as e:
        raise RemoteUnusable(f"prune on {s3.describe()} failed: {e}") from None
    session.audit_detail(deleted=report.deleted, deleted_bytes=report.deleted_bytes, kept=report.kept_manifests)
    return report


def restore(
    session: Session,
    source: str,
    to: str,
    endpoint: str | None = None,
    region: str | None = None,
    version: str | None = None,
) -> RestoreReport | VersionRestore:
    """Rebuild a repository in ``to`` from a remote (by name) or an ``s3://BUCKET/PREFIX`` location. The
    location and ``--endpoint`` are checked as `remote add` checks them (no user info: refused, exit 2, and
    not echoed); the audit event records the location without user info."""
    from strongroom.backends.registry import redact

    return _restore(session, redact(source), to, endpoint, region, version, source)


def _check_destination(to: str) -> None:
    """``to`` must be an empty folder or a path that can be created (its nearest existing parent a folder)."""
    if os.path.exists(to):
        if not os.path.isdir(to) or os.listdir(to):
            raise DestinationNotEmpty(to)
        return
    parent = os.path.dirname(os.path.abspath(to))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(f"cannot create the restore destination {to}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot create the restore destination {to}: {parent} is not writable")


@audited("backup.restore", source="shown", to="to", version="version")
def _restore(
    session: Session,
    shown: str,
    to: str,
    endpoint: str | None,
    region: str | None,
    version: str | None,
    source: str,
) -> RestoreReport | VersionRestore:
    """``shown``: the source without user info, for the audit event; ``source``: as given."""
    from strongroom.backup import engine, lifecycle
    from strongroom.service.versions import resolve

    if endpoint is not None:
        check_endpoint(endpoint)
    if source.startswith("s3://") or "@" in source:
        check_location(source)
        s3 = _s3(source, endpoint, region)
    else:
        _, s3 = _remote(session, source)
        if endpoint or region:  # the same bucket elsewhere: with the remote's push profile still
            s3 = _s3(s3.location, endpoint or s3.endpoint_url, region or s3.region, s3.profile)
    _check_destination(to)
    try:
        s3.status()
    except StrongroomError as e:
        raise RemoteUnusable(f"cannot use {s3.describe()}: {e}") from None
    dest = LocalBackend(to)
    try:
        dest.ensure_root()
    except StrongroomError as e:
        raise InputError(f"cannot create the restore destination {to}: {e}") from None
    report: RestoreReport | VersionRestore
    try:
        if version is None:
            report = engine.restore(s3, session.credentials(), dest)
        else:
            report = lifecycle.restore_version(s3, session.credentials(), dest, version, resolve)
    except BackendError as e:
        raise RemoteUnusable(f"restore from {s3.describe()} failed: {e}") from None
    if isinstance(report, lifecycle.VersionRestore):
        session.audit_note(version=report.version)
    session.audit_detail(manifest_version=report.manifest_version, objects=report.objects)
    if version is None:  # a copy of one version has refs of its own: this client keeps its view of the original
        from strongroom.store.repository import Repository

        restored = Repository.open(dest, session.credentials())
        session.remember(restored, restored.read_refs())
    return report


@audited("incident.open", reason="reason")
def incident_open(session: Session, reason: str) -> Incident:
    UndecodableText.check(reason, "--reason")
    inc = IncidentStore(session.settings.state_dir).open_incident(reason, time.time_ns())
    session.audit_detail(incident=inc.id)
    return inc


def incident_list(session: Session) -> list[Incident]:
    return IncidentStore(session.settings.state_dir).all()


@audited("incident.close", incident="incident_id")
def incident_close(session: Session, incident_id: str) -> Incident:
    return IncidentStore(session.settings.state_dir).close(incident_id, time.time_ns())


def as_json(obj: object) -> object:
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj  # type: ignore[call-overload]
