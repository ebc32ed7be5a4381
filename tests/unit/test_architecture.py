"""Architecture rules of confroute and its two adapters, checked on the source text.

Pure standard library (``ast``): nothing here imports confroute, torch or the frameworks, so
the whole file runs in well under a second. Each test lists every offender in its failure
message. The rules:

1. **No module-level import cycle** among the modules of ``confroute`` (``shared/confroute``),
   ``langchain_confroute`` and ``llamaindex_confroute``. An edge A -> B is an import that runs
   when A is imported: statements of the module body and of class bodies, including ``try`` /
   ``if`` / ``with`` blocks, but not ``if TYPE_CHECKING:`` blocks and not imports inside
   functions or methods. ``from p.x import y`` resolves to module ``p.x.y`` when that is a
   module, else to ``p.x``; relative imports resolve against the importer's package. Importing
   ``p.a.b`` also imports package ``p.a`` (its ``__init__``), so that edge is added too, except
   when ``p.a`` contains the importer: Python initialises a module's own packages before the
   module, so that edge is always already taken (an explicit ``from p.a import name`` of a
   non-module name still counts, since it needs ``p.a`` to have defined ``name``).
2. **No core module over** :data:`MAX_CORE_LINES` **lines** (``shared/confroute``, ``bench``
   included).
3. **Adapters and serving use the core's public API only.** In ``langchain_confroute``,
   ``llamaindex_confroute`` and ``confroute.serving``: no ``from confroute... import _x`` (or
   ``import confroute._x``) of a private core name, and no access to a private attribute
   ``<value>._name`` (one leading underscore or a mangled ``__name``; dunders are fine) unless
   ``<value>`` is the bare name ``self`` or ``cls``, or one of the module's own private
   top-level names. So ``super()._name(...)``, ``router._policy`` and ``self._router._local``
   are all flagged. Serving modules may import each other's private names (they are one
   package); "core" means every confroute module outside the importer's own package.
4. **No ``__class__`` swap** in any of the three packages: no assignment to ``<x>.__class__``
   and no ``setattr(x, "__class__", ...)`` / ``object.__setattr__(x, "__class__", ...)``.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {
    "confroute": REPO / "shared" / "confroute",
    "langchain_confroute": REPO / "langchain_confroute",
    "llamaindex_confroute": REPO / "llamaindex_confroute",
}
CORE = "confroute"
SERVING = "confroute.serving"
ADAPTERS = ("langchain_confroute", "llamaindex_confroute")
MAX_CORE_LINES = 400
TRY_NODES: tuple[type[ast.Try], ...] = (ast.Try, getattr(ast, "TryStar", ast.Try))  # 3.11+


@dataclass(frozen=True)
class Module:
    """One parsed source file of the three packages."""

    name: str
    path: Path
    is_package: bool
    source: str
    tree: ast.Module

    @property
    def package(self) -> str:
        """The package relative imports resolve against."""
        return self.name if self.is_package else self.name.rpartition(".")[0]

    @property
    def where(self) -> str:
        """The file, relative to the repository root."""
        return self.path.relative_to(REPO).as_posix()


@dataclass(frozen=True)
class Edge:
    """A module-level import of ``target`` by ``source``, at ``line``."""

    source: str
    target: str
    line: int
    statement: str


def _module_name(root_name: str, root: Path, path: Path) -> tuple[str, bool]:
    parts = [root_name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


@functools.lru_cache(maxsize=1)
def modules() -> dict[str, Module]:
    """Every ``.py`` file of the three packages, by dotted module name."""
    found: dict[str, Module] = {}
    for root_name, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            name, is_package = _module_name(root_name, root, path)
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source, filename=str(path))
            found[name] = Module(name, path, is_package, source, tree)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run on import: no functions, no ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from module_level_imports(node.body)
            yield from module_level_imports(node.orelse)
        elif isinstance(node, TRY_NODES):
            yield from module_level_imports(node.body)
            for handler in node.handlers:
                yield from module_level_imports(handler.body)
            yield from module_level_imports(node.orelse)
            yield from module_level_imports(node.finalbody)
        elif isinstance(node, (ast.ClassDef, ast.With, ast.AsyncWith)):
            yield from module_level_imports(node.body)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            yield from module_level_imports(node.body)
            yield from module_level_imports(node.orelse)


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_edges(module: Module) -> Iterator[Edge]:
    """The module-level imports of ``module`` that reach the three packages."""
    known = modules()
    own_packages = {*_ancestors(module.name), module.name}
    for node in module_level_imports(module.tree.body):
        statement = ast.unparse(node)
        targets: set[str] = set()
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                while name and name not in known:  # `import confroute.x.Thing` is not valid,
                    name = name.rpartition(".")[0]  # but a missing module is not ours anyway
                if name:
                    targets.add(name)
        else:
            base = _absolute(module, node)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if candidate in known:
                    targets.add(candidate)
                elif base in known:
                    targets.add(base)
        implied = {a for t in targets for a in _ancestors(t) if a in known}
        for target in sorted(targets | (implied - own_packages)):
            if target != module.name:
                yield Edge(module.name, target, node.lineno, statement)


def import_graph() -> dict[str, dict[str, Edge]]:
    """Module -> imported module -> the first statement that imports it."""
    graph: dict[str, dict[str, Edge]] = {}
    for name, module in modules().items():
        targets = graph.setdefault(name, {})
        for edge in import_edges(module):
            targets.setdefault(edge.target, edge)
    return graph


def strongly_connected(graph: dict[str, dict[str, Edge]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def shortest_cycle(graph: dict[str, dict[str, Edge]], component: list[str]) -> list[Edge]:
    """A shortest cycle through the first module of ``component``, as its import edges."""
    start, members = component[0], set(component)
    previous: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target, edge in sorted(graph[node].items()):
                if target not in members or target in previous:
                    continue
                previous[target] = edge
                if target == start:
                    chain: list[Edge] = []
                    current = start
                    while True:
                        chain.append(previous[current])
                        current = previous[current].source
                        if current == start:
                            return chain[::-1]
                following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in component {component}")  # Tarjan guarantees one


def describe_cycle(chain: list[Edge]) -> str:
    """``a -> b -> a``, then each import statement with its file and line."""
    known = modules()
    names = [edge.source for edge in chain] + [chain[0].source]
    lines = [" -> ".join(names)]
    for edge in chain:
        where = known[edge.source].where
        lines.append(f"    {where}:{edge.line}: {edge.statement}  [{edge.target}]")
    return "\n".join(lines)


def test_no_module_level_import_cycle() -> None:
    graph = import_graph()
    cycles = [shortest_cycle(graph, c) for c in strongly_connected(graph)]
    report = "\n".join(describe_cycle(chain) for chain in cycles)
    assert not cycles, f"{len(cycles)} module-level import cycle(s):\n{report}"


def test_no_core_module_over_the_line_limit() -> None:
    sizes = {
        m.where: len(m.source.splitlines())
        for m in modules().values()
        if m.name == CORE or m.name.startswith(f"{CORE}.")
    }
    offenders = sorted(((n, p) for p, n in sizes.items() if n > MAX_CORE_LINES), reverse=True)
    listing = "\n".join(f"    {path}: {lines} lines" for lines, path in offenders)
    assert not offenders, (
        f"{len(offenders)} core module(s) over {MAX_CORE_LINES} lines; split each by concept:\n"
        f"{listing}"
    )


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_private_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return {name for name in names if _is_private(name)}


def _boundary_modules() -> list[Module]:
    return [
        m
        for m in modules().values()
        if m.name.split(".")[0] in ADAPTERS or m.name == SERVING or m.name.startswith(SERVING)
    ]


def _is_foreign_core(importer: Module, imported: str) -> bool:
    if not (imported == CORE or imported.startswith(f"{CORE}.")):
        return False
    own = SERVING if importer.name.startswith(SERVING) else importer.name.split(".")[0]
    return not (imported == own or imported.startswith(f"{own}."))


FRAMEWORK_TEMPLATE_METHODS = frozenset({"_generate_with_cache", "_agenerate_with_cache"})
"""LangChain's own ``BaseChatModel`` template methods, reached through ``super()`` by the
LangChain adapter: its streamed ``invoke`` calls ``_stream`` without the run manager, and these
are the only place to hand it over. They are LangChain's, not confroute's core."""


def _is_framework_super_call(node: ast.Attribute) -> bool:
    value = node.value
    return (
        node.attr in FRAMEWORK_TEMPLATE_METHODS
        and isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "super"
    )


def private_uses(module: Module) -> Iterator[str]:
    """Each private core import and private attribute access in ``module``, one line each."""
    allowed = {"self", "cls", *_own_private_names(module.tree)}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            if not _is_foreign_core(module, base):
                continue
            hidden = [a.name for a in node.names if _is_private(a.name)]
            hidden += [part for part in base.split(".") if _is_private(part)]
            if hidden:
                yield f"{module.where}:{node.lineno}: {ast.unparse(node)}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if _is_foreign_core(module, alias.name) and any(map(_is_private, parts)):
                    yield f"{module.where}:{node.lineno}: {ast.unparse(node)}"
        elif isinstance(node, ast.Attribute) and _is_private(node.attr):
            value = node.value
            if isinstance(value, ast.Name) and value.id in allowed:
                continue
            if module.name.startswith("langchain_confroute") and _is_framework_super_call(node):
                continue
            yield f"{module.where}:{node.lineno}: {ast.unparse(node)}"


def test_adapters_and_serving_use_only_the_public_core() -> None:
    offenders = [line for m in _boundary_modules() for line in private_uses(m)]
    listing = "\n".join(f"    {line}" for line in offenders)
    assert not offenders, (
        f"{len(offenders)} use(s) of private core names or attributes outside self/cls in the "
        f"adapters and confroute.serving; use a public API or a declared hook instead:\n{listing}"
    )


def _is_class_swap(node: ast.AST) -> bool:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    elif isinstance(node, ast.Call) and len(node.args) >= 2:
        func, key = node.func, node.args[1]
        named = (isinstance(func, ast.Name) and func.id == "setattr") or (
            isinstance(func, ast.Attribute) and func.attr == "__setattr__"
        )
        return named and isinstance(key, ast.Constant) and key.value == "__class__"
    return any(
        isinstance(n, ast.Attribute) and n.attr == "__class__"
        for target in targets
        for n in ast.walk(target)
        if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
    )


def test_no_module_swaps_class() -> None:
    offenders = [
        f"{m.where}:{getattr(node, 'lineno', '?')}: {ast.unparse(node)}"
        for m in modules().values()
        for node in ast.walk(m.tree)
        if _is_class_swap(node)
    ]
    listing = "\n".join(f"    {line}" for line in offenders)
    assert not offenders, (
        f"{len(offenders)} __class__ swap(s); compose or wrap the object instead:\n{listing}"
    )


def test_the_rules_see_every_package() -> None:
    """Guards the tests above against passing because they found no files."""
    names = modules()
    for package in PACKAGES:
        assert package in names and names[package].is_package
    assert {"confroute.router", "confroute.serving.server", "confroute.bench.runner"} <= set(names)
    assert import_graph()["confroute.router"], "no imports found in confroute.router"
