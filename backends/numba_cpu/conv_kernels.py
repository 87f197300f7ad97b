"""Convolution kernels (NCHW).

Dense and grouped convolutions are lowered as im2col + one BLAS GEMM per group (the GEMM runs
outside Numba, on numpy's OpenBLAS, never inside a prange); depthwise convolutions as a direct
stencil per (image, channel) plane whose inner loop runs along the output row; transposed
convolutions as a GEMM into columns followed by col2im; deformable convolutions as a
bilinear-sampling im2col followed by the same GEMM.
"""

from __future__ import annotations

import math

from cnnir.backends.numba_cpu.act_kernels import act_row
from cnnir.backends.numba_cpu.jit import helper, kernel, prange


@helper
def valid_range(out_len, stride, offset, in_len):
    """Output indices ``o`` with ``0 <= o·stride + offset < in_len``, as [lo, hi)."""
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    hi = 0
    if in_len - 1 - offset >= 0:
        hi = (in_len - 1 - offset) // stride + 1
    return min(lo, out_len), max(min(hi, out_len), min(lo, out_len))


@kernel
def im2col(x, cols, c0, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """``cols[(c, i, j), (n, y, x)] = xpad[n, c0 + c, y·sh + i·dh, x·sw + j·dw]``."""
    n_img, _, height, width = x.shape
    taps = kh * kw
    for r in prange(cg * taps):
        c = r // taps
        i = (r % taps) // kw
        j = r % kw
        lo, hi = valid_range(ow, sw, j * dw - pl, width)
        for n in range(n_img):
            for y in range(oh):
                dst = cols[r, (n * oh + y) * ow:(n * oh + y + 1) * ow]
                iy = y * sh - pt + i * dh
                if iy < 0 or iy >= height:
                    dst[:] = 0.0
                    continue
                src = x[n, c0 + c, iy]
                dst[:lo] = 0.0
                dst[hi:] = 0.0
                base = j * dw - pl
                for xo in range(lo, hi):
                    dst[xo] = src[xo * sw + base]


@kernel
def depthwise(x, w, scale, shift, res, has_res, out, mult, sh, sw, pt, pl, dh, dw, code, alpha):
    """Depthwise conv with a fused epilogue: output channel o reads input channel o // mult.
    ``out[n, o] = act(scale[o]·Σ_ij w[o, 0, i, j]·xpad[...] + shift[o] (+ res))``."""
    n_img, channels, height, width = x.shape
    _, out_ch, oh, ow = out.shape
    kh, kw = w.shape[2], w.shape[3]
    for t in prange(n_img * out_ch):
        n = t // out_ch
        o = t % out_ch
        c = o // mult
        s = scale[o]
        b = shift[o]
        for y in range(oh):
            row = out[n, o, y]
            row[:] = 0.0
            for i in range(kh):
                iy = y * sh - pt + i * dh
                if iy < 0 or iy >= height:
                    continue
                src = x[n, c, iy]
                for j in range(kw):
                    wt = w[o, 0, i, j]
                    base = j * dw - pl
                    lo, hi = valid_range(ow, sw, base, width)
                    for xo in range(lo, hi):
                        row[xo] += wt * src[xo * sw + base]
            if has_res:
                rrow = res[n, o, y]
                for xo in range(ow):
                    row[xo] = row[xo] * s + b + rrow[xo]
            else:
                for xo in range(ow):
                    row[xo] = row[xo] * s + b
            act_row(row, code, alpha)


@kernel
def col2im(cols, out, n, co0, cog, kh, kw, sh, sw, pt, pl, dh, dw, height, width):
    """Scatter-add ``cols[(co, i, j), (h, w)]`` into ``out[n, co0 + co]`` at
    ``(h·sh + i·dh − pt, w·sw + j·dw − pl)`` (transposed convolution; ``out`` pre-filled)."""
    oh, ow = out.shape[2], out.shape[3]
    taps = kh * kw
    for co in prange(cog):
        plane = out[n, co0 + co]
        for i in range(kh):
            for j in range(kw):
                src = cols[co * taps + i * kw + j]
                base_x = j * dw - pl
                for h in range(height):
                    y = h * sh + i * dh - pt
                    if y < 0 or y >= oh:
                        continue
                    dst = plane[y]
                    for w_ in range(width):
                        xo = w_ * sw + base_x
                        if 0 <= xo < ow:
                            dst[xo] += src[h * width + w_]


@helper
def bilinear_zero_padded(plane, y, x):
    """Bilinear sample of an image that is zero outside its bounds (torchvision's rule)."""
    height, width = plane.shape
    if y <= -1.0 or y >= height or x <= -1.0 or x >= width:
        return 0.0
    y0 = math.floor(y)
    x0 = math.floor(x)
    ly = y - y0
    lx = x - x0
    y0i = int(y0)
    x0i = int(x0)
    v = 0.0
    if y0i >= 0 and x0i >= 0:
        v += (1 - ly) * (1 - lx) * plane[y0i, x0i]
    if y0i >= 0 and x0i + 1 < width:
        v += (1 - ly) * lx * plane[y0i, x0i + 1]
    if y0i + 1 < height and x0i >= 0:
        v += ly * (1 - lx) * plane[y0i + 1, x0i]
    if y0i + 1 < height and x0i + 1 < width:
        v += ly * lx * plane[y0i + 1, x0i + 1]
    return v


@kernel
def deform_im2col(x, offset, mask, has_mask, cols, n, kh, kw, sh, sw, pt, pl, dh, dw,
                  offset_groups):
    """``cols[(c, i, j), (y, x)] = mask · bilinear(x[n, c], y·sh − pt + i·dh + Δy, ...)``."""
    channels = x.shape[1]
    oh, ow = offset.shape[2], offset.shape[3]
    taps = kh * kw
    per_group = channels // offset_groups
    for r in prange(channels * taps):
        c = r // taps
        k = r % taps
        i = k // kw
        j = k % kw
        g = c // per_group
        plane = x[n, c]
        for y in range(oh):
            for xo in range(ow):
                py = y * sh - pt + i * dh + offset[n, 2 * (g * taps + k), y, xo]
                px = xo * sw - pl + j * dw + offset[n, 2 * (g * taps + k) + 1, y, xo]
                v = bilinear_zero_padded(plane, py, px)
                if has_mask:
                    v *= mask[n, g * taps + k, y, xo]
                cols[r, y * ow + xo] = v
