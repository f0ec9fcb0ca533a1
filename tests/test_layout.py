"""The package's layers: module-level imports form no cycle and point one way (docs/design.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tensormagic"

# What each layer may import at module level (imports inside functions are the lazy ones
# docs/design.md names).  ``api``, ``info`` and ``cli`` are the top: they may import any layer.
ALLOWED = {
    "model": {"model", "engine._hotpath"},
    "engine": {"engine", "model"},
    "log": {"log", "model", "views", "engine._hotpath"},  # export renders the HTML report
    "views": {"views", "model"},
    "diagnostics": {"diagnostics", "model", "engine", "views"},
    "ipython": {"ipython", "api", "info", "model", "engine", "views", "log", "diagnostics"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The tensormagic modules one ``from ... import ...`` statement loads."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("tensormagic"):
        return []
    found = [target]
    for alias in node.names:  # ``from . import identity`` loads the submodule
        candidate = f"{target}.{alias.name}"
        if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists():
            found.append(candidate)
    return found


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Statements that run at import, ``if TYPE_CHECKING:`` blocks and functions left out."""
    out: list[ast.stmt] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                stack.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                stack.extend(handler.body)
        elif isinstance(node, ast.ClassDef):
            stack.extend(node.body)
    return out


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        is_package = path.name == "__init__.py"
        deps: set[str] = set()
        for node in _top_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                deps.update(_resolve(name, is_package, node))
            else:
                deps.update(a.name for a in node.names if a.name.startswith("tensormagic"))
        deps.discard(name)
        graph[name] = {d for d in deps if d != "tensormagic"}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if state.get(dep) is None and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def test_module_level_imports_have_no_cycle() -> None:
    """No chain of module-level imports leads from a module back to itself."""
    assert _find_cycle(import_graph()) is None, " -> ".join(_find_cycle(import_graph()) or [])


def test_cycle_finder_sees_a_planted_cycle() -> None:
    """The walk reports a cycle when one is there (so the test above can fail)."""
    graph = import_graph()
    graph["tensormagic.model.events"].add("tensormagic.model.recording")
    assert _find_cycle(graph) is not None


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_layers_import_only_the_layers_below() -> None:
    """Each layer imports only what ALLOWED lists for it: engine never views, log, diagnostics or ipython."""
    wrong = []
    for module, deps in import_graph().items():
        allowed = ALLOWED.get(_layer(module))
        if allowed is None:
            continue
        for dep in deps:
            rest = dep.split(".", 1)[1] if "." in dep else ""
            if not any(rest == a or rest.startswith(a + ".") for a in allowed):
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "\n".join(sorted(wrong))


def test_import_tensormagic_loads_no_ipython_widgets_or_views() -> None:
    """``import tensormagic`` (and its public API's first use) stays out of IPython, ipywidgets and the views."""
    code = (
        "import sys, tensormagic\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipywidgets')\n"
        "         or m.startswith('tensormagic.views') or m.startswith('tensormagic.ipython')]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
