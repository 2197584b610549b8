"""aichat's imports point down its layers and never close a cycle.

Read from the source with ``ast``, every import counts, function-local and ``TYPE_CHECKING``
ones included: a type-only import that points up still ties a lower layer to a higher one.
The layers, top to bottom, are the ones ``aichat/__init__.py`` describes.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "aichat"
# Top to bottom; "entry" is the modules at the top of the package, the rest are subpackages.
LAYERS = ("entry", "inbound", "answer", "operations", "providers", "core")
# The root module holds only the version: below every layer, so anyone may import it.
ROOT = "aichat"

Graph = dict[str, set[str]]


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _known(name: str, modules: set[str]) -> str:
    """The longest prefix of ``name`` that is an aichat module ("" for other packages)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def _imported(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> set[str]:
    """The aichat modules an import statement in a file of ``package`` imports."""
    if isinstance(node, ast.Import):
        return {_known(alias.name, modules) for alias in node.names}
    base = node.module or ""
    if node.level:
        anchor = package.split(".")
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    # `from aichat.x import y` imports the module aichat.x.y when there is one, else aichat.x.
    return {
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else _known(base, modules)
        for alias in node.names
    }


def import_graph(package: Path = PACKAGE) -> Graph:
    """Every aichat module and the aichat modules it imports."""
    paths = {_module_name(path, package): path for path in package.rglob("*.py")}
    graph: Graph = {}
    for module, path in paths.items():
        # The package relative imports start from: for __init__.py, the one it defines.
        home = module if path.name == "__init__.py" else module.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps |= _imported(node, home, set(paths))
        graph[module] = deps - {"", module}
    return graph


def layer_of(module: str) -> int:
    """The index of the module's layer in ``LAYERS`` (the root module is below them all)."""
    parts = module.split(".")
    if module == ROOT:
        return len(LAYERS)
    if len(parts) == 2 and (PACKAGE / f"{parts[1]}.py").exists():
        return 0
    if parts[1] not in LAYERS[1:]:
        raise ValueError(f"{module} is in no layer: add its package to LAYERS")
    return LAYERS.index(parts[1])


def upward_imports(graph: Graph) -> list[str]:
    """Imports from a module into a layer above its own, as readable lines."""
    return [
        f"{module} ({LAYERS[layer_of(module)]}) imports {dep} ({LAYERS[layer_of(dep)]})"
        for module, deps in sorted(graph.items())
        for dep in sorted(deps)
        if layer_of(dep) < layer_of(module)
    ]


def cycles(graph: Graph) -> list[list[str]]:
    """One import cycle through each part of the graph that has any, as module lists."""
    remaining = {module: set(deps) & graph.keys() for module, deps in graph.items()}
    # Peel off modules that import nothing left: what stays is on a cycle or leads into one.
    leaves = [m for m, deps in remaining.items() if not deps]
    while leaves:
        leaf = leaves.pop()
        del remaining[leaf]
        for module, deps in remaining.items():
            if leaf in deps:
                deps.discard(leaf)
                if not deps:
                    leaves.append(module)
    found: list[list[str]] = []
    seen: set[str] = set()
    for start in sorted(remaining):
        if start in seen:
            continue
        path: list[str] = []
        module = start
        while module not in path and module not in seen:
            path.append(module)
            module = min(remaining[module])
        seen.update(path)
        if module in path:
            found.append([*path[path.index(module) :], module])
    return found


def test_every_module_imports_only_its_own_layer_and_those_below() -> None:
    graph = import_graph()
    assert len(graph) > 50
    assert upward_imports(graph) == []


def test_no_import_closes_a_cycle() -> None:
    assert cycles(import_graph()) == []


def test_every_subpackage_is_a_layer() -> None:
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages == set(LAYERS[1:])


def test_the_root_module_imports_nothing_from_aichat() -> None:
    assert import_graph()[ROOT] == set()


def test_an_upward_import_is_reported_with_both_layers() -> None:
    graph = {"aichat.core.errors": {"aichat.operations.auth"}, "aichat.operations.auth": set()}
    assert upward_imports(graph) == [
        "aichat.core.errors (core) imports aichat.operations.auth (operations)"
    ]


def test_a_cycle_is_reported_as_the_modules_around_it() -> None:
    graph = {
        "aichat.core.errors": {"aichat.core.context"},
        "aichat.core.context": {"aichat.operations.auth"},
        "aichat.operations.auth": {"aichat.core.errors", "aichat.core.ids"},
        "aichat.core.ids": set(),
        "aichat.app": {"aichat.core.errors"},
    }
    assert cycles(graph) == [
        [
            "aichat.core.errors",
            "aichat.core.context",
            "aichat.operations.auth",
            "aichat.core.errors",
        ]
    ]


def test_relative_and_type_only_imports_count(tmp_path: Path) -> None:
    package = tmp_path / "aichat"
    (package / "core").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "core" / "__init__.py").write_text("")
    (package / "core" / "ids.py").write_text("")
    (package / "core" / "context.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..app import App\n"
    )
    (package / "app.py").write_text("from .core import ids\nfrom aichat.core.context import x\n")
    graph = import_graph(package)
    assert graph["aichat.core.context"] == {"aichat.app"}
    assert graph["aichat.app"] == {"aichat.core.ids", "aichat.core.context"}
