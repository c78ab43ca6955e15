"""The house stays one-directional (issue 22 item 8): no import cycle among flipq's modules,
counting imports inside functions too, and no stage module importing the pipeline that calls it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", "tests", "benchmarks", "build", "docs", ".ci", "boards"}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if SKIP & set(rel.parts):
            continue
        name = ".".join(("flipq",) + rel.with_suffix("").parts).removesuffix(".__init__")
        mods[name] = path
    return mods


def _imports(path: Path, mods: dict) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flipq"):
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods}
            if node.module in mods:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in mods}
    return out


def _cycles(graph: dict) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles_among_flipq_modules():
    mods = _modules()
    assert "flipq.hls.lower" in mods and "flipq.pipeline" in mods
    graph = {m: _imports(p, mods) - {m} for m, p in mods.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_stage_imports_the_pipeline():
    mods = _modules()
    for name in ("flipq.quant.stage", "flipq.hls.stage", "flipq.overlays.flow"):
        assert "flipq.pipeline" not in _imports(mods[name], mods), name


# The quantization stage stays below the hardware stages: the bits-and-folding search, which
# costs hardware, sits above both (flipq.dse). One import up remains, named here: the export
# stage runs its QONNX file through the hardware stage's preparation to execute it channels-last.
QUANT_UP = {"flipq.quant.stage": {"flipq.hls.prepare"}}


def test_the_quantization_stage_does_not_reach_up_into_the_hardware_stages():
    mods = _modules()
    up = ("flipq.hls", "flipq.overlays", "flipq.boards", "flipq.dse", "flipq.pipeline", "flipq.cli")
    for name, path in mods.items():
        if not name.startswith("flipq.quant"):
            continue
        reached = {m for m in _imports(path, mods) if m.startswith(up)} - QUANT_UP.get(name, set())
        assert not reached, f"{name} imports {sorted(reached)}"
    assert "flipq.quant.search" in mods and "flipq.dse" in mods
    assert "flipq.dse" not in {m for name, p in mods.items() if name.startswith("flipq.quant") for m in _imports(p, mods)}
