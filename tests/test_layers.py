"""The package shows its plan: layers import only downwards, nothing imports in a circle.

Reads every module's imports with ``ast`` (also the ones inside functions, which Python resolves
later but which still tie the modules together); imports under ``if TYPE_CHECKING:`` are type
hints only and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

from mmdemo.settings import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "mmdemo"
# Lower layers first: a module may import its own layer and the ones before it.
LAYERS = (
    ("base", ("mmdemo", "mmdemo.settings", "mmdemo.text", "mmdemo.locks")),
    ("data", ("mmdemo.data",)),
    ("retrieval", ("mmdemo.retrieval",)),
    ("training", ("mmdemo.training",)),
    ("hub", ("mmdemo.hub",)),
    ("services", ("mmdemo.services",)),
    ("ui", ("mmdemo.ui",)),
    ("entry points", ("mmdemo.cli", "mmdemo.__main__")),
)
TABS = ("curate", "label", "finetune", "compare", "publish")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        found |= _imports(node)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        wanted = _imports(ast.parse(path.read_text(encoding="utf-8")))
        graph[name] = {m for m in wanted if m in modules and m != name}
    return graph


def _all_imports() -> dict[str, set[str]]:
    return {
        _module_name(p): _imports(ast.parse(p.read_text(encoding="utf-8")))
        for p in PACKAGE.rglob("*.py")
    }


def _layer(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "mmdemo" and module.startswith(prefix + ".")):
                return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS or move it")


def test_every_module_imports_only_its_own_layer_and_the_ones_below():
    wrong = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_in_a_circle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" → ".join(cycle) for cycle in cycles)


def test_only_the_ui_imports_gradio():
    outside = sorted(
        module
        for module, imported in _all_imports().items()
        if any(m == "gradio" or m.startswith("gradio.") for m in imported)
        and not module.startswith("mmdemo.ui")
    )
    assert not outside, outside


def test_the_folder_listing_shows_the_layers_and_one_folder_per_tab():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert {"data", "retrieval", "training", "hub", "ui"} <= packages
    for tab in TABS:
        folder = PACKAGE / "ui" / tab
        assert (folder / "layout.py").is_file() and (folder / "handlers.py").is_file(), tab
    flat_tab_modules = [
        p.name for p in (PACKAGE / "ui").glob("*.py") if p.stem.split("_")[0] in TABS
    ]
    assert not flat_tab_modules, flat_tab_modules
