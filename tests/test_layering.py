"""The modules of jaxdyn form layers: no import cycle, and no jaxdyn import hidden in a function.

An import inside a function is how a cycle hides (the module imports at call time,
when both are loaded), so the graph is read from the source with ``ast`` rather than
from ``sys.modules``. Edges go to the module an import names: ``from jaxdyn.x import y``
is ``jaxdyn.x.y`` when that is a module and ``jaxdyn.x`` otherwise. Importing a submodule
also runs its packages' ``__init__``: from outside a subpackage that is an edge to it too
(``jaxdyn.results`` importing ``jaxdyn.report.explore`` runs ``jaxdyn/report/__init__.py``
first), from inside it is none (the package is already being imported). The root
``jaxdyn`` is outside no module, so its ``__init__`` is the package's API, never a
dependency: ``from jaxdyn import extension`` inside ``jaxdyn.config`` reads the submodule,
whatever the root ``__init__`` imports.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jaxdyn"

# Function-local imports of jaxdyn modules that stay, as (importer, imported): each says
# why. Optional heavy libraries (tensorboardX, ...) are not jaxdyn modules and need no entry.
ALLOWED_LOCAL: set[tuple[str, str]] = set()  # (importer, imported): each needs a comment saying why


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """``{dotted name: file}`` of every module under ``root`` (a package ``__init__`` by its package's name)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _targets(node, importer: str, is_package: bool, modules) -> list[str]:
    """The jaxdyn modules one import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "jaxdyn"]
    base = node.module or ""
    if node.level:  # relative: from the importer's package
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != "jaxdyn":
        return []
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
    if len(found) < len(node.names):  # some names are attributes of ``base`` itself
        found.append(base)
    return found


def _packages_entered(importer: str, target: str) -> list[str]:
    """The subpackages whose ``__init__`` importing ``target`` runs, from outside them."""
    parts = target.split(".")
    packages = (".".join(parts[:i]) for i in range(2, len(parts)))
    return [p for p in packages if importer != p and not importer.startswith(p + ".")]


def imports(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """The module-level import graph ``{module: {imported module}}``, and every import of a jaxdyn
    module made inside a function as ``(importer, imported, line)``."""
    graph, local = {name: set() for name in modules}, []

    def visit(node, name, is_package, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(child, name, is_package, modules):
                    if target == name:
                        continue
                    if in_function:
                        local.append((name, target, child.lineno))
                    else:
                        graph[name] |= {target, *_packages_entered(name, target)}
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, name, is_package, inner)

    for name, path in modules.items():
        visit(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", False)
    return graph, local


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None when it has none (depth-first search)."""
    state, stack = {}, []  # state: 1 on the current path, 2 done

    def walk(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_find_cycle_on_small_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond is no cycle
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"a"}, "a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_import_resolution(tmp_path):
    pkg = tmp_path / "jaxdyn"
    (pkg / "data").mkdir(parents=True)
    files = {
        "__init__.py": "from jaxdyn.study import run\n",
        "study.py": "from jaxdyn import data\nfrom jaxdyn.data import load\ndef f():\n    import jaxdyn.report\n",
        "report.py": "from jaxdyn import run\nfrom jaxdyn.data.mnist import make\n",
        "data/__init__.py": "from .mnist import make\ndef load(): pass\n",
        "data/mnist.py": "from jaxdyn.data import load\nfrom jaxdyn.data.mnist import make as again\nimport numpy\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph, local = imports(module_names(pkg))
    assert graph == {"jaxdyn": {"jaxdyn.study"}, "jaxdyn.study": {"jaxdyn.data"}, "jaxdyn.report": {"jaxdyn", "jaxdyn.data.mnist", "jaxdyn.data"},
                     "jaxdyn.data": {"jaxdyn.data.mnist"}, "jaxdyn.data.mnist": {"jaxdyn.data"}}
    assert local == [("jaxdyn.study", "jaxdyn.report", 4)]
    assert find_cycle(graph) == ["jaxdyn.data", "jaxdyn.data.mnist", "jaxdyn.data"]


def test_no_import_cycle():
    graph, _ = imports(module_names())
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_function_local_jaxdyn_imports():
    _, local = imports(module_names())
    hidden = [f"{a} imports {b} inside a function (line {line})" for a, b, line in local if (a, b) not in ALLOWED_LOCAL]
    assert not hidden, "\n".join(hidden)
    stale = set(ALLOWED_LOCAL) - {(a, b) for a, b, _ in local}
    assert not stale, f"allowed but no longer made, drop them from ALLOWED_LOCAL: {sorted(stale)}"
