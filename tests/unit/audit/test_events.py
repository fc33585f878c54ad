"""Audit events: canonical JSON (RFC 8785-compatible subset), leaf hashes, secret scrubbing, time parsing."""

from __future__ import annotations

import hashlib

import pytest

from strongroom.audit.events import Event, canonical_json, parse_time, scrub
from strongroom.crypto.secret import Secret
from strongroom.errors import InputError


def test_canonical_json_sorts_keys_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "é\n"]}) == '{"a":[true,null,"é\\n"],"b":1}'.encode()
    assert canonical_json({"\u00e9": 1, "z": 2, "a": 0}) == '{"a":0,"z":2,"é":1}'.encode()


def test_canonical_json_refuses_floats_and_objects() -> None:
    with pytest.raises(InputError):
        canonical_json({"x": 1.5})
    with pytest.raises(InputError):
        canonical_json({"x": object()})
    with pytest.raises(InputError):
        canonical_json({1: "non-string key"})


def test_leaf_hash_is_rfc6962_leaf_of_canonical_event() -> None:
    e = Event(0, "2026-01-01T00:00:00.000000Z", "carol", "carol", "h", "commit", {"branch": "main"}, "ok", {})
    assert e.leaf_hash() == hashlib.sha256(b"\x00" + e.canonical()).digest()
    assert Event.from_json(e.to_json()) == e


def test_scrub_redacts_secrets() -> None:
    out = scrub({"passphrase": "hunter2", "api_key": "x", "nested": {"token": "t", "ok": 1}, "s": Secret(b"k"),
                 "f": 0.5})
    assert out == {"passphrase": "[redacted]", "api_key": "[redacted]", "nested": {"token": "[redacted]", "ok": 1},
                   "s": "[Secret]", "f": "0.5"}
    assert "hunter2" not in str(out)


def test_event_outcome_and_seq_checked() -> None:
    with pytest.raises(InputError):
        Event(0, "t", "a", "o", "h", "x", {}, "maybe", {})
    with pytest.raises(InputError):
        Event(-1, "t", "a", "o", "h", "x", {}, "ok", {})


def test_parse_time() -> None:
    assert parse_time("2026-01-02") == "2026-01-02T00:00:00.000000Z"
    assert parse_time("2026-01-02T03:04:05+01:00") == "2026-01-02T02:04:05.000000Z"
    with pytest.raises(InputError):
        parse_time("yesterday")


def test_scrub_turns_integers_an_event_cannot_hold_into_strings() -> None:
    from strongroom.audit.events import canonical_text, scrub

    done = scrub({"fine": 2**63 - 1, "big": 10**30, "huge": 10**5000, "low": -(2**63) - 1})
    assert done == {"fine": 2**63 - 1, "big": str(10**30), "huge": "[integer too large]", "low": str(-(2**63) - 1)}
    canonical_text(done)  # an event can hold it
