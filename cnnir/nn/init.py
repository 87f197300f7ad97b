"""``cnnir.nn.init``: the torch.nn.init mirror (see cnnir.frontend.init)."""

from cnnir.frontend.init import *  # noqa: F401,F403
from cnnir.frontend.init import __dict__ as _init

__all__ = [n for n, v in _init.items() if callable(v) and not n.startswith("_")
           and getattr(v, "__module__", "") == "cnnir.frontend.init"]
