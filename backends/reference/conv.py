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
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.reference.runtime import Context, kernel
from cnnir.ops.conv import Conv2dAttrs, ConvTranspose2dAttrs


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


@kernel(ops.deform_conv2d)
def deform_conv2d(ctx: Context, a: Conv2dAttrs, x: np.ndarray, offset: np.ndarray,
                  w: np.ndarray, b: np.ndarray | None,
                  mask: np.ndarray | None = None) -> np.ndarray:
    """torchvision's deform_conv2d; the mask is used raw and groups follow from the shapes."""
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    oh, ow = offset.shape[2:]
    offset_groups = offset.shape[1] // (2 * kh * kw)
    per_offset_group = c // offset_groups
    (sh, sw), (dh, dw) = a.stride, a.dilation
    pt, pl = a.padding[:2]
    base_y = (np.arange(oh) * sh - pt).reshape(1, oh, 1)
    base_x = (np.arange(ow) * sw - pl).reshape(1, 1, ow)
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for g in range(offset_groups):
        chans = slice(g * per_offset_group, (g + 1) * per_offset_group)
        for i in range(kh):
            for j in range(kw):
                tap = g * kh * kw + i * kw + j
                y = base_y + i * dh + offset[:, 2 * tap]
                xs = base_x + j * dw + offset[:, 2 * tap + 1]
                sample = bilinear_zero_padded(x[:, chans], y, xs)
                if mask is not None:
                    sample = sample * mask[:, tap][:, None]
                cols[:, chans, i, j] = sample
    return add_bias(grouped_contract(w, cols, c // w.shape[1]), b)
