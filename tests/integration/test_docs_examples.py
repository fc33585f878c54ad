"""Every ```python block of docs/api.md runs, in order, in one namespace, in an empty temporary folder.

The blocks form one tutorial session (later blocks use names defined by earlier ones), so they are executed
one after another; a failure names the block and its first line in the document. The autouse `clean_env`
fixture (tests/conftest.py) provides the environment: state and cache under tmp, weak test-only KDF.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
API_DOC = ROOT / "docs" / "api.md"
_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) of every ```python block."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def test_api_doc_has_examples() -> None:
    blocks = python_blocks(API_DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    assert any("Strongroom.init" in code for _, code in blocks)


def test_api_doc_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    namespace: dict[str, object] = {"__name__": "__docs_example__"}
    for line, code in python_blocks(API_DOC.read_text(encoding="utf-8")):
        compiled = compile(code, f"{API_DOC}:{line}", "exec")
        try:
            exec(compiled, namespace)
        except Exception as e:  # re-raise with the block's place in the document
            raise AssertionError(f"docs/api.md block at line {line} failed: {type(e).__name__}: {e}") from e
