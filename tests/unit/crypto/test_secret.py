"""Secret: the value never shows in repr, str, format, f-strings, %-formatting or containers."""

from __future__ import annotations

import base64
import os

from strongroom.crypto.idhash import IdHasher
from strongroom.crypto.secret import Secret


def renderings(s: Secret) -> list[str]:
    return [repr(s), str(s), format(s), f"{s}", f"{s!r}", f"{s!s}", f"{s:}", "%s" % s, "%r" % s,  # noqa: UP031
            "{}".format(s), repr([s]), str({"k": s}), repr((s,))]  # noqa: UP032


def test_value_never_rendered() -> None:
    value = b"hunter2-super-secret-" + os.urandom(16)
    s = Secret(value)
    forms = {value.decode("latin-1"), value.hex(), base64.b64encode(value).decode(), repr(value), "hunter2"}
    for text in renderings(s):
        for form in forms:
            assert form not in text, text
        assert "redacted" in text


def test_reveal_and_equality() -> None:
    s = Secret(bytearray(b"abc"))
    assert s.reveal() == b"abc" and isinstance(s.reveal(), bytes)
    assert s == Secret(b"abc")
    assert s != Secret(b"abd")
    assert s != b"abc"  # never equal to the raw bytes
    assert len(s) == 3


def test_secret_has_no_instance_dict() -> None:
    s = Secret(b"k")
    assert not hasattr(s, "__dict__")


def test_exception_with_a_secret_does_not_show_it() -> None:
    s = Secret(b"topsecretvalue")
    err = ValueError("failed for", s)
    assert "topsecretvalue" not in str(err) and "topsecretvalue" not in repr(err)


def test_id_hasher_repr_redacted() -> None:
    key = os.urandom(32)
    h = IdHasher(Secret(key))
    assert key.hex() not in repr(h)
    assert "redacted" in repr(h)


def test_id_hasher_is_keyed() -> None:
    a, b = IdHasher(Secret(os.urandom(32))), IdHasher(Secret(os.urandom(32)))
    assert a(b"same data") == a(memoryview(b"same data"))
    assert a(b"same data") != b(b"same data")
    assert len(a(b"")) == 32
