"""The package's layering (DESIGN.md §2): imports point one way — deferred and type-only imports included — and no
source file outgrows one job."""

from __future__ import annotations

import ast
from pathlib import Path

import promptopt

PACKAGE = Path(promptopt.__file__).parent
LAYERS = ("core", "prompts", "models", "evaluation", "run", "optimizers", "api", "compare", "report", "cli", "testing")
"""Bottom to top: a module may import its own layer and the layers below it."""
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every promptopt module ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in out if m.startswith("promptopt.")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {m: {r for d in imported(p) if (r := resolve(d)) and r != m} for m, p in modules.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS)  # the package root re-exports the public API from every layer
    return LAYERS.index(parts[1])


def test_every_module_sits_in_a_layer() -> None:
    stray = [m for m in graph() if m != "promptopt" and m.split(".")[1] not in LAYERS]
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"


def test_imports_point_down_only() -> None:
    upward = sorted(
        f"{m} -> {d}" for m, deps in graph().items() for d in deps if layer(d) > layer(m) and d != "promptopt"
    )
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    g = graph()
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            cycles.append([*path[path.index(m) :], m])
            return
        if m in done:
            return
        for d in sorted(g[m]):
            visit(d, [*path, m])
        done.add(m)

    for m in sorted(g):
        visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_source_file_outgrows_one_job() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines (split them by job): {long}"
