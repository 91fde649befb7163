"""The layout's rules (DESIGN.md "Layers"; ARCHITECTURE.md), checked on the source: lower
layers never import upper ones (not even inside a function), module-level imports have no
cycles, modules outside ``attention/`` stay small, and every package says its job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Layer of each part, lowest first (DESIGN.md). The longest matching prefix decides.
LAYERS: dict[str, int] = {
    "ablate": 0, "ablate.errors": 0, "ablate.metrics": 0, "ablate.offline": 0, "ablate.cache": 0, "ablate.atomic": 0,
    "ablate.attention": 1,
    "ablate.models": 2,
    "ablate.measure": 3, "ablate.data": 3, "ablate.train": 3, "ablate.storage": 3, "ablate.bench": 3,
    "ablate.study": 4,
    "ablate.run": 5,
    "ablate.results": 6,
    "ablate.cli": 7, "ablate.dashboards": 7, "ablate.testing": 7, "ablate.__main__": 7, "ablate.api": 7,
}
#: The one upward import allowed: the package root serves the Python API (layer 7) lazily,
#: from inside its module ``__getattr__`` (never at import), so ``import ablate`` stays layer 0.
LAZY_API = ("ablate", "ablate.api")
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "dashboards":  # installed as ablate.dashboards
        parts.insert(0, "ablate")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _canonical(name: str) -> str:
    return "ablate." + name if name == "dashboards" or name.startswith("dashboards.") else name


MODULES: dict[str, Path] = {_module_name(p): p for top in ("ablate", "dashboards")
                            for p in sorted((ROOT / top).rglob("*.py"))}


def _layer(name: str) -> int | None:
    best = max((k for k in LAYERS if name == k or name.startswith(k + ".")), key=len, default=None)
    return LAYERS[best] if best is not None else None


def _imports(path: Path, *, top_level_only: bool) -> list[tuple[str, int]]:
    """``(imported ablate module, line)``; ``from pkg import sub`` counts as ``pkg.sub`` when that is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int]] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue  # annotations only: never executed
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                base = _canonical(node.module)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    found.append((full if full in MODULES else base, node.lineno))
            elif isinstance(node, ast.Import):
                found.extend((_canonical(a.name), node.lineno) for a in node.names)
            if top_level_only:
                for field in ("body", "orelse", "finalbody"):
                    if isinstance(node, (ast.If, ast.Try)) and hasattr(node, field):
                        visit(getattr(node, field))
                if isinstance(node, ast.Try):
                    for handler in node.handlers:
                        visit(handler.body)
            else:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child])

    visit(tree.body)
    return [(name, line) for name, line in found if name == "ablate" or name.startswith("ablate.")]


def test_every_module_has_a_layer():
    assert not [m for m in MODULES if _layer(m) is None]


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for name, path in MODULES.items():
        own = _layer(name)
        for target, line in _imports(path, top_level_only=False):
            if target in MODULES and (_layer(target) or 0) > (own or 0) and (name, target) != LAZY_API:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {name} (layer {own}) imports {target} "
                              f"(layer {_layer(target)})")
    assert not upward, "\n".join(upward)


def test_module_level_imports_have_no_cycles():
    graph = {name: sorted({t for t, _ in _imports(path, top_level_only=True) if t in MODULES and t != name})
             for name, path in MODULES.items()}
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, cycles


def test_the_root_imports_the_api_only_lazily():
    """``import ablate`` imports no upper layer: the API import sits inside a function."""
    top = [t for t, _ in _imports(MODULES["ablate"], top_level_only=True)]
    assert "ablate.api" not in top and all((_layer(t) or 0) == 0 for t in top if t in MODULES), top


def test_the_checks_above_can_fail(tmp_path):
    """The import reader sees a function-level import and a TYPE_CHECKING one differently."""
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ablate.run import run_study\n"
                   "def f():\n    from ablate.cli import app\n", encoding="utf-8")
    assert _imports(src, top_level_only=False) == [("ablate.cli", 5)]
    assert _imports(src, top_level_only=True) == []
    assert _layer("ablate.cli.run") == 7 and _layer("ablate.models.yolo.arch") == 2


@pytest.mark.parametrize("name", [m for m in MODULES if not m.startswith("ablate.attention")])
def test_modules_outside_attention_stay_small(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {lines} lines (> {MAX_LINES}): split it"


@pytest.mark.parametrize("name", [m for m, p in MODULES.items() if p.name == "__init__.py"])
def test_every_package_says_its_job(name):
    doc = ast.get_docstring(ast.parse(MODULES[name].read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 6, f"{name}/__init__.py needs a docstring saying what the package is for"


def test_tests_mirror_the_packages():
    """Each folder of tests/ is a package's (``fixtures/`` holds input files); each package with
    more than its ``__init__`` has one."""
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    packages = {m.split(".")[1] for m, p in MODULES.items() if p.name == "__init__.py" and m.count(".") == 1}
    assert folders - {"fixtures"} <= packages, folders - packages
    substantial = {m.split(".")[1] for m, p in MODULES.items() if m.count(".") == 2 and p.name != "__init__.py"}
    assert substantial - {"testing"} <= folders, substantial - folders


def test_importing_every_module_outside_yolo_changes_no_environment_or_import_hook():
    """Only ablate.models.yolo (which imports ultralytics) applies settings, when it is imported."""
    import json
    import subprocess
    import sys

    names = sorted(m for m in MODULES if not m.startswith("ablate.models.yolo") and m != "ablate.__main__")
    code = ("import importlib, json, os, sys; env, hooks = dict(os.environ), list(sys.meta_path)\n"
            f"for name in {names!r}: importlib.import_module(name)\n"
            "changed = sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))\n"
            "print(json.dumps({'changed': changed, 'hooks': sys.meta_path == hooks, "
            "'ultralytics': 'ultralytics' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == {"changed": [], "hooks": True, "ultralytics": False}
