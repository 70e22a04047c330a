"""The layering rules of the tree, checked from source (ast; nothing is imported or run).

Imports inside functions count: a circle hidden in a function is still a circle.  Rules:
  - no import circles between modules;
  - pipelines.core imports no stage (nothing of pipelines outside core) and not featurizers;
  - executor modules (`remote.py`, `*_remote.py`) never import driver modules (`stage.py`,
    the CLI, the stage table);
  - pipelines imports featurizers only in the transfer stage (pipelines.transfer);
  - featurizers uses pipelines.core only;
  - jobs/ are thin shells: they import the CLI and nothing else of the project.
"""
from __future__ import annotations

import ast
import os

PACKAGES = ("pipelines", "featurizers", "jobs")
DRIVER_TOPS = {"pipelines.cli", "pipelines.stages"}


def modules(root: str) -> dict:
    """dotted module name -> file path, for every .py file of the project's packages under root."""
    found = {}
    for pkg in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(root, pkg)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, name), root)[:-3].replace(os.sep, ".")
                    found[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, name)
    return found


def _resolve(module: str, is_package: bool, level: int, name) -> str:
    if not level:
        return name
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_edges(root: str) -> dict:
    """module -> set of project modules it imports (anywhere in its body)."""
    mods = modules(root)
    edges = {m: set() for m in mods}
    for m, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(m, path.endswith("__init__.py"), node.level, node.module)
                # `from pkg import name`: name is a submodule or an attribute of pkg
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != m and not m.startswith(target + "."):
                    edges[m].add(target)
    return edges


def cycles(edges: dict) -> list:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]; counter[0] += 1
        stack.append(start); on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1
                    stack.append(w); on_stack.add(w)
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
                        w = stack.pop(); on_stack.discard(w); component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


# the stages built on the pretrained-model registry: transfer learning, and scoring with a registry model
FEATURIZER_USERS = ("pipelines.transfer", "pipelines.predict")


def _is_executor(m: str) -> bool:
    leaf = m.rpartition(".")[2]
    return leaf == "remote" or leaf.endswith("_remote")


def _is_driver(m: str) -> bool:
    return m in DRIVER_TOPS or m.rpartition(".")[2] == "stage"


def violations(root: str) -> list:
    """One line per broken rule: 'a -> b: why'."""
    edges = import_edges(root)
    found = [f"circle: {' <-> '.join(c)}" for c in cycles(edges)]
    for m, targets in sorted(edges.items()):
        for t in sorted(targets):
            if m.startswith("pipelines.core") and not t.startswith("pipelines.core"):
                found.append(f"{m} -> {t}: the core imports no stage and not featurizers")
            if _is_executor(m) and _is_driver(t):
                found.append(f"{m} -> {t}: executor code imports driver code")
            if m.startswith("pipelines") and t.startswith("featurizers") and not m.startswith(FEATURIZER_USERS):
                found.append(f"{m} -> {t}: only the transfer and predict stages use featurizers")
            if m.startswith("featurizers") and t.startswith("pipelines") and not t.startswith("pipelines.core"):
                found.append(f"{m} -> {t}: featurizers use pipelines.core only")
            if m.startswith("jobs") and t != "pipelines.cli" and not t.startswith("jobs"):
                found.append(f"{m} -> {t}: a job is a thin shell over the CLI")
    return found
