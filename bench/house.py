#!/usr/bin/env python3
"""The shape of the code: files, largest functions, import circles, imports that run up a layer.

    python bench/house.py [--root .] [--top 10] [--check]

pyxv's packages sit in layers, lowest first (:data:`LAYERS`); a module may import
modules of its own layer and of the layers below, never above. Imports are read
from the source (``ast``), including those inside functions, since a circle
hidden in a function body is still a circle. ``--check`` exits 1 when a module
belongs to no layer, when modules import each other in a circle, or when an
import runs up a layer (tests/test_layers.py runs it).
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

# Lowest first. A name is a package or module below pyxv; a module takes the layer of the
# longest name that contains it (pyxv.features.mfcc -> features; pyxv.report.plots -> report.plots).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # report.plots draws figures from arrays and knows nothing of the recipe: any layer may draw
    ("base", ("io", "params", "device", "segments", "labels", "config", "parallel", "metrics", "report.plots")),
    ("data", ("datadir", "corpora", "features", "augment", "speaker")),
    ("model", ("nnet",)),
    ("fit", ("train", "backend", "extract", "batch")),
    ("tasks", ("emotion", "sv", "inference")),
    ("apps", ("export", "report", "launch", "cli", "bin")),
)


def layer_of(module: str) -> int | None:
    """The layer index of a pyxv module (``pyxv`` itself: None; a module in no layer: -1)."""
    if "." not in module:
        return None
    rest = module.split(".", 1)[1]
    best, found = -1, ""
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            if (rest == n or rest.startswith(n + ".")) and len(n) > len(found):
                best, found = i, n
    return best


def find_modules(root: Path) -> dict[str, Path]:
    mods = {}
    for dirpath, dirnames, filenames in os.walk(root / "pyxv"):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if f.endswith(".py"):
                p = Path(dirpath) / f
                name = ".".join(p.relative_to(root).with_suffix("").parts)
                mods[name.removesuffix(".__init__")] = p
    return mods


def import_graph(root: Path) -> tuple[dict[str, Path], dict[str, set[str]]]:
    """Modules and, per module, the pyxv modules it imports (a package's ``__init__`` counts as the package)."""
    mods = find_modules(root)

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = defaultdict(set)
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            for t in targets:
                if t == "pyxv" or t.startswith("pyxv."):
                    r = resolve(t)
                    if r and r != mod and r != "pyxv":
                        edges[mod].add(r)
    return mods, edges


def circles(mods, edges) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for start in sorted(mods):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter[0]; counter[0] += 1
        stack.append(start); on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1
                    stack.append(w); on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    group = []
                    while True:
                        w = stack.pop(); on.discard(w); group.append(w)
                        if w == v:
                            break
                    if len(group) > 1:
                        out.append(sorted(group))
    return sorted(out)


def upward_imports(edges) -> list[tuple[str, str]]:
    bad = []
    for mod, targets in sorted(edges.items()):
        lm = layer_of(mod)
        for t in sorted(targets):
            lt = layer_of(t)
            if lm is not None and lt is not None and lm >= 0 and lt > lm:
                bad.append((mod, t))
    return bad


def functions(mods) -> list[tuple[int, str]]:
    """(lines, module:qualified.name) of every function and method."""
    out = []
    for mod, path in mods.items():
        def walk(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out.append((child.end_lineno - child.lineno + 1, f"{mod}:{prefix}{child.name}"))
                    walk(child, f"{prefix}{child.name}.")
                elif isinstance(child, ast.ClassDef):
                    walk(child, f"{prefix}{child.name}.")
        walk(ast.parse(path.read_text(encoding="utf-8")), "")
    return sorted(out, reverse=True)


def run_sh_facts(root: Path) -> tuple[int, int | None]:
    """run.sh's length and the line where stage 0 begins."""
    p = root / "run.sh"
    if not p.is_file():
        return 0, None
    lines = p.read_text(encoding="utf-8").splitlines()
    # the first `if` that tests for stage 0 (Kaldi's `[ $stage -le 0 ]`, or a helper given the number)
    first = next((i + 1 for i, ln in enumerate(lines) if re.match(r"\s*if .*stage.*\b0\b", ln)), None)
    return len(lines), first


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--top", type=int, default=10, help="largest functions shown")
    ap.add_argument("--check", action="store_true", help="exit 1 on circles, upward imports or unplaced modules")
    a = ap.parse_args(argv)
    root = Path(a.root)
    mods, edges = import_graph(root)
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in mods.items()}
    print(f"pyxv: {len(mods)} modules, {sum(sizes.values())} lines; largest modules:")
    for m in sorted(sizes, key=lambda m: (-sizes[m], m))[:a.top]:
        print(f"  {sizes[m]:5d}  {m}")
    print("largest functions (lines):")
    for n, name in functions(mods)[:a.top]:
        print(f"  {n:5d}  {name}")
    total, stage0 = run_sh_facts(root)
    print(f"run.sh: {total} lines, stage 0 begins at line {stage0}")
    unplaced = sorted(m for m in mods if layer_of(m) == -1)
    cyc = circles(mods, edges)
    up = upward_imports(edges)
    print("layers (lowest first): " + "; ".join(f"{n}: {' '.join(ms)}" for n, ms in LAYERS))
    print(f"modules in no layer: {len(unplaced)}" + "".join(f"\n  {m}" for m in unplaced))
    print(f"import circles: {len(cyc)}" + "".join(f"\n  {' <-> '.join(c)}" for c in cyc))
    print(f"imports that run up a layer: {len(up)}" + "".join(
        f"\n  {m} ({LAYERS[layer_of(m)][0]}) -> {t} ({LAYERS[layer_of(t)][0]})" for m, t in up))
    return 1 if a.check and (unplaced or cyc or up) else 0


if __name__ == "__main__":
    sys.exit(main())
