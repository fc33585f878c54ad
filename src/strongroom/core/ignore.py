"""`.strongroomignore` and `--exclude` patterns, with .gitignore's main rules: `#` comments, `!` negation,
a trailing `/` for folders only, a leading or inner `/` anchors to the root, `**` spans folders."""

from __future__ import annotations

import re
from dataclasses import dataclass

from strongroom.errors import InputError


@dataclass(frozen=True, slots=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def _translate(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))  # `\#`, `\!`, `\*`: the character itself
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class IgnoreRules:
    def __init__(self, patterns: list[str]) -> None:
        self._rules: list[_Rule] = []
        for raw in patterns:
            line = raw.rstrip("\n").rstrip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line
            line = line.lstrip("/")
            body = _translate(line)
            regex = f"^{body}(?:/.*)?$" if anchored else f"^(?:.*/)?{body}(?:/.*)?$"
            try:
                compiled = re.compile(regex, re.DOTALL)
            except re.error as e:  # a range such as [z-a]
                raise InputError(f"bad ignore pattern {raw!r}: {e}") from None
            self._rules.append(_Rule(compiled, negate, dir_only))

    def __bool__(self) -> bool:
        return bool(self._rules)

    def ignored(self, rel_path: str, is_dir: bool) -> bool:
        result = False
        for rule in self._rules:
            if rule.dir_only and not is_dir and not _matches_parent(rule, rel_path):
                continue
            if rule.regex.match(rel_path):
                result = not rule.negate
        return result


def _matches_parent(rule: _Rule, rel_path: str) -> bool:
    parts = rel_path.split("/")
    return any(rule.regex.match("/".join(parts[:i])) for i in range(1, len(parts)))
