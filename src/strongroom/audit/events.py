"""Audit events: the record, its canonical JSON (the Merkle leaf), and secret scrubbing.

Canonical JSON is RFC 8785-compatible for the values events may hold: object keys sorted by code point,
no insignificant whitespace, UTF-8, integers only (a float is refused: RFC 8785 number formatting is not
needed and never ambiguous this way), strings escaped as JSON requires and nothing more.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from typing import Any

from strongroom.errors import InputError

OUTCOMES = ("ok", "denied", "failed")
LEAF_PREFIX = b"\x00"
MAX_DETAIL_TEXT = 2000
_SECRET_KEY = re.compile(r"pass(word|phrase)?|secret|token|credential|private|api[_-]?key|seed|^key$", re.I)
REDACTED = "[redacted]"


def _check_value(value: Any, where: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise InputError(f"{where}: integer out of range")
        return
    if isinstance(value, float):
        raise InputError(f"{where}: floats are not allowed in audit events")
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_value(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"{where}: object keys must be strings")
            _check_value(v, f"{where}.{k}")
        return
    raise InputError(f"{where}: {type(value).__name__} cannot go into an audit event")


def _plain(value: Any, depth: int = 0) -> bool:
    """Fast check that ``value`` holds only exact JSON types an event may hold (no location for errors:
    ``_check_value`` finds it, and also accepts subclasses such as string enums)."""
    t = type(value)
    if t is str or t is bool or value is None:
        return True
    if t is int:
        return bool(-(2**63) <= value < 2**63)
    if depth > 64:
        return False
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                return False
            tv = type(v)
            if not (tv is str or v is None or tv is bool or _plain(v, depth + 1)):
                return False
        return True
    if t is list or t is tuple:
        for v in value:  # noqa: SIM110 (a loop: all() over a generator costs twice as much here)
            if not (type(v) is str or _plain(v, depth + 1)):
                return False
        return True
    return False


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_text(value: Any) -> str:
    """RFC 8785-compatible canonical JSON of ``value`` (no floats), as text."""
    if not _plain(value):
        _check_value(value, "event")
    return _ENCODER.encode(value)


def canonical_json(value: Any) -> bytes:
    """RFC 8785-compatible canonical JSON of ``value`` (no floats), as UTF-8 bytes."""
    return canonical_text(value).encode("utf-8", "surrogatepass")


_EVENT_FORMAT = (
    '{"action":%s,"actor":%s,"details":%s,"host":%s,"os_user":%s,"outcome":%s,"seq":%d,"targets":%s,"time":%s}'
)


def canonical_fields(
    seq: int,
    time: str,
    actor: str,
    os_user: str,
    host: str,
    action: str,
    targets: str,
    outcome: str,
    details: str,
) -> bytes:
    """The canonical JSON of an event from its fields, ``targets`` and ``details`` being already canonical
    JSON texts (as the catalog stores them): the same bytes as ``Event.canonical()``, built by concatenation
    (keys in code-point order; strings escaped by the json module's own encoder, as ``canonical_json`` does),
    so checking a catalog row against its recorded canonical bytes costs about a microsecond."""
    enc = encode_basestring
    return (
        _EVENT_FORMAT
        % (enc(action), enc(actor), details, enc(host), enc(os_user), enc(outcome), seq, targets, enc(time))
    ).encode("utf-8", "surrogatepass")


def _text(value: str) -> str:
    """File names that are not UTF-8 arrive as surrogate escapes; record them as readable \\xNN escapes so
    every event encodes as UTF-8 (SQLite, JSON lines)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def scrub(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` that is safe to log: keys that name secrets are redacted, anything that is not
    plain JSON (a Secret, bytes, an object) becomes its type name, floats become integers of milliseconds
    is not guessed (they become strings), integers an event cannot hold (beyond 64 bits, as a user may type)
    become cut strings, long texts are cut."""
    if _depth > 8:
        return "[too deep]"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return value
        try:
            return _cut(str(value))
        except ValueError:  # more digits than Python converts
            return "[integer too large]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _cut(_text(value))
    if isinstance(value, list | tuple):
        return [scrub(v, _depth + 1) for v in value[:1000]]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = _text(str(k))
            out[key] = REDACTED if _SECRET_KEY.search(key) else scrub(v, _depth + 1)
        return out
    return f"[{type(value).__name__}]"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_TEXT else text[:MAX_DETAIL_TEXT] + "…"


def utc_now() -> str:
    return rfc3339(datetime.now(UTC))


def utc_ago(seconds: float) -> str:
    """The time ``seconds`` ago, as events record times (they sort as text)."""
    return rfc3339(datetime.now(UTC) - timedelta(seconds=seconds))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> str:
    """A user-given time (RFC 3339, or a date) as the canonical UTC text, for comparisons."""
    t = text.strip()
    try:
        moment = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"not an RFC 3339 time or date: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return rfc3339(moment)
    except OverflowError:  # a time zone moves it out of years 1-9999
        raise InputError(f"time out of range: {text!r}") from None


@dataclass(frozen=True)
class Event:
    """One audit event; ``seq`` equals its leaf index in the log's Merkle tree."""

    seq: int
    time: str
    actor: str
    os_user: str
    host: str
    action: str
    targets: dict[str, Any] = field(default_factory=dict)
    outcome: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise InputError(f"event outcome must be one of {', '.join(OUTCOMES)}")
        if self.seq < 0:
            raise InputError("event sequence numbers start at 0")

    def at(self, seq: int) -> Event:
        """This event with sequence number ``seq`` (``dataclasses.replace`` without its introspection)."""
        return Event(
            seq, self.time, self.actor, self.os_user, self.host, self.action, self.targets, self.outcome, self.details
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "os_user": self.os_user,
            "host": self.host,
            "action": self.action,
            "targets": self.targets,
            "outcome": self.outcome,
            "details": self.details,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Event:
        try:
            return cls(
                seq=int(obj["seq"]),
                time=str(obj["time"]),
                actor=str(obj["actor"]),
                os_user=str(obj["os_user"]),
                host=str(obj["host"]),
                action=str(obj["action"]),
                targets=dict(obj["targets"]),
                outcome=str(obj["outcome"]),
                details=dict(obj["details"]),
            )
        except (KeyError, TypeError, ValueError):
            raise InputError("not an audit event") from None

    def canonical(self) -> bytes:
        return canonical_json(self.to_json())

    def leaf_hash(self) -> bytes:
        return hashlib.sha256(LEAF_PREFIX + self.canonical()).digest()

    @property
    def paths(self) -> list[str]:
        value = self.targets.get("paths") or []
        return [str(p) for p in value] if isinstance(value, list) else []
