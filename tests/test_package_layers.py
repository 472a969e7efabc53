"""The package's imports follow its layers and have no cycle.

Layers, bottom to top (a module may import its own layer or any layer below, never one above):

    0 foundation   runtime, io, config
    1 core         data/, models/, sampling, objectives, uspace
    2 training     training/
    3 analysis     analysis/
    4 experiments  experiments/
    5 entry        __main__ (and the package facade __init__)

Every ``import`` counts, including those inside functions (a function-local import only hides a loop).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "jebm_lite"

LAYERS = {
    "jebm_lite.runtime": 0, "jebm_lite.io": 0, "jebm_lite.config": 0,
    "jebm_lite.data": 1, "jebm_lite.models": 1, "jebm_lite.sampling": 1, "jebm_lite.objectives": 1,
    "jebm_lite.uspace": 1,
    "jebm_lite.training": 2, "jebm_lite.analysis": 3, "jebm_lite.experiments": 4,
    "jebm_lite.__main__": 5, "jebm_lite": 5,
}


def module_name(path: Path) -> str:
    parts = ("jebm_lite", *path.relative_to(PKG).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(mod: str) -> int:
    best = max((k for k in LAYERS if mod == k or mod.startswith(k + ".")), key=len)
    return LAYERS[best]


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports(path: Path, mods: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports (anywhere in the file), resolved to module names."""
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            names = [root] + [f"{root}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n in mods:
                out.add(n)
            elif n.startswith("jebm_lite.") and n.rsplit(".", 1)[0] in mods and n.rsplit(".", 1)[0] != "jebm_lite":
                out.add(n.rsplit(".", 1)[0])
    out.discard(me)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {d for d in imports(p, mods) if d != "jebm_lite"} for m, p in mods.items()}


def test_no_import_runs_up_a_layer():
    bad = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
           for m, deps in graph().items() if m != "jebm_lite" for d in deps if layer(d) > layer(m)]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    g = graph()
    g.pop("jebm_lite", None)  # the facade re-exports; nothing inside imports it
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_function_local_imports(tmp_path):
    """A loop closed by an import inside a function is still a loop: the checker must see it."""
    fake = tmp_path / "jebm_lite"
    (fake / "training").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "training" / "__init__.py").write_text("")
    (fake / "sampling.py").write_text("def f():\n    from jebm_lite.training import trainer\n")
    (fake / "training" / "trainer.py").write_text("from jebm_lite import sampling\n")
    global PKG
    real, PKG = PKG, fake
    try:
        g = graph()
        assert "jebm_lite.training.trainer" in g["jebm_lite.sampling"]
        assert "jebm_lite.sampling" in g["jebm_lite.training.trainer"]
        bad = [d for m, deps in g.items() for d in deps if m != "jebm_lite" and layer(d) > layer(m)]
        assert "jebm_lite.training.trainer" in bad
    finally:
        PKG = real
