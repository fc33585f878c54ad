"""Canonical, deterministic encoding of trees and commits (format ``sr-obj/1``).

Objects are JSON with sorted keys, no whitespace and ASCII only (non-UTF-8 file names travel as
surrogate escapes), so the same object always encodes to the same bytes and so to the same id.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from strongroom.core.model import DIR, FILE, SYMLINK, Commit, Entry, Signature, Tree
from strongroom.errors import IntegrityError

FORMAT = 1
SIGNATURE_ALGS = ("ed25519", "ecdsa-p256")
COMMIT_SIG_DOMAIN = b"strongroom-commit-sig/1\n"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not canonical JSON")


def _loads(data: bytes, what: str) -> Any:
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise IntegrityError(f"{what} object is not valid") from None


# Decoding damaged input must raise IntegrityError and nothing else.
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, OverflowError)


def _entry_name(name: Any) -> str:
    """A name that cannot reach outside its folder on checkout."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise IntegrityError("tree entry has an invalid name")
    return name


def _target(target: Any) -> str:
    if not isinstance(target, str):
        raise IntegrityError("symlink entry has no target")
    return target


def encode_tree(tree: Tree) -> bytes:
    if len({e.name for e in tree.entries}) != len(tree.entries):
        raise IntegrityError("a tree cannot name an entry twice")  # a writer's bug: stop it before it is stored
    items = []
    for e in sorted(tree.entries, key=lambda x: x.name):
        item: dict[str, Any] = {"n": e.name, "t": e.type, "m": e.mode, "mt": e.mtime_ns, "u": e.uid, "g": e.gid}
        if e.type == FILE:
            item["s"] = e.size
            item["c"] = [c.hex() for c in e.chunks]
        elif e.type == DIR:
            assert e.subtree is not None
            item["x"] = e.subtree.hex()
        elif e.type == SYMLINK:
            item["l"] = e.target
        items.append(item)
    return _dumps({"v": FORMAT, "e": items})


def decode_tree(data: bytes) -> Tree:
    obj = _loads(data, "tree")
    try:
        if obj["v"] != FORMAT:
            raise IntegrityError(f"unsupported tree format {obj['v']}")
        if not isinstance(obj["e"], list):
            raise IntegrityError("tree object is malformed")
        entries = []
        for it in obj["e"]:
            t = it["t"]
            if t not in (FILE, DIR, SYMLINK):
                raise IntegrityError(f"unknown entry type {t!r}")
            entries.append(
                Entry(
                    name=_entry_name(it["n"]),
                    type=t,
                    mode=int(it["m"]),
                    mtime_ns=int(it["mt"]),
                    size=int(it.get("s", 0)),
                    uid=int(it["u"]),
                    gid=int(it["g"]),
                    chunks=tuple(bytes.fromhex(c) for c in it.get("c", ())),
                    subtree=bytes.fromhex(it["x"]) if t == DIR else None,
                    target=_target(it["l"]) if t == SYMLINK else None,
                )
            )
    except _MALFORMED:
        raise IntegrityError("tree object is malformed") from None
    if len({e.name for e in entries}) != len(entries):  # a file and a folder of one name cannot be restored
        raise IntegrityError("tree object names an entry twice")
    return Tree(tuple(entries))


def encode_commit(c: Commit) -> bytes:
    """The commit object; the ``sig`` key is present only on signed commits, so an unsigned commit encodes
    exactly as it did before signatures existed (and keeps its id)."""
    obj: dict[str, Any] = {
        "v": FORMAT,
        "tree": c.tree.hex(),
        "parents": [p.hex() for p in c.parents],
        "author": c.author,
        "host": c.host,
        "time_ns": c.time_ns,
        "message": c.message,
        "branch": c.branch,
        "source": c.source,
        "extra": c.extra,
    }
    if c.signature is not None:
        s = c.signature
        obj["sig"] = {"signer": s.signer, "alg": s.alg, "fp": s.fingerprint, "value": s.value.hex()}
    return _dumps(obj)


def commit_signing_message(repo_id: str, c: Commit) -> bytes:
    """What a commit signature signs: a domain tag, the repository id, and the commit without its signature
    (so a signature cannot be replayed into another repository or onto another kind of object)."""
    unsigned = dataclasses.replace(c, signature=None)
    return COMMIT_SIG_DOMAIN + repo_id.encode("ascii") + b"\n" + encode_commit(unsigned)


def _signature(obj: Any) -> Signature | None:
    if obj is None:
        return None
    if not isinstance(obj, dict) or obj["alg"] not in SIGNATURE_ALGS:
        raise IntegrityError("commit signature is malformed")
    return Signature(str(obj["signer"]), str(obj["alg"]), str(obj["fp"]), bytes.fromhex(obj["value"]))


def decode_commit(data: bytes) -> Commit:
    obj = _loads(data, "commit")
    try:
        if obj["v"] != FORMAT:
            raise IntegrityError(f"unsupported commit format {obj['v']}")
        if not isinstance(obj["parents"], list):
            raise IntegrityError("commit object is malformed")
        return Commit(
            tree=bytes.fromhex(obj["tree"]),
            parents=tuple(bytes.fromhex(p) for p in obj["parents"]),
            author=str(obj["author"]),
            host=str(obj["host"]),
            time_ns=int(obj["time_ns"]),
            message=str(obj["message"]),
            branch=str(obj["branch"]),
            source=str(obj.get("source", "")),
            extra={str(k): str(v) for k, v in obj.get("extra", {}).items()},
            signature=_signature(obj.get("sig")),
        )
    except _MALFORMED:
        raise IntegrityError("commit object is malformed") from None


def dumps_canonical(obj: Any) -> bytes:
    """Canonical JSON for small records (refs, config) that are hashed or authenticated."""
    return _dumps(obj)


def loads_record(data: bytes, what: str) -> Any:
    return _loads(data, what)
