"""The layout keeps its promises: no import cycle inside agent/ (the import-linter contracts in pyproject.toml
check the layers), and a module over ~450 lines says at its top why it is long."""

from __future__ import annotations

from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LONG = 450


def _cycles(package: str) -> list[list[str]]:
    graph = grimp.build_graph(package)
    adj = {
        m: {i for i in graph.find_modules_directly_imported_by(m) if i.startswith(package)}
        for m in graph.modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(adj):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycle_in_agent() -> None:
    assert _cycles("agent") == []


def test_no_import_cycle_in_the_libraries() -> None:
    assert _cycles("gb28181") == []
    assert _cycles("pipelines") == []


def test_long_modules_say_why() -> None:
    unexplained = []
    for path in sorted((ROOT / "agent").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        head = text.split('"""', 2)[1] if text.startswith('"""') else ""
        if text.count("\n") > LONG and "Long because" not in head:
            unexplained.append(str(path.relative_to(ROOT)))
    assert unexplained == [], f"over {LONG} lines without 'Long because' in the module docstring"
