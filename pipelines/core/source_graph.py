"""The library's own modules and the imports between them, read from source (ast; nothing is imported).

Two users: the layering rules (tests/import_rules.py: circles, stages importing stages, executor
code importing driver code) and stage keys (core/stage_cache.py: a stage's key digests the code
its output depends on, which is the modules its package reaches by imports).  Imports inside
functions count: a stage that imports the training engine inside a function still depends on it.

Sources come from the package folders, or from the zip that `spark-submit --py-files` put on the
path (the same modules and the same digests either way).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import os
import zipfile
from typing import Dict, Iterable, Optional, Set

PACKAGES = ("pipelines", "featurizers", "jobs")


def _module_name(rel_path: str) -> str:
    dotted = rel_path[:-3].replace("/", ".").replace(os.sep, ".")
    return dotted[: -len(".__init__")] if dotted.endswith(".__init__") else dotted


def read_sources(root: Optional[str] = None, packages: Iterable[str] = PACKAGES) -> Dict[str, str]:
    """dotted module name -> source text for every .py file of `packages`.

    root: a project folder; None reads the installed `pipelines` (its folder or its zip)."""
    wanted = tuple(p + "/" for p in packages)
    if root is None:
        import pipelines
        archive = getattr(getattr(pipelines, "__loader__", None), "archive", None)
        if archive:
            with zipfile.ZipFile(archive) as zf:
                return {_module_name(n): zf.read(n).decode("utf-8") for n in zf.namelist()
                        if n.startswith(wanted) and n.endswith(".py")}
        root = os.path.dirname(os.path.dirname(os.path.abspath(pipelines.__file__)))
    found = {}
    for package in packages:
        for folder, dirs, files in os.walk(os.path.join(root, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    with open(path, encoding="utf-8") as f:
                        found[_module_name(os.path.relpath(path, root))] = f.read()
    return found


def _resolve(module: str, is_package: bool, level: int, name) -> str:
    if not level:
        return name
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imported_names(module: str, tree: ast.AST, known: Iterable[str], is_package: bool = False) -> Dict[str, str]:
    """Each import statement's targets as project modules: {the dotted name imported: the module it is in}.

    `from pkg import name` names a submodule of pkg or an attribute of pkg; either way the module
    returned is the innermost project module that holds it."""
    known = set(known)
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            holder = target
            while holder and holder not in known:
                holder = holder.rpartition(".")[0]
            if holder and holder != module and not module.startswith(holder + "."):
                out[target] = holder
    return out


def import_edges(sources: Dict[str, str]) -> Dict[str, Set[str]]:
    """module -> the project modules it imports (anywhere in its body)."""
    edges = {}
    packages = {m.rpartition(".")[0] for m in sources}
    for module, text in sources.items():
        edges[module] = set(imported_names(module, ast.parse(text, module), sources, module in packages).values())
    return edges


def reachable(edges: Dict[str, Set[str]], starts: Iterable[str]) -> Set[str]:
    """The modules `starts` reach by imports, themselves included."""
    seen, todo = set(), list(starts)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(edges.get(m, ()))
    return seen


def cycles(edges: Dict[str, Set[str]]) -> list:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def code_digest(text: str, name: str = "<module>") -> str:
    """A digest of what a module does: its syntax tree without comments, docstrings or layout, so a
    fixed comment or docstring changes no digest and reruns no stage."""
    tree = _without_docstrings(ast.parse(text, name))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def installed_graph() -> tuple:
    """(sources, edges) of the installed library, once per process (the source does not change under a
    running command)."""
    sources = read_sources(None, ("pipelines", "featurizers"))
    return sources, import_edges(sources)


def package_code_digest(package: str) -> str:
    """A digest of every module the modules of `package` reach by imports (engines and core included),
    each by `code_digest`: what a stage's output can depend on of the library's code."""
    sources, edges = installed_graph()
    own = [m for m in sources if m == package or m.startswith(package + ".")]
    if not own:
        raise ValueError(f"{package}: no such package in the library")
    digest = hashlib.sha256()
    for module in sorted(reachable(edges, own)):
        digest.update(module.encode() + b"\0" + _cached_digest(module, sources[module]).encode())
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=None)
def _cached_digest(module: str, text: str) -> str:
    return code_digest(text, module)
