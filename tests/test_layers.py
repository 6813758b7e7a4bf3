"""The shape of the engine, checked on its source: layers, cycles, method modules, file sizes.

The folder listing of ``src/probseg`` is its layering, bottom to top (see
docs/architecture.md, "Layers and folders"). These checks parse every module
with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import probseg
from probseg import methods

SRC = Path(probseg.__file__).resolve().parent
LAYERS = ["core", "io", "nn", "partition", "evaluation", "consensus", "engine", "methods", "proofreading", "cli"]
SECTIONS = ["# -- configs", "# -- the model", "# -- network and loss", "# -- one draw", "# -- one partition",
            "# -- optional hooks", "METHOD = MethodInfo("]


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, top_level_only: bool) -> list[tuple[int, str]]:
    """``(line, module)`` of every probseg module ``path`` imports (``from a import b`` also names ``a.b``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("probseg"):
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("probseg")]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_the_top_level_is_the_layers():
    entries = sorted(p.name for p in SRC.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 12, entries
    assert set(LAYERS) <= set(entries)


def test_no_import_goes_up_a_layer():
    upward = []
    for name, path in _modules().items():
        mine = _layer(name)
        if mine is None:
            continue
        for line, target in _imports(path, top_level_only=False):
            theirs = _layer(target)
            if theirs is not None and LAYERS.index(theirs) > LAYERS.index(mine):
                upward.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    modules = _modules()
    edges = {m: {t for _, t in _imports(p, top_level_only=False) if t in modules and t != m} for m, p in modules.items()}
    state, cycles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_no_module_is_above_600_lines():
    roots = [SRC, SRC.parent / "napari_probseg"]
    long = {str(p): n for root in roots for p in root.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_no_method_name_outside_the_methods():
    names = methods.available()
    pattern = re.compile("|".join(re.escape(n) for n in names + [n.replace("-", "_") for n in names]), re.I)
    roots = [SRC, SRC.parent / "napari_probseg"]
    found = [f"{p}:{i}" for root in roots for p in root.rglob("*.py") if "methods" not in p.relative_to(root).parts
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found


@pytest.mark.parametrize("name", methods.BUILTIN)
def test_every_method_has_one_shape(name):
    path = SRC.parent / Path(*methods.BUILTIN[name].split(".")).with_suffix(".py")
    text = path.read_text()
    assert len(text.splitlines()) <= 300
    where = [text.find(section) for section in SECTIONS]
    assert -1 not in where and where == sorted(where), dict(zip(SECTIONS, where))
    cls = methods.get(name).model_class
    engine_owned = {"raw", "raw_draws", "instances", "predict", "predict_raw", "postprocess", "apply_network"}
    assert not engine_owned & set(vars(cls)), "the engine owns the draw loop"
    assert {"draw", "partition", "build_network", "training_loss"} <= set(vars(cls))
