"""Remote settings and incidents, kept in the client state folder (never in the bucket, never credentials).

``<state>/backup/remotes.json``: name → location, endpoint, region, lock mode, retain days, maximum.
``<state>/backup/incidents.json``: incidents; while any is open, pushes refuse.
Both are small JSON files written atomically (temp file, fsync, rename); every read-modify-write holds an
exclusive ``flock`` on a lock file beside the file (``remotes.json.lock``, ``incidents.json.lock``, mode
0600 in a 0700 folder), so concurrent commands never lose each other's changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from strongroom.backends.registry import parse_s3
from strongroom.errors import InputError, PolicyDenied

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_PROFILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]{0,63}$")
DEFAULT_MAX_RETAIN_DAYS = 3650
MAX_RETAIN_DAYS = 36500  # 100 years: the most any remote or release may ask for (dates stay far from year 9999)
ROLES = ("push", "legal-hold", "delete")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"  # a host name as botocore takes it, or an IPv6 address in brackets
_ENDPOINT = re.compile(
    rf"(?i:https?)://(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?/?"
)


def check_endpoint(endpoint: str, flag: str = "--endpoint") -> None:
    """An S3 endpoint is ``http(s)://HOST[:PORT]``: no user info (credentials come from boto3's chain), path,
    query or whitespace. A refused value is echoed only when it cannot hold a credential."""
    m = _ENDPOINT.fullmatch(endpoint)
    if m is None or (m["port"] is not None and not 0 < int(m["port"]) < 65536):
        hidden = any(c in endpoint for c in "@?#") or len(endpoint) > 200
        shown = " (the value is not shown: it may hold a credential)" if hidden else f", not {endpoint!r}"
        raise InputError(f"{flag} takes http(s)://HOST[:PORT] without credentials, path or query{shown}")


def check_location(url: str) -> None:
    """``s3://BUCKET/PREFIX`` without user info; a refused location with an '@' is not echoed."""
    if "@" in url:
        raise InputError(
            "not an S3 location (s3://BUCKET/PREFIX, no credentials in it): the value is not shown, it may hold a "
            "credential"
        )
    try:
        parse_s3(url)
    except ValueError:  # a port that is no port (urllib): no S3 location has one
        raise InputError("not an S3 location (s3://BUCKET/PREFIX, no credentials in it)") from None


class UnknownRemote(InputError):
    template = "unknown remote {!r} (see `strongroom remote list`)"


class RemoteUnusable(InputError):
    """The bucket cannot hold a backup: unreachable, refused, or missing versioning or Object Lock."""

    template = "{}"


class IncidentOpen(PolicyDenied):
    """A push refused because an incident is open: manipulated data must not overwrite good copies."""

    template = "backup refused: incident {} is open ({})"

    def hint(self) -> str | None:
        return "close it with `strongroom incident close ID` once the data is known to be good"


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    endpoint: str | None = None
    region: str | None = None
    lock_mode: str | None = None  # GOVERNANCE or COMPLIANCE; None: versioning only
    retain_days: int = 0
    max_retain_days: int = DEFAULT_MAX_RETAIN_DAYS
    # boto3 profile names (in the shared AWS config/credentials files), one per role; None: boto3's default
    # chain. Only names are kept here, never credentials. Legal holds and deletes refuse the default chain
    # and the push profile: each needs its own credential.
    push_profile: str | None = None
    hold_profile: str | None = None
    delete_profile: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise InputError(f"invalid remote name {self.name!r}: lowercase letters, digits, '-' and '_'")
        check_location(self.url)
        if self.endpoint is not None:
            check_endpoint(self.endpoint)
        if self.lock_mode not in (None, "GOVERNANCE", "COMPLIANCE"):
            raise InputError("--lock takes governance or compliance")
        if self.lock_mode and self.retain_days < 1:
            raise InputError("--lock needs --retain-days N (N ≥ 1)")
        if not self.lock_mode and self.retain_days:
            raise InputError("--retain-days needs --lock governance|compliance")
        if self.max_retain_days < 1:
            raise InputError("--max-retain-days must be at least 1")
        for flag, days in (("--retain-days", self.retain_days), ("--max-retain-days", self.max_retain_days)):
            if days > MAX_RETAIN_DAYS:
                raise InputError(f"{flag} {days} is above the maximum of {MAX_RETAIN_DAYS} days (100 years)")
        for flag, profile in (
            ("--push-profile", self.push_profile),
            ("--legal-hold-profile", self.hold_profile),
            ("--delete-profile", self.delete_profile),
        ):
            if profile is not None and not _PROFILE.fullmatch(profile):
                raise InputError(f"{flag} takes an AWS profile name (letters, digits, . _ + = @ -)")
        if self.retain_days > self.max_retain_days:
            raise InputError(
                f"retention of {self.retain_days} days is above the maximum of {self.max_retain_days}"
                " (--max-retain-days)"
            )


def _load(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path}: {e}") from None


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Hold an exclusive flock on ``path``.lock (created 0600, in a folder created 0700) for one
    read-modify-write of ``path``; closing the descriptor releases it, also when the process dies."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise InputError(f"cannot lock {path}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _save(path: str, obj: Any) -> None:
    """Write atomically: a temporary file, fsync, rename (callers hold ``_locked(path)``)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class RemoteStore:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "backup", "remotes.json")

    def all(self) -> list[Remote]:
        data = _load(self.path) or {}
        out = []
        for name, v in sorted(data.items()):
            try:
                out.append(Remote(**v))
            except TypeError:
                raise InputError(f"{self.path} is malformed") from None
            except InputError as e:  # settings an older strongroom accepted
                raise InputError(f"{self.path}: remote {name!r}: {e}") from None
        return out

    def get(self, name: str) -> Remote:
        for r in self.all():
            if r.name == name:
                return r
        raise UnknownRemote(name)

    def profile(self, remote: Remote, role: str) -> str | None:
        """The boto3 profile a role uses. ``legal-hold`` and ``delete`` need a profile of their own,
        distinct from the push one, so that a stolen push credential can neither remove a hold nor delete."""
        if role == "push":
            return remote.push_profile
        profile = remote.hold_profile if role == "legal-hold" else remote.delete_profile
        flag = "--legal-hold-profile" if role == "legal-hold" else "--delete-profile"
        if profile is None:
            raise InputError(
                f"remote {remote.name} has no {role} credential: name an AWS profile for it with "
                f"`strongroom remote set {remote.name} {flag} PROFILE` (never the push credential)"
            )
        if profile == remote.push_profile:
            raise InputError(f"remote {remote.name}: the {role} profile must not be the push profile")
        return profile

    def update(self, name: str, **changes: str | None) -> Remote:
        with _locked(self.path):
            data = _load(self.path) or {}
            if name not in data:
                raise UnknownRemote(name)
            merged = dict(data[name])
            merged.update({k: v for k, v in changes.items() if v is not None})
            try:
                remote = Remote(**merged)
            except TypeError:
                raise InputError(f"{self.path} is malformed") from None
            data[name] = asdict(remote)
            _save(self.path, data)
        return remote

    def add(self, remote: Remote) -> None:
        with _locked(self.path):
            data = _load(self.path) or {}
            if remote.name in data:
                raise InputError(f"remote {remote.name!r} exists")
            data[remote.name] = asdict(remote)
            _save(self.path, data)


@dataclass(frozen=True)
class Incident:
    id: str
    opened_ns: int
    reason: str
    closed_ns: int = 0

    @property
    def open(self) -> bool:
        return not self.closed_ns


class IncidentStore:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "backup", "incidents.json")

    def all(self) -> list[Incident]:
        data = _load(self.path) or []
        try:
            return [Incident(**d) for d in data]
        except TypeError:
            raise InputError(f"{self.path} is malformed") from None

    def open_ones(self) -> list[Incident]:
        return [i for i in self.all() if i.open]

    def open_incident(self, reason: str, now_ns: int) -> Incident:
        reason = " ".join(reason.split())
        if not reason:
            raise InputError("an incident needs a --reason")
        inc = Incident(f"inc-{secrets.token_hex(4)}", now_ns, reason)
        with _locked(self.path):
            _save(self.path, [asdict(i) for i in self.all()] + [asdict(inc)])
        return inc

    def close(self, incident_id: str, now_ns: int) -> Incident:
        with _locked(self.path):
            items = self.all()
            for k, i in enumerate(items):
                if i.id == incident_id:
                    if not i.open:
                        raise InputError(f"incident {incident_id} is already closed")
                    items[k] = Incident(i.id, i.opened_ns, i.reason, now_ns)
                    _save(self.path, [asdict(x) for x in items])
                    return items[k]
        raise InputError(f"no incident {incident_id!r} (see `strongroom incident list`)")
