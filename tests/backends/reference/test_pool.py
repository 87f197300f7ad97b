"""Reference pooling and interpolate against loops written from docs/semantics.md §1.7–§1.10."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnir import ops
from cnnir.ops.pool import AdaptivePoolAttrs, AvgPoolAttrs, InterpolateAttrs, PoolAttrs


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
