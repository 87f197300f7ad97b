"""``cnnir.jit``: torch.jit's decorators and queries with their eager meaning, so model code
written for TorchScript runs unchanged while cnnir traces it.

    @cnnir.jit.unused
    def helper(self, x): ...
    if not cnnir.jit.is_scripting(): ...

The decorators return what they decorate, ``script``/``trace`` return the module or function
unchanged (cnnir traces it itself: ``cnnir.trace``), ``is_scripting``/``is_tracing`` are
False and ``annotate(type, value)`` is ``value``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["Final", "annotate", "export", "ignore", "is_scripting", "is_tracing", "script",
           "trace", "unused"]


def _identity(fn: F) -> F:
    return fn


unused = _identity
export = _identity
_overload = _identity
_overload_method = _identity


def ignore(fn: Any = None, **kwargs: Any) -> Any:
    """``@ignore`` and ``@ignore(drop=True)`` alike: the function, unchanged."""
    return _identity if fn is None or not callable(fn) else fn


def is_scripting() -> bool:
    return False


def is_tracing() -> bool:
    return False


def annotate(the_type: Any, the_value: Any) -> Any:
    return the_value


def script(obj: Any, *args: Any, **kwargs: Any) -> Any:
    return obj


def trace(func: Any, example_inputs: Any = None, *args: Any, **kwargs: Any) -> Any:
    return func
