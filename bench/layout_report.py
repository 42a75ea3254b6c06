"""Measure the code's shape: module sizes, long functions, import loops and
the layering rules of DESIGN.md. Prints figures; changes nothing.

    python3 -m venv var/layout-venv
    var/layout-venv/bin/pip install -r bench/requirements-layout.txt
    var/layout-venv/bin/python bench/layout_report.py [--max-lines 400] [--max-function-lines 60] [--root DIR]

The import graph comes from grimp (every ``import`` statement, those inside
functions too); the sizes from the files. Migrations are left out.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

import grimp

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("callcenter", "tasks", "asr_core")
BRIDGE = "callcenter.asr"


def _sources() -> list[Path]:
    files = []
    for package in PACKAGES:
        files += [p for p in sorted((REPO_ROOT / package).rglob("*.py")) if "migrations" not in p.parts]
    return files


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def long_functions(files: list[Path], limit: int) -> list[tuple[int, str]]:
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append((length, f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def function_level_imports(files: list[Path]) -> int:
    count = 0
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count += sum(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(node))
    return count


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(module: str) -> None:
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return components


def _edge_lines(graph: grimp.ImportGraph, importer: str, imported: str) -> list[str]:
    return [
        f"{d['line_number']}{' (in a function)' if _indented(d) else ''}"
        for d in graph.get_import_details(importer=importer, imported=imported)
    ]


def _indented(detail: dict) -> bool:
    module = detail["importer"]
    for candidate in (REPO_ROOT / (module.replace(".", "/") + ".py"), REPO_ROOT / module.replace(".", "/") / "__init__.py"):
        if candidate.exists():
            line = candidate.read_text().splitlines()[detail["line_number"] - 1]
            return line[:1].isspace()
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-lines", type=int, default=400)
    parser.add_argument("--max-function-lines", type=int, default=60)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--root", type=Path, default=None, help="another checkout to measure (e.g. a git worktree)")
    args = parser.parse_args()
    if args.root is not None:
        global REPO_ROOT
        REPO_ROOT = args.root.resolve()
    sys.path.insert(0, str(REPO_ROOT))

    files = _sources()
    sizes = sorted(((len(p.read_text().splitlines()), str(p.relative_to(REPO_ROOT))) for p in files), reverse=True)
    print(f"== largest modules (of {len(files)}; migrations left out)")
    for lines, name in sizes[: args.top]:
        print(f"  {lines:5d}  {name}{'   (over ' + str(args.max_lines) + ')' if lines > args.max_lines else ''}")
    print(f"  modules over {args.max_lines} lines: {sum(lines > args.max_lines for lines, _ in sizes)}")

    longs = long_functions(files, args.max_function_lines)
    print(f"\n== functions over {args.max_function_lines} lines: {len(longs)}")
    for length, name in longs:
        print(f"  {length:5d}  {name}")

    print(f"\n== imports made inside functions: {function_level_imports(files)}")

    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    cycles = _cycles(graph)
    print(f"\n== import loops (module cycles, imports inside functions included): {len(cycles)}")
    for component in cycles:
        members = set(component)
        print(f"  loop of {len(component)} modules:")
        for importer in component:
            for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
                print(f"    {importer} -> {imported}  line {', '.join(_edge_lines(graph, importer, imported))}")

    backend = [m for m in graph.modules if m.split(".")[0] == "callcenter"]
    tasks_imports = sorted(
        (m, t) for m in backend for t in graph.find_modules_directly_imported_by(m) if t.split(".")[0] == "tasks"
    )
    print(f"\n== imports of tasks/ from callcenter/: {len(tasks_imports)}")
    for importer, imported in tasks_imports:
        print(f"  {importer} -> {imported}")

    around = defaultdict(list)
    for module in graph.modules:
        if module.split(".")[0] in ("callcenter", "tasks") and module != BRIDGE:
            for imported in graph.find_modules_directly_imported_by(module):
                if imported.split(".")[0] == "asr_core":
                    around[module].append(imported)
    print(f"\n== modules that import asr_core around the bridge ({BRIDGE}): {len(around)}")
    for module in sorted(around):
        print(f"  {module}: {', '.join(sorted(around[module]))}")

    upward = sorted(
        (m, t)
        for m in graph.modules
        if m.split(".")[0] == "asr_core"
        for t in graph.find_modules_directly_imported_by(m)
        if t.split(".")[0] in ("callcenter", "tasks")
    )
    print(f"\n== imports of callcenter/ or tasks/ from asr_core: {len(upward)}")
    for importer, imported in upward:
        print(f"  {importer} -> {imported}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
