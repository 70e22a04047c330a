"""The layering rules of the tree, checked from source (ast; nothing is imported or run).

The layers are declared once, in pipelines/core/layers.py (core, engines, services, executor modules);
stages are the packages that hold a `stage.py`.  Imports inside functions count: a circle hidden in
a function is still a circle.  Rules:
  - no import circles between modules;
  - pipelines.core imports nothing of the project outside core;
  - an engine imports core, other engines and the featurizers' model modules, never a stage;
  - a stage imports core, engines and its own package, never another stage (the stage table and
    the CLI are the only places that know every stage);
  - a function handed to Spark (mapInArrow, mapPartitions, map, pandas_udf, horovod.spark.run, ...) is
    a declared executor module's, directly, through functools.partial, or through a closure that
    calls only executor modules' functions;
  - executor modules import only executor modules and core modules that are not driver code, so
    nothing they reach submits a Spark job or is a stage, the CLI or the stage table;
  - featurizers (the pretrained-model Spark ML stages) use core and the engines; of the library only stages
    use them;
  - jobs/ are thin shells: they import the CLI and nothing else of the project.
"""
from __future__ import annotations

import ast
import os

from pipelines.core.source_graph import cycles, import_edges, imported_names, read_sources

DRIVER_TOPS = {"pipelines.cli", "pipelines.stages"}
# calls that hand a function to Spark for its tasks (or to Horovod's Spark launcher)
SPARK_CALLS = {"mapInArrow", "mapInPandas", "mapPartitions", "mapPartitionsWithIndex", "foreachPartition",
               "flatMap", "map", "pandas_udf", "udf"}


def _layers(sources: dict) -> dict:
    """The declarations of pipelines/core/layers.py, read as literals (nothing is imported)."""
    tree = ast.parse(sources["pipelines.core.layers"])
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    return found


def _under(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def stage_packages(sources: dict) -> set:
    return {m.rpartition(".")[0] for m in sources if m.startswith("pipelines.") and m.endswith(".stage")
            and m.count(".") == 2}


def _spark_handoffs(module: str, tree: ast.AST, names: dict, runners: dict) -> list:
    """(line, what is handed, [where its code is], runner) for each function handed to Spark in `module`.

    `names` maps local names to the project module they were imported from; `runners` maps
    (module, function) to the index of a parameter that function hands to Spark (found by an
    earlier pass), so a call of a runner is a hand-off too.  What is handed: a name, an attribute
    of an imported module, `functools.partial(f, ...)`, an instance of a class (its `__call__`),
    a lambda, or a function of this module.  Its code is where it is defined; a closure that only
    binds arguments (its body one call) is where that call goes.  When the handed name is a
    parameter of the enclosing function, that function is a runner (the 4th field: its index)."""
    defs = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    top = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assigned = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
            assigned[n.targets[0].id] = n.value

    def where(expr, params, depth=0) -> list:
        if depth > 5:
            return []
        if isinstance(expr, ast.Call):
            if _dotted(expr.func) in ("functools.partial", "partial") and expr.args:
                return where(expr.args[0], params, depth + 1)
            return where(expr.func, params, depth + 1)          # an instance: its class's code
        if isinstance(expr, ast.Lambda):
            return [o for c in ast.walk(expr.body) if isinstance(c, ast.Call) for o in where(c.func, params, depth + 1)]
        dotted = _dotted(expr)
        if dotted is None:
            return [f"{module}:<expression>"]
        head = dotted.split(".")[0]
        if dotted in names or head in names:
            return [names.get(dotted) or names[head]]
        if head in params:
            return [("param", params.index(head))]
        if dotted in defs:
            node = defs[dotted]
            body = [st for st in node.body if not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))]
            thin = len(body) == 1 and isinstance(body[0], (ast.Return, ast.Expr)) and \
                isinstance(getattr(body[0].value, "value", body[0].value), ast.Call)
            if thin and not isinstance(node, ast.ClassDef):
                call = body[0].value
                call = call.value if isinstance(call, (ast.YieldFrom, ast.Yield, ast.Await)) else call
                inner = [a.arg for a in node.args.args]
                return where(call.func, params + [p for p in inner if p not in params], depth + 1)
            return [module]
        if dotted in assigned:
            return where(assigned[dotted], params, depth + 1)
        return [f"{module}:{dotted}"]

    found = []

    def visit(node, params):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, params + [a.arg for a in child.args.args])
                continue
            visit(child, params)
            if not isinstance(child, ast.Call):
                continue
            name = _dotted(child.func) or ""
            leaf = child.func.attr if isinstance(child.func, ast.Attribute) else name
            handed = None
            if leaf in SPARK_CALLS and child.args and (leaf not in ("map", "flatMap") or _on_rdd(child.func)):
                handed = child.args[0]
            elif name.endswith("horovod.spark.run") and child.args:
                handed = child.args[0]
            else:
                target = names.get(name) or (module if name in top else None)
                index = runners.get((target, name.rpartition(".")[2])) if target else None
                if index is not None and len(child.args) > index:
                    handed = child.args[index]
            if handed is not None:
                found.append((child.lineno, ast.unparse(handed), where(handed, params)))

    visit(tree, [])
    return found


def _enclosing(tree: ast.AST, line: int) -> str:
    """The name of the outermost top-level function holding `line`."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.lineno <= line <= node.end_lineno:
            return node.name
    return ""


def _on_rdd(func) -> bool:
    """`.map(f)` of an RDD (sc.parallelize(...).map): not pandas' or tf.data's map."""
    target = func.value if isinstance(func, ast.Attribute) else None
    while isinstance(target, ast.Call):
        inner = target.func
        if isinstance(inner, ast.Attribute) and inner.attr in ("parallelize", "barrier", "repartition", "coalesce"):
            return True
        target = inner.value if isinstance(inner, ast.Attribute) else None
    return False


def _dotted(expr):
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Name):
        return ".".join([expr.id] + parts[::-1])
    return None


def _local_names(module: str, tree: ast.AST, sources: dict) -> dict:
    """local name -> project module, from this module's imports (`import a.b as r`, `from a import f`)."""
    known = set(sources)
    packages = {m.rpartition(".")[0] for m in sources}
    holders = imported_names(module, tree, known, module in packages)
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                for target, holder in holders.items():
                    if target.endswith("." + alias.name):
                        out[alias.asname or alias.name] = holder
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in holders:
                    out[alias.asname or alias.name] = holders[alias.name]
    return out


def violations(root: str) -> list:
    """One line per broken rule: 'a -> b: why'."""
    sources = read_sources(root)
    edges = import_edges(sources)
    layers = _layers(sources)
    engines = tuple(layers["ENGINES"])
    executors = {m for m in sources if _under(m, layers["EXECUTOR_MODULES"])}
    stages = stage_packages(sources)
    found = [f"circle: {' <-> '.join(c)}" for c in cycles(edges)]
    for name in sorted(set(layers["EXECUTOR_MODULES"]) - set(sources)):
        found.append(f"pipelines/core/layers.py: EXECUTOR_MODULES names {name}, which is not a module")

    trees = {m: ast.parse(text, m) for m, text in sources.items()}
    local = {m: _local_names(m, tree, sources) for m, tree in trees.items()}
    runners: dict = {}           # (module, function) -> the index of the parameter it hands to Spark
    for _ in range(3):           # runners of runners
        for m, tree in trees.items():
            for line, what, origins in _spark_handoffs(m, tree, local[m], runners):
                for o in origins:
                    if isinstance(o, tuple):
                        runners[(m, _enclosing(tree, line))] = o[1]
    submits = {}                 # module -> its Spark hand-offs: a module that submits Spark jobs is driver code
    for m, tree in trees.items():
        handoffs = [(line, what, [o for o in origins if not isinstance(o, tuple)])
                    for line, what, origins in _spark_handoffs(m, tree, local[m], runners)]
        if handoffs:
            submits[m] = handoffs
    drivers = DRIVER_TOPS | {f"{s}.stage" for s in stages} | set(submits)
    core_shared = {m for m in sources if m.startswith("pipelines.core")} - drivers

    def stage_of(m):
        return next((s for s in stages if m == s or m.startswith(s + ".")), None)

    for m, targets in sorted(edges.items()):
        for t in sorted(targets):
            if m.startswith("pipelines.core") and not t.startswith("pipelines.core"):
                found.append(f"{m} -> {t}: the core imports no engine, stage or featurizer")
            if _under(m, engines) and (stage_of(t) or t in DRIVER_TOPS):
                found.append(f"{m} -> {t}: an engine imports no stage")
            if stage_of(m) and stage_of(t) and stage_of(m) != stage_of(t):
                found.append(f"{m} -> {t}: a stage imports no other stage (move what both need into an engine)")
            if m in executors and t not in executors and t not in core_shared:
                why = "driver code" if t in drivers else "code not declared to run in executors (pipelines/core/layers.py)"
                found.append(f"{m} -> {t}: executor code imports {why}")
            if m.startswith("pipelines") and t.startswith("featurizers") and not stage_of(m):
                found.append(f"{m} -> {t}: below the stages the library does not use the featurizers (Spark ML "
                             "stages built on the engines)")
            if m.startswith("featurizers") and (stage_of(t) or t in DRIVER_TOPS):
                found.append(f"{m} -> {t}: featurizers use core and the engines, never a stage")
            if m.startswith("jobs") and t != "pipelines.cli" and not t.startswith("jobs"):
                found.append(f"{m} -> {t}: a job is a thin shell over the CLI")
    for m, handoffs in sorted(submits.items()):
        for line, what, origins in handoffs:
            for o in origins:
                if o not in executors and o not in core_shared:
                    found.append(f"{m}:{line}: {what} is handed to Spark but runs {o}, which is not declared "
                                 "executor code (pipelines/core/layers.py)")
    for m in sorted(executors & set(submits)):
        found.append(f"{m}: declared executor code, but it submits Spark jobs (line {submits[m][0][0]})")
    return found


if __name__ == "__main__":
    for line in violations(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))):
        print(line)
