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
import subprocess
import sys
from pathlib import Path

import pytest

import jebm_lite.analysis
import jebm_lite.experiments
import jebm_lite.training

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


def with_parents(me: str, deps: set[str], mods: dict[str, Path]) -> set[str]:
    """Importing ``a.b.c`` first runs the ``__init__`` of ``a.b``: that import is an edge too, unless ``a.b``
    is a package around ``me`` (it has started running before ``me`` can)."""
    out = set(deps)
    for d in deps:
        parts = d.split(".")
        for i in range(2, len(parts)):
            pkg = ".".join(parts[:i])
            if pkg in mods and not (me + ".").startswith(pkg + "."):
                out.add(pkg)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {d for d in with_parents(m, imports(p, mods), mods) if d != "jebm_lite"} for m, p in mods.items()}


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


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """Point the checker at a package made of the given files (relative path -> source)."""

    def make(files: dict[str, str]) -> None:
        fake = tmp_path / "jebm_lite"
        for rel, src in {"__init__.py": "", **files}.items():
            (fake / rel).parent.mkdir(parents=True, exist_ok=True)
            (fake / rel).write_text(src)
        monkeypatch.setattr(sys.modules[__name__], "PKG", fake)

    return make


def test_the_checker_sees_function_local_imports(fake_package):
    """A loop closed by an import inside a function is still a loop: the checker must see it."""
    fake_package({"training/__init__.py": "",
                  "sampling.py": "def f():\n    from jebm_lite.training import trainer\n",
                  "training/trainer.py": "from jebm_lite import sampling\n"})
    g = graph()
    assert "jebm_lite.training.trainer" in g["jebm_lite.sampling"]
    assert "jebm_lite.sampling" in g["jebm_lite.training.trainer"]
    bad = [d for m, deps in g.items() for d in deps if m != "jebm_lite" and layer(d) > layer(m)]
    assert "jebm_lite.training.trainer" in bad


def test_the_checker_sees_a_loop_through_a_package_init(fake_package):
    """``sampling`` importing ``models.ebm`` runs ``models/__init__``; a loop closed there is a loop."""
    fake_package({"models/__init__.py": "from jebm_lite.models.cond import X\n", "models/ebm.py": "",
                  "models/cond.py": "from jebm_lite.sampling import langevin\nX = 1\n",
                  "sampling.py": "from jebm_lite.models.ebm import E\n"})
    g = graph()
    assert "jebm_lite.models" in g["jebm_lite.sampling"]
    assert "jebm_lite.models.cond" in g["jebm_lite.models"]


# -- imports inside functions -------------------------------------------------------------------------

ENTRY = {"jebm_lite", "jebm_lite.__main__"}


def local_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, root module)`` of every import statement inside a function of ``path``."""
    out = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(fn):
                if isinstance(n, ast.Import):
                    out.append((n.lineno, n.names[0].name.split(".")[0]))
                elif isinstance(n, ast.ImportFrom):
                    out.append((n.lineno, "jebm_lite" if n.level else (n.module or "").split(".")[0]))
    return sorted(set(out))


def says_why(lines: list[str], lineno: int) -> bool:
    """A comment on the import, on another import of its block, or on the line just above the block."""
    i = lineno - 1
    while i > 0 and lines[i - 1].lstrip().startswith(("import ", "from ")):
        i -= 1
    j = lineno - 1
    while j + 1 < len(lines) and lines[j + 1].lstrip().startswith(("import ", "from ")):
        j += 1
    block = lines[max(i - 1, 0):j + 1]
    return any("#" in line for line in block)


def test_imports_inside_functions_are_few_and_say_why():
    """Only a heavy optional dependency, or the entry layer keeping its start-up light, may import in a function."""
    bad = []
    for mod, path in modules().items():
        lines = path.read_text().splitlines()
        for lineno, root in local_imports(path):
            where = f"{path.relative_to(PKG.parent)}:{lineno}"
            if root in sys.stdlib_module_names:
                bad.append(f"{where}: the standard library belongs at the top of the module")
            elif root == "jebm_lite" and mod not in ENTRY:
                bad.append(f"{where}: a package import inside a function (move it to the top)")
            elif not says_why(lines, lineno):
                bad.append(f"{where}: an import inside a function without a comment saying why")
    assert not bad, "\n".join(bad)


def test_the_local_import_check_sees_an_unexplained_import(tmp_path):
    src = "def f():\n    import numpy\n\n\ndef g():\n    # heavy: on use\n    import scipy\n"
    (tmp_path / "m.py").write_text(src)
    found = local_imports(tmp_path / "m.py")
    assert found == [(2, "numpy"), (7, "scipy")]
    lines = src.splitlines()
    assert not says_why(lines, 2) and says_why(lines, 7)


# -- the module map in CONTRIBUTING.md ----------------------------------------------------------------

MAP_LAYERS = {"foundation": 0, "core": 1, "training": 2, "analysis": 3, "experiments": 4, "entry": 5}


def contributing_map() -> dict[str, str]:
    """Module path (relative to the package, a folder for ``data/``) -> layer name, read off the table."""
    text = (PKG.parent / "CONTRIBUTING.md").read_text()
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    out, layer_name = {}, None
    for row in section.splitlines():
        if not row.startswith("| ") or row.startswith("| layer") or row.startswith("|---"):
            continue
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        layer_name = cells[0] or layer_name
        folder = ""
        for name in (n.strip().strip("`") for n in cells[1].split(",")):
            if "/" in name:
                folder = name.rsplit("/", 1)[0] + "/" if not name.endswith("/") else ""
            else:
                name = folder + name
            out[name] = layer_name
    return out


def test_the_module_map_in_contributing_names_every_module_with_its_layer():
    table = contributing_map()
    actual = {}
    for mod, path in modules().items():
        rel = path.relative_to(PKG).as_posix()
        if rel == "__init__.py" or rel.endswith("/__init__.py"):
            continue
        actual["data/" if rel.startswith("data/") else rel] = mod
    assert sorted(set(actual) - set(table)) == [], "modules missing from the CONTRIBUTING.md module map"
    assert sorted(set(table) - set(actual)) == [], "the CONTRIBUTING.md module map names modules that do not exist"
    wrong = [f"{rel}: table says {table[rel]}, imports say layer {layer(mod)}"
             for rel, mod in actual.items() if MAP_LAYERS[table[rel]] != layer(mod)]
    assert not wrong, "\n".join(wrong)


def test_each_layer_folder_introduces_its_modules():
    """The docstring of analysis/, experiments/, training/ names each of its modules (:mod:`.name`)."""
    for pkg in (jebm_lite.analysis, jebm_lite.experiments, jebm_lite.training):
        folder = Path(pkg.__file__).parent
        names = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
        missing = [n for n in names if f":mod:`.{n}`" not in (pkg.__doc__ or "")]
        assert not missing, f"{pkg.__name__}'s docstring does not introduce {missing}"


def test_every_module_imports_first_in_a_fresh_interpreter():
    """The static checks above, confirmed by Python: each module imported before any other one of the package
    (a loop through a package ``__init__`` fails only in some import orders)."""
    names = sorted(m for m in modules() if m != "jebm_lite.__main__")
    code = (
        "import importlib, sys, torch, torchvision, matplotlib.pyplot\n"
        "bad = []\n"
        f"for name in {names!r}:\n"
        "    for m in [m for m in sys.modules if m == 'jebm_lite' or m.startswith('jebm_lite.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", out.stdout
