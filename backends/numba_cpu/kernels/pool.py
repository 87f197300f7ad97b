"""Pooling and resampling kernels (NCHW), parallel over (image, channel) planes.

max_pool2d: padding acts as −∞ and NaN always wins. avg_pool2d: ATen's divisor rule (the
window is clipped to the padded extent first, counted, then clipped to the image).
Adaptive pools: cell i covers [⌊iL/out⌋, ⌈(i+1)L/out⌉). interpolate: index and weight tables
are computed once at compile time and applied separably.

Gradients (docs/semantics.md §3) zero and then fill each (image, channel) plane of gx, so
overlapping windows accumulate without races and nothing is allocated per call. Max pools
route each window's gradient to its first maximum in row-major window order (strict >), never
to padding, and to its first NaN when there is one; average pools and interpolate scatter-add
with the forward's divisors and weights.
"""

from __future__ import annotations

import numba
import numpy as np

from cnnir.backends.numba_cpu.kernels.conv import valid_range
from cnnir.backends.numba_cpu.kernels.jit import (
    helper,
    job_count,
    job_items,
    kernel,
    prange,
    run_jobs,
    tile_kernel,
)
from cnnir.backends.numba_cpu.kernels.simd import (
    LANES,
    veven,
    vload,
    vload_masked,
    vmask,
    vmax,
    vodd,
    vstore,
    vstore_masked,
)


@helper
def nan_max(a, b):
    """max that lets NaN win, as torch's max_pool2d does."""
    return a if (a > b or a != a) else b


@kernel(allocates=True)
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
    """ATen's divisor rule over ``window`` = (kh, kw, sh, sw, ph, pw, 1, 1); a
    ``divisor_override`` of 0 means none (any other value, negative ones too, is used)."""
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
                if divisor_override != 0:
                    divisor = divisor_override
                elif count_include_pad:
                    divisor = pool_size
                else:
                    divisor = (a1 - a0) * (b1 - b0)
                dst[y, xo] = acc / divisor


@kernel
def global_pool(x, out, is_max):
    """Adaptive pooling to 1×1: one flat pass per plane (no per-plane views, a reduction
    LLVM vectorizes)."""
    run_jobs(global_pool_planes, job_count(out.size), (x, out, is_max))


@tile_kernel
def global_pool_planes(job, args):
    """The planes of job ``job`` of ``global_pool``."""
    x, out, is_max = args
    n_q = x.shape[2] * x.shape[3]
    xf, outf = x.reshape(-1), out.reshape(-1)
    first_plane, last_plane = job_items(job, outf.size)
    for t in range(first_plane, last_plane):
        first = np.uint64(t * n_q)
        if is_max:
            m = xf[first]
            for q in range(1, n_q):
                v = xf[first + np.uint64(q)]
                if v > m or v != v:
                    m = v
            outf[t] = m
        else:
            acc = 0.0
            for q in range(n_q):
                acc += xf[first + np.uint64(q)]
            outf[t] = acc / n_q


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


@kernel
def resample_nearest(x, out, rows, columns):
    """``out[y, x] = x[rows[y], columns[x]]``: a copy, so ±∞ stays (``resample``'s blend
    with weight 0 would make it 0·∞ = NaN)."""
    n_img, channels = x.shape[0], x.shape[1]
    oh, ow = out.shape[2], out.shape[3]
    for t in prange(n_img * channels):
        plane = x[t // channels, t % channels]
        dst = out[t // channels, t % channels]
        for y in range(oh):
            row = plane[rows[y]]
            for xo in range(ow):
                dst[y, xo] = row[columns[xo]]


# -- gradients -------------------------------------------------------------------------------


@kernel
def max_pool_grad(x, gy, gx, window, row_taps, col_taps):
    """``gx[argmax of each window] += gy``, the argmax found again from x over the window's
    valid taps in row-major order: the first valid tap, replaced only by a strictly larger
    value, so padding is never chosen and a window whose real values are all −∞ keeps its
    first one; a window holding a NaN (noted on the way, rare) is scanned again for its first
    NaN. ``row_taps[y]`` and ``col_taps[x]`` are the [lo, hi) taps inside the image, made at
    compile time. gx rows are zeroed just before the first window reaches them, in cache."""
    kh, kw, sh, sw, ph, pw, dh, dw = window
    n_img, channels, height, width = x.shape
    oh, ow = gy.shape[2], gy.shape[3]
    xf, gxf = x.reshape(-1), gx.reshape(-1)
    for t in prange(n_img * channels):
        base = t * height * width
        grad = gy[t // channels, t % channels]
        zeroed = 0  # gx rows below this are zeroed
        for y in range(oh):
            r0 = y * sh - ph
            i_lo, i_hi = row_taps[y, 0], row_taps[y, 1]
            reach = min(height, r0 + (kh - 1) * dh + 1)
            if reach > zeroed:
                gxf[base + zeroed * width:base + reach * width] = 0.0
                zeroed = reach
            for xo in range(ow):
                c0 = xo * sw - pw
                j_lo, j_hi = col_taps[xo, 0], col_taps[xo, 1]
                if i_lo == i_hi or j_lo == j_hi:
                    continue
                at = base + (r0 + i_lo * dh) * width + c0 + j_lo * dw
                best = xf[at]
                nan = False
                for i in range(i_lo, i_hi):
                    row = base + (r0 + i * dh) * width + c0
                    for j in range(j_lo, j_hi):
                        v = xf[row + j * dw]
                        nan |= v != v
                        if v > best:
                            best = v
                            at = row + j * dw
                if nan:
                    at = first_nan(xf, base + r0 * width + c0, width * dh, dw, i_lo, i_hi,
                                   j_lo, j_hi)
                gxf[at] += grad[y, xo]
        gxf[base + zeroed * width:base + height * width] = 0.0


POOL_PARTS = 8 * numba.config.NUMBA_NUM_THREADS  # runs of planes, a few per thread


@kernel
def max_pool_2x2(x, out):
    """max_pool2d for 2×2 windows of stride 2 tiling the image (as ``max_pool_grad_2x2``),
    in runs of (image, channel) planes (``max_pool_rows``); NaN wins."""
    parts = min(x.shape[0] * x.shape[1], POOL_PARTS)
    run_jobs(max_pool_2x2_part, parts, (x, out, parts))


@tile_kernel
def max_pool_2x2_part(part, args):
    """Run ``part`` of ``parts`` of ``max_pool_2x2``'s planes."""
    x, out, parts = args
    planes, height, width = x.shape[0] * x.shape[1], x.shape[2], x.shape[3]
    x_planes = x.reshape((1, planes, height, width))  # the images' planes as one image's
    out_planes = out.reshape((1, planes, height // 2, width // 2))
    max_pool_rows(x_planes, out_planes, (0, 0, height), part * planes // parts,
                  (part + 1) * planes // parts)


@helper
def max_pool_rows(x, out, rows, r0, r1):
    """The 2×2 max pool of rows [ya, yb) (``rows = (n, ya, yb)``, ya even) of channels
    [r0, r1) of ``x`` into ``out`` (windows tiling ``x``): a vector of windows from two of
    each row's vectors (``veven``/``vodd``), a row's last windows (a narrow row's all)
    through lane masks; NaN wins. Rows of 4 to 16 windows, as in small networks, would
    leave a loop vectorized by LLVM in its scalar remainder."""
    n, ya, yb = rows
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    xf, of = x.reshape(-1), out.reshape(-1)
    full = width - width % (2 * LANES)
    left = width - full  # the last input columns, fewer than two vectors
    even_lanes, odd_lanes = vmask(0, left), vmask(0, left - LANES)
    out_lanes = vmask(0, left // 2)
    for c in range(r0, r1):
        top = ((n * channels + c) * height + ya) * width
        to = ((n * channels + c) * (height // 2) + ya // 2) * (width // 2)
        for _ in range((yb - ya) // 2):
            for j in range(0, full, 2 * LANES):
                m0 = vmax(vload(xf, top + j), vload(xf, top + width + j))
                m1 = vmax(vload(xf, top + j + LANES), vload(xf, top + width + j + LANES))
                vstore(of, to + j // 2, vmax(veven(m0, m1), vodd(m0, m1)))
            if left:
                at = top + full
                m0 = vmax(vload_masked(xf, at, even_lanes),
                          vload_masked(xf, at + width, even_lanes))
                m1 = vmax(vload_masked(xf, at + LANES, odd_lanes),
                          vload_masked(xf, at + width + LANES, odd_lanes))
                vstore_masked(of, to + full // 2, vmax(veven(m0, m1), vodd(m0, m1)),
                              out_lanes)
            top += 2 * width
            to += width // 2


@helper
def first_max_of_four(a, b, c, d):
    """Which of the taps a, b, c, d (row-major) is a 2×2 window's first maximum, or its
    first NaN (``max_pool_grad``'s rule), as a float32 code 0–3, by selects."""
    first = b > a
    best = b if first else a
    at = np.float32(1) if first else np.float32(0)
    second = c > best
    best = c if second else best
    at = np.float32(2) if second else at
    at = np.float32(3) if d > best else at
    at = np.float32(3) if d != d else at
    at = np.float32(2) if c != c else at
    at = np.float32(1) if b != b else at
    return np.float32(0) if a != a else at


@kernel
def max_pool_grad_2x2(x, gy, gx, codes):
    """``max_pool_grad`` for 2×2 windows of stride 2 tiling the image (no padding, even
    sizes): each input element lies in one window, so gx is written once, with no zeroing
    pass or accumulation. Per pair of input rows, one loop finds each window's first maximum
    (``first_max_of_four``) into the thread's ``codes`` row, a second writes gy there and
    zeros around it: apart, both loops vectorize."""
    width = x.shape[3]
    ow = gy.shape[3]
    xf, gxf, gf = x.reshape(-1), gx.reshape(-1), gy.reshape(-1)
    for r in prange(gy.size // ow):
        zero = np.float32(0.0)  # zero and v locals of the body: hoisted or re-read, 3x slower
        code = codes[numba.get_thread_id()]
        top = xf[2 * r * width:(2 * r + 1) * width]
        bottom = xf[(2 * r + 1) * width:(2 * r + 2) * width]
        for xo in range(ow):
            code[xo] = first_max_of_four(top[2 * xo], top[2 * xo + 1], bottom[2 * xo],
                                         bottom[2 * xo + 1])
        g = gf[r * ow:(r + 1) * ow]
        out_top = gxf[2 * r * width:(2 * r + 1) * width]
        out_bottom = gxf[(2 * r + 1) * width:(2 * r + 2) * width]
        for xo in range(ow):
            at, v = code[xo], g[xo]
            out_top[2 * xo] = v if at == 0 else zero
            out_top[2 * xo + 1] = v if at == 1 else zero
            out_bottom[2 * xo] = v if at == 2 else zero
            out_bottom[2 * xo + 1] = v if at == 3 else zero


@helper
def first_nan(xf, origin, row_step, col_step, i_lo, i_hi, j_lo, j_hi):
    """The flat index of the first NaN among taps ``origin + i·row_step + j·col_step`` in
    row-major order (−1 if none)."""
    for i in range(i_lo, i_hi):
        for j in range(j_lo, j_hi):
            k = origin + i * row_step + j * col_step
            if xf[k] != xf[k]:
                return k
    return -1


@kernel
def avg_pool_grad(gy, gx, window, count_include_pad, divisor_override):
    """``gx[window ∩ image] += gy / divisor`` with the forward's divisor (ATen's rule)."""
    kh, kw, sh, sw, ph, pw, _, _ = window
    n_img, channels, height, width = gx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    for t in prange(n_img * channels):
        grad = gy[t // channels, t % channels]
        dst = gx[t // channels, t % channels]
        dst[:, :] = 0.0
        for y in range(oh):
            h0 = y * sh - ph
            h1 = min(h0 + kh, height + ph)
            a0, a1 = max(h0, 0), min(h1, height)
            for xo in range(ow):
                w0 = xo * sw - pw
                w1 = min(w0 + kw, width + pw)
                b0, b1 = max(w0, 0), min(w1, width)
                if divisor_override != 0:
                    divisor = divisor_override
                elif count_include_pad:
                    divisor = (h1 - h0) * (w1 - w0)
                else:
                    divisor = (a1 - a0) * (b1 - b0)
                share = grad[y, xo] / divisor
                for iy in range(a0, a1):
                    row = dst[iy]
                    for ix in range(b0, b1):
                        row[ix] += share


@kernel
def adaptive_pool_grad(x, gy, gx, is_max):
    """Adaptive windows [⌊iL/out⌋, ⌈(i+1)L/out⌉): avg adds ``gy / window size`` to each cell
    (x is not read), max routes gy to the window's first maximum as ``max_pool_grad``."""
    n_img, channels, height, width = gx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    for t in prange(n_img * channels):
        plane = x[t // channels, t % channels]
        grad = gy[t // channels, t % channels]
        dst = gx[t // channels, t % channels]
        dst[:, :] = 0.0
        for y in range(oh):
            h0 = (y * height) // oh
            h1 = -((-(y + 1) * height) // oh)
            for xo in range(ow):
                w0 = (xo * width) // ow
                w1 = -((-(xo + 1) * width) // ow)
                if is_max:  # as max_pool_grad: the first maximum, or the first NaN
                    best = plane[h0, w0]
                    at = h0 * width + w0
                    nan = False
                    for iy in range(h0, h1):
                        for ix in range(w0, w1):
                            v = plane[iy, ix]
                            nan |= v != v
                            if v > best:
                                best = v
                                at = iy * width + ix
                    if nan:
                        at = first_nan(plane.reshape(-1), 0, width, 1, h0, h1, w0, w1)
                    dst[at // width, at % width] += grad[y, xo]
                else:
                    share = grad[y, xo] / ((h1 - h0) * (w1 - w0))
                    for iy in range(h0, h1):
                        row = dst[iy]
                        for ix in range(w0, w1):
                            row[ix] += share


@kernel
def resample_grad(gy, gx, h0, h1, lh, w0, w1, lw, rows):
    """The transpose of ``resample``, separably: each gy row is scattered along W into a row
    of input width (``rows``: one per thread) with weights 1 − μ and μ, which is then added to
    input rows h0 and h1 with 1 − λ and λ. At a clamped edge (h0 = h1 or w0 = w1) both
    weights land on one pixel."""
    n_img, channels, width = gx.shape[0], gx.shape[1], gx.shape[3]
    oh, ow = gy.shape[2], gy.shape[3]
    for t in prange(n_img * channels):
        row = rows[numba.get_thread_id()]
        grad = gy[t // channels, t % channels]
        dst = gx[t // channels, t % channels]
        dst[:, :] = 0.0
        for y in range(oh):
            row[:width] = 0.0
            src = grad[y]
            for xo in range(ow):
                row[w0[xo]] += (1 - lw[xo]) * src[xo]
                row[w1[xo]] += lw[xo] * src[xo]
            a = dst[h0[y]]
            b = dst[h1[y]]
            ly = lh[y]
            for ix in range(width):
                a[ix] += (1 - ly) * row[ix]
            for ix in range(width):
                b[ix] += ly * row[ix]


@kernel
def nearest_grad(gy, gx, rows, columns):
    """The transpose of nearest resampling: ``gx[rows[y], columns[x]] += gy[y, x]``."""
    n_img, channels = gx.shape[0], gx.shape[1]
    oh, ow = gy.shape[2], gy.shape[3]
    for t in prange(n_img * channels):
        grad = gy[t // channels, t % channels]
        dst = gx[t // channels, t % channels]
        dst[:, :] = 0.0
        for y in range(oh):
            row = dst[rows[y]]
            src = grad[y]
            for xo in range(ow):
                row[columns[xo]] += src[xo]
