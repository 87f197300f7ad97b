"""``cnnir.nn.functional``: the torch.nn.functional mirror (see cnnir.frontend.functional)."""

from cnnir.frontend.functional import *  # noqa: F401,F403
from cnnir.frontend.functional import __dict__ as _functional

__all__ = [n for n, v in _functional.items() if callable(v) and not n.startswith("_")
           and getattr(v, "__module__", "") == "cnnir.frontend.functional"]
