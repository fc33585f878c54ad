"""docs/errors.md is generated from the error tree and must not drift from it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent.parent


def _errorlist() -> ModuleType:
    spec = importlib.util.spec_from_file_location("errorlist", ROOT / "scripts" / "errorlist.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_errors_doc_matches_the_error_tree() -> None:
    expected = _errorlist().render()
    actual = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/errors.md is out of date: run .venv/bin/python scripts/errorlist.py"


def test_errors_doc_lists_every_class_of_the_tree() -> None:
    from strongroom.errors import all_error_classes

    _errorlist().load_package()
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for cls in all_error_classes():
        if cls.__module__.startswith("strongroom"):
            assert f"`{cls.__name__}`" in text


def test_errors_module_docstring_names_every_class_defined_there() -> None:
    import strongroom.errors as errors

    defined = [
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, errors.StrongroomError) and obj.__module__ == errors.__name__
    ]
    doc = errors.__doc__ or ""
    missing = [name for name in defined if name not in doc]
    assert not missing, f"errors.py docstring tree lacks {missing}"
