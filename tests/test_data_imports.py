"""The data package's modules import one another without a cycle, and nothing above them.

Read from the source (every import statement, at the top, in a function or under
``TYPE_CHECKING``), so that a cycle hidden by a late import is found as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DATA = Path(__file__).parents[1] / "data"
PACKAGE = "duanka.data"
ROOMS_ABOVE = ("duanka.features", "duanka.training", "duanka.serving", "duanka.cli")


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Each module under ``root`` by its import name (a package by its ``__init__.py``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join((package, *parts))] = path
    return names


def imported(path: Path, known: set[str]) -> set[str]:
    """Every duanka module ``path`` imports; ``from package import module`` names the module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return {name for name in found if name.split(".")[0] == "duanka"}


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the duanka modules it imports, for every module under ``root``."""
    names = module_names(root, package)
    return {name: imported(path, set(names)) for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles a depth-first walk meets, each as a path back to its start; none iff
    the graph has no cycle."""
    found: list[list[str]] = []
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if target not in graph:
                continue
            if state.get(target) == "open":
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_the_data_package_has_no_import_cycle():
    graph = import_graph(DATA, PACKAGE)
    assert len(graph) > 30  # the whole package was read, synthetic included
    assert cycles(graph) == []


def test_the_data_package_imports_no_room_above_it():
    upward = {
        module: sorted(name for name in names if name.startswith(ROOMS_ABOVE))
        for module, names in import_graph(DATA, PACKAGE).items()
    }
    assert {module: names for module, names in upward.items() if names} == {}


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        # a late import inside a function still closes the cycle
        (
            {
                "a.py": "from duanka.data.b import f\n",
                "b.py": "def f():\n    from duanka.data.a import g\n",
            },
            [["duanka.data.a", "duanka.data.b", "duanka.data.a"]],
        ),
        # so does one under TYPE_CHECKING, and `from package import module` names the module
        (
            {
                "pkg/__init__.py": "",
                "pkg/one.py": "from duanka.data.pkg import two\n",
                "pkg/two.py": "if TYPE_CHECKING:\n    from duanka.data.pkg.one import X\n",
            },
            [["duanka.data.pkg.one", "duanka.data.pkg.two", "duanka.data.pkg.one"]],
        ),
        ({"a.py": "import duanka.data.b\n", "b.py": "import numpy\n"}, []),
    ],
)
def test_the_cycle_check_finds_what_it_claims(tmp_path, sources, expected):
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cycles(import_graph(tmp_path, PACKAGE)) == expected
