"""The layers' rules, read from the source (ast): ``integrations`` ← ``flows`` ← ``bot``.

Every import counts, including those under ``TYPE_CHECKING`` and inside functions: a rule that
held only at run time would still tie the layers together for a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("integrations", "flows", "bot")  # each imports only from those before it
MAX_LINES = 500
EXEMPT = frozenset({"demo_data.py"})  # the sandbox's demo data


@cache
def modules() -> dict[str, Path]:
    """Every source module of the three layers by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def package_of(module: str) -> str:
    """The package a module belongs to (a package's ``__init__`` belongs to itself)."""
    return module if modules()[module].name == "__init__.py" else module.rpartition(".")[0]


@cache
def imports_of(module: str) -> frozenset[str]:
    """The modules of the layers that ``module`` imports, anywhere in its source."""
    path = modules()[module]
    here = package_of(module).split(".")
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            named.add(source)
            named.update(f"{source}.{alias.name}" for alias in node.names)
    known = modules()
    # "from a.b import c" names a.b, and a.b.c when c is a module; "import a.b.c" names a.b.c.
    return frozenset(n for n in named if n in known)


def imports_from(module: str, layer: str) -> list[str]:
    return sorted(m for m in imports_of(module) if m == layer or m.startswith(f"{layer}."))


def in_layer(layer: str) -> Iterator[str]:
    return (m for m in modules() if m == layer or m.startswith(f"{layer}."))


@pytest.mark.parametrize(("lower", "upper"), [("integrations", "bot"), ("integrations", "flows")])
def test_integrations_import_nothing_of_the_layers_above(lower: str, upper: str) -> None:
    found = {m: imports_from(m, upper) for m in in_layer(lower)}
    assert {m: names for m, names in found.items() if names} == {}


def test_flows_import_nothing_of_the_runtime() -> None:
    found = {m: imports_from(m, "bot") for m in in_layer("flows")}
    assert {m: names for m, names in found.items() if names} == {}


def test_the_engine_imports_no_channel_and_nothing_of_integrations() -> None:
    found = imports_from("bot.engine", "bot.channels") + imports_from("bot.engine", "integrations")
    assert found == []


def test_the_waiting_module_both_engine_and_channels_use_imports_nothing_of_the_layers() -> None:
    assert imports_of("bot.concurrency") == frozenset()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of a directed graph, one per strongly connected group (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for module in modules():
        for imported in imports_of(module):
            source, target = package_of(module), package_of(imported)
            if source != target:
                graph.setdefault(source, set()).add(target)
    assert _cycles(graph) == []


def test_no_source_module_is_over_500_lines() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in modules().values()
        if path.name not in EXEMPT
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_each_package_says_what_it_holds_and_what_it_must_not_import() -> None:
    """Two lines at least: what the package holds, and which imports it must not make."""
    silent = []
    for module, path in modules().items():
        if path.name != "__init__.py" or not module.startswith(("bot", "flows")):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if len(doc.splitlines()) < 2 or "import" not in doc:
            silent.append(module)
    assert silent == []
