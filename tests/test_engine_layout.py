"""The engine's layout rules, checked on its source: standalone, no cycles, no reach-ins, small modules.

These are the rules of docs/engine.md ("Layout"); a change that breaks one fails here
with the module and line to fix.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "lightning_prune" / "engine"
PACKAGE = "lightning_prune.engine"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    rel = path.relative_to(ENGINE.parent.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _top_level_imports(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """``(line, imported module, names)`` for imports that run when the module is imported."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    out = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                out.extend((node.lineno, a.name, []) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                out.append((node.lineno, _resolve(module, is_package, node), [a.name for a in node.names]))
            elif isinstance(node, ast.If | ast.Try):
                for part in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                    visit(part)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return out


def _all_imports(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """Every import in the file, including the ones inside functions."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.append((node.lineno, _resolve(module, is_package, node), [a.name for a in node.names]))
    return out


def test_every_engine_module_is_at_most_400_lines() -> None:
    too_long = {name: len(p.read_text().splitlines()) for name, p in _sources().items()}
    too_long = {k: v for k, v in too_long.items() if v > MAX_LINES}
    assert not too_long, f"split these modules (over {MAX_LINES} lines): {too_long}"


def test_no_private_name_is_imported_from_another_module() -> None:
    sources = _sources()
    bad = []
    for name, path in sources.items():
        for line, target, names in _all_imports(path, name):
            if not target.startswith(PACKAGE) or target == name:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                bad.append(f"{path.relative_to(ENGINE)}:{line} imports {private} from {target}")
    assert not bad, "make these names public or move the code that needs them:\n" + "\n".join(bad)


def _import_graph() -> dict[str, set[str]]:
    sources = _sources()
    graph: dict[str, set[str]] = {name: set() for name in sources}
    for name, path in sources.items():
        for _, target, names in _top_level_imports(path, name):
            if not target.startswith(PACKAGE):
                continue
            # ``from .pkg import mod`` imports the submodule ``pkg.mod`` when there is one
            hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in sources]
            graph[name].update(hits or ([target] if target in sources else []))
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, ignoring package ``__init__`` re-exports."""
    packages = {n for n, p in _sources().items() if p.name == "__init__.py"}
    edges = {n: {t for t in ts if t not in packages} for n, ts in graph.items() if n not in packages}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            strongconnect(v)
    return found


def test_engine_modules_import_without_cycles() -> None:
    cycles = _cycles(_import_graph())
    assert not cycles, f"import cycles between engine modules: {cycles}"


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"lightning_prune.engine.x": {"lightning_prune.engine.y"},
             "lightning_prune.engine.y": {"lightning_prune.engine.x"}}
    assert _cycles(graph) == [["lightning_prune.engine.x", "lightning_prune.engine.y"]]


def _type_checking_lines(path: Path) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def test_no_lazy_import_hides_a_cycle() -> None:
    """An import inside a function is allowed only for optional dependencies, never for engine modules."""
    sources = _sources()
    bad = []
    for name, path in sources.items():
        top = {(line, target) for line, target, _ in _top_level_imports(path, name)}
        typing_only = _type_checking_lines(path)
        for line, target, _ in _all_imports(path, name):
            if target.startswith(PACKAGE) and (line, target) not in top and line not in typing_only:
                bad.append(f"{path.relative_to(ENGINE)}:{line} imports {target} inside a function")
    assert not bad, "import engine modules at the top of the file:\n" + "\n".join(bad)


@pytest.mark.parametrize("forbidden", ["lightning", "pytorch_lightning", "torch_pruning"])
def test_the_engine_never_imports(forbidden: str) -> None:
    code = (f"import sys; import {PACKAGE} as tp; "
            f"import {PACKAGE}.importance, {PACKAGE}.pruner, {PACKAGE}.utils; "
            f"bad = [m for m in sys.modules if m == {forbidden!r} or m.startswith({forbidden!r} + '.')]; "
            f"print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
