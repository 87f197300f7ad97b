"""Reference convolutions (docs/semantics.md §1.1–§1.3), written as im2col plus a grouped matmul.

conv2d:
    y[n,o,oh,ow] = b[o] + Σ_{c',i,j} W[o,c',i,j]·xp[n, g(o)·C/G + c', oh·s_h + i·d_h,
                                                       ow·s_w + j·d_w]
    with xp = x zero-padded by (top, left, bottom, right) and g(o) = o // (O/G).
conv_transpose2d (W ``[C_in, O/G, kh, kw]``): scatter x[n,ci,h,w]·W[ci,co',i,j] into channel
    g·O/G + co' at (h·s_h + i·d_h, w·s_w + j·d_w) of an uncropped canvas, keep rows
    [pt, pt + OH) and columns [pl, pl + OW), add the bias.
deform_conv2d: col[n,c,i,j,oh,ow] = mask·sample(x[n,c], y, x) at
    y = oh·s_h − pt + i·d_h + Δy, x = ow·s_w − pl + j·d_w + Δx (bilinear sampling of an
    infinitely zero-padded image); out = grouped_conv(W, col) + b.

Backward ops (docs/semantics.md §3), written from the formulas:
conv2d_weight_grad: gW[o, c', i, j] = Σ_{n, oh, ow} gy[n, o, oh, ow]·xp[n, g(o)·C/G + c',
    oh·s_h + i·d_h, ow·s_w + j·d_w].
deform_conv2d_data_grad, with gcol[n, c, i, j, oh, ow] = Σ_{o in c's group} W[o, c', i, j]·gy:
    gx scatters mask·(1 − |y − a|)(1 − |x − b|)·gcol onto the corners (a, b) inside the image;
    gΔy = Σ_c mask·gcol·[lx·(v(y1, x1) − v(y0, x1)) + (1 − lx)·(v(y1, x0) − v(y0, x0))] and
    gΔx likewise (v = 0 outside the image, no test that the sample itself is inside: at
    exactly y = −1 this is not 0, torchvision's behaviour); gmask = Σ_c gcol·sample.
deform_conv2d_weight_grad: gW = Σ_{n, oh, ow} gy·col per group.
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.reference.runtime import Context, kernel
from cnnir.ops.conv import (
    Conv2dAttrs,
    Conv2dWeightGradAttrs,
    ConvTranspose2dAttrs,
    conv2d_weight_grad,
    deform_conv2d_data_grad,
    deform_conv2d_weight_grad,
)


def conv_out_size(size: int, k: int, s: int, pad_total: int, d: int) -> int:
    """``⌊(L + pads − d(k−1) − 1)/s⌋ + 1``."""
    return (size + pad_total - d * (k - 1) - 1) // s + 1


def pad_spatial(x: np.ndarray, pads: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    """Pad the last two axes by (top, left, bottom, right) with ``value``."""
    top, left, bottom, right = pads
    width = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(x, width, constant_values=value)


def taps(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
         dilation: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """im2col: ``cols[n, c, i, j, oh, ow] = xp[n, c, oh·s_h + i·d_h, ow·s_w + j·d_w]``."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    cols = np.empty((*xp.shape[:2], kh, kw, oh, ow), dtype=xp.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                                  j * dw:j * dw + sw * (ow - 1) + 1:sw]
    return cols


def grouped_contract(w: np.ndarray, cols: np.ndarray, groups: int) -> np.ndarray:
    """``y[n, o, p] = Σ_{c',i,j} W[o,c',i,j]·cols[n, g(o)·C/G + c', i, j, p]`` over the
    output positions p, one matrix product per group."""
    n, c, kh, kw, oh, ow = cols.shape
    out_ch = w.shape[0]
    cols_g = cols.reshape(n, groups, (c // groups) * kh * kw, oh * ow)
    w_g = w.reshape(groups, out_ch // groups, (c // groups) * kh * kw)
    return np.matmul(w_g, cols_g).reshape(n, out_ch, oh, ow)


def add_bias(y: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    return y if b is None else y + b.reshape(1, -1, 1, 1)


@kernel(ops.conv2d)
def conv2d(ctx: Context, a: Conv2dAttrs, x: np.ndarray, w: np.ndarray,
           b: np.ndarray | None) -> np.ndarray:
    """Grouped, strided, dilated conv with asymmetric zero padding."""
    kh, kw = w.shape[2:]
    pt, pl, pb, pr = a.padding
    out_hw = (conv_out_size(x.shape[2], kh, a.stride[0], pt + pb, a.dilation[0]),
              conv_out_size(x.shape[3], kw, a.stride[1], pl + pr, a.dilation[1]))
    cols = taps(pad_spatial(x, a.padding), (kh, kw), a.stride, a.dilation, out_hw)
    return add_bias(grouped_contract(w, cols, a.groups), b)


def transpose_out_size(size: int, k: int, s: int, pad_total: int, d: int, out_pad: int) -> int:
    """``(L − 1)·s − pads + d(k−1) + output_padding + 1``."""
    return (size - 1) * s - pad_total + d * (k - 1) + out_pad + 1


@kernel(ops.conv_transpose2d)
def conv_transpose2d(ctx: Context, a: ConvTranspose2dAttrs, x: np.ndarray, w: np.ndarray,
                     b: np.ndarray | None) -> np.ndarray:
    """The scatter of §1.2: every input pixel adds ``x·W[ci, :, i, j]`` at its tap offsets."""
    n, cin, h, wd = x.shape
    g = a.groups
    kh, kw = w.shape[2:]
    per_group = w.shape[1]
    (sh, sw), (dh, dw) = a.stride, a.dilation
    pt, pl, pb, pr = a.padding
    oh = transpose_out_size(h, kh, sh, pt + pb, dh, a.output_padding[0])
    ow = transpose_out_size(wd, kw, sw, pl + pr, dw, a.output_padding[1])
    # contrib[n, g, co', i, j, h, w] = Σ_{ci in group g} x[n, ci, h, w]·W[ci, co', i, j]
    w_g = w.reshape(g, cin // g, per_group * kh * kw).transpose(0, 2, 1)
    contrib = np.matmul(w_g, x.reshape(n, g, cin // g, h * wd))
    contrib = contrib.reshape(n, g * per_group, kh, kw, h, wd)
    canvas_h = max((h - 1) * sh + dh * (kh - 1) + 1, pt + oh)
    canvas_w = max((wd - 1) * sw + dw * (kw - 1) + 1, pl + ow)
    canvas = np.zeros((n, g * per_group, canvas_h, canvas_w), dtype=contrib.dtype)
    for i in range(kh):
        for j in range(kw):
            canvas[:, :, i * dh:i * dh + sh * (h - 1) + 1:sh,
                   j * dw:j * dw + sw * (wd - 1) + 1:sw] += contrib[:, :, i, j]
    return add_bias(canvas[:, :, pt:pt + oh, pl:pl + ow], b)


def bilinear_zero_padded(img: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sample ``img`` ``[N, C, H, W]`` at real points ``y, x`` ``[N, ...]`` → ``[N, C, ...]``.

    0 when ``y ≤ −1 or y ≥ H or x ≤ −1 or x ≥ W``; else the bilinear blend of the corners
    (⌊y⌋, ⌊y⌋+1) × (⌊x⌋, ⌊x⌋+1) with weights (1−ly or ly)(1−lx or lx), where corners outside
    the image contribute 0.
    """
    n, c, h, wd = img.shape
    pixels = img.transpose(0, 2, 3, 1)  # [N, H, W, C]: gather whole channel vectors
    batch = np.arange(n).reshape((n,) + (1,) * (y.ndim - 1))
    valid = (y > -1) & (y < h) & (x > -1) & (x < wd)
    y0, x0 = np.floor(y), np.floor(x)
    ly, lx = y - y0, x - x0
    out = np.zeros((*y.shape, c), dtype=img.dtype)
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yy, xx = y0 + dy, x0 + dx
            inside = valid & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
            yi = np.where(inside, yy, 0).astype(np.int64)
            xi = np.where(inside, xx, 0).astype(np.int64)
            weight = np.where(inside, wy * wx, 0.0)
            out += weight[..., None] * pixels[batch, yi, xi]
    return np.moveaxis(out, -1, 1)


def deform_positions(a: Conv2dAttrs, offset: np.ndarray, kernel: tuple[int, int]):
    """Per offset group g and tap (i, j): ``(g, i, j, tap, y, x)`` with the sample positions
    ``y = oh·s_h − pt + i·d_h + Δy`` and ``x = ow·s_w − pl + j·d_w + Δx``, each [N, OH, OW]."""
    kh, kw = kernel
    oh, ow = offset.shape[2:]
    (sh, sw), (dh, dw) = a.stride, a.dilation
    pt, pl = a.padding[:2]
    base_y = (np.arange(oh) * sh - pt).reshape(1, oh, 1)
    base_x = (np.arange(ow) * sw - pl).reshape(1, 1, ow)
    for g in range(offset.shape[1] // (2 * kh * kw)):
        for i in range(kh):
            for j in range(kw):
                tap = g * kh * kw + i * kw + j
                yield (g, i, j, tap, base_y + i * dh + offset[:, 2 * tap],
                       base_x + j * dw + offset[:, 2 * tap + 1])


def deform_columns(a: Conv2dAttrs, x: np.ndarray, offset: np.ndarray,
                   mask: np.ndarray | None, kernel: tuple[int, int]) -> np.ndarray:
    """``col[n, c, i, j, oh, ow] = mask·sample(x[n, c], y, x)`` (§1.3)."""
    n, c = x.shape[:2]
    kh, kw = kernel
    per_offset_group = c // (offset.shape[1] // (2 * kh * kw))
    cols = np.empty((n, c, kh, kw, *offset.shape[2:]), dtype=x.dtype)
    for g, i, j, tap, y, xs in deform_positions(a, offset, kernel):
        chans = slice(g * per_offset_group, (g + 1) * per_offset_group)
        sample = bilinear_zero_padded(x[:, chans], y, xs)
        if mask is not None:
            sample = sample * mask[:, tap][:, None]
        cols[:, chans, i, j] = sample
    return cols


@kernel(ops.deform_conv2d)
def deform_conv2d(ctx: Context, a: Conv2dAttrs, x: np.ndarray, offset: np.ndarray,
                  w: np.ndarray, b: np.ndarray | None,
                  mask: np.ndarray | None = None) -> np.ndarray:
    """torchvision's deform_conv2d; the mask is used raw and groups follow from the shapes."""
    cols = deform_columns(a, x, offset, mask, w.shape[2:])
    return add_bias(grouped_contract(w, cols, x.shape[1] // w.shape[1]), b)


def grouped_weight_grad(gy: np.ndarray, cols: np.ndarray, groups: int) -> np.ndarray:
    """``gW[o, c', i, j] = Σ_{n, p} gy[n, o, p]·cols[n, g(o)·C/G + c', i, j, p]``."""
    n, c, kh, kw, oh, ow = cols.shape
    out_ch = gy.shape[1]
    gy_g = gy.reshape(n, groups, out_ch // groups, oh * ow)
    cols_g = cols.reshape(n, groups, (c // groups) * kh * kw, oh * ow)
    gw = np.einsum("ngop,ngkp->gok", gy_g, cols_g, optimize=True)
    return gw.reshape(out_ch, c // groups, kh, kw)


@kernel(conv2d_weight_grad)
def conv2d_weight_grad_kernel(ctx: Context, a: Conv2dWeightGradAttrs, x: np.ndarray,
                              gy: np.ndarray) -> np.ndarray:
    """conv2d's weight gradient: the correlation of gy with the forward's columns."""
    cols = taps(pad_spatial(x, a.padding), a.kernel_size, a.stride, a.dilation, gy.shape[2:])
    return grouped_weight_grad(gy, cols, a.groups)


def pixel(img: np.ndarray, batch: np.ndarray, chans: np.ndarray, yy: np.ndarray,
          xx: np.ndarray) -> np.ndarray:
    """``v(yy, xx)`` of ``img[n, c]``: the pixel, 0 outside the image."""
    h, wd = img.shape[2:]
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
    yi = np.where(inside, yy, 0).astype(np.int64)
    xi = np.where(inside, xx, 0).astype(np.int64)
    return np.where(inside, img[batch, chans, yi, xi], 0.0)


@kernel(deform_conv2d_data_grad)
def deform_conv2d_data_grad_kernel(ctx: Context, a: Conv2dAttrs, x: np.ndarray,
                                   offset: np.ndarray, w: np.ndarray, gy: np.ndarray,
                                   mask: np.ndarray | None = None) -> tuple:
    """Gradients of the input, the offsets and the mask (torchvision's col2im kernels)."""
    n, c, h, wd = x.shape
    out_ch, per_group, kh, kw = w.shape
    groups = c // per_group
    oh, ow = gy.shape[2:]
    # gcol[n, c, i, j, p] = Σ_{o in the group of c} W[o, c', i, j]·gy[n, o, p]
    w_g = w.reshape(groups, out_ch // groups, per_group * kh * kw)
    gy_g = gy.reshape(n, groups, out_ch // groups, oh * ow)
    gcol = np.einsum("gok,ngop->ngkp", w_g, gy_g, optimize=True).reshape(n, c, kh, kw, oh, ow)
    per_offset_group = c // (offset.shape[1] // (2 * kh * kw))
    gx = np.zeros_like(x)
    goff = np.zeros_like(offset)
    gmask = np.zeros_like(mask) if mask is not None else None
    for g, i, j, tap, y, xs in deform_positions(a, offset, (kh, kw)):
        first = g * per_offset_group
        chans = np.arange(first, first + per_offset_group).reshape(1, -1, 1, 1)
        batch = np.arange(n).reshape(-1, 1, 1, 1)
        y, xs = y[:, None], xs[:, None]  # [N, 1, OH, OW] against channels
        y0, x0 = np.floor(y), np.floor(xs)
        ly, lx = y - y0, xs - x0
        gc = gcol[:, first:first + per_offset_group, i, j]
        m = mask[:, tap][:, None] if mask is not None else 1.0
        v00, v01 = pixel(x, batch, chans, y0, x0), pixel(x, batch, chans, y0, x0 + 1)
        v10, v11 = pixel(x, batch, chans, y0 + 1, x0), pixel(x, batch, chans, y0 + 1, x0 + 1)
        goff[:, 2 * tap] = np.sum(m * gc * (lx * (v11 - v01) + (1 - lx) * (v10 - v00)), axis=1)
        goff[:, 2 * tap + 1] = np.sum(m * gc * (ly * (v11 - v10) + (1 - ly) * (v01 - v00)),
                                      axis=1)
        if mask is not None:
            sample = bilinear_zero_padded(x[:, first:first + per_offset_group], y[:, 0],
                                          xs[:, 0])
            gmask[:, tap] = np.sum(gc * sample, axis=1)
        for dy, wy in ((0, 1 - ly), (1, ly)):
            for dx, wx in ((0, 1 - lx), (1, lx)):
                yy, xx = y0 + dy, x0 + dx
                inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
                shape = np.broadcast_shapes(inside.shape, gc.shape)
                yi = np.broadcast_to(np.where(inside, yy, 0).astype(np.int64), shape)
                xi = np.broadcast_to(np.where(inside, xx, 0).astype(np.int64), shape)
                contrib = np.where(inside, wy * wx, 0.0) * m * gc
                np.add.at(gx, (np.broadcast_to(batch, shape), np.broadcast_to(chans, shape),
                               yi, xi), contrib)
    return (gx, goff) + ((gmask,) if mask is not None else ())


@kernel(deform_conv2d_weight_grad)
def deform_conv2d_weight_grad_kernel(ctx: Context, a: Conv2dWeightGradAttrs, x: np.ndarray,
                                     offset: np.ndarray, gy: np.ndarray,
                                     mask: np.ndarray | None = None) -> np.ndarray:
    """``gW = Σ_{n, p} gy·col`` per group, with the forward's deformable columns."""
    return grouped_weight_grad(gy, deform_columns(a, x, offset, mask, a.kernel_size), a.groups)
