"""Loading a model file for the command line: ``path.py`` or ``path.py:NAME``.

A model file is Python: loading it RUNS it, exactly as ``python path.py`` would (its folder
goes on ``sys.path`` while it runs), so only load files you trust. It defines ``model`` (an
``nn.Module`` or a zero-argument callable returning one) and ``input_shape`` (a tuple or list
of sizes, or a list of them for several inputs); ``:NAME`` picks another top-level callable,
whose own ``input_shape`` attribute, if any, overrides the file's. Only ``.py`` files are
run.
"""

from __future__ import annotations

import inspect
import os
import runpy
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from cnnir.errors import CnnirError, ModelFormatError, UserCodeError
from cnnir.frontend.module import Module


@dataclass
class LoadedModel:
    module: Module
    inputs: Any
    name: str


def split_spec(spec: str) -> tuple[str, str | None]:
    path, sep, name = spec.rpartition(":")
    if sep and path.endswith(".py") and name.isidentifier():
        return path, name
    return spec, None


def run_user_file(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ModelFormatError(f"no model file at {path}")
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)
    try:
        return runpy.run_path(path, run_name="__cnnir_model__")
    except CnnirError:
        raise
    except BaseException as e:
        trace = "".join(traceback.format_exception(e)[1:])
        raise UserCodeError(f"{path} raised {type(e).__name__} while loading:\n{trace}") from e
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)


def _builders(namespace: dict[str, Any]) -> list[str]:
    """What ``path.py:NAME`` can build: module instances, and the file's own functions and
    classes whose parameters all have defaults."""
    return sorted(k for k, v in namespace.items() if not k.startswith("_") and (
        isinstance(v, Module) or (callable(v) and getattr(v, "__module__", None) ==
                                  "__cnnir_model__" and _takes_no_arguments(v))))


def _takes_no_arguments(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in params)


def instantiate(obj: Any, what: str) -> Module:
    if isinstance(obj, Module):
        return obj
    if callable(obj):
        try:
            module = obj()
        except CnnirError:
            raise
        except Exception as e:
            trace = "".join(traceback.format_exception(e)[1:])
            raise UserCodeError(f"{what}() raised {type(e).__name__}:\n{trace}") from e
        if isinstance(module, Module):
            return module
        raise ModelFormatError(f"{what}() returned a {type(module).__name__}, not an nn.Module")
    raise ModelFormatError(f"{what} is a {type(obj).__name__}, not an nn.Module or a builder")


def load_model_file(spec: str, input_shapes: Any = None) -> LoadedModel:
    path, name = split_spec(spec)
    if path.endswith(".onnx"):
        raise ModelFormatError(f"{path} is an ONNX file: import it with cnnir.load_onnx(path) "
                               f"(the command line does this for MODEL paths ending in .onnx)")
    if not path.endswith(".py"):
        raise ModelFormatError(f"{path} is neither a .py model file nor an .onnx file",
                               hint="MODEL is path.py, path.py:NAME or path.onnx")
    namespace = run_user_file(path)
    key = name or "model"
    if key not in namespace:
        found = ", ".join(_builders(namespace)) or "none"
        raise ModelFormatError(
            f"{path} defines no {'callable ' + repr(name) if name else 'network'}"
            f" (what it can build: {found})",
            hint="define `model` (an nn.Module or a builder) and `input_shape`, or pick a "
                 "builder with path.py:NAME",
        )
    obj = namespace[key]
    module = instantiate(obj, f"{path}:{key}")
    inputs = input_shapes or getattr(obj, "input_shape", None) or namespace.get("input_shape")
    if inputs is None:
        raise ModelFormatError(f"{path} defines no input_shape",
                               hint="add input_shape = (1, 3, 224, 224) or pass --input-shape")
    label = name or getattr(obj, "__name__", None) or type(module).__name__
    return LoadedModel(module, inputs, label)
