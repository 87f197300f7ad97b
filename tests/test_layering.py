"""Layering: the IR, the op registry and the passes never import the frontend or a backend,
and a source checkout maps exactly the packages an install maps."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ("ir", "ops", "passes")
OUTSIDE = ("cnnir.frontend", "cnnir.backends")


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` statement of the file names, at any depth (lazy imports
    inside functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("package", CORE)
def test_core_packages_import_neither_frontend_nor_backends(package: str) -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "cnnir" / package).rglob("*.py"))
        for name in imported_modules(path)
        if name.startswith(OUTSIDE) or name.split(".")[0] in ("frontend", "backends")
    }
    assert not offenders, sorted(offenders)


def test_the_scan_sees_lazy_imports(tmp_path: Path) -> None:
    """The check above would catch the import fold-constants used to make inside a function."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from cnnir.backends.reference import KERNELS\n")
    assert "cnnir.backends.reference" in imported_modules(module)


def test_importing_every_core_module_loads_no_frontend_or_backend() -> None:
    code = (
        "import importlib, pkgutil, sys, cnnir.ir, cnnir.ops, cnnir.passes\n"
        "for pkg in (cnnir.ir, cnnir.ops, cnnir.passes):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('cnnir.backends.',))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/")
    assert out.stdout.strip() == "[]"


def test_a_checkout_maps_only_frontend_and_backends() -> None:
    """From the repository root (no install needed), ``cnnir.frontend`` and ``cnnir.backends``
    come from ``frontend/`` and ``backends/``; ``cnnir.tests`` or ``cnnir.examples`` do not
    exist, as in an installed wheel."""
    code = (
        "import importlib.util as u, cnnir, cnnir.backends.numba_cpu as cpu\n"
        "print(cnnir.__file__); print(cpu.__file__)\n"
        "print([u.find_spec(f'cnnir.{n}') for n in ('tests', 'examples', 'cnnir', 'build')])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    init, cpu, missing = out.stdout.strip().splitlines()
    assert init == str(ROOT / "cnnir" / "__init__.py")
    assert cpu == str(ROOT / "backends" / "numba_cpu" / "__init__.py")
    assert missing == "[None, None, None, None]"
