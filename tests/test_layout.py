"""The house rules of ARCHITECTURE.md, checked on the source: no import circles, no module over
350 lines, floors that import only downwards, and pipeline rooms whose own imports form no circle.

Every import statement counts, at module level or inside a function: a circle broken by a lazy
import is still a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

PACKAGES = ("pipeline", "worker", "web", "tests", "benchmarks", "scripts", "migrations")
MAX_LINES = 350
MAX_TOP_LEVEL = 3  # modules directly in pipeline/, beside its rooms
# A room imports only rooms of a lower rank (docs/design.md): io, data and model are the ground.
ROOM_RANK = {"pipeline.io": 0, "pipeline.data": 0, "pipeline.model": 0, "pipeline.explain": 1,
             "pipeline.evaluate": 2, "pipeline.train": 3}
# What web may take from pipeline: the TensorFlow-free readers of pipeline/io, and the model.json
# reader (pipeline.model.spec: plain JSON, checked by tests/web/test_app.py for no TensorFlow).
WEB_MAY_IMPORT = ("pipeline.io", "pipeline.model.spec")
FORBIDDEN = {
    "pipeline": ("flask", "celery", "sqlalchemy", "alembic", "worker", "web"),
    "worker": ("flask", "web"),
    "web": ("tensorflow", "keras"),
}


def modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Return every Python module below ``root``'s packages by dotted name."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(path: Path, name: str) -> set[tuple[str, str | None]]:
    """Return what a module imports as (module, name taken from it or None), relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[tuple[str, str | None]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.update((base, alias.name) for alias in node.names)
    return names


def project_graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """Return each module's imports of other project modules.

    ``from package import module`` depends on that module; ``from package import name`` on the
    package's ``__init__``.
    """
    def owner(dotted: str) -> str | None:
        while dotted and dotted not in found:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph = {}
    for name, path in found.items():
        targets = {owner(f"{base}.{taken}" if taken and f"{base}.{taken}" in found else base)
                   for base, taken in imported_names(path, name)}
        graph[name] = {t for t in targets if t and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def oversized(found: dict[str, Path]) -> dict[str, int]:
    counts = {name: len(path.read_text().splitlines()) for name, path in found.items()}
    return {name: count for name, count in counts.items() if count > MAX_LINES}


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Return which pipeline rooms (``pipeline.io``, ``pipeline.model``, …) import which."""
    def room(name: str) -> str:
        return ".".join(name.split(".")[:2])

    rooms: dict[str, set[str]] = {}
    for name, targets in graph.items():
        if name.startswith("pipeline."):
            rooms.setdefault(room(name), set()).update(
                room(t) for t in targets if t.startswith("pipeline.") and room(t) != room(name))
    return rooms


@pytest.fixture(scope="module")
def found() -> dict[str, Path]:
    return modules(PROJECT_ROOT)


@pytest.fixture(scope="module")
def graph(found) -> dict[str, set[str]]:
    return project_graph(found)


def test_no_import_circles(graph):
    assert circles(graph) == []


def test_no_module_over_350_lines(found):
    assert oversized(found) == {}


def test_pipeline_rooms_import_in_one_direction(graph):
    rooms = room_graph(graph)
    assert set(rooms) == set(ROOM_RANK)
    upward = {room: sorted(t for t in targets if ROOM_RANK[t] >= ROOM_RANK[room])
              for room, targets in rooms.items()}
    assert {room: targets for room, targets in upward.items() if targets} == {}
    assert circles(rooms) == []


def test_pipeline_is_rooms_with_a_docstring_each(found):
    top = [n for n, p in found.items() if n.count(".") == 1 and p.name != "__init__.py"
           and n.startswith("pipeline.")]
    assert len(top) <= MAX_TOP_LEVEL, top
    rooms = [p for n, p in found.items() if n.count(".") == 1 and p.name == "__init__.py"
             and n.startswith("pipeline.")]
    assert len(rooms) >= 5
    for init in rooms:
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "\n" not in doc.strip(), f"{init} needs a one-line docstring"


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_floors_import_only_downwards(found, floor):
    wrong = {name: sorted(base for base, _ in imported_names(path, name)
                          if base.split(".")[0] in FORBIDDEN[floor])
             for name, path in found.items() if name.split(".")[0] == floor}
    assert {name: names for name, names in wrong.items() if names} == {}


def test_web_takes_only_tensorflow_free_readers_from_pipeline(graph):
    taken = {t for name, targets in graph.items() if name.startswith("web") for t in targets
             if t.startswith("pipeline")}
    outside = sorted(t for t in taken
                     if not any(t == allowed or t.startswith(allowed + ".") for allowed in WEB_MAY_IMPORT))
    assert taken and outside == []


def write_tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return modules(root, ("pkg",))


def test_the_checks_catch_a_lazy_circle_and_a_long_module(tmp_path):
    found = write_tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import thing\n",
        "pkg/b.py": "def thing():\n    from pkg import a  # hidden in a function: still a circle\n",
        "pkg/c.py": "from . import a\n" + "x = 1\n" * MAX_LINES,
    })
    graph = project_graph(found)
    assert graph["pkg.c"] == {"pkg.a"}  # relative imports resolve
    assert circles(graph) == [["pkg.a", "pkg.b"]]
    assert oversized(found) == {"pkg.c": MAX_LINES + 1}
