"""The layout of `zoo/` (docs/index.md draws it): imports point one way, no import cycles, each job in
one home, modules and classes small enough to read. Read from the source with `ast`, so an import
inside a function counts as much as one at the top."""
import ast
from pathlib import Path
from typing import Dict, Set

import pytest

ZOO = Path(__file__).resolve().parent.parent / "zoo"
MAX_MODULE_LINES = 450
MAX_CLASS_LINES = 200  # code lines: the class docstring (its argument list) is not counted


def module_name(path: Path) -> str:
    parts = path.relative_to(ZOO.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """module -> the zoo modules it imports anywhere in its file (relative imports resolved; `from pkg
    import name` counts as importing `pkg.name` when that is a module, else `pkg`)."""
    modules = {module_name(p): p for p in ZOO.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # zoo.layers.Linear -> zoo.layers
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: Dict[str, Set[str]]):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


GRAPH = import_graph()


def test_the_graph_sees_imports_inside_functions():
    assert "zoo.training.finetune" in GRAPH["zoo.cli"]  # imported inside cmd_finetune only
    assert {"zoo.registry", "zoo.weights.adapt"} <= GRAPH["zoo.factory"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# module (or package) -> the zoo modules it may import, besides its own package (docs/index.md's map)
ALLOWED = {
    "zoo.helpers": (), "zoo.version": (), "zoo.complexity": (), "zoo.config": (), "zoo.common": (),
    "zoo.specs": ("zoo.helpers",),
    "zoo.layers": ("zoo.helpers",),
    "zoo.models": ("zoo.layers", "zoo.specs", "zoo.helpers"),
    "zoo.registry": ("zoo.specs", "zoo.helpers"),
    "zoo.weights": ("zoo.specs", "zoo.helpers", "zoo.version", "zoo.complexity"),
    "zoo.factory": ("zoo.registry", "zoo.weights", "zoo.models", "zoo.specs", "zoo.helpers", "zoo.complexity"),
    "zoo.data": ("zoo.helpers",),
    "zoo.env": ("zoo.layers", "zoo.version"),
    # the jobs reach models through zoo.create / zoo.save_pretrained and the registry's lookups only
    "zoo.training": ("zoo.factory", "zoo.registry", "zoo.common", "zoo.config", "zoo.data"),
    "zoo.eval": ("zoo.factory", "zoo.common", "zoo.config", "zoo.data", "zoo.layers"),
    "zoo.predict": ("zoo.factory", "zoo.common", "zoo.data"),
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    for module, edges in GRAPH.items():
        if within(module, package):
            stray = sorted(e for e in edges if not within(e, package, *ALLOWED[package]))
            assert not stray, f"{module} imports {stray}"


def test_the_factory_is_the_one_library_module_joining_registry_and_weights():
    joining = [m for m, edges in GRAPH.items()
               if any(within(e, "zoo.registry") for e in edges) and any(within(e, "zoo.weights") for e in edges)]
    assert sorted(joining) == ["zoo.cli", "zoo.factory"]  # the CLI sits above everything: arguments in, calls out


def test_every_module_has_a_rule_or_sits_on_top():
    # entry points, which may use anything: the package, the CLI (its image commands in cli_images), the quickstart
    on_top = {"zoo", "zoo.__main__", "zoo.cli", "zoo.cli_images", "zoo.quickstart"}
    ruled = [m for m in GRAPH if any(within(m, p) for p in ALLOWED)]
    assert sorted(set(GRAPH) - set(ruled)) == sorted(on_top)


def test_modules_and_classes_are_small_enough_to_read():
    for path in ZOO.rglob("*.py"):
        source = path.read_text()
        assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path}: {len(source.splitlines())} lines"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                doc = node.body[0] if ast.get_docstring(node) is not None else None
                lines = node.end_lineno - node.lineno + 1 - ((doc.end_lineno - doc.lineno + 1) if doc else 0)
                assert lines <= MAX_CLASS_LINES, f"{path}: class {node.name} has {lines} lines of code"


def test_cuda_tests_exist_and_are_selected_by_their_marker():
    """The CUDA tests are in the tree, all marked `cuda`, and the default run deselects that marker (CPU-only
    CI never counts them as passed); `pytest -m cuda` selects them (benchmarks/gpu_check.sh)."""
    import tomllib

    source = (ZOO.parent / "tests" / "test_cuda.py").read_text()
    tree = ast.parse(source)
    tests = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    assert "pytestmark = pytest.mark.cuda" in source and len(tests) >= 5
    for needed in ("parity", "bf16", "masking", "resume", "nccl"):
        assert any(needed in t for t in tests), needed
    options = tomllib.loads((ZOO.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "-m 'not cuda'" in options["addopts"] and any(m.startswith("cuda:") for m in options["markers"])
    assert "-m cuda" in (ZOO.parent / "benchmarks" / "gpu_check.sh").read_text()
