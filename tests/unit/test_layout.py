"""The package's names: each class and module-level function defined once (issue 12)."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import biaswatch

PACKAGE = Path(biaswatch.__file__).parent


def defined_twice(root: Path) -> dict[str, list[str]]:
    """Class and module-level function names defined in more than one module under ``root``."""
    where: dict[str, list[str]] = collections.defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                where[node.name].append(str(path.relative_to(root)))
    return {name: paths for name, paths in where.items() if len(paths) > 1}


def test_every_class_and_function_name_is_defined_once() -> None:
    """No two modules of biaswatch define a class or function of the same name."""
    assert defined_twice(PACKAGE) == {}


def test_a_name_defined_in_two_modules_is_found(tmp_path: Path) -> None:
    """Two modules each defining Geometry are reported, so the check above can fail."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("class Geometry:\n    pass\n")
    (tmp_path / "sub" / "b.py").write_text("def Geometry():\n    pass\n")
    assert defined_twice(tmp_path) == {"Geometry": ["a.py", "sub/b.py"]}
