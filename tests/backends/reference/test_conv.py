"""Reference convolutions against brute-force loops written from docs/semantics.md §1.1–§1.3,
and their backward ops against loops written from §3."""

from __future__ import annotations

import math

import numpy as np
import pytest

import cnnir
from cnnir import nn, ops
from cnnir.ops.conv import (
    Conv2dAttrs,
    Conv2dWeightGradAttrs,
    ConvTranspose2dAttrs,
    conv2d_weight_grad,
    deform_conv2d_data_grad,
    deform_conv2d_weight_grad,
)
from cnnir.ops.tensor import ReduceAttrs
from cnnir.passes.autodiff import differentiate


def conv2d_loops(x, w, b, stride, pads, dilation, groups):
    """y[n,o,oh,ow] = b[o] + Σ W[o,c',i,j]·xp[n, g(o)·C/G + c', oh·s_h + i·d_h, ow·s_w + j·d_w]."""
    n_, c, h, wd = x.shape
    o_, cg, kh, kw = w.shape
    pt, pl, pb, pr = pads
    oh_ = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow_ = (wd + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n_, o_, oh_, ow_))
    for n in range(n_):
        for o in range(o_):
            g = o // (o_ // groups)
            for oh in range(oh_):
                for ow in range(ow_):
                    acc = 0.0 if b is None else b[o]
                    for ci in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                r = oh * stride[0] + i * dilation[0] - pt
                                s = ow * stride[1] + j * dilation[1] - pl
                                if 0 <= r < h and 0 <= s < wd:
                                    acc += w[o, ci, i, j] * x[n, g * cg + ci, r, s]
                    y[n, o, oh, ow] = acc
    return y


CONV_CASES = [
    # x shape, weight shape, stride, pads (t, l, b, r), dilation, groups, bias
    ((2, 4, 7, 6), (6, 2, 3, 2), (2, 1), (1, 0, 2, 1), (1, 2), 2, True),
    ((1, 3, 5, 5), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, False),
    ((1, 4, 6, 5), (8, 1, 3, 3), (2, 2), (0, 1, 1, 0), (2, 1), 4, True),  # depthwise x2
    ((2, 2, 4, 4), (3, 2, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, True),  # 1x1
]


@pytest.mark.parametrize("xs, ws, stride, pads, dilation, groups, bias", CONV_CASES)
def test_conv2d_matches_loops(run_op, rng, xs, ws, stride, pads, dilation, groups, bias):
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[0]) if bias else None
    attrs = Conv2dAttrs(stride=stride, padding=pads, dilation=dilation, groups=groups)
    got = run_op(ops.conv2d, attrs, x, w, b)
    np.testing.assert_allclose(got, conv2d_loops(x, w, b, stride, pads, dilation, groups),
                               rtol=1e-12, atol=1e-12)


def conv_transpose2d_loops(x, w, b, stride, pads, dilation, groups, output_padding):
    """The scatter of §1.2 on an uncropped canvas, cropped to [p, p + OH)."""
    n_, cin, h, wd = x.shape
    _, per_group, kh, kw = w.shape
    pt, pl, pb, pr = pads
    oh_ = (h - 1) * stride[0] - pt - pb + dilation[0] * (kh - 1) + output_padding[0] + 1
    ow_ = (wd - 1) * stride[1] - pl - pr + dilation[1] * (kw - 1) + output_padding[1] + 1
    canvas = np.zeros((n_, groups * per_group, pt + oh_ + 20, pl + ow_ + 20))
    for n in range(n_):
        for ci in range(cin):
            g = ci // (cin // groups)
            for r in range(h):
                for s in range(wd):
                    for co in range(per_group):
                        for i in range(kh):
                            for j in range(kw):
                                canvas[n, g * per_group + co, r * stride[0] + i * dilation[0],
                                       s * stride[1] + j * dilation[1]] += x[n, ci, r, s] * w[
                                    ci, co, i, j]
    y = canvas[:, :, pt:pt + oh_, pl:pl + ow_]
    return y if b is None else y + b[None, :, None, None]


TRANSPOSE_CASES = [
    # x shape, weight shape, stride, pads, dilation, groups, output_padding
    ((2, 4, 3, 4), (4, 3, 3, 2), (2, 3), (1, 0, 0, 2), (1, 2), 2, (1, 1)),
    ((1, 2, 4, 4), (2, 3, 2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1, (1, 1)),  # rows past canvas
    ((1, 3, 3, 3), (3, 1, 3, 3), (1, 1), (1, 1, 1, 1), (2, 2), 3, (1, 0)),
]


@pytest.mark.parametrize("xs, ws, stride, pads, dilation, groups, out_pad", TRANSPOSE_CASES)
def test_conv_transpose2d_matches_scatter(run_op, rng, xs, ws, stride, pads, dilation, groups,
                                          out_pad):
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[1] * groups)
    attrs = ConvTranspose2dAttrs(stride=stride, padding=pads, dilation=dilation, groups=groups,
                                 output_padding=out_pad)
    got = run_op(ops.conv_transpose2d, attrs, x, w, b)
    want = conv_transpose2d_loops(x, w, b, stride, pads, dilation, groups, out_pad)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_conv_transpose2d_output_padding_rows_get_only_bias(run_op, rng):
    x, w, b = rng.standard_normal((1, 1, 2, 2)), rng.standard_normal((1, 1, 2, 2)), np.array([7.0])
    attrs = ConvTranspose2dAttrs(stride=(2, 2), output_padding=(1, 1))
    got = run_op(ops.conv_transpose2d, attrs, x, w, b)
    assert got.shape == (1, 1, 5, 5)
    np.testing.assert_array_equal(got[0, 0, 4, :], 7.0)
    np.testing.assert_array_equal(got[0, 0, :, 4], 7.0)


@pytest.mark.parametrize("stride, pads, dilation, groups", [
    ((2, 1), (1, 2, 0, 1), (1, 2), 2),
    ((3, 2), (2, 2, 2, 2), (2, 1), 1),
    ((1, 1), (0, 0, 0, 0), (1, 1), 4),
])
def test_conv_transpose2d_is_the_adjoint_of_conv2d(run_op, rng, stride, pads, dilation, groups):
    """<conv(x), y> = <x, conv_transpose(y)> with the same weight, s, p, d and groups."""
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((8, 4 // groups, 3, 2))
    conv = Conv2dAttrs(stride=stride, padding=pads, dilation=dilation, groups=groups)
    cx = run_op(ops.conv2d, conv, x, w, None)
    y = rng.standard_normal(cx.shape)
    natural = [(cx.shape[2 + a] - 1) * stride[a] - pads[a] - pads[a + 2]
               + dilation[a] * (w.shape[2 + a] - 1) + 1 for a in range(2)]
    out_pad = (x.shape[2] - natural[0], x.shape[3] - natural[1])
    tr = ConvTranspose2dAttrs(stride=stride, padding=pads, dilation=dilation, groups=groups,
                              output_padding=out_pad)
    ty = run_op(ops.conv_transpose2d, tr, y, w, None)
    assert ty.shape == x.shape
    assert math.isclose(np.vdot(cx, y), np.vdot(x, ty), rel_tol=1e-12)


def bilinear_sample(img, y, x):
    """torchvision's bilinear_interpolate on an infinitely zero-padded plane."""
    h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    total = 0.0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * img[yy, xx]
    return total


def deform_conv2d_loops(x, offset, w, b, mask, stride, pad, dilation):
    """§1.3 element by element: sample each tap at its offset point, weight, accumulate."""
    n_, c, h, wd = x.shape
    o_, cg, kh, kw = w.shape
    _, _, oh_, ow_ = offset.shape
    og = offset.shape[1] // (2 * kh * kw)
    groups = c // cg
    y = np.zeros((n_, o_, oh_, ow_))
    for n in range(n_):
        for o in range(o_):
            g = o // (o_ // groups)
            for oh in range(oh_):
                for ow in range(ow_):
                    acc = 0.0 if b is None else b[o]
                    for ci in range(cg):
                        ch = g * cg + ci
                        og_i = ch // (c // og)
                        for i in range(kh):
                            for j in range(kw):
                                tap = og_i * kh * kw + i * kw + j
                                py = oh * stride[0] - pad[0] + i * dilation[0] + offset[
                                    n, 2 * tap, oh, ow]
                                px = ow * stride[1] - pad[1] + j * dilation[1] + offset[
                                    n, 2 * tap + 1, oh, ow]
                                v = bilinear_sample(x[n, ch], py, px)
                                if mask is not None:
                                    v *= mask[n, tap, oh, ow]
                                acc += w[o, ci, i, j] * v
                    y[n, o, oh, ow] = acc
    return y


def _deform_attrs(stride, pad, dilation):
    return Conv2dAttrs(stride=stride, padding=(pad[0], pad[1], pad[0], pad[1]),
                       dilation=dilation)


@pytest.mark.parametrize("og, groups, with_mask", [(1, 1, False), (2, 2, True), (4, 1, True)])
def test_deform_conv2d_matches_loops(run_op, rng, og, groups, with_mask):
    stride, pad, dilation = (2, 1), (1, 2), (1, 2)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((4, 4 // groups, 3, 2))
    b = rng.standard_normal(4)
    oh = (6 + 2 - 2 - 1) // 2 + 1
    ow = (5 + 4 - 2 - 1) // 1 + 1
    offset = 2.5 * rng.standard_normal((2, 2 * og * 6, oh, ow))  # many points fall outside
    mask = rng.uniform(-1, 2, (2, og * 6, oh, ow)) if with_mask else None
    got = run_op(ops.deform_conv2d, _deform_attrs(stride, pad, dilation), x, offset, w, b, mask)
    want = deform_conv2d_loops(x, offset, w, b, mask, stride, pad, dilation)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_deform_conv2d_with_zero_offsets_and_no_mask_is_conv2d(run_op, rng):
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    attrs = _deform_attrs((2, 1), (1, 1), (1, 2))
    oh, ow = (7 + 2 - 2 - 1) // 2 + 1, (6 + 2 - 4 - 1) + 1
    offset = np.zeros((2, 2 * 9, oh, ow))
    got = run_op(ops.deform_conv2d, attrs, x, offset, w, b, None)
    want = conv2d_loops(x, w, b, (2, 1), (1, 1, 1, 1), (1, 2), 2)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_deform_sampling_edges(run_op):
    """A 1x1 kernel on a 1x2 image of ones: y = -1 and y = H give 0, y = -0.5 gives half."""
    x = np.ones((1, 1, 1, 2))
    w = np.ones((1, 1, 1, 1))
    dy = np.array([-1.0, -0.5]).reshape(1, 1, 1, 2)
    offset = np.concatenate([dy, np.zeros_like(dy)], axis=1)
    got = run_op(ops.deform_conv2d, Conv2dAttrs(), x, offset, w, None, None)
    np.testing.assert_array_equal(got.ravel(), [0.0, 0.5])
    offset[0, 0] = [1.0, 0.25]  # y = H is outside; y = 0.25 blends row 0 with the zero row 1
    got = run_op(ops.deform_conv2d, Conv2dAttrs(), x, offset, w, None, None)
    np.testing.assert_array_equal(got.ravel(), [0.0, 0.75])


# -- backward ops (docs/semantics.md §3) ----------------------------------------------------


def conv2d_weight_grad_loops(x, gy, kernel, stride, pads, dilation, groups):
    """gW[o, c', i, j] = Σ_{n, oh, ow} gy[n, o, oh, ow]·xp[n, g(o)·C/G + c', oh·s_h + i·d_h,
    ow·s_w + j·d_w]."""
    n_, c, h, wd = x.shape
    _, o_, oh_, ow_ = gy.shape
    cg, (kh, kw) = c // groups, kernel
    gw = np.zeros((o_, cg, kh, kw))
    for o in range(o_):
        g = o // (o_ // groups)
        for ci in range(cg):
            for i in range(kh):
                for j in range(kw):
                    acc = 0.0
                    for n in range(n_):
                        for oh in range(oh_):
                            for ow in range(ow_):
                                r = oh * stride[0] + i * dilation[0] - pads[0]
                                s = ow * stride[1] + j * dilation[1] - pads[1]
                                if 0 <= r < h and 0 <= s < wd:
                                    acc += gy[n, o, oh, ow] * x[n, g * cg + ci, r, s]
                    gw[o, ci, i, j] = acc
    return gw


@pytest.mark.parametrize("xs, ws, stride, pads, dilation, groups, bias", CONV_CASES)
def test_conv2d_weight_grad_matches_loops(run_op, rng, xs, ws, stride, pads, dilation, groups,
                                          bias):
    x = rng.standard_normal(xs)
    oh = (xs[2] + pads[0] + pads[2] - dilation[0] * (ws[2] - 1) - 1) // stride[0] + 1
    ow = (xs[3] + pads[1] + pads[3] - dilation[1] * (ws[3] - 1) - 1) // stride[1] + 1
    gy = rng.standard_normal((xs[0], ws[0], oh, ow))
    attrs = Conv2dWeightGradAttrs(stride=stride, padding=pads, dilation=dilation,
                                  groups=groups, kernel_size=ws[2:])
    got = run_op(conv2d_weight_grad, attrs, x, gy)
    want = conv2d_weight_grad_loops(x, gy, ws[2:], stride, pads, dilation, groups)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_first_layer_gets_no_input_gradient():
    """Differentiating with respect to the weights only emits no conv_transpose2d."""
    graph = cnnir.trace(nn.Conv2d(3, 4, 3, padding=1), [cnnir.TensorType((2, 3, 8, 8))])
    loss = graph.add_node(ops.sum_, [graph.outputs[0]], ReduceAttrs(None)).output
    grads = differentiate(graph, loss, list(graph.parameters().values()))
    assert all(g is not None for g in grads)
    used = {node.op for node in graph.nodes}
    assert conv2d_weight_grad in used and ops.conv_transpose2d not in used


def deform_backward_loops(x, offset, w, gy, mask, stride, pad, dilation):
    """torchvision's deformable col2im (input, with its truncation and |y − yp| < 1 test),
    col2im_coord (offset, mask) and the weight's Σ gy·col, element by element."""
    n_, c, h, wd = x.shape
    o_, cg, kh, kw = w.shape
    oh_, ow_ = gy.shape[2:]
    og = offset.shape[1] // (2 * kh * kw)
    opg = o_ // (c // cg)
    gx, goff, gw = np.zeros_like(x), np.zeros_like(offset), np.zeros_like(w)
    gmask = np.zeros_like(mask) if mask is not None else None

    def v(n, ch, a, b):
        return x[n, ch, a, b] if 0 <= a < h and 0 <= b < wd else 0.0

    for n, ch, i, j, oh, ow in np.ndindex(n_, c, kh, kw, oh_, ow_):
        g, ci = ch // cg, ch % cg
        gcol = sum(w[o, ci, i, j] * gy[n, o, oh, ow] for o in range(g * opg, (g + 1) * opg))
        tap = ch // (c // og) * kh * kw + i * kw + j
        y = oh * stride[0] - pad[0] + i * dilation[0] + offset[n, 2 * tap, oh, ow]
        xs = ow * stride[1] - pad[1] + j * dilation[1] + offset[n, 2 * tap + 1, oh, ow]
        m = mask[n, tap, oh, ow] if mask is not None else 1.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yp, xp = int(y) + dy, int(xs) + dx
                if 0 <= yp < h and 0 <= xp < wd and abs(y - yp) < 1 and abs(xs - xp) < 1:
                    gx[n, ch, yp, xp] += m * (1 - abs(y - yp)) * (1 - abs(xs - xp)) * gcol
        yl, xl = math.floor(y), math.floor(xs)
        ly, lx = y - yl, xs - xl
        goff[n, 2 * tap, oh, ow] += m * gcol * (
            lx * (v(n, ch, yl + 1, xl + 1) - v(n, ch, yl, xl + 1))
            + (1 - lx) * (v(n, ch, yl + 1, xl) - v(n, ch, yl, xl)))
        goff[n, 2 * tap + 1, oh, ow] += m * gcol * (
            ly * (v(n, ch, yl + 1, xl + 1) - v(n, ch, yl + 1, xl))
            + (1 - ly) * (v(n, ch, yl, xl + 1) - v(n, ch, yl, xl)))
        sample = bilinear_sample(x[n, ch], y, xs)
        if mask is not None:
            gmask[n, tap, oh, ow] += gcol * sample
        for o in range(g * opg, (g + 1) * opg):
            gw[o, ci, i, j] += gy[n, o, oh, ow] * m * sample
    return gx, goff, gmask, gw


@pytest.mark.parametrize("og, groups, with_mask", [(1, 1, False), (2, 2, True), (4, 1, True)])
def test_deform_conv2d_backward_matches_loops(run_op, rng, og, groups, with_mask):
    stride, pad, dilation = (2, 1), (1, 2), (1, 2)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((4, 4 // groups, 3, 2))
    oh, ow = (6 + 2 - 2 - 1) // 2 + 1, (5 + 4 - 2 - 1) // 1 + 1
    offset = 2.5 * rng.standard_normal((2, 2 * og * 6, oh, ow))
    offset[0, 0, 0, :3] = [-1.0, 0.5, 2.0]  # integer and half-integer sample points too
    mask = rng.uniform(-1, 2, (2, og * 6, oh, ow)) if with_mask else None
    gy = rng.standard_normal((2, 4, oh, ow))
    attrs = _deform_attrs(stride, pad, dilation)
    data = run_op(deform_conv2d_data_grad, attrs, x, offset, w, gy, mask)
    weight_attrs = Conv2dWeightGradAttrs(stride=stride, padding=attrs.padding,
                                         dilation=dilation, groups=groups, kernel_size=(3, 2))
    gw = run_op(deform_conv2d_weight_grad, weight_attrs, x, offset, gy, mask)
    gx, goff, gmask, want_gw = deform_backward_loops(x, offset, w, gy, mask, stride, pad,
                                                     dilation)
    assert len(data) == (3 if with_mask else 2)
    for got, want in zip([*data, gw], [gx, goff, *([gmask] if with_mask else []), want_gw]):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_deform_offset_gradient_at_y_minus_one(run_op):
    """At exactly y = −1 the sample is 0 but Δy's gradient is not (torchvision's col2im_coord);
    the input and mask get nothing there."""
    x = np.array([[[[2.0, 3.0]]]])  # 1x2 image
    w = np.ones((1, 1, 1, 1))
    offset = np.zeros((1, 2, 1, 2))
    offset[0, 0] = [-1.0, -0.5]
    mask = np.full((1, 1, 1, 2), 0.5)
    gy = np.ones((1, 1, 1, 2))
    gx, goff, gmask = run_op(deform_conv2d_data_grad, Conv2dAttrs(), x, offset, w, gy, mask)
    # y = −1: the rows −1 (zero) and 0 at x = 0: Δy gets mask·(v(0, 0) − 0) = 0.5·2
    assert goff[0, 0, 0, 0] == 0.5 * 2.0
    assert gmask[0, 0, 0, 0] == 0.0
    # y = −0.5 at x = 1: half of pixel (0, 1) sampled; d/dy = v(0, 1) − 0 = 3
    assert goff[0, 0, 0, 1] == 0.5 * 3.0
    assert gmask[0, 0, 0, 1] == 0.5 * 3.0
    np.testing.assert_array_equal(gx, [[[[0.0, 0.25]]]])
