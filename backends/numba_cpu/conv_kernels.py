"""Convolution kernels (NCHW): im2col of a band of output rows (the B operand of the dense
GEMMs), depthwise stencils (flat passes over phase planes, or row by row for dilated ones;
the phase kernel also max-pools), col2im for transposed convolutions and the
bilinear-sampling im2col of deformable ones.

Inner loops index flat arrays with unsigned integers: a numpy slice per output row costs tens
of cycles in Numba, more than a short row itself, and signed indices keep a wraparound check
in the loop that blocks vectorization.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from cnnir.backends.numba_cpu.act_kernels import act_row, clamp_bounds, finish_flat, finish_row
from cnnir.backends.numba_cpu.jit import helper, kernel, prange, tile_kernel
from cnnir.backends.numba_cpu.simd import LANES, vadd, vclamp, vfma, vload, vsplat, vstore


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


@tile_kernel
def im2col_rows(x, cols, n, c0, cg, kh, kw, sh, sw, pt, pl, dh, dw, y0, y1, ow):
    """Columns of output rows [y0, y1) of image n:
    ``cols[(c, i, j), (y − y0)·ow + x] = xpad[n, c0 + c, y·sh + i·dh, x·sw + j·dw]``.
    Flat arrays and unsigned indices: a slice per output row would cost more than the copy."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    taps = kh * kw
    xf = x.reshape(-1)
    stride = cols.shape[1]
    cf = cols.reshape(-1)
    for r in range(cg * taps):
        c = r // taps
        i = (r % taps) // kw
        j = r % kw
        base = j * dw - pl
        lo, hi = valid_range(ow, sw, base, width)
        plane = ((n * channels + c0 + c) * height) * width
        for y in range(y0, y1):
            d = np.uint64(r * stride + (y - y0) * ow)
            iy = y * sh - pt + i * dh
            if iy < 0 or iy >= height:
                for xx in range(ow):
                    cf[d + np.uint64(xx)] = 0.0
                continue
            for xx in range(lo):
                cf[d + np.uint64(xx)] = 0.0
            for xx in range(hi, ow):
                cf[d + np.uint64(xx)] = 0.0
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


@helper
def depthwise_row3(dst, a, b, c, w, o, ow, sw, d):
    """One output row of a 3x3 depthwise conv from three zero-padded input rows: all nine
    taps in one expression so the loop over output columns vectorizes. Indices are unsigned
    so Numba emits no negative-index wraparound check, which would block vectorization."""
    w00, w01, w02 = w[o, 0, 0, 0], w[o, 0, 0, 1], w[o, 0, 0, 2]
    w10, w11, w12 = w[o, 0, 1, 0], w[o, 0, 1, 1], w[o, 0, 1, 2]
    w20, w21, w22 = w[o, 0, 2, 0], w[o, 0, 2, 1], w[o, 0, 2, 2]
    d1, d2 = np.uint64(d), np.uint64(2 * d)
    for xo in range(ow):
        ix = np.uint64(xo * sw)
        dst[np.uint64(xo)] = (w00 * a[ix] + w01 * a[ix + d1] + w02 * a[ix + d2]
                              + w10 * b[ix] + w11 * b[ix + d1] + w12 * b[ix + d2]
                              + w20 * c[ix] + w21 * c[ix + d1] + w22 * c[ix + d2])


@helper
def depthwise_row(dst, padded, y, w, o, ow, sh, sw, dh, dw):
    """One output row of a k×k depthwise conv from a zero-padded plane, tap by tap."""
    kh, kw = w.shape[2], w.shape[3]
    dst[:] = 0.0
    for i in range(kh):
        src = padded[y * sh + i * dh]
        for j in range(kw):
            wt = w[o, 0, i, j]
            base = np.uint64(j * dw)
            for xo in range(ow):
                dst[np.uint64(xo)] += wt * src[np.uint64(xo * sw) + base]


@kernel
def depthwise(x, w, scale, shift, res, has_res, out, mult, sh, sw, pt, pl, dh, dw, code, alpha,
              padded):
    """Depthwise conv with a fused epilogue: output channel o reads input channel o // mult.
    ``out[n, o] = act(scale[o]·Σ_ij w[o, 0, i, j]·xpad[...] + shift[o] (+ res))``. Each
    plane is first copied into the interior of the thread's zero-bordered buffer ``padded``
    [threads, hp, wp] (only interiors are ever written), so every output is an interior one."""
    n_img, channels, height, width = x.shape
    _, out_ch, oh, ow = out.shape
    kh, kw = w.shape[2], w.shape[3]
    for t in prange(n_img * out_ch):
        n = t // out_ch
        o = t % out_ch
        plane = padded[numba.get_thread_id()]
        plane[pt:pt + height, pl:pl + width] = x[n, o // mult]
        s = scale[o]
        b = shift[o]
        for y in range(oh):
            row = out[n, o, y]
            if kh == 3 and kw == 3:
                r = y * sh
                depthwise_row3(row, plane[r], plane[r + dh], plane[r + 2 * dh], w, o, ow,
                               sw, dw)
            else:
                depthwise_row(row, plane, y, w, o, ow, sh, sw, dh, dw)
            finish_row(row, row, s, b, res[n, o, y] if has_res else res[0, 0, 0], has_res,
                       code, alpha)


@kernel
def window_phases(x, w, scale, shift, res, has_res, out, mult, stride, pt, pl, code, alpha,
                  phases, acc, is_max):
    """Undilated depthwise conv (or, with ``is_max``, max pool: −∞ borders, NaN wins) as flat,
    vectorizable passes. Each input plane is split into
    ``stride²`` zero-bordered phase planes (``phase[a·s + b][y, x] = xpad[y·s + a, x·s + b]``,
    flat with row length wq), so tap (i, j) of every output sits at one constant offset in
    phase (i mod s, j mod s): ``acc[y·wq + x] = Σ_ij w[o, 0, i, j]·phase[...][(y + i div s)·wq
    + x + j div s]`` over all y·wq + x at once (columns x ≥ ow are computed and dropped). Then
    the epilogue compacts acc into the output rows. ``phases`` [threads, s², hq·wq + pad] and
    ``acc`` [threads, oh·wq] are per-thread scratch; only phase interiors are ever written."""
    n_img, channels, height, width = x.shape
    _, out_ch, oh, ow = out.shape
    kh, kw = w.shape[2], w.shape[3]
    s = stride
    wq = acc.shape[1] // oh
    n_q = oh * wq
    size = phases.shape[2]
    lo, hi = clamp_bounds(code)
    # Flat arrays and unsigned indices throughout: slicing per row costs more than the
    # short rows themselves, and signed indices keep wraparound checks in the loops.
    xf, outf, resf = x.reshape(-1), out.reshape(-1), res.reshape(-1)
    for t in prange(n_img * out_ch):
        n = t // out_ch
        o = t % out_ch
        tid = numba.get_thread_id()
        ph = phases[tid].reshape(-1)
        a = acc[tid]
        src = (n * channels + o // mult) * height * width
        for yy in range(height):
            py = yy + pt
            if s == 1:  # a contiguous row copy (a runtime stride would not vectorize)
                dst = np.uint64(py * wq + pl)
                first = np.uint64(src + yy * width)
                for i in range(width):
                    u = np.uint64(i)
                    ph[dst + u] = xf[first + u]
                continue
            if s == 2:  # even and odd columns in one loop: LLVM vectorizes the pair of
                # stride-2 loads as one interleaved load, but not either one alone
                line = xf[src + yy * width:src + (yy + 1) * width]
                row = (py % 2) * 2 * size + (py // 2) * wq
                half = width // 2
                even = ph[row + (pl % 2) * size + pl // 2:]
                odd = ph[row + ((pl + 1) % 2) * size + (pl + 1) // 2:]
                for i in range(half):
                    even[i] = line[2 * i]
                    odd[i] = line[2 * i + 1]
                if width % 2:
                    even[half] = line[width - 1]
                continue
            for col in range(s):  # the input columns landing in phase column ``col``
                x0 = (col - pl) % s
                dst = ((py % s) * s + col) * size + (py // s) * wq + (x0 + pl) // s
                first = src + yy * width + x0
                line = xf[first:]
                out_line = ph[dst:]
                for i in range((width - x0 + s - 1) // s):
                    out_line[i] = line[s * i]
        if is_max:
            a[:n_q] = -np.inf
            for i in range(kh):
                for j in range(kw):
                    off = np.uint64(((i % s) * s + j % s) * size + (i // s) * wq + j // s)
                    for q in range(n_q):
                        u = np.uint64(q)
                        v = ph[u + off]
                        best = a[u]
                        a[u] = v if (v > best or v != v) else best
        elif kh == 3 and kw == 3 and s == 1:
            w0, w1, w2 = w[o, 0, 0, 0], w[o, 0, 0, 1], w[o, 0, 0, 2]
            w3, w4, w5 = w[o, 0, 1, 0], w[o, 0, 1, 1], w[o, 0, 1, 2]
            w6, w7, w8 = w[o, 0, 2, 0], w[o, 0, 2, 1], w[o, 0, 2, 2]
            c1, c2 = np.uint64(1), np.uint64(2)
            r1, r2 = np.uint64(wq), np.uint64(2 * wq)
            for q in range(n_q):
                u = np.uint64(q)
                a[u] = (w0 * ph[u] + w1 * ph[u + c1] + w2 * ph[u + c2]
                        + w3 * ph[u + r1] + w4 * ph[u + r1 + c1] + w5 * ph[u + r1 + c2]
                        + w6 * ph[u + r2] + w7 * ph[u + r2 + c1] + w8 * ph[u + r2 + c2])
        elif kh == 3 and kw == 3 and s == 2:
            w0, w1, w2 = w[o, 0, 0, 0], w[o, 0, 0, 1], w[o, 0, 0, 2]
            w3, w4, w5 = w[o, 0, 1, 0], w[o, 0, 1, 1], w[o, 0, 1, 2]
            w6, w7, w8 = w[o, 0, 2, 0], w[o, 0, 2, 1], w[o, 0, 2, 2]
            c1, r1 = np.uint64(1), np.uint64(wq)
            eo, oe, oo = np.uint64(size), np.uint64(2 * size), np.uint64(3 * size)
            for q in range(n_q):
                u = np.uint64(q)
                a[u] = (w0 * ph[u] + w1 * ph[eo + u] + w2 * ph[u + c1]
                        + w3 * ph[oe + u] + w4 * ph[oo + u] + w5 * ph[oe + u + c1]
                        + w6 * ph[u + r1] + w7 * ph[eo + u + r1] + w8 * ph[u + r1 + c1])
        else:
            a[:n_q] = 0.0
            for i in range(kh):
                for j in range(kw):
                    wt = w[o, 0, i, j]
                    off = np.uint64(((i % s) * s + j % s) * size + (i // s) * wq + j // s)
                    for q in range(n_q):
                        u = np.uint64(q)
                        a[u] += wt * ph[u + off]
        sc = scale[o]
        b = shift[o]
        base = (n * out_ch + o) * oh * ow
        for y in range(oh):
            finish_flat(outf, base + y * ow, a, y * wq, ow, sc, b, resf, has_res, lo, hi)
        if code > 2:
            act_row(outf[base:base + oh * ow], code, alpha)


@kernel
def depthwise3x3_same(x, w, scale, shift, res, has_res, out, mult, code, alpha, planes, acc):
    """3×3, stride-1, padding-1 depthwise conv with every plane handled as one flat row-major
    array: the plane is copied in between a zero row above and one below (``planes``: per
    thread, (H + 2)·W + 2 floats and a vector of slack, the interior from W + 1, only it ever
    written), so output q = y·W + x reads tap (i, j) at q + i·W + j and the whole plane is one
    loop. Columns 0 and W − 1 would wrap into the neighbouring rows there, so they are
    recomputed from their six valid taps. The loops run on explicit 8-lane vectors: planes of
    7×7 or 14×14 are too short for LLVM's vectorized loop bodies (64 floats an iteration), and
    would run scalar."""
    n_img, channels, height, width = x.shape
    out_ch = out.shape[1]
    n_q = height * width
    whole = n_q - n_q % LANES
    lo, hi = clamp_bounds(code)
    lo_v, hi_v = vsplat(lo), vsplat(hi)
    xf, outf, resf = x.reshape(-1), out.reshape(-1), res.reshape(-1)
    r1, r2 = width, 2 * width
    for t in prange(n_img * out_ch):
        n = t // out_ch
        o = t % out_ch
        tid = numba.get_thread_id()
        p = planes[tid]
        a = acc[tid]
        src = (n * channels + o // mult) * n_q
        first = width + 1
        for q in range(0, whole, LANES):
            vstore(p, first + q, vload(xf, src + q))
        for q in range(whole, n_q):
            p[first + q] = xf[src + q]
        w0, w1, w2 = w[o, 0, 0, 0], w[o, 0, 0, 1], w[o, 0, 0, 2]
        w3, w4, w5 = w[o, 0, 1, 0], w[o, 0, 1, 1], w[o, 0, 1, 2]
        w6, w7, w8 = w[o, 0, 2, 0], w[o, 0, 2, 1], w[o, 0, 2, 2]
        v0, v1, v2 = vsplat(w0), vsplat(w1), vsplat(w2)
        v3, v4, v5 = vsplat(w3), vsplat(w4), vsplat(w5)
        v6, v7, v8 = vsplat(w6), vsplat(w7), vsplat(w8)
        zero = vsplat(np.float32(0.0))
        for q in range(0, n_q, LANES):  # the last vector runs into the slack
            s0 = vfma(v2, vload(p, q + 2), vfma(v1, vload(p, q + 1), vfma(v0, vload(p, q), zero)))
            s1 = vfma(v5, vload(p, q + r1 + 2),
                      vfma(v4, vload(p, q + r1 + 1), vfma(v3, vload(p, q + r1), zero)))
            s2 = vfma(v8, vload(p, q + r2 + 2),
                      vfma(v7, vload(p, q + r2 + 1), vfma(v6, vload(p, q + r2), zero)))
            vstore(a, q, vadd(vadd(s0, s1), s2))
        for y in range(height):
            u = y * width  # x = 0: no left taps
            a[u] = (w1 * p[u + 1] + w2 * p[u + 2] + w4 * p[u + r1 + 1] + w5 * p[u + r1 + 2]
                    + w7 * p[u + r2 + 1] + w8 * p[u + r2 + 2])
            u += width - 1  # x = W − 1: no right taps
            a[u] = (w0 * p[u] + w1 * p[u + 1] + w3 * p[u + r1] + w4 * p[u + r1 + 1]
                    + w6 * p[u + r2] + w7 * p[u + r2 + 1])
        sc, b = vsplat(scale[o]), vsplat(shift[o])
        base = (n * out_ch + o) * n_q
        for q in range(0, whole, LANES):
            v = vfma(vload(a, q), sc, b)
            if has_res:
                v = vadd(v, vload(resf, base + q))
            vstore(outf, base + q, vclamp(v, lo_v, hi_v))
        finish_flat(outf, base + whole, a, whole, n_q - whole, scale[o], shift[o], resf, has_res,
                    lo, hi)
        if code > 2:
            act_row(outf[base:base + n_q], code, alpha)


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
