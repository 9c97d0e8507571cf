"""The package's shape, checked on its source: code outside fastmnist/backends/ uses the backend
object it was given (no probing with getattr/hasattr, no branching on a backend's name), and the
package's modules import each other without a cycle."""
import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastmnist"
BACKEND_NAMES = ("numpy", "numba", "cupy", "cupy-sim")


def _sources(outside_backends: bool = False):
    for path in sorted(PACKAGE.rglob("*.py")):
        if outside_backends and "backends" in path.relative_to(PACKAGE).parts:
            continue
        yield path, path.read_text()


def _probes_and_name_checks(source: str) -> list[str]:
    """getattr/hasattr on something named like a backend, and comparisons with a backend's name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            target = ast.unparse(node.args[0]) if node.args else ""
            if re.search(r"(^|\.)(be|backend|module)$", target):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Compare):
            for value in [node.left, *node.comparators]:
                names = [value] if isinstance(value, ast.Constant) else list(getattr(value, "elts", []))
                if any(isinstance(v, ast.Constant) and v.value in BACKEND_NAMES for v in names):
                    found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_checks_find_what_they_look_for():
    bad = 'x = getattr(be, "adam_update_many", None)\nif name == "cupy":\n    pass\nif hasattr(self.model.backend, "f"): pass\n'
    assert len(_probes_and_name_checks(bad)) == 3
    assert _probes_and_name_checks('x = getattr(optimizer, "beta1", 0.0)\nif kind == "adam": pass\n') == []


def test_no_backend_probing_or_name_branching_outside_the_backends():
    problems = {str(path.relative_to(PACKAGE)): found for path, source in _sources(outside_backends=True)
                if (found := _probes_and_name_checks(source))}
    assert problems == {}, problems


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(path: Path, modules: set) -> set:
    """The package modules ``path`` imports when it is imported (top-level statements only: an
    import inside a function runs later and cannot make a cycle at import time)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in modules and m != name}


def test_no_import_cycle_inside_the_package():
    paths = {_module_name(p): p for p, _ in _sources()}
    graph = {name: _module_level_imports(path, set(paths)) for name, path in paths.items()}
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], cycles
