"""The package's layers (docs/design.md): xfd.distributed and xfd.inference sit below xfd.eval and xfd.engine, and
xfd.eval does not import xfd.engine (training may use the evaluation API, never the reverse), so the two packages
no longer import each other. Checked on the source, function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import xfd

PACKAGE = Path(xfd.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: resolve against the module's package
                package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-node.level]
                names.add(".".join(package + (node.module,)))
            else:
                names.add(node.module)
    return names


def _offenders(modules: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in modules:
        bad = sorted(n for n in _imports(path) if n.startswith(forbidden))
        if bad:
            found[str(path.relative_to(PACKAGE.parent))] = bad
    return found


def test_eval_does_not_import_engine_or_cli():
    assert _offenders(sorted((PACKAGE / "eval").glob("*.py")), ("xfd.engine", "xfd.cli")) == {}


def test_inference_and_distributed_sit_below_eval_and_engine():
    modules = [PACKAGE / "inference.py", PACKAGE / "distributed.py"]
    assert _offenders(modules, ("xfd.eval", "xfd.engine", "xfd.cli")) == {}


def test_engine_does_not_import_cli():
    assert _offenders(sorted((PACKAGE / "engine").glob("*.py")), ("xfd.cli",)) == {}


def test_the_checker_sees_imports():
    assert "xfd.inference" in _imports(PACKAGE / "engine" / "stage1.py")
    assert "xfd.engine.context" in _imports(PACKAGE / "cli" / "evaluate.py")  # a function-level import
