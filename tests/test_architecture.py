"""The package's dependency direction, checked on the source: cli -> commands -> capability packages ->
inference and core records. A cycle between packages, or a package reaching into another's private
names, is where a concept starts living twice."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "yolodefect"
CAPABILITIES = ("data", "evaluation", "exporting", "stream", "compare", "anomaly")
# What the inference core may build on: the records every layer shares.
CORE = ("inference", "errors", "detections", "adapters", "jpeg", "progress")


def _unit(module: str) -> str:
    """``yolodefect.stream.sinks.file`` -> ``stream``; top-level modules are their own unit."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports() -> list[tuple[str, str, str]]:
    """(importing module, imported module, imported name) for every yolodefect import, function-level ones too."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "yolodefect":
                found += [(module, node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [(module, alias.name, "") for alias in node.names if alias.name.startswith("yolodefect.")]
    return found


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for source, target, _ in _imports():
        if _unit(source) != _unit(target) and _unit(target) != "yolodefect":  # __version__
            edges[_unit(source)].add(_unit(target))
    return edges


def test_no_import_cycles_between_packages() -> None:
    edges = _graph()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if reaches(b, a)})
    assert cycles == [], f"packages that import each other (directly or through others): {cycles}"


def test_no_package_imports_another_packages_private_names() -> None:
    private = [f"{source} imports {target}.{name}" for source, target, name in _imports()
               if name.startswith("_") and not name.startswith("__") and _unit(source) != _unit(target)]
    assert private == []


def test_the_inference_core_depends_only_on_core_records() -> None:
    assert _graph().get("inference", set()) <= set(CORE)


def test_capability_packages_run_models_through_the_inference_core() -> None:
    edges = _graph()
    # The station and the exporter share the model file, runner and rules through inference/, not each other;
    # data generators are data, not stream.
    assert "stream" not in edges.get("exporting", set())
    assert "evaluation" not in edges.get("stream", set())
    assert "stream" not in edges.get("data", set())
