"""Building blocks of the op-case table (``op_cases.py``) and of the backend tests that build
graphs by hand: a network wrapping one function call, input types, BatchNorm layers with
non-trivial statistics, input generators ``(rng, shape) -> array``, the docs/semantics.md §8
tolerance and a one-node fused graph.

The table itself lives in ``op_cases.py``; these pieces stay here because tests that do not
use the table (``test_conv_algorithms.py``, ...) import them too."""

from __future__ import annotations

import dataclasses
import math
import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import cnnir
from cnnir import nn
from cnnir.ir import ConstantData

Generator = Callable[[np.random.Generator, tuple], np.ndarray]


class Fn(nn.Module):
    """A network that applies ``fn(self, *inputs)``; extra submodules hold parameters."""

    def __init__(self, fn: Callable[..., Any], **modules: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        for name, module in modules.items():
            setattr(self, name, module)

    def forward(self, *xs: Any) -> Any:
        return self.fn(self, *xs)


def T(*shape: int | str, dtype: str = "float32") -> cnnir.TensorType:
    return cnnir.TensorType(shape, dtype)


def module(m: nn.Module) -> Callable[[], nn.Module]:
    return lambda: m


def fn(f: Callable[..., Any], **mods: nn.Module) -> Callable[[], nn.Module]:
    return lambda: Fn(f, **mods)


def bn_with_stats(channels: int, one_d: bool = False, affine: bool = True,
                  min_log_var: float = -3.0) -> nn.Module:
    """An eval-mode BatchNorm with random statistics; variances are log-uniform down to
    ``10**min_log_var`` so that eps and folding bugs show (docs/semantics.md §8)."""
    bn = (nn.BatchNorm1d if one_d else nn.BatchNorm2d)(channels, affine=affine)
    rng = np.random.default_rng(1)
    state = {"running_mean": rng.standard_normal(channels),
             "running_var": 10 ** rng.uniform(min_log_var, 1, channels),
             "num_batches_tracked": 3}
    if affine:
        state.update(weight=rng.uniform(0.5, 1.5, channels), bias=rng.standard_normal(channels))
    bn.load_state_dict({k: np.asarray(v) for k, v in state.items()})
    return bn.eval()


def class_targets(classes: int) -> Generator:
    return lambda rng, shape: rng.integers(0, classes, shape).astype(np.int64)


def unit_interval(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.uniform(0.02, 0.98, shape)


def binary_labels(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.integers(0, 2, shape).astype(np.float64)


def randomized(model: nn.Module, seed: int = 1) -> nn.Module:
    """``model`` in eval mode with standard-normal parameters and buffers (BatchNorm's
    running variances kept positive)."""
    rng = np.random.default_rng(seed)
    for name, p in model.state_dict().items():
        values = rng.standard_normal(p.shape).astype(np.float32)
        if name.endswith("running_var"):
            values = np.abs(values) + 0.5
        model.state_dict()[name][...] = values
    return model.eval()


def assert_close(actual: np.ndarray, expected: np.ndarray, reduction: int = 1) -> None:
    """docs/semantics.md §8, float32 against the float64 reference: rtol 1e-4,
    atol 1e-5·max(1, ‖expected‖∞), widened by √K for a reduction of length K. NaNs are ignored
    for the scale and must match position for position."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.nanmax(np.abs(expected))) if expected.size else 1.0)
    atol = 1e-5 * scale * math.sqrt(reduction)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=atol)


def fused_graph(op, attrs, x_type, w_shape, with_residual: bool) -> cnnir.Graph:
    """A graph of one fused conv/linear node (random weights and bias), the residual an input."""
    rng = np.random.default_rng(3)
    g = cnnir.Graph("fused")
    x = g.add_input("x", x_type)
    w = g.add_constant("w", ConstantData(T(*w_shape), "parameter",
                                         array=rng.standard_normal(w_shape).astype(np.float32)))
    b = g.add_constant("b", ConstantData(T(w_shape[0]), "parameter",
                                         array=rng.standard_normal(w_shape[0]).astype(np.float32)))
    plain = dataclasses.replace(attrs, residual=False)
    out_type = op.infer_types(plain, [x.type, w.type, b.type, None])[0]
    r = g.add_input("r", out_type) if with_residual else None
    node = g.add_node(op, [x, w, b, r], attrs)
    g.set_outputs([node.output])
    return g


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_network(file: str, name: str) -> nn.Module:
    """The builder ``name`` of ``examples/<file>``, in eval mode, with non-trivial BatchNorm
    statistics and affine parameters (so folding or epilogue bugs show)."""
    model = runpy.run_path(str(EXAMPLES / file))[name]()
    rng = np.random.default_rng(7)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            c = m.num_features
            m.running_mean.data = rng.standard_normal(c) * 0.1
            m.running_var.data = rng.uniform(0.5, 2.0, c)
            m.weight.data = rng.uniform(0.5, 1.5, c)
            m.bias.data = rng.standard_normal(c) * 0.1
    return model.eval()
