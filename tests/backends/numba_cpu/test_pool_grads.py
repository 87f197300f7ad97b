"""The pool family's backward ops on the Numba backend: the conventions finite differences
cannot see (docs/semantics.md §3: ties go to the first maximum in row-major window order,
padding is never chosen, NaN always wins) against hand-computed gradients, and every backward
op against the reference backend on inputs large enough for the parallel builds, with many
ties."""

from __future__ import annotations

import numpy as np
import pytest

import cnnir
import cnnir.nn.functional as F
from cnnir import nn
from cnnir.ir import Graph, TensorType
from cnnir.ops import pool
from cnnir.ops.pool import (
    AdaptivePoolAttrs,
    AdaptivePoolGradAttrs,
    AvgPoolGradAttrs,
    InterpolateGradAttrs,
    PoolAttrs,
    adaptive_avg_pool2d_grad,
    adaptive_max_pool2d_grad,
    avg_pool2d_grad,
    interpolate_grad,
    max_pool2d_grad,
)
from cnnir.passes.autodiff import differentiate

NAN = np.nan


def plane(rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)[None, None]


def one_node(op, attrs, arrays: list[np.ndarray], dtype: str = "float32") -> Graph:
    g = Graph(op.name)
    values = [g.add_input(f"in{i}", TensorType(a.shape, dtype)) for i, a in enumerate(arrays)]
    g.set_outputs([g.add_node(op, values, attrs).output])
    return cnnir.verify(g)


def run(op, attrs, *arrays: np.ndarray, backend: str = "numba",
        dtype: str = "float32") -> np.ndarray:
    arrays = [np.asarray(a, dtype) for a in arrays]
    return cnnir.compile(one_node(op, attrs, arrays, dtype), backend=backend, dtype=dtype)(
        *arrays)


MAX_GRAD_CASES = [
    # an all-equal 2x2 window sends everything to its first tap: [1, 0, 0, 0]
    ("tie-2x2", plane([[1, 1], [1, 1]]), PoolAttrs(kernel_size=2), plane([[1]]),
     plane([[1, 0], [0, 0]])),
    # ties go to the first maximum in row-major order: (0, 1) before (1, 0)
    ("tie-row-major", plane([[0, 5], [5, 1]]), PoolAttrs(kernel_size=2), plane([[2]]),
     plane([[0, 2], [0, 0]])),
    # overlapping all-equal windows (k2 s1, the separable forward): top-left taps, summed
    ("tie-overlap", np.ones((1, 1, 3, 3)), PoolAttrs(kernel_size=2, stride=1),
     plane([[1, 2], [3, 4]]), plane([[1, 2, 0], [3, 4, 0], [0, 0, 0]])),
    ("overlap-accumulates", plane([[0, 0, 0], [0, 9, 0], [0, 0, 0]]),
     PoolAttrs(kernel_size=2, stride=1), plane([[1, 2], [3, 4]]),
     plane([[0, 0, 0], [0, 10, 0], [0, 0, 0]])),
    # windows tiling the image (their own kernel): a window of −∞ keeps its first tap
    ("tiled-minus-inf", np.full((1, 1, 2, 6), -np.inf), PoolAttrs(kernel_size=(2, 3)),
     plane([[1, 2]]), plane([[1, 0, 0, 2, 0, 0], [0, 0, 0, 0, 0, 0]])),
    # padding is never chosen, even when every real value is −∞
    ("padding-never-chosen", np.full((1, 1, 2, 2), -np.inf),
     PoolAttrs(kernel_size=3, stride=2, padding=1), plane([[5]]), plane([[5, 0], [0, 0]])),
    ("all-negative-padding", plane([[-3, -1], [-1, -2]]),
     PoolAttrs(kernel_size=3, stride=2, padding=1), plane([[5]]), plane([[0, 5], [0, 0]])),
    # NaN always wins; the first NaN of the window takes the gradient
    ("nan-wins", plane([[9, 1], [2, NAN]]), PoolAttrs(kernel_size=2), plane([[3]]),
     plane([[0, 0], [0, 3]])),
    ("first-nan", plane([[1, NAN], [5, NAN]]), PoolAttrs(kernel_size=2), plane([[3]]),
     plane([[0, 3], [0, 0]])),
    ("ceil-window-past-the-input", plane([[1, 2, 3, 4, 5]]),
     PoolAttrs(kernel_size=(1, 2), stride=(1, 2), ceil_mode=True), plane([[1, 2, 3]]),
     plane([[0, 1, 0, 2, 3]])),
    ("dilated-tie", plane([[4, 7, 4]]), PoolAttrs(kernel_size=(1, 2), dilation=(1, 2), stride=1),
     plane([[1]]), plane([[1, 0, 0]])),
]

ADAPTIVE_MAX_GRAD_CASES = [
    ("tie-2x2-windows", np.ones((1, 1, 4, 4)), AdaptivePoolAttrs((2, 2)),
     plane([[1, 2], [3, 4]]),
     plane([[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]])),
    # 5 -> 2 overlaps: windows [0, 3) and [2, 5); all equal: their first cells, 0 and 2
    ("tie-overlap", np.ones((1, 1, 1, 5)), AdaptivePoolAttrs((1, 2)), plane([[1, 2]]),
     plane([[1, 0, 2, 0, 0]])),
    ("tie-row-major", plane([[0, 5], [5, 1]]), AdaptivePoolAttrs(1), plane([[2]]),
     plane([[0, 2], [0, 0]])),
    ("first-nan", plane([[9, NAN], [5, NAN]]), AdaptivePoolAttrs(1), plane([[3]]),
     plane([[0, 3], [0, 0]])),
    ("all-minus-inf", np.full((1, 1, 2, 2), -np.inf), AdaptivePoolAttrs(1), plane([[3]]),
     plane([[3, 0], [0, 0]])),
]


@pytest.mark.parametrize("name, x, attrs, gy, want", MAX_GRAD_CASES,
                         ids=[c[0] for c in MAX_GRAD_CASES])
def test_max_pool2d_grad_conventions(name, x, attrs, gy, want) -> None:
    np.testing.assert_array_equal(run(max_pool2d_grad, attrs, x, gy), want)


@pytest.mark.parametrize("name, x, attrs, gy, want", ADAPTIVE_MAX_GRAD_CASES,
                         ids=[c[0] for c in ADAPTIVE_MAX_GRAD_CASES])
def test_adaptive_max_pool2d_grad_conventions(name, x, attrs, gy, want) -> None:
    np.testing.assert_array_equal(run(adaptive_max_pool2d_grad, attrs, x, gy), want)


def test_bilinear_grad_puts_both_edge_weights_on_one_pixel() -> None:
    """x2 on a 1x2 row: sources 0, 0.25, 0.75 and 1.25, clamped to i0 = i1 = 1."""
    attrs = InterpolateGradAttrs(scale_factor=(1, 2), mode="bilinear", input_size=(1, 2))
    got = run(interpolate_grad, attrs, plane([[1, 10, 100, 1000]]))
    np.testing.assert_allclose(got, plane([[1 + 7.5 + 25, 2.5 + 75 + 1000]]), rtol=1e-6)


def test_nearest_grad_adds_to_the_source_index() -> None:
    attrs = InterpolateGradAttrs(scale_factor=(1, 0.5), input_size=(1, 4))
    np.testing.assert_array_equal(run(interpolate_grad, attrs, plane([[1, 2]])),
                                  plane([[1, 0, 2, 0]]))
    attrs = InterpolateGradAttrs(size=(1, 5), mode="nearest-exact", input_size=(1, 2))
    np.testing.assert_array_equal(run(interpolate_grad, attrs, plane([[1, 2, 4, 8, 16]])),
                                  plane([[3, 28]]))


# Large enough that every kernel runs its parallel build (kernels.jit.PARALLEL_MIN_ELEMENTS);
# integer-valued inputs make ties common, so the routing must agree exactly with the reference.
X = (2, 8, 64, 72)
LARGE = [
    ("max-2x2-tiling", max_pool2d_grad, PoolAttrs(kernel_size=2), True),
    ("max-phases", max_pool2d_grad, PoolAttrs(kernel_size=3, stride=2, padding=1), True),
    ("max-dilated-ceil", max_pool2d_grad,
     PoolAttrs(kernel_size=3, stride=(2, 1), padding=1, dilation=2, ceil_mode=True), True),
    ("avg-exclude-pad-ceil", avg_pool2d_grad,
     AvgPoolGradAttrs(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                      count_include_pad=False, input_size=X[2:]), False),
    ("avg-divisor", avg_pool2d_grad,
     AvgPoolGradAttrs(kernel_size=(2, 3), stride=1, divisor_override=5, input_size=X[2:]),
     False),
    ("adaptive-avg", adaptive_avg_pool2d_grad,
     AdaptivePoolGradAttrs((5, 7), input_size=X[2:]), False),
    ("adaptive-max", adaptive_max_pool2d_grad, AdaptivePoolAttrs((5, 7)), True),
    ("bilinear-x2", interpolate_grad,
     InterpolateGradAttrs(scale_factor=2, mode="bilinear", input_size=X[2:]), False),
    ("bilinear-align-corners", interpolate_grad,
     InterpolateGradAttrs(size=(100, 50), mode="bilinear", align_corners=True,
                          input_size=X[2:]), False),
    ("nearest-1.5", interpolate_grad, InterpolateGradAttrs(scale_factor=1.5, input_size=X[2:]),
     False),
    ("nearest-exact-1.3", interpolate_grad,
     InterpolateGradAttrs(scale_factor=1.3, mode="nearest-exact", input_size=X[2:]), False),
]


FORWARD_SHAPE = {max_pool2d_grad: pool.infer_pool, avg_pool2d_grad: pool.infer_pool,
                 adaptive_avg_pool2d_grad: pool.infer_adaptive,
                 adaptive_max_pool2d_grad: pool.infer_adaptive,
                 interpolate_grad: pool.infer_interpolate}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, op, attrs, reads_x", LARGE, ids=[c[0] for c in LARGE])
def test_parallel_builds_match_the_reference(name, op, attrs, reads_x, dtype) -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, X).astype(np.float64)
    (y,) = FORWARD_SHAPE[op](attrs, [TensorType(X, "float64")])
    gy = rng.standard_normal(y.shape)
    arrays = [x, gy] if reads_x else [gy]
    want = run(op, attrs, *arrays, backend="reference", dtype="float64")
    compiled = cnnir.compile(one_node(op, attrs, arrays, dtype), dtype=dtype)
    inputs = [a.astype(dtype) for a in arrays]
    first = compiled(*inputs).copy()
    again = compiled(*inputs)  # the planned output buffer is reused: zeroed on every call
    np.testing.assert_array_equal(first, again)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(first, want, rtol=tol, atol=tol)


def test_gradients_with_symbolic_spatial_sizes() -> None:
    """The gradient ops that carry the input's size (avg, adaptive avg, interpolate) keep
    symbolic H and W, bound when the graph is compiled: both backends agree."""

    class Net(nn.Module):
        def forward(self, x):
            return (F.avg_pool2d(x, 3, 2, 1).sum() + F.adaptive_avg_pool2d(x, (2, 3)).sum() * 2
                    + F.interpolate(x, scale_factor=1.5, mode="bilinear").tanh().sum()
                    + F.max_pool2d(x, 2).tanh().sum() + F.adaptive_max_pool2d(x, 2).tanh().sum())

    g = cnnir.trace(Net(), [TensorType(("N", 3, "H", "W"), "float64")])
    (gx,) = differentiate(g, g.outputs[0], [g.inputs[0]])
    g.set_outputs([gx])
    sizes = {n.attrs.input_size for n in g.nodes if hasattr(n.attrs, "input_size")}
    assert sizes == {("H", "W")}
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 11))
    want = cnnir.compile(cnnir.verify(g), backend="reference")(x)
    got = cnnir.compile(g, dtype="float64")(x)
    assert want.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
