"""Boundaries import-linter cannot express (it checks whole external packages, not their modules, and
knows nothing of the environment): read from the source itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
SOURCES = sorted(p for p in SERVICES.glob("*/src/mediaflow/**/*.py") if "/mediaflow/v1/" not in p.as_posix())


def _relative(path: Path) -> str:
    return path.relative_to(SERVICES).as_posix()


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_only_the_runtime_module_imports_arqs_worker() -> None:
    importers = {
        _relative(p) for p in SOURCES if _imports(ast.parse(p.read_text())) & {"arq.worker", "arq.connections"}
    }
    assert importers == {"common/src/mediaflow/common/runtime/arq_worker.py"}


def _reads_environment(tree: ast.AST) -> bool:
    """`os.environ[...]`, `os.environ.get(...)` or `os.getenv(...)` (passing the environment on is fine)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func
            if target.attr == "getenv" and isinstance(target.value, ast.Name) and target.value.id == "os":
                return True
            if target.attr == "get" and ast.unparse(target.value) == "os.environ":
                return True
        if (
            isinstance(node, ast.Subscript)
            and ast.unparse(node.value) == "os.environ"
            and isinstance(node.ctx, ast.Load)
        ):
            return True
    return False


def test_configuration_is_read_by_the_settings_object_only() -> None:
    readers = {_relative(p) for p in SOURCES if _reads_environment(ast.parse(p.read_text()))}
    assert readers == set(), f"read the environment through mediaflow.common.settings.Settings: {readers}"


def test_the_sources_cite_documents_and_sections_that_exist() -> None:
    root = SERVICES.parent
    for path in SOURCES:
        for cited, section in re.findall(r"(docs/[\w-]+\.md)(?:, \"([^\"]+)\")?", path.read_text()):
            assert (root / cited).is_file(), f"{_relative(path)} cites {cited}, which does not exist"
            if section:
                headings = [
                    line.lstrip("#").strip() for line in (root / cited).read_text().splitlines() if line.startswith("#")
                ]
                assert section in headings, f'{_relative(path)} cites {cited} "{section}", which has no such section'
