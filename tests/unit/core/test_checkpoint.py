"""C2SP tlog-checkpoint bodies and signed-note framing (strongroom.core.checkpoint): parse, serialize,
round-trip, and refuse anything malformed with InputError."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core.checkpoint import MAX_TREE_SIZE, Checkpoint, NoteSignature, SignedNote
from strongroom.errors import InputError

ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()
KH = bytes.fromhex("c74f20a3")


def test_checkpoint_text_is_exactly_the_c2sp_layout() -> None:
    cp = Checkpoint("example.com/log", 20852163, ROOT, ("time 2024-05-01T12:00:00Z",))
    assert cp.to_text() == f"example.com/log\n20852163\n{ROOT_B64}\ntime 2024-05-01T12:00:00Z\n"
    assert Checkpoint.from_text(cp.to_text()) == cp
    assert Checkpoint("o", 0, ROOT).to_text() == f"o\n0\n{ROOT_B64}\n"


def test_signed_note_layout_uses_the_em_dash() -> None:
    note = SignedNote("a\n", (NoteSignature("k", KH, b"\x01" * 64),))
    text = note.to_text()
    assert text.startswith("a\n\n\u2014 k ")
    assert text.endswith("\n")
    assert text.encode().count(b"\xe2\x80\x94 ") == 1
    assert SignedNote.parse(text) == note
    assert SignedNote.parse(text.encode()) == note


_line_chars = st.characters(blacklist_categories=("Cc", "Cs"))
_line = st.text(_line_chars, min_size=1, max_size=30)
_name = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1, max_size=20).filter(
    lambda s: "+" not in s and not any(c.isspace() for c in s)
)


@settings(max_examples=200, deadline=None)
@given(
    origin=_line,
    size=st.integers(0, MAX_TREE_SIZE),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(_line, max_size=4),
)
def test_checkpoint_round_trip(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(extensions))
    text = cp.to_text()
    assert Checkpoint.from_text(text) == cp
    assert Checkpoint.from_text(text).to_text() == text


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.text(_line_chars, max_size=20), min_size=1, max_size=5),
    sigs=st.lists(
        st.tuples(_name, st.binary(min_size=4, max_size=4), st.binary(min_size=1, max_size=80)), min_size=1, max_size=5
    ),
)
def test_signed_note_round_trip(lines: list[str], sigs: list[tuple[str, bytes, bytes]]) -> None:
    text = "".join(line + "\n" for line in lines)
    if text.endswith("\n\n") or text == "\n":
        text = "x" + text.rstrip("\n") + "\n"  # the text may hold blank lines, but not end in one
    note = SignedNote(text, tuple(NoteSignature(n, k, s) for n, k, s in sigs))
    rendered = note.to_text()
    assert SignedNote.parse(rendered) == note
    assert SignedNote.parse(rendered).to_text() == rendered


@pytest.mark.parametrize(
    "body",
    [
        "",
        "origin\n1\n",  # too few lines
        f"origin\n1\n{ROOT_B64}",  # no final newline
        f"origin\n01\n{ROOT_B64}\n",  # leading zero
        f"origin\n-1\n{ROOT_B64}\n",
        f"origin\n+1\n{ROOT_B64}\n",
        f"origin\n 1\n{ROOT_B64}\n",
        f"origin\n1.0\n{ROOT_B64}\n",
        f"origin\n١\n{ROOT_B64}\n",  # a non-ASCII digit
        f"origin\n{MAX_TREE_SIZE + 1}\n{ROOT_B64}\n",
        f"origin\n\n{ROOT_B64}\n",
        f"\n1\n{ROOT_B64}\n",  # empty origin
        "origin\n1\nnot base64!\n",
        f"origin\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",  # 31-byte root
        f"origin\n1\n{ROOT_B64.rstrip('=')}\n",  # unpadded
        "origin\n1\n" + base64.urlsafe_b64encode(bytes([255]) * 32).decode() + "\n",  # URL-safe alphabet
        f"origin\n1\n{ROOT_B64}\n\n",  # empty extension line
        f"origin\n1\n{ROOT_B64}\next\n\nmore\n",
        f"origin\x07\n1\n{ROOT_B64}\n",  # control character
        f"origin\r\n1\n{ROOT_B64}\n",
    ],
)
def test_malformed_checkpoints(body: str) -> None:
    with pytest.raises(InputError):
        Checkpoint.from_text(body)


def test_non_canonical_base64_root_is_refused() -> None:
    # The last character of a 32-byte base64 carries 2 unused bits; setting them gives another spelling
    # of the same bytes, which a strict parser must refuse (one checkpoint, one text).
    last = ROOT_B64[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twisted = ROOT_B64[:-2] + alphabet[alphabet.index(last) ^ 1] + "="
    assert base64.b64decode(twisted) == ROOT
    with pytest.raises(InputError):
        Checkpoint.from_text(f"origin\n1\n{twisted}\n")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": "", "size": 1, "root_hash": ROOT},
        {"origin": "a\nb", "size": 1, "root_hash": ROOT},
        {"origin": "o", "size": -1, "root_hash": ROOT},
        {"origin": "o", "size": MAX_TREE_SIZE + 1, "root_hash": ROOT},
        {"origin": "o", "size": True, "root_hash": ROOT},
        {"origin": "o", "size": 1, "root_hash": ROOT[:31]},
        {"origin": "o", "size": 1, "root_hash": ROOT, "extensions": ("",)},
        {"origin": "o", "size": 1, "root_hash": ROOT, "extensions": ("a\nb",)},
    ],
)
def test_checkpoint_constructor_validates(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        Checkpoint(**kwargs)  # type: ignore[arg-type]


GOOD_SIG = "\u2014 k " + base64.b64encode(KH + b"\x02" * 64).decode() + "\n"


@pytest.mark.parametrize(
    "note",
    [
        "a\n",  # no signatures
        "a\n\n",  # blank line, no signatures
        "a\n\n" + GOOD_SIG[:-1],  # signature line without newline
        "a\n" + GOOD_SIG,  # no blank line
        "a\n\n- k " + GOOD_SIG.split(" ")[2],  # ASCII hyphen instead of the em dash
        "a\n\n-- k " + GOOD_SIG.split(" ")[2],
        "a\n\n\u2013 k " + GOOD_SIG.split(" ")[2],  # en dash
        "a\n\n\u2014k " + GOOD_SIG.split(" ")[2],
        "a\n\n\u2014  k " + GOOD_SIG.split(" ")[2],  # empty name
        "a\n\n\u2014 a+b " + GOOD_SIG.split(" ")[2],  # '+' in the name
        "a\n\n\u2014 k\u00a0x " + GOOD_SIG.split(" ")[2],  # Unicode space in the name
        "a\n\n\u2014 k " + GOOD_SIG.split(" ")[2].rstrip("\n") + " extra\n",
        "a\n\n\u2014 k !!!!\n",
        "a\n\n\u2014 k " + base64.b64encode(KH).decode() + "\n",  # key hash but no signature
        "a\n\n" + GOOD_SIG + "\n",  # trailing blank line
        "a\n\n" + GOOD_SIG + "junk\n",
        "a\x00\n\n" + GOOD_SIG,
        "a\n\n" + GOOD_SIG * 101,
        "",
    ],
)
def test_malformed_notes(note: str) -> None:
    with pytest.raises(InputError):
        SignedNote.parse(note)


def test_note_text_may_contain_blank_lines_and_splits_at_the_last_one() -> None:
    parsed = SignedNote.parse("a\n\nb\n\n" + GOOD_SIG)
    assert parsed.text == "a\n\nb\n"
    assert SignedNote.parse(b"a\n\n" + GOOD_SIG.encode()).signatures[0].key_hash == KH
    with pytest.raises(InputError):
        SignedNote.parse(b"\xff\n\n" + GOOD_SIG.encode())
    assert len(SignedNote.parse("a\n\n" + GOOD_SIG * 100).signatures) == 100


def test_note_signature_constructor_validates() -> None:
    for args in (("", KH, b"s"), ("k", KH[:3], b"s"), ("k", KH, b""), ("k k", KH, b"s")):
        with pytest.raises(InputError):
            NoteSignature(*args)
