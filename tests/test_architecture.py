"""The package's folders draw the pipeline: no module imports from a folder further down it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hf_decomp

PACKAGE = Path(hf_decomp.__file__).parent
# The order of docs/architecture.md; a module may import from its own folder and from folders of a
# lower rank only. portable/ shares rank 0 with utils/: it imports nothing of the package (exported
# models run it as remote code where hf-decomp is not installed).
RANKS = {
    "utils": 0, "portable": 0, "models": 2, "data": 2, "method": 3, "passes": 4, "metrics": 4, "layers": 5,
    "analysis": 6, "recovery": 7, "studies": 7, "specialize": 8, "hub": 9, "explore": 10, "commands": 11,
    "(top)": 12,
}
TOP_LEVEL = {"__init__", "__main__", "cli"}  # hf_decomp/__init__.py, __main__.py, cli.py


def _folder(module: str) -> str:
    """'hf_decomp.method.criteria' -> 'method'; 'hf_decomp' -> '__init__'."""
    parts = module.split(".")
    return "(top)" if len(parts) == 1 or parts[1] in TOP_LEVEL else parts[1]


def _imports(path: Path) -> set[str]:
    """Absolute names of the hf_decomp modules that ``path`` imports (also inside functions)."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(relative.parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "hf_decomp"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "hf_decomp":
                found.add(name)
    return found


def _own(path: Path) -> str:
    first = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    return "(top)" if first in TOP_LEVEL else first


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "metrics/decomposition" not in p.as_posix())


def test_every_folder_has_a_rank():
    folders = {_own(p) for p in _modules()}
    assert folders <= set(RANKS), folders - set(RANKS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_imports_upward(path):
    own = _own(path)
    upward = sorted(name for name in _imports(path) if _folder(name) != own and RANKS[_folder(name)] >= RANKS[own])
    assert not upward, f"{path.relative_to(PACKAGE)} imports {upward} from a folder at or above its own"


@pytest.mark.parametrize("path", sorted((PACKAGE / "portable").rglob("*.py")), ids=lambda p: p.name)
def test_portable_imports_nothing_of_the_package(path):
    """Exported models ship portable/ as remote code: where hf-decomp is not installed, an import of any
    other hf_decomp module (even utils/) fails, so portable/ imports only its siblings."""
    foreign = sorted(name for name in _imports(path) if _folder(name) != "portable")
    assert not foreign, f"portable/{path.name} imports {foreign}; portable/ may import only its own files"
