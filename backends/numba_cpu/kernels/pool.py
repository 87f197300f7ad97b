"""Pooling and resampling kernels (NCHW), parallel over (image, channel) planes.

max_pool2d: padding acts as −∞ and NaN always wins. avg_pool2d: ATen's divisor rule (the
window is clipped to the padded extent first, counted, then clipped to the image).
Adaptive pools: cell i covers [⌊iL/out⌋, ⌈(i+1)L/out⌉). interpolate: index and weight tables
are computed once at compile time and applied separably.
"""

from __future__ import annotations

import numpy as np

from cnnir.backends.numba_cpu.kernels.conv import valid_range
from cnnir.backends.numba_cpu.kernels.jit import helper, kernel, prange


@helper
def nan_max(a, b):
    """max that lets NaN win, as torch's max_pool2d does."""
    return a if (a > b or a != a) else b


@kernel
def max_pool(x, out, window):
    """Separable: each input row's max over the window's columns first (``rows``), then each
    output row is the max over the window's rows of those, a contiguous and vectorizable
    loop. Padding is −∞; NaN wins. ``window`` = (kh, kw, sh, sw, ph, pw, dh, dw)."""
    kh, kw, sh, sw, ph, pw, dh, dw = window
    n_img, channels, height, width = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for t in prange(n_img * channels):
        plane = x[t // channels, t % channels]
        dst = out[t // channels, t % channels]
        rows = np.full((height, ow), -np.inf, x.dtype)
        for iy in range(height):
            src = plane[iy]
            row = rows[iy]
            for j in range(kw):
                base = j * dw - pw
                lo, hi = valid_range(ow, sw, base, width)
                for xo in range(lo, hi):
                    row[xo] = nan_max(src[np.uint64(xo * sw + base)], row[xo])
        for y in range(oh):
            drow = dst[y]
            drow[:] = -np.inf
            for i in range(kh):
                iy = y * sh - ph + i * dh
                if 0 <= iy < height:
                    row = rows[iy]
                    for xo in range(ow):
                        drow[xo] = nan_max(row[xo], drow[xo])


@kernel
def avg_pool(x, out, window, count_include_pad, divisor_override):
    """ATen's divisor rule over ``window`` = (kh, kw, sh, sw, ph, pw, 1, 1)."""
    kh, kw, sh, sw, ph, pw, _, _ = window
    n_img, channels, height, width = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for t in prange(n_img * channels):
        plane = x[t // channels, t % channels]
        dst = out[t // channels, t % channels]
        for y in range(oh):
            h0 = y * sh - ph
            h1 = min(h0 + kh, height + ph)
            for xo in range(ow):
                w0 = xo * sw - pw
                w1 = min(w0 + kw, width + pw)
                pool_size = (h1 - h0) * (w1 - w0)
                a0, a1 = max(h0, 0), min(h1, height)
                b0, b1 = max(w0, 0), min(w1, width)
                acc = 0.0
                for iy in range(a0, a1):
                    for ix in range(b0, b1):
                        acc += plane[iy, ix]
                if divisor_override > 0:
                    divisor = divisor_override
                elif count_include_pad:
                    divisor = pool_size
                else:
                    divisor = (a1 - a0) * (b1 - b0)
                dst[y, xo] = acc / divisor


@kernel
def adaptive_pool(x, out, is_max):
    n_img, channels, height, width = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for t in prange(n_img * channels):
        plane = x[t // channels, t % channels]
        dst = out[t // channels, t % channels]
        for y in range(oh):
            h0 = (y * height) // oh
            h1 = -((-(y + 1) * height) // oh)
            for xo in range(ow):
                w0 = (xo * width) // ow
                w1 = -((-(xo + 1) * width) // ow)
                if is_max:
                    m = -np.inf
                    for iy in range(h0, h1):
                        for ix in range(w0, w1):
                            v = plane[iy, ix]
                            if v > m or v != v:
                                m = v
                    dst[y, xo] = m
                else:
                    acc = 0.0
                    for iy in range(h0, h1):
                        for ix in range(w0, w1):
                            acc += plane[iy, ix]
                    dst[y, xo] = acc / ((h1 - h0) * (w1 - w0))


@kernel
def resample(x, out, h0, h1, lh, w0, w1, lw):
    """``out[y, x] = Σ (1−λ or λ)·(1−μ or μ)·x[h0/h1[y], w0/w1[x]]`` (nearest: λ = μ = 0)."""
    n_img, channels = x.shape[0], x.shape[1]
    oh, ow = out.shape[2], out.shape[3]
    for t in prange(n_img * channels):
        plane = x[t // channels, t % channels]
        dst = out[t // channels, t % channels]
        for y in range(oh):
            a = plane[h0[y]]
            b = plane[h1[y]]
            ly = lh[y]
            for xo in range(ow):
                top = (1 - lw[xo]) * a[w0[xo]] + lw[xo] * a[w1[xo]]
                bottom = (1 - lw[xo]) * b[w0[xo]] + lw[xo] * b[w1[xo]]
                dst[y, xo] = (1 - ly) * top + ly * bottom
