"""Reference pooling and interpolate against loops written from docs/semantics.md §1.7–§1.10,
and their gradients against the rules of §3 (hand-computed conventions: ties, NaN, padding)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnir import ops
from cnnir.errors import ShapeError
from cnnir.ir import TensorType
from cnnir.ops.pool import (
    AdaptivePoolAttrs,
    AdaptivePoolGradAttrs,
    AvgPoolAttrs,
    AvgPoolGradAttrs,
    InterpolateAttrs,
    InterpolateGradAttrs,
    PoolAttrs,
    adaptive_avg_pool2d_grad,
    adaptive_max_pool2d_grad,
    avg_pool2d_grad,
    interpolate_grad,
    max_pool2d_grad,
)


def pool_size(length, k, s, p, d, ceil):
    out = (length + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= length + p:
        out -= 1
    return out


def max_pool_loops(x, k, s, p, d, ceil):
    """Max over the window taps that fall inside the image (padding is -inf)."""
    n_, c_, h, w = x.shape
    oh_, ow_ = pool_size(h, k[0], s[0], p[0], d[0], ceil), pool_size(w, k[1], s[1], p[1], d[1],
                                                                      ceil)
    y = np.empty((n_, c_, oh_, ow_))
    for n in range(n_):
        for c in range(c_):
            for oh in range(oh_):
                for ow in range(ow_):
                    best = -math.inf
                    for i in range(k[0]):
                        for j in range(k[1]):
                            r, q = oh * s[0] - p[0] + i * d[0], ow * s[1] - p[1] + j * d[1]
                            if 0 <= r < h and 0 <= q < w:
                                v = x[n, c, r, q]
                                best = v if (v > best or math.isnan(v)) else best
                                if math.isnan(best):
                                    break
                    y[n, c, oh, ow] = best
    return y


MAX_CASES = [
    # kernel, stride, padding, dilation, ceil_mode
    ((3, 3), (2, 2), (1, 1), (1, 1), False),
    ((3, 2), (2, 2), (1, 0), (1, 1), True),
    ((2, 2), (3, 3), (0, 0), (2, 1), True),
    ((2, 2), (2, 2), (0, 0), (1, 1), False),
]


@pytest.mark.parametrize("k, s, p, d, ceil", MAX_CASES)
def test_max_pool2d_matches_loops(run_op, rng, k, s, p, d, ceil):
    x = rng.standard_normal((2, 3, 7, 8))
    attrs = PoolAttrs(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
    np.testing.assert_array_equal(run_op(ops.max_pool2d, attrs, x),
                                  max_pool_loops(x, k, s, p, d, ceil))


def test_max_pool2d_padding_is_minus_infinity(run_op, rng):
    x = -1.0 - rng.random((1, 2, 4, 4))
    y = run_op(ops.max_pool2d, PoolAttrs(kernel_size=3, stride=2, padding=1), x)
    assert (y < -1.0).all()
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].max()


def test_max_pool2d_nan_propagates(run_op):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y = run_op(ops.max_pool2d, PoolAttrs(kernel_size=2), x)
    assert np.isnan(y[0, 0, 0, 0])
    assert np.isfinite(y.ravel()[1:]).all()


def avg_pool_loops(x, k, s, p, ceil, include_pad, override):
    """ATen's AvgPoolKernel.cpp as written in §1.8."""
    n_, c_, h, w = x.shape
    oh_, ow_ = pool_size(h, k[0], s[0], p[0], 1, ceil), pool_size(w, k[1], s[1], p[1], 1, ceil)
    y = np.empty((n_, c_, oh_, ow_))
    for oh in range(oh_):
        for ow in range(ow_):
            h0, w0 = oh * s[0] - p[0], ow * s[1] - p[1]
            h1, w1 = min(h0 + k[0], h + p[0]), min(w0 + k[1], w + p[1])
            size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            divisor = override or (size if include_pad else (h1 - h0) * (w1 - w0))
            for n in range(n_):
                for c in range(c_):
                    y[n, c, oh, ow] = x[n, c, h0:h1, w0:w1].sum() / divisor
    return y


AVG_CASES = [
    # kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
    ((3, 3), (2, 2), (1, 1), False, True, None),
    ((3, 3), (2, 2), (1, 1), True, True, None),
    ((3, 3), (2, 2), (1, 1), True, False, None),
    ((2, 3), (2, 2), (1, 1), True, True, 5),
    ((3, 2), (3, 1), (0, 1), False, False, None),
]


@pytest.mark.parametrize("k, s, p, ceil, include_pad, override", AVG_CASES)
def test_avg_pool2d_matches_aten_loops(run_op, rng, k, s, p, ceil, include_pad, override):
    x = rng.standard_normal((2, 2, 6, 7))
    attrs = AvgPoolAttrs(kernel_size=k, stride=s, padding=p, ceil_mode=ceil,
                         count_include_pad=include_pad, divisor_override=override)
    np.testing.assert_allclose(run_op(ops.avg_pool2d, attrs, x),
                               avg_pool_loops(x, k, s, p, ceil, include_pad, override),
                               rtol=1e-13, atol=1e-14)


def test_avg_pool2d_semantics_check_values(run_op):
    ones = np.ones((1, 1, 5, 5))
    y = run_op(ops.avg_pool2d, AvgPoolAttrs(kernel_size=2, stride=2, ceil_mode=True), ones)
    assert y.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(y, 1.0)
    y = run_op(ops.avg_pool2d, AvgPoolAttrs(kernel_size=3, stride=2, padding=1), ones)
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9, abs=1e-15)


def adaptive_loops(x, out, reduce):
    n_, c_, h, w = x.shape
    oh_, ow_ = (h if out[0] is None else out[0]), (w if out[1] is None else out[1])
    y = np.empty((n_, c_, oh_, ow_))
    for i in range(oh_):
        h0, h1 = math.floor(i * h / oh_), math.ceil((i + 1) * h / oh_)
        for j in range(ow_):
            w0, w1 = math.floor(j * w / ow_), math.ceil((j + 1) * w / ow_)
            for n in range(n_):
                for c in range(c_):
                    y[n, c, i, j] = reduce(x[n, c, h0:h1, w0:w1])
    return y


@pytest.mark.parametrize("out", [(3, 2), (1, 1), (7, None), (4, 5)])
@pytest.mark.parametrize("op, reduce", [(ops.adaptive_avg_pool2d, np.mean),
                                        (ops.adaptive_max_pool2d, np.max)])
def test_adaptive_pools_match_loops(run_op, rng, op, reduce, out):
    x = rng.standard_normal((2, 3, 7, 5))
    np.testing.assert_allclose(run_op(op, AdaptivePoolAttrs(output_size=out), x),
                               adaptive_loops(x, out, reduce), rtol=1e-14, atol=1e-15)


def source_index(dst, l_in, l_out, mode, align, sc):
    """(i0, i1, λ) of §1.10 for one output index."""
    if mode == "nearest":
        i = min(math.floor(dst * sc), l_in - 1)
        return i, i, 0.0
    if mode == "nearest-exact":
        i = min(math.floor((dst + 0.5) * sc), l_in - 1)
        return i, i, 0.0
    if align:
        src = dst * (l_in - 1) / (l_out - 1) if l_out > 1 else 0.0
    else:
        src = max(sc * (dst + 0.5) - 0.5, 0.0)
    i0 = math.floor(src)
    return i0, i0 + (1 if i0 < l_in - 1 else 0), src - i0


def interpolate_loops(x, out_hw, scales, mode, align):
    n_, c_, h, w = x.shape
    y = np.empty((n_, c_, *out_hw))
    for oh in range(out_hw[0]):
        r0, r1, ly = source_index(oh, h, out_hw[0], mode, align, scales[0])
        for ow in range(out_hw[1]):
            q0, q1, lx = source_index(ow, w, out_hw[1], mode, align, scales[1])
            y[:, :, oh, ow] = ((1 - ly) * ((1 - lx) * x[:, :, r0, q0] + lx * x[:, :, r0, q1])
                               + ly * ((1 - lx) * x[:, :, r1, q0] + lx * x[:, :, r1, q1]))
    return y


INTERP_CASES = [
    # size, scale_factor, mode, align_corners, recompute
    (None, (1.5, 1.5), "bilinear", False, None),
    (None, (1.5, 2.0), "bilinear", True, None),
    (None, (1.5, 0.6), "nearest", None, None),
    (None, (1.7, 2.0), "nearest-exact", None, None),
    (None, (1.5, 1.5), "bilinear", False, True),
    ((4, 9), None, "bilinear", False, None),
    ((1, 9), None, "bilinear", True, None),
    ((8, 3), None, "nearest", None, None),
    ((3, 11), None, "nearest-exact", None, None),
]


@pytest.mark.parametrize("size, scale, mode, align, recompute", INTERP_CASES)
def test_interpolate_matches_formula(run_op, rng, size, scale, mode, align, recompute):
    x = rng.standard_normal((2, 2, 5, 7))
    attrs = InterpolateAttrs(size=size, scale_factor=scale, mode=mode, align_corners=align,
                             recompute_scale_factor=recompute)
    out_hw = size or tuple(math.floor(l_in * f) for l_in, f in zip((5, 7), scale))
    if scale is not None and recompute is not True:
        sc = tuple(1 / f for f in scale)
    else:
        sc = tuple(l_in / l_out for l_in, l_out in zip((5, 7), out_hw))
    got = run_op(ops.interpolate, attrs, x)
    np.testing.assert_allclose(got, interpolate_loops(x, out_hw, sc, mode, align),
                               rtol=1e-14, atol=1e-14)


def test_interpolate_scale_trap_uses_one_over_scale(run_op, rng):
    """At scale 1.5 on a 5x7 input, in/out coordinates would be far off (§1.10 trap)."""
    x = rng.standard_normal((1, 1, 5, 7)) * 3
    given = run_op(ops.interpolate, InterpolateAttrs(scale_factor=1.5, mode="bilinear"), x)
    recomputed = run_op(ops.interpolate, InterpolateAttrs(
        scale_factor=1.5, mode="bilinear", recompute_scale_factor=True), x)
    want = interpolate_loops(x, (7, 10), (1 / 1.5, 1 / 1.5), "bilinear", False)
    np.testing.assert_allclose(given, want, rtol=1e-14, atol=1e-14)
    assert np.abs(given - recomputed).max() > 0.1


def test_interpolate_nearest_doubles_pixels(run_op):
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    y = run_op(ops.interpolate, InterpolateAttrs(scale_factor=2), x)
    np.testing.assert_array_equal(y[0, 0], np.repeat(np.repeat(x[0, 0], 2, 0), 2, 1))


# -- gradients (docs/semantics.md §3): conventions finite differences cannot see -------------
NAN = np.nan


def plane(rows):
    return np.asarray(rows, dtype=np.float64)[None, None]


# (name, x, attrs, gy, expected gx) with hand-computed expectations; tests/backends/numba_cpu/
# test_pool_grads.py runs the same table on the Numba backend.
MAX_GRAD_CASES = [
    # an all-equal 2x2 window sends everything to its first tap: [1, 0, 0, 0]
    ("tie-2x2", plane([[1, 1], [1, 1]]), PoolAttrs(kernel_size=2), plane([[1.0]]),
     plane([[1, 0], [0, 0]])),
    # ties go to the first maximum in row-major order: (0, 1) before (1, 0)
    ("tie-row-major", plane([[0, 5], [5, 1]]), PoolAttrs(kernel_size=2), plane([[2.0]]),
     plane([[0, 2], [0, 0]])),
    # overlapping all-equal windows (k2 s1): each window's top-left tap, and they add up
    ("tie-overlap", np.ones((1, 1, 3, 3)), PoolAttrs(kernel_size=2, stride=1),
     plane([[1, 2], [3, 4]]), plane([[1, 2, 0], [3, 4, 0], [0, 0, 0]])),
    # overlapping windows with one shared maximum accumulate there
    ("overlap-accumulates", plane([[0, 0, 0], [0, 9, 0], [0, 0, 0]]),
     PoolAttrs(kernel_size=2, stride=1), plane([[1, 2], [3, 4]]),
     plane([[0, 0, 0], [0, 10, 0], [0, 0, 0]])),
    # padding is −∞ and never chosen, even when every real value is −∞ (k3 s2 p1 on 2x2:
    # one window whose first four taps are padding)
    ("padding-never-chosen", np.full((1, 1, 2, 2), -np.inf),
     PoolAttrs(kernel_size=3, stride=2, padding=1), plane([[5.0]]), plane([[5, 0], [0, 0]])),
    ("all-negative-padding", plane([[-3, -1], [-1, -2]]),
     PoolAttrs(kernel_size=3, stride=2, padding=1), plane([[5.0]]), plane([[0, 5], [0, 0]])),
    # NaN always wins, and the first NaN of the window takes it
    ("nan-wins", plane([[9, 1], [2, NAN]]), PoolAttrs(kernel_size=2), plane([[3.0]]),
     plane([[0, 0], [0, 3]])),
    ("first-nan", plane([[1, NAN], [5, NAN]]), PoolAttrs(kernel_size=2), plane([[3.0]]),
     plane([[0, 3], [0, 0]])),
    # ceil mode (L=5, k2 s2, no padding: out 3): the last window [4, 6) hangs past the input
    ("ceil-window-past-the-input", plane([[1, 2, 3, 4, 5]]),
     PoolAttrs(kernel_size=(1, 2), stride=(1, 2), ceil_mode=True),
     plane([[1, 2, 3]]), plane([[0, 1, 0, 2, 3]])),
    # ceil mode with padding (L=5, k2 s2 p1): out 3, windows from −1, 1, 3
    ("ceil-with-padding", plane([[1, 2, 3, 4, 5]]),
     PoolAttrs(kernel_size=(1, 2), stride=(1, 2), padding=(0, 1), ceil_mode=True),
     plane([[1, 2, 3]]), plane([[1, 0, 2, 0, 3]])),
    # dilation 2: taps (0, 2) of a 1x3 row; the tie goes to the first
    ("dilated-tie", plane([[4, 7, 4]]), PoolAttrs(kernel_size=(1, 2), dilation=(1, 2), stride=1),
     plane([[1.0]]), plane([[1, 0, 0]])),
]

ADAPTIVE_MAX_GRAD_CASES = [
    ("tie-2x2-windows", np.ones((1, 1, 4, 4)), AdaptivePoolAttrs((2, 2)),
     plane([[1, 2], [3, 4]]),
     plane([[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]])),
    # 5 -> 2 overlaps: windows [0, 3) and [2, 5); all equal: their first cells, 0 and 2
    ("tie-overlap", np.ones((1, 1, 1, 5)), AdaptivePoolAttrs((1, 2)), plane([[1, 2]]),
     plane([[1, 0, 2, 0, 0]])),
    ("tie-row-major", plane([[0, 5], [5, 1]]), AdaptivePoolAttrs(1), plane([[2.0]]),
     plane([[0, 2], [0, 0]])),
    ("first-nan", plane([[9, NAN], [5, NAN]]), AdaptivePoolAttrs(1), plane([[3.0]]),
     plane([[0, 3], [0, 0]])),
    ("all-minus-inf", np.full((1, 1, 2, 2), -np.inf), AdaptivePoolAttrs(1), plane([[3.0]]),
     plane([[3, 0], [0, 0]])),
]


@pytest.mark.parametrize("name, x, attrs, gy, want", MAX_GRAD_CASES,
                         ids=[c[0] for c in MAX_GRAD_CASES])
def test_max_pool2d_grad_conventions(run_op, name, x, attrs, gy, want):
    np.testing.assert_array_equal(run_op(max_pool2d_grad, attrs, x, gy), want)


@pytest.mark.parametrize("name, x, attrs, gy, want", ADAPTIVE_MAX_GRAD_CASES,
                         ids=[c[0] for c in ADAPTIVE_MAX_GRAD_CASES])
def test_adaptive_max_pool2d_grad_conventions(run_op, name, x, attrs, gy, want):
    np.testing.assert_array_equal(run_op(adaptive_max_pool2d_grad, attrs, x, gy), want)


def test_max_pool2d_grad_matches_loops(run_op, rng):
    """Random inputs with many ties (integers): first maximum, accumulated over windows."""
    x = rng.integers(0, 3, (2, 3, 7, 8)).astype(np.float64)
    for k, s, p, d, ceil in MAX_CASES:
        attrs = PoolAttrs(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
        gy = rng.standard_normal(max_pool_loops(x, k, s, p, d, ceil).shape)
        want = np.zeros_like(x)
        for n, c, oh, ow in np.ndindex(gy.shape):
            best, at = None, None
            for i in range(k[0]):
                for j in range(k[1]):
                    r, q = oh * s[0] - p[0] + i * d[0], ow * s[1] - p[1] + j * d[1]
                    if 0 <= r < x.shape[2] and 0 <= q < x.shape[3] and (
                            best is None or x[n, c, r, q] > best):
                        best, at = x[n, c, r, q], (r, q)
            want[n, c, at[0], at[1]] += gy[n, c, oh, ow]
        np.testing.assert_allclose(run_op(max_pool2d_grad, attrs, x, gy), want,
                                   rtol=1e-14, atol=1e-14)


def test_avg_pool2d_grad_uses_the_forward_divisor(run_op):
    """k3 s2 p1 on 5x5 (§1.8's check): the corner pixel is only in window (0, 0), divisor 9
    with the padding counted, 4 without; ceil-mode k2 s2 on 5x5: the last window holds one
    column but still divides by 2 (its part past the padding is not counted)."""
    gy = np.ones((1, 1, 3, 3))
    include = AvgPoolGradAttrs(kernel_size=3, stride=2, padding=1, input_size=(5, 5))
    exclude = AvgPoolGradAttrs(kernel_size=3, stride=2, padding=1, count_include_pad=False,
                               input_size=(5, 5))
    assert run_op(avg_pool2d_grad, include, gy)[0, 0, 0, 0] == pytest.approx(1 / 9, abs=1e-16)
    assert run_op(avg_pool2d_grad, exclude, gy)[0, 0, 0, 0] == pytest.approx(1 / 4, abs=1e-16)
    # windows cover rows [−1, 1], [1, 3], [3, 5]: pixel (1, 1) is in four of them, (2, 2) in one
    assert run_op(avg_pool2d_grad, include, gy)[0, 0, 1, 1] == pytest.approx(4 / 9, abs=1e-15)
    assert run_op(avg_pool2d_grad, include, gy)[0, 0, 2, 2] == pytest.approx(1 / 9, abs=1e-16)
    ceil = AvgPoolGradAttrs(kernel_size=(1, 2), stride=(1, 2), ceil_mode=True,
                            input_size=(1, 5))
    got = run_op(avg_pool2d_grad, ceil, np.ones((1, 1, 1, 3)))
    np.testing.assert_allclose(got[0, 0, 0], [0.5, 0.5, 0.5, 0.5, 1.0], rtol=0, atol=1e-16)


@pytest.mark.parametrize("k, s, p, ceil, include_pad, override", AVG_CASES)
def test_avg_pool2d_grad_matches_loops(run_op, rng, k, s, p, ceil, include_pad, override):
    """``gx[window ∩ image] += gy / divisor``, the divisor as §1.8 computes it."""
    shape = (2, 2, 6, 7)
    attrs = AvgPoolGradAttrs(kernel_size=k, stride=s, padding=p, ceil_mode=ceil,
                             count_include_pad=include_pad, divisor_override=override,
                             input_size=shape[2:])
    out = [pool_size(shape[2 + i], k[i], s[i], p[i], 1, ceil) for i in range(2)]
    gy = rng.standard_normal((*shape[:2], *out))
    want = np.zeros(shape)
    for oh in range(out[0]):
        for ow in range(out[1]):
            h0, w0 = oh * s[0] - p[0], ow * s[1] - p[1]
            h1, w1 = min(h0 + k[0], shape[2] + p[0]), min(w0 + k[1], shape[3] + p[1])
            size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, shape[2]), min(w1, shape[3])
            divisor = override or (size if include_pad else (h1 - h0) * (w1 - w0))
            want[:, :, h0:h1, w0:w1] += gy[:, :, oh, ow, None, None] / divisor
    np.testing.assert_allclose(run_op(avg_pool2d_grad, attrs, gy), want, rtol=1e-14,
                               atol=1e-15)


@pytest.mark.parametrize("out", [(3, 2), (1, 1), (7, None), (4, 5)])
def test_adaptive_avg_pool2d_grad_matches_loops(run_op, rng, out):
    """Each cell of window (i, j) gets ``gy / window size``; overlapping windows add up."""
    h, w = 7, 5
    oh, ow = out[0], w if out[1] is None else out[1]
    gy = rng.standard_normal((2, 3, oh, ow))
    want = np.zeros((2, 3, h, w))
    for i in range(oh):
        h0, h1 = math.floor(i * h / oh), math.ceil((i + 1) * h / oh)
        for j in range(ow):
            w0, w1 = math.floor(j * w / ow), math.ceil((j + 1) * w / ow)
            want[:, :, h0:h1, w0:w1] += gy[:, :, i, j, None, None] / ((h1 - h0) * (w1 - w0))
    attrs = AdaptivePoolGradAttrs(output_size=out, input_size=(h, w))
    np.testing.assert_allclose(run_op(adaptive_avg_pool2d_grad, attrs, gy), want,
                               rtol=1e-14, atol=1e-15)


def test_bilinear_grad_puts_both_edge_weights_on_one_pixel(run_op):
    """x2 on a 1x2 row (align_corners False): sources max(0.5·(dst + ½) − ½, 0) = 0, 0.25,
    0.75, 1.25; the last clamps to i0 = i1 = 1, so both its weights (0.75, 0.25) land there."""
    gy = plane([[1.0, 10.0, 100.0, 1000.0]])
    attrs = InterpolateGradAttrs(scale_factor=(1, 2), mode="bilinear", input_size=(1, 2))
    got = run_op(interpolate_grad, attrs, gy)
    np.testing.assert_allclose(got, plane([[1 + 0.75 * 10 + 0.25 * 100,
                                            0.25 * 10 + 0.75 * 100 + 1000]]), rtol=1e-15)
    # align_corners, 2 -> 3: sources 0, 0.5, 1
    attrs = InterpolateGradAttrs(size=(1, 3), mode="bilinear", align_corners=True,
                                 input_size=(1, 2))
    got = run_op(interpolate_grad, attrs, plane([[1.0, 10.0, 100.0]]))
    np.testing.assert_allclose(got, plane([[1 + 5, 5 + 100]]), rtol=1e-15)


def test_nearest_grad_adds_to_the_source_index(run_op):
    """nearest x0.5 on 4 columns reads 0 and 2 (1 and 3 get nothing); nearest-exact 2 -> 5
    reads ⌊(dst + ½)·0.4⌋ = 0, 0, 1, 1, 1."""
    attrs = InterpolateGradAttrs(scale_factor=(1, 0.5), input_size=(1, 4))
    np.testing.assert_array_equal(run_op(interpolate_grad, attrs, plane([[1.0, 2.0]])),
                                  plane([[1, 0, 2, 0]]))
    attrs = InterpolateGradAttrs(size=(1, 5), mode="nearest-exact", input_size=(1, 2))
    np.testing.assert_array_equal(run_op(interpolate_grad, attrs, plane([[1, 2, 4, 8, 16.0]])),
                                  plane([[3, 28]]))


@pytest.mark.parametrize("size, scale, mode, align, recompute", INTERP_CASES)
def test_interpolate_grad_is_the_transpose(run_op, rng, size, scale, mode, align, recompute):
    """⟨interpolate(x), gy⟩ = ⟨x, interpolate_grad(gy)⟩ for every mode."""
    x = rng.standard_normal((2, 2, 5, 7))
    forward = InterpolateAttrs(size=size, scale_factor=scale, mode=mode, align_corners=align,
                               recompute_scale_factor=recompute)
    y = run_op(ops.interpolate, forward, x)
    gy = rng.standard_normal(y.shape)
    attrs = InterpolateGradAttrs(size=size, scale_factor=scale, mode=mode, align_corners=align,
                                 recompute_scale_factor=recompute, input_size=(5, 7))
    gx = run_op(interpolate_grad, attrs, gy)
    assert np.sum(y * gy) == pytest.approx(np.sum(x * gx), rel=1e-12)


def test_gradient_ops_refuse_a_grad_output_of_another_shape():
    with pytest.raises(ShapeError, match=r"grad_output shaped like the forward output"):
        max_pool2d_grad.infer_types(PoolAttrs(kernel_size=2), [
            cnnir_type((1, 1, 4, 4)), cnnir_type((1, 1, 3, 2))])
    with pytest.raises(ShapeError, match=r"\[1, 1, 2, 2\].*\[1, 1, 3, 3\]"):
        avg_pool2d_grad.infer_types(AvgPoolGradAttrs(kernel_size=2, input_size=(4, 4)),
                                    [cnnir_type((1, 1, 3, 3))])
    with pytest.raises(ShapeError, match=r"input_size"):
        InterpolateGradAttrs(scale_factor=2, input_size=(0, 3))


def cnnir_type(shape):
    return TensorType(shape, "float64")
