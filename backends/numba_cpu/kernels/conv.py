"""Convolution data movement (NCHW): im2col of a band of output rows (the B operand of the
dense GEMMs), col2im for transposed convolutions and the bilinear-sampling im2col of
deformable ones. Depthwise convolutions are stencils (``stencil``).

A convolution's geometry travels as one tuple, ``window = (kh, kw, sh, sw, pad_top,
pad_left, dh, dw)`` (``lower_conv.window_of``). Inner loops index flat arrays with unsigned
integers: a numpy slice per output row costs tens of cycles in Numba, more than a short row
itself, and signed indices keep a wraparound check in the loop that blocks vectorization.
"""

from __future__ import annotations

import math

import numpy as np

from cnnir.backends.numba_cpu.kernels.jit import helper, kernel, prange, tile_kernel


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


@helper
def zero_flat(a, d, count):
    at = np.uint64(d)
    for i in range(count):
        a[at + np.uint64(i)] = 0.0


@tile_kernel
def im2col_rows(x, cols, n, c0, cg, window, y0, y1, ow):
    """Columns of output rows [y0, y1) of image n:
    ``cols[(c, i, j), (y − y0)·ow + x] = xpad[n, c0 + c, y·sh + i·dh, x·sw + j·dw]``."""
    kh, kw, sh, sw, pad_top, pad_left, dh, dw = window
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    taps = kh * kw
    xf = x.reshape(-1)
    stride = cols.shape[1]
    cf = cols.reshape(-1)
    for r in range(cg * taps):
        c = r // taps
        i = (r % taps) // kw
        j = r % kw
        base = j * dw - pad_left
        lo, hi = valid_range(ow, sw, base, width)
        plane = ((n * channels + c0 + c) * height) * width
        for y in range(y0, y1):
            d = np.uint64(r * stride + (y - y0) * ow)
            iy = y * sh - pad_top + i * dh
            if iy < 0 or iy >= height:
                zero_flat(cf, d, ow)
                continue
            zero_flat(cf, d, lo)
            zero_flat(cf, d + np.uint64(hi), ow - hi)
            src = np.uint64(plane + iy * width + base + lo * sw)
            dst = d + np.uint64(lo)
            if sw == 1:
                for xx in range(hi - lo):
                    u = np.uint64(xx)
                    cf[dst + u] = xf[src + u]
            else:
                step = np.uint64(sw)
                for xx in range(hi - lo):
                    u = np.uint64(xx)
                    cf[dst + u] = xf[src + u * step]


@kernel
def col2im(cols, out, n, co0, cog, window, height, width):
    """Scatter-add ``cols[(co, i, j), (h, w)]`` into ``out[n, co0 + co]`` at
    ``(h·sh + i·dh − pad_top, w·sw + j·dw − pad_left)`` (transposed convolution; ``out``
    pre-filled)."""
    kh, kw, sh, sw, pad_top, pad_left, dh, dw = window
    oh, ow = out.shape[2], out.shape[3]
    taps = kh * kw
    for co in prange(cog):
        plane = out[n, co0 + co]
        for i in range(kh):
            for j in range(kw):
                src = cols[co * taps + i * kw + j]
                base_x = j * dw - pad_left
                for h in range(height):
                    y = h * sh + i * dh - pad_top
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
def deform_im2col(x, offset, mask, has_mask, cols, n, window, offset_groups):
    """``cols[(c, i, j), (y, x)] = mask · bilinear(x[n, c], y·sh − pad_top + i·dh + Δy, ...)``."""
    kh, kw, sh, sw, pad_top, pad_left, dh, dw = window
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
                py = y * sh - pad_top + i * dh + offset[n, 2 * (g * taps + k), y, xo]
                px = xo * sw - pad_left + j * dw + offset[n, 2 * (g * taps + k) + 1, y, xo]
                v = bilinear_zero_padded(plane, py, px)
                if has_mask:
                    v *= mask[n, g * taps + k, y, xo]
                cols[r, y * ow + xo] = v
