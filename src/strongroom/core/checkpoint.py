"""C2SP tlog-checkpoints inside C2SP signed notes: parse and serialize only (pure; no keys here).

A checkpoint body (C2SP ``tlog-checkpoint``)::

    <origin>\\n
    <tree size, decimal, no leading zeros>\\n
    <root hash, standard base64>\\n
    [<extension line>\\n ...]

A signed note (C2SP ``signed-note``) is the body, a blank line, then one line per signature::

    — <key name> <base64(4-byte key hash ‖ signature)>\\n

(the dash is U+2014 EM DASH). Signing and verifying live in ``strongroom.crypto.signing``; this module
never decides whether a signature is good. Malformed text raises ``InputError``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from strongroom.errors import InputError

SIG_PREFIX = "\u2014 "  # "— "
KEY_HASH_SIZE = 4
ROOT_HASH_SIZE = 32
MAX_SIGNATURES = 100  # as golang.org/x/mod/sumdb/note, to bound the work a hostile note can cause
MAX_TREE_SIZE = (1 << 64) - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _b64decode(text: str, what: str) -> bytes:
    if not _BASE64.fullmatch(text) or len(text) % 4:
        raise InputError(f"{what} is not standard padded base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what} is not standard padded base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise InputError(f"{what} is not canonical base64")
    return raw


def _check_text(text: str) -> None:
    """Note text rules: non-empty, ends in a newline, no control characters except newline."""
    if not text or not text.endswith("\n"):
        raise InputError("note text must be non-empty and end with a newline")
    for ch in text:
        if (ch < " " and ch != "\n") or ch == "\x7f":
            raise InputError("note text contains a control character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("note text is not valid UTF-8") from None


def check_key_name(name: str) -> None:
    """C2SP signed-note key names: non-empty, no Unicode whitespace, no '+'."""
    if not isinstance(name, str) or not name or "+" in name or any(ch.isspace() for ch in name):
        raise InputError(f"invalid note key name: {name!r}")
    _check_text(name + "\n")


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: the key's name, its 4-byte key hash and the raw signature bytes."""

    name: str
    key_hash: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.key_hash) != KEY_HASH_SIZE:
            raise InputError(f"a note key hash is {KEY_HASH_SIZE} bytes")
        if not self.signature:
            raise InputError("empty note signature")

    def to_line(self) -> str:
        blob = base64.b64encode(self.key_hash + self.signature).decode("ascii")
        return f"{SIG_PREFIX}{self.name} {blob}\n"


@dataclass(frozen=True, slots=True)
class SignedNote:
    """A note's text (what is signed, newline included) and its signatures, in their order."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        _check_text(self.text)
        if len(self.signatures) > MAX_SIGNATURES:
            raise InputError(f"a note carries at most {MAX_SIGNATURES} signatures")

    def to_text(self) -> str:
        return self.text + "\n" + "".join(sig.to_line() for sig in self.signatures)

    @classmethod
    def parse(cls, note: str | bytes) -> SignedNote:
        """Split a signed note into text and signatures; any deviation from the format is an InputError."""
        if isinstance(note, bytes | bytearray):
            try:
                note = bytes(note).decode("utf-8")
            except UnicodeDecodeError:
                raise InputError("signed note is not valid UTF-8") from None
        if not isinstance(note, str):
            raise InputError("signed note must be text")
        _check_text(note)
        split = note.rfind("\n\n")
        if split < 0:
            raise InputError("signed note has no blank line before its signatures")
        text, block = note[: split + 1], note[split + 2 :]
        if not block:
            raise InputError("signed note has no signatures")
        sigs: list[NoteSignature] = []
        for line in block[:-1].split("\n"):
            if len(sigs) == MAX_SIGNATURES:
                raise InputError(f"a note carries at most {MAX_SIGNATURES} signatures")
            if not line.startswith(SIG_PREFIX):
                raise InputError("malformed signature line in signed note")
            name, sep, blob = line[len(SIG_PREFIX) :].partition(" ")
            if not sep or " " in blob:
                raise InputError("malformed signature line in signed note")
            raw = _b64decode(blob, "note signature")
            if len(raw) <= KEY_HASH_SIZE:
                raise InputError("note signature too short")
            sigs.append(NoteSignature(name, raw[:KEY_HASH_SIZE], raw[KEY_HASH_SIZE:]))
        return cls(text, tuple(sigs))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tlog-checkpoint: the log's origin, its size and root hash, and optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin or "\n" in self.origin:
            raise InputError("checkpoint origin must be one non-empty line")
        _check_text(self.origin + "\n")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise InputError(f"checkpoint tree size out of range: {self.size!r}")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != ROOT_HASH_SIZE:
            raise InputError(f"checkpoint root hash must be {ROOT_HASH_SIZE} bytes")
        for ext in self.extensions:
            if not isinstance(ext, str) or not ext or "\n" in ext:
                raise InputError("checkpoint extension lines must be non-empty single lines")
            _check_text(ext + "\n")

    def to_text(self) -> str:
        """The checkpoint body: what the log signs."""
        root_b64 = base64.b64encode(self.root_hash).decode("ascii")
        return "".join(f"{line}\n" for line in (self.origin, str(self.size), root_b64, *self.extensions))

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the text of a signed note)."""
        _check_text(text)
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise InputError("a checkpoint has at least three lines: origin, size, root hash")
        origin, size_text, root_text, *extensions = lines
        if not _DECIMAL.fullmatch(size_text):
            raise InputError("checkpoint tree size must be decimal without leading zeros")
        size = int(size_text)
        root_hash = _b64decode(root_text, "checkpoint root hash")
        return cls(origin, size, root_hash, tuple(extensions))
