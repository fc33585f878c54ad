"""Use cases of offsite backup: remotes, push, list, verify, restore, and incidents that halt pushes."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from strongroom.backends.base import BackendError, ObjectMissing
from strongroom.backends.local import LocalBackend
from strongroom.backends.registry import parse_s3, redact
from strongroom.backup.manifest import MANIFEST_NAME
from strongroom.backup.remotes import Incident, IncidentOpen, IncidentStore, Remote, RemoteStore, RemoteUnusable
from strongroom.errors import DestinationNotEmpty, InputError, StrongroomError
from strongroom.service.context import Session
from strongroom.service.results import Result, iso
from strongroom.store import check, lock

if TYPE_CHECKING:  # boto3 is imported only by the commands that talk to a bucket (it costs 0.2 s per start)
    from strongroom.backends.s3 import S3Backend
    from strongroom.backup.engine import DrillReport, PushReport, RestoreReport


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
    return RemoteInfo(r.name, r.url, r.endpoint, r.region, r.lock_mode, r.retain_days, r.max_retain_days, bucket)


def _s3(url: str, endpoint: str | None, region: str | None) -> S3Backend:
    from strongroom.backends.s3 import S3Backend

    loc = parse_s3(url)
    return S3Backend(loc.bucket, loc.prefix, endpoint_url=endpoint, region=region)


def _remote(session: Session, name: str) -> tuple[Remote, S3Backend]:
    r = RemoteStore(session.settings.state_dir).get(name)
    return r, _s3(r.url, r.endpoint, r.region)


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
) -> RemoteInfo:
    remote = Remote(name, url, endpoint, region, lock_mode.upper() if lock_mode else None, retain_days, max_retain_days)
    store = RemoteStore(session.settings.state_dir)
    if any(r.name == name for r in store.all()):
        raise InputError(f"remote {name!r} exists")
    status = check_bucket(_s3(url, endpoint, region), need_lock=remote.lock_mode is not None)
    store.add(remote)
    return _info(remote, status)


def remote_list(session: Session) -> list[RemoteInfo]:
    return [_info(r) for r in RemoteStore(session.settings.state_dir).all()]


def push(session: Session, name: str, workers: int = 8) -> PushReport:
    from strongroom.backup import engine

    remote, s3 = _remote(session, name)
    incidents = IncidentStore(session.settings.state_dir)
    opened = incidents.open_ones()
    if opened:  # before asking for the passphrase
        raise IncidentOpen(opened[0].id, opened[0].reason)
    check_bucket(s3, need_lock=remote.lock_mode is not None)
    repo = session.open()
    with lock.read_lock(repo.backend, "backup push"):
        return engine.push(repo, s3, remote, incidents.open_ones, workers=workers)


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


def verify(session: Session, name: str, sample: str | None = None) -> DrillReport:
    from strongroom.backup import engine

    _, s3 = _remote(session, name)
    repo = session.open()
    chosen = check.parse_sample(sample) if sample else None
    return engine.verify(s3, engine.accept_for(repo), session.get_passphrase(), chosen)


def restore(
    session: Session, source: str, to: str, endpoint: str | None = None, region: str | None = None
) -> RestoreReport:
    from strongroom.backup import engine

    if source.startswith("s3://"):
        s3 = _s3(source, endpoint, region)
    else:
        _, s3 = _remote(session, source)
        if endpoint or region:
            s3 = _s3(f"s3://{s3.bucket}/{s3.prefix}", endpoint or s3.endpoint_url, region or s3.region)
    if os.path.exists(to) and (not os.path.isdir(to) or os.listdir(to)):
        raise DestinationNotEmpty(to)
    try:
        s3.status()
    except StrongroomError as e:
        raise RemoteUnusable(f"cannot use {redact(s3.describe())}: {e}") from None
    dest = LocalBackend(to)
    dest.ensure_root()
    report = engine.restore(s3, session.get_passphrase(), dest)
    from strongroom.store.repository import Repository

    restored = Repository.open(dest, session.get_passphrase())
    session.remember(restored, restored.read_refs())
    return report


def incident_open(session: Session, reason: str) -> Incident:
    return IncidentStore(session.settings.state_dir).open_incident(reason, time.time_ns())


def incident_list(session: Session) -> list[Incident]:
    return IncidentStore(session.settings.state_dir).all()


def incident_close(session: Session, incident_id: str) -> Incident:
    return IncidentStore(session.settings.state_dir).close(incident_id, time.time_ns())


def as_json(obj: object) -> object:
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj  # type: ignore[call-overload]
