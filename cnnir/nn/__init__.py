"""``cnnir.nn``: the torch.nn mirror (modules, containers, init, functional)."""

from cnnir.frontend.layers import *  # noqa: F401,F403
from cnnir.frontend.layers import __dict__ as _layers
from cnnir.frontend.module import (  # noqa: F401
    Buffer,
    Module,
    ModuleDict,
    ModuleList,
    Parameter,
    Sequential,
    manual_seed,
)
from cnnir.nn import functional, init  # noqa: F401

__all__ = sorted(
    [n for n, v in _layers.items() if isinstance(v, type) and not n.startswith("_")
     and v.__module__ == "cnnir.frontend.layers"]
    + ["Buffer", "Module", "ModuleDict", "ModuleList", "Parameter", "Sequential", "functional",
       "init", "manual_seed"]
)
