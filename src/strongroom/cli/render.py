"""Output: one JSON document with --json; rich tables on a terminal; off a terminal, one record per line
with full paths, no wrapping and no colour."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from strongroom.service.results import DiffEntry, Result

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def is_tty() -> bool:
    return sys.stdout.isatty()


def emit_json(obj: Any) -> None:
    if isinstance(obj, Result):
        obj = obj.to_json()
    elif isinstance(obj, list):
        obj = [o.to_json() if isinstance(o, Result) else o for o in obj]
    text = json.dumps(obj, indent=2 if is_tty() else None, ensure_ascii=False)
    if not text.isascii():  # lone surrogates (undecodable names, messages): JSON escapes, so stdout stays UTF-8
        text = _SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)
    sys.stdout.write(text + "\n")


def safe(text: str) -> str:
    """Control characters (CR, LF, ESC, ...) and undecodable bytes in names and messages are shown escaped,
    each on its own, so a record or an error stays one line and cannot rewrite the terminal."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in text
    )


def _printable(text: str) -> str:
    """``text`` with lone surrogates (undecodable bytes held as surrogate escapes) shown escaped as ``safe``
    shows them: a UTF-8 stdout cannot take them, and a summary line must not fail once the work is done."""
    return text if text.isascii() else _SURROGATE.sub(lambda m: safe(m[0]), text)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    if is_tty():
        from rich.console import Console  # imported here: off a terminal (most runs) rich costs ~20 ms to import
        from rich.table import Table

        t = Table(*headers, show_edge=False, box=None, pad_edge=False)
        for row in rows:
            t.add_row(*(_printable(str(c)) for c in row))
        Console().print(t)
    else:
        out = sys.stdout
        for row in rows:
            out.write(_printable("\t".join(str(c) for c in row)) + "\n")


def line(text: str) -> None:
    sys.stdout.write(_printable(text) + "\n")


def note(text: str) -> None:
    """Human commentary on stderr, so stdout stays parseable."""
    sys.stderr.write(_printable(text) + "\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def damage(found: Sequence[dict[str, str]], affected: dict[str, list[str]]) -> None:
    """`verify` and `backup verify`: one line per damaged object, then one per affected version and path."""
    for d in found:
        line(f"damaged\t{safe(d['object'])}\t{d['reason']}")
    for version, paths in sorted(affected.items()):
        for p in paths:
            line(f"affected\t{version}\t{safe(p)}")


def changes(entries: Sequence[DiffEntry], none_text: str) -> None:
    """Added, removed, modified and renamed paths (and, in a sparse workspace, clashes), one per line (diff, status)."""
    for c in entries:
        if c.status == "renamed":
            line(f"renamed\t{c.size}\t{safe(c.old_path or '')} -> {safe(c.path)}")
        elif c.mode is not None:
            line(f"{c.status}\tmode {c.old_mode} -> {c.mode}\t{safe(c.path)}")
        elif c.status == "modified" and c.old_size is not None:
            line(f"modified\t{c.old_size} -> {c.size}\t{safe(c.path)}")
        else:
            line(f"{c.status}\t{c.size}\t{safe(c.path)}")
    if not entries:
        note(none_text)
