"""The house's floors: imports only point down, and nothing hides an import.

Layers, bottom to top (DESIGN.md): ``pipesim`` (the torch-free simulator), ``testbed``
(network emulation), ``runtime`` and ``calibrate`` (torch), ``loop`` (validate, demo,
compare, plot and the ``pipesim`` command). A module may import its own package and
any package below it, never one above.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"pipesim": 0, "testbed": 1, "runtime": 2, "calibrate": 3, "loop": 4}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level project package) of every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = path.relative_to(ROOT).parts[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                out.append((node.lineno, pkg))
            elif node.module:
                out.append((node.lineno, node.module.split(".")[0]))
    return [(ln, name) for ln, name in out if name in LAYERS]


def _modules(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg).rglob("*.py"))


def import_graph() -> dict[str, set[str]]:
    """Package -> the project packages it imports (the picture in docs/architecture.md)."""
    return {pkg: {name for f in _modules(pkg) for _, name in _imports(f)} - {pkg} for pkg in LAYERS}


@pytest.mark.parametrize("pkg", list(LAYERS))
def test_imports_point_down(pkg):
    bad = [f"{f.relative_to(ROOT)}:{ln} imports {name}" for f in _modules(pkg) for ln, name in _imports(f)
           if LAYERS[name] > LAYERS[pkg]]
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(bad)


def test_runtime_and_calibrate_do_not_import_the_loop_and_calibrate_sits_on_runtime():
    g = import_graph()
    assert g["pipesim"] == set()
    assert g["testbed"] == {"pipesim"}
    assert "calibrate" not in g["runtime"] and "loop" not in g["runtime"]
    assert "runtime" in g["calibrate"]
    assert g["loop"] >= {"pipesim", "testbed", "runtime", "calibrate"}


@pytest.mark.parametrize("pkg", ["pipesim", "testbed", "runtime", "calibrate"])
def test_no_hidden_dynamic_imports(pkg):
    """No importlib dispatch below the top: the only lookup is pipesim/__main__.py's entry point."""
    bad = []
    for f in _modules(pkg):
        text = f.read_text()
        for word in ("importlib.import_module", "__import__(", "import_module("):
            if word in text:
                bad.append(f"{f.relative_to(ROOT)} uses {word}")
    assert not bad, "\n".join(bad)


def test_docs_picture_matches_the_imports():
    text = (ROOT / "docs" / "architecture.md").read_text()
    for pkg, deps in import_graph().items():
        for dep in deps:
            assert f"{pkg} --> {dep}" in text, f"docs/architecture.md lacks the arrow {pkg} --> {dep}"


def test_core_imports_without_torch():
    code = ("import sys, pipesim.engine, pipesim.cmd_sim, pipesim.plots, pipesim.profile, testbed, loop.cli; "
            "loop.cli.build_parser(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_pipesim_finds_the_command():
    out = subprocess.run([sys.executable, "-m", "pipesim", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for verb in ("simulate", "grid", "run", "calibrate", "testbed", "validate", "demo", "plot"):
        assert verb in out.stdout
