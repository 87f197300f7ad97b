"""Running from a source checkout without installing: map ``frontend/`` and ``backends/`` to
``cnnir.frontend`` and ``cnnir.backends``, exactly as the installed package does through
setuptools' ``package-dir``, and nothing else (no ``cnnir.tests`` or ``cnnir.examples``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

MAPPED = ("frontend", "backends")


def map_checkout_packages() -> None:
    """Register the mapped packages when this ``cnnir`` sits in a checkout that holds them and
    no installed mapping provides them."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        return
    for name in MAPPED:
        init = root / name / "__init__.py"
        full = f"cnnir.{name}"
        if full in sys.modules or not init.is_file() or _installed(full):
            continue
        spec = importlib.util.spec_from_file_location(full, init,
                                                      submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)


def _installed(name: str) -> bool:
    """Whether ``name`` is importable without the mapping (an install, editable or not)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
