"""The project's import graph, read from the source (``ast``, nothing is imported).

Two users: the Makefile, whose stage rules depend on every project file their module imports (this
module writes those lists as a make include file), and the layering test, which fails on an import
cycle or an edge that points up the layers of ``pipeline`` (core -> audio, model -> stages, eval,
authoring). Standard library only: it runs at make parse time, before any container exists.

    python -m pipeline.core.imports --makefile build/.make/deps.mk pipeline.stages.dataset pulsar2.build
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = ("pipeline", "pulsar2", "device", "docker")
# Layers of pipeline/, lowest first; a module may import its own layer and the layers below it only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("pipeline.core",),
    ("pipeline.audio", "pipeline.model"),
    ("pipeline.stages", "pipeline.eval", "pipeline.authoring"),
)


def module_path(module: str, root: Path = ROOT) -> Path | None:
    """The file of a project module (``a/b.py`` or ``a/b/__init__.py``), or None if it is not a project file."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def direct_imports(module: str, root: Path = ROOT) -> set[str]:
    """Project modules that ``module`` imports anywhere in its body (also inside functions), plus the
    packages they live in (importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py``)."""
    path = module_path(module, root)
    if path is None:
        return set()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c`: c is a submodule or a name in a.b; keep whichever is a file
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if module_path(prefix, root) is not None:
                    found.add(prefix)
    found.discard(module)
    return found


def project_modules(root: Path = ROOT) -> list[str]:
    """Every module of the project's packages (files under pipeline/, pulsar2/, device/, docker/)."""
    out = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out.append(".".join(parts))
    return out


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    return {m: direct_imports(m, root) for m in project_modules(root)}


def closure(modules: Iterable[str], root: Path = ROOT) -> set[str]:
    """The modules and everything they import, transitively."""
    seen: set[str] = set()
    todo = [m for m in modules if module_path(m, root) is not None]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(direct_imports(m, root) - seen)
    return seen


def closure_files(module: str, root: Path = ROOT) -> list[str]:
    """Files (relative to the root, sorted) of ``module`` and everything it imports."""
    return sorted(module_path(m, root).relative_to(root).as_posix() for m in closure([module], root))  # type: ignore[union-attr]


def layer_of(module: str) -> int | None:
    for level, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return level
    return None


def layer_violations(g: dict[str, set[str]]) -> list[str]:
    """Edges that break the layering: up a layer, sideways between the top-layer siblings, or out of
    ``pipeline`` into the packages built on it."""
    bad = []
    for src, targets in sorted(g.items()):
        if not src.startswith("pipeline"):
            continue
        for dst in sorted(targets):
            if not dst.startswith("pipeline"):
                bad.append(f"{src} -> {dst} (pipeline must not import {dst.split('.')[0]})")
                continue
            ls, ld = layer_of(src), layer_of(dst)
            if ls is None or ld is None:
                continue
            if ld > ls:
                bad.append(f"{src} -> {dst} (layer {ls} imports layer {ld})")
            elif ld == ls == len(LAYERS) - 1 and src.split(".")[1] != dst.split(".")[1]:
                bad.append(f"{src} -> {dst} ({src.split('.')[1]} and {dst.split('.')[1]} must not import each other)")
    return bad


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (each as a list of modules, first repeated last); empty when the graph is acyclic."""
    out: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                out.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    sys.setrecursionlimit(max(1000, 10 * len(g)))
    for m in sorted(g):
        if m not in state:
            visit(m)
    return out


def makefile_text(modules: Sequence[str], root: Path = ROOT) -> str:
    """``DEPS_<module> := <files>`` for each module: what make must treat as that stage's source."""
    lines = ["# Generated by pipeline.core.imports: the project files each stage module imports.", ""]
    for m in modules:
        if module_path(m, root) is None:
            raise SystemExit(f"error: {m}: no such project module (looked for {Path(*m.split('.'))}.py)")
        lines.append(f"DEPS_{m} := {' '.join(closure_files(m, root))}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("modules", nargs="*", help="stage modules, e.g. pipeline.stages.dataset")
    p.add_argument("--makefile", type=Path, help="write DEPS_<module> lines here (make include file)")
    p.add_argument("--check", action="store_true", help="exit 1 on an import cycle or a layering violation")
    args = p.parse_args(argv)
    if args.makefile is not None:
        text = makefile_text(args.modules)
        args.makefile.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.makefile.with_name(f".{args.makefile.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, args.makefile)
    if args.check:
        g = graph()
        problems = [" -> ".join(c) for c in cycles(g)] + layer_violations(g)
        for line in problems:
            print(f"import graph: {line}", file=sys.stderr)
        return 1 if problems else 0
    if args.makefile is None:
        for m in args.modules:
            print(f"{m}: {' '.join(closure_files(m))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
