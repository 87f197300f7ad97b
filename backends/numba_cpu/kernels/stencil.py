"""Depthwise convolutions and max pooling as stencils, one (image, channel) plane per task.

- ``depthwise3x3_same``: 3×3, stride 1 or 2, padding 1 on flat planes (explicit vectors);
- ``depthwise3x3_masked``: the same at stride 1 straight from the input planes, the padding
  read through lane masks (no copy; AVX-512 only: elsewhere masked loads are emulated);
- ``depthwise3x3_rows``: the same straight from the input, row by row, the padding read
  through lane masks (no copy; AVX-512's masked loads cost a plain load's time);
- ``depthwise_phases`` / ``max_pool_phases``: undilated windows with equal strides over
  stride² phase planes, every tap one constant offset (flat, vectorizable passes);
- ``depthwise``: anything else (dilated, unequal strides), row by row on a padded plane.

A phase plane holds every s-th row and column of the zero-padded input:
``phase[a·s + b][y·wq + x] = xpad[y·s + a, x·s + b]`` (row length wq, each plane ``size``
floats, flat, all stride² planes of a thread one after another). Output (y, x) then reads tap
(i, j) at ``y·wq + x + tap_offset(i, j)`` in phase (i mod s, j mod s), so the whole plane is
one loop per tap; columns x ≥ ow are computed into the accumulator and dropped.

Inner loops index flat arrays with unsigned integers: a numpy slice per output row costs more
than a short row itself, and signed indices keep a wraparound check that blocks
vectorization. Per-thread scratch is only ever written in its interior, so zero (or −∞)
borders set once at compile time stay valid.
"""

from __future__ import annotations

import numba
import numpy as np

from cnnir.backends.numba_cpu.kernels.activation import (
    activate_flat,
    clamp_bounds,
    copy_flat,
    finish_flat,
)
from cnnir.backends.numba_cpu.kernels.host import HOST
from cnnir.backends.numba_cpu.kernels.jit import (
    helper,
    job_count,
    job_items,
    kernel,
    prange,
    run_jobs,
    tile_kernel,
)
from cnnir.backends.numba_cpu.kernels.pool import nan_max
from cnnir.backends.numba_cpu.kernels.simd import (
    LANES,
    lane_bits,
    vadd,
    vclamp,
    veven,
    vfma,
    vload,
    vload_masked,
    vmask,
    vmask_bits,
    vmax,
    vodd,
    vsplat,
    vstore,
    vstore_masked,
)


@helper
def copy_vectors(dst, d, src, s, count):
    """``copy_flat`` on explicit 8-lane vectors, for rows too short for LLVM's loop bodies."""
    whole = count - count % LANES
    for i in range(0, whole, LANES):
        vstore(dst, d + i, vload(src, s + i))
    copy_flat(dst, d + whole, src, s + whole, count - whole)


@helper
def split_row(phases, row_at, line, width, pad_left, stride, size):
    """One padded input row (``line``) into its ``stride`` phase planes, each starting at
    ``row_at`` in the phase of its column (``row_at`` already includes the row's phase)."""
    if stride == 1:  # a contiguous copy (a runtime stride would not vectorize)
        copy_flat(phases, row_at + pad_left, line, 0, width)
        return
    if stride == 2:  # even and odd columns in one loop: LLVM vectorizes the pair of
        # stride-2 loads as one interleaved load, but not either one alone
        half = width // 2
        even = phases[row_at + (pad_left % 2) * size + pad_left // 2:]
        odd = phases[row_at + ((pad_left + 1) % 2) * size + (pad_left + 1) // 2:]
        for i in range(half):
            even[i] = line[2 * i]
            odd[i] = line[2 * i + 1]
        if width % 2:
            even[half] = line[width - 1]
        return
    for col in range(stride):  # the input columns landing in phase column ``col``
        x0 = (col - pad_left) % stride
        out_line = phases[row_at + col * size + (x0 + pad_left) // stride:]
        for i in range((width - x0 + stride - 1) // stride):
            out_line[i] = line[x0 + stride * i]


@helper
def split_phases(phases, xf, plane_at, height, width, stride, pad_top, pad_left, wq, size):
    """The input plane at ``xf[plane_at:]`` into the interiors of the phase planes."""
    for yy in range(height):
        py = yy + pad_top
        src = plane_at + yy * width
        if stride == 1:  # a contiguous row copy (a runtime stride would not vectorize)
            copy_flat(phases, py * wq + pad_left, xf, src, width)
        else:
            row_at = (py % stride) * stride * size + (py // stride) * wq
            split_row(phases, row_at, xf[src:src + width], width, pad_left, stride, size)


@helper
def tap_offset(i, j, stride, size, wq):
    """Where tap (i, j) of output 0 sits in the flat phase planes."""
    return np.uint64(((i % stride) * stride + j % stride) * size + (i // stride) * wq
                     + j // stride)


@helper
def taps_3x3_stride1(acc, ph, w, o, n_q, wq):
    """``acc[q] = Σ_ij w[o, 0, i, j]·ph[q + i·wq + j]``, all nine taps in one expression."""
    w0, w1, w2 = w[o, 0, 0, 0], w[o, 0, 0, 1], w[o, 0, 0, 2]
    w3, w4, w5 = w[o, 0, 1, 0], w[o, 0, 1, 1], w[o, 0, 1, 2]
    w6, w7, w8 = w[o, 0, 2, 0], w[o, 0, 2, 1], w[o, 0, 2, 2]
    c1, c2 = np.uint64(1), np.uint64(2)
    r1, r2 = np.uint64(wq), np.uint64(2 * wq)
    for q in range(n_q):
        u = np.uint64(q)
        acc[u] = (w0 * ph[u] + w1 * ph[u + c1] + w2 * ph[u + c2]
                  + w3 * ph[u + r1] + w4 * ph[u + r1 + c1] + w5 * ph[u + r1 + c2]
                  + w6 * ph[u + r2] + w7 * ph[u + r2 + c1] + w8 * ph[u + r2 + c2])


@helper
def taps_3x3_stride2(acc, ph, w, o, n_q, wq, size):
    """The same for stride 2: taps spread over the four phases (even/odd rows × columns)."""
    w0, w1, w2 = w[o, 0, 0, 0], w[o, 0, 0, 1], w[o, 0, 0, 2]
    w3, w4, w5 = w[o, 0, 1, 0], w[o, 0, 1, 1], w[o, 0, 1, 2]
    w6, w7, w8 = w[o, 0, 2, 0], w[o, 0, 2, 1], w[o, 0, 2, 2]
    c1, r1 = np.uint64(1), np.uint64(wq)
    even_odd, odd_even, odd_odd = np.uint64(size), np.uint64(2 * size), np.uint64(3 * size)
    for q in range(n_q):
        u = np.uint64(q)
        acc[u] = (w0 * ph[u] + w1 * ph[even_odd + u] + w2 * ph[u + c1]
                  + w3 * ph[odd_even + u] + w4 * ph[odd_odd + u] + w5 * ph[odd_even + u + c1]
                  + w6 * ph[u + r1] + w7 * ph[even_odd + u + r1] + w8 * ph[u + r1 + c1])


@helper
def taps_any(acc, ph, w, o, n_q, stride, size, wq):
    """Any kernel size and stride: one pass over the plane per tap."""
    acc[:n_q] = 0.0
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            wt = w[o, 0, i, j]
            off = tap_offset(i, j, stride, size, wq)
            for q in range(n_q):
                u = np.uint64(q)
                acc[u] += wt * ph[u + off]


@helper
def taps_max(acc, ph, kh, kw, n_q, stride, size, wq):
    """``acc[q] = max_ij ph[q + tap_offset(i, j)]``; NaN wins, as in torch's max_pool2d."""
    acc[:n_q] = -np.inf
    for i in range(kh):
        for j in range(kw):
            off = tap_offset(i, j, stride, size, wq)
            for q in range(n_q):
                u = np.uint64(q)
                v = ph[u + off]
                best = acc[u]
                acc[u] = v if (v > best or v != v) else best


@helper
def finish_phase_rows(outf, base, acc, wq, oh, ow, channel, ep):
    """The epilogue, compacting the accumulator's rows (wq apart) into the output plane."""
    for y in range(oh):
        finish_flat(outf, base + y * ow, acc, y * wq, ow, channel, ep)
    activate_flat(outf, base, oh * ow, ep)


@helper
def phase_layout(phases, acc, oh):
    """``(wq, n_q, size)``: phase row length, accumulator length, floats per phase plane
    (a thread's ``phases`` [stride², size] and ``acc`` [rows ≥ oh, wq])."""
    wq = acc.shape[1]
    return wq, oh * wq, phases.shape[1]


@kernel
def depthwise_phases(x, w, out, mult, stride, pad_top, pad_left, ep, phases, acc):
    """Undilated depthwise conv with equal strides and a fused epilogue: output channel o
    reads input channel o // mult. ``phases`` [threads, stride², size] and ``acc``
    [threads, rows ≥ oh, wq] are per-thread scratch (see the module docstring)."""
    run_jobs(depthwise_phase_planes, job_count(out.shape[0] * out.shape[1]),
             (x, w, out, (mult, stride, pad_top, pad_left), ep, phases, acc))


@tile_kernel
def depthwise_phase_planes(job, args):
    """``depthwise_phases``'s output planes of job ``job`` (plane n·O + o), in the scratch of
    the thread running it."""
    x, w, out, (mult, stride, pad_top, pad_left), ep, phases, acc = args
    tid = numba.get_thread_id()
    phases, acc = phases[tid], acc[tid]
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_ch, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    first, last = job_items(job, out.shape[0] * out_ch)
    kh, kw = w.shape[2], w.shape[3]
    wq, n_q, size = phase_layout(phases, acc, oh)
    ph, a = phases.reshape(-1), acc.reshape(-1)
    xf, outf = x.reshape(-1), out.reshape(-1)
    for t in range(first, last):
        n, o = t // out_ch, t % out_ch
        split_phases(ph, xf, (n * channels + o // mult) * height * width, height, width,
                     stride, pad_top, pad_left, wq, size)
        if kh == 3 and kw == 3 and stride == 1:
            taps_3x3_stride1(a, ph, w, o, n_q, wq)
        elif kh == 3 and kw == 3 and stride == 2:
            taps_3x3_stride2(a, ph, w, o, n_q, wq, size)
        else:
            taps_any(a, ph, w, o, n_q, stride, size, wq)
        finish_phase_rows(outf, t * oh * ow, a, wq, oh, ow, o, ep)


@kernel
def max_pool_phases(x, out, kh, kw, stride, pad_top, pad_left, phases, acc):
    """Max pool (undilated, equal strides) over phase planes whose borders are −∞."""
    run_jobs(max_pool_planes, job_count(x.shape[0] * x.shape[1]),
             (x, out, (kh, kw, stride, pad_top, pad_left), phases, acc))


@tile_kernel
def max_pool_planes(job, args):
    """``max_pool_phases``'s flat planes of job ``job``, in the scratch of the thread running
    it."""
    x, out, (kh, kw, stride, pad_top, pad_left), phases, acc = args
    tid = numba.get_thread_id()
    phases, acc = phases[tid], acc[tid]
    first, last = job_items(job, x.shape[0] * x.shape[1])
    height, width = x.shape[2], x.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    wq, n_q, size = phase_layout(phases, acc, oh)
    ph, a = phases.reshape(-1), acc.reshape(-1)
    xf, outf = x.reshape(-1), out.reshape(-1)
    for t in range(first, last):
        split_phases(ph, xf, t * height * width, height, width, stride, pad_top, pad_left, wq,
                     size)
        taps_max(a, ph, kh, kw, n_q, stride, size, wq)
        for y in range(oh):
            copy_flat(outf, (t * oh + y) * ow, a, y * wq, ow)


@kernel
def max_pool_rows(x, out, window, rows):
    """Max pool (undilated, equal strides; float32) one output row at a time: the maximum of
    the window's input rows, a vector loop, into the thread's row of ``rows`` (−∞ borders:
    the padding, and slack for the last vector), then each output vector's maximum over the
    window's columns, stride 2 through the even lanes of vector pairs. ``window`` = (kh, kw,
    stride, pad_top, pad_left). NaN wins."""
    run_jobs(max_pool_row_planes, job_count(x.shape[0] * x.shape[1]), (x, out, window, rows))


@tile_kernel
def max_pool_row_planes(job, args):
    """``max_pool_rows``'s planes of job ``job``, in the row of the thread running it."""
    x, out, (kh, kw, stride, pad_top, pad_left), rows = args
    row = rows[numba.get_thread_id()]
    first, last = job_items(job, x.shape[0] * x.shape[1])
    height, width = x.shape[2], x.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    xf, outf = x.reshape(-1), out.reshape(-1)
    for t in range(first, last):
        for y in range(oh):
            top = y * stride - pad_top
            lo, hi = max(top, 0), min(top + kh, height)
            rows_max(row, pad_left, xf, (t * height + lo) * width, hi - lo, width)
            columns_max(outf, (t * oh + y) * ow, ow, row, kw, stride)


@helper
def rows_max(row, at, xf, first, count, width):
    """``row[at:at + width]`` = the maximum of ``count`` consecutive input rows of ``width``
    from ``xf[first]`` (−∞ when there are none)."""
    whole = width - width % LANES
    for q in range(0, whole, LANES):
        v = vsplat(np.float32(-np.inf))
        for r in range(count):
            v = vmax(v, vload(xf, first + r * width + q))
        vstore(row, at + q, v)
    for q in range(whole, width):
        m = np.float32(-np.inf)
        for r in range(count):
            m = nan_max(m, xf[first + r * width + q])
        row[at + q] = m


@helper
def columns_max(outf, at, ow, row, kw, stride):
    """``outf[at + x]`` = the maximum of ``row[x·stride + j]``, j < kw, for x < ow."""
    if stride > 2:
        for x in range(ow):
            m = np.float32(-np.inf)
            for j in range(kw):
                m = nan_max(m, row[x * stride + j])
            outf[at + x] = m
        return
    for x0 in range(0, ow, LANES):
        v = vsplat(np.float32(-np.inf))
        for j in range(kw):
            if stride == 1:
                v = vmax(v, vload(row, x0 + j))
            else:
                v = vmax(v, veven(vload(row, 2 * x0 + j), vload(row, 2 * x0 + j + LANES)))
        if x0 + LANES <= ow:
            vstore(outf, at + x0, v)
        else:
            vstore_masked(outf, at + x0, v, vmask(0, ow - x0))


def max_pool_row_length(width: int, ow: int, kw: int, stride: int, pad_left: int) -> int:
    """The floats of ``max_pool_rows``'s row: the padded input row, and what the last output
    vector's taps read past it."""
    return max(pad_left + width, stride * (ow + LANES) + kw) + LANES


@helper
def clamp_vectors(code):
    """The epilogue's clamp bounds (``clamp_bounds``), each splat to a vector."""
    lo, hi = clamp_bounds(code)
    return vsplat(lo), vsplat(hi)


@helper
def finish_vector(outf, at, lanes, total, channel, res, has_res):
    """A vector of a channel's outputs through the epilogue into ``outf[at:]``: ``channel =
    (scale, shift, lo, hi)`` splat; only the first ``lanes`` (any number: all LANES when more)
    are read from the residual and written."""
    sc, b, lo_v, hi_v = channel
    y = vfma(total, sc, b)
    if lanes >= LANES:  # plain: a masked store costs AVX2 machines (Zen 3) many cycles
        if has_res:
            y = vadd(y, vload(res, at))
        vstore(outf, at, vclamp(y, lo_v, hi_v))
        return
    valid = vmask(0, lanes)
    if has_res:
        y = vadd(y, vload_masked(res, at, valid))
    vstore_masked(outf, at, vclamp(y, lo_v, hi_v), valid)


@helper
def splat_3x3(w, o):
    """Channel o's nine 3×3 weights, each splat to a vector (row-major)."""
    return (vsplat(w[o, 0, 0, 0]), vsplat(w[o, 0, 0, 1]), vsplat(w[o, 0, 0, 2]),
            vsplat(w[o, 0, 1, 0]), vsplat(w[o, 0, 1, 1]), vsplat(w[o, 0, 1, 2]),
            vsplat(w[o, 0, 2, 0]), vsplat(w[o, 0, 2, 1]), vsplat(w[o, 0, 2, 2]))


@helper
def masked_copies(p, length, xf, at, height, width):
    """The plane at ``xf[at:]`` into the interiors (from W + 1) of three flat copies, ``length``
    floats apart: the middle one whole, the left one with column W − 1 zeroed and the right
    one with column 0 zeroed. A flat tap one column left of x = 0 then reads the left copy's
    zero instead of the previous row's last value, and one right of x = W − 1 the right
    copy's zero: every output is exact with no edge pass."""
    n_q = height * width
    for copy in range(3):
        copy_vectors(p, copy * length + width + 1, xf, at, n_q)
    for y in range(height):
        p[width + 1 + y * width + width - 1] = 0.0
        p[2 * length + width + 1 + y * width] = 0.0


@helper
def row3_vector(p, q, length, wa, wb, wc):
    """One row of taps for a vector of outputs: ``wa·left[q] + wb·middle[q + 1] +
    wc·right[q + 2]`` over the three masked copies (``masked_copies``)."""
    return vfma(wc, vload(p, q + 2 * length + 2),
                vfma(wb, vload(p, q + length + 1), vfma(wa, vload(p, q),
                                                        vsplat(np.float32(0.0)))))


@helper
def vector_3x3(p, q, length, width, wv):
    """Outputs q … q + LANES − 1 of the masked copies' 3×3 stencil; ``wv``: the nine weights,
    each splat to a vector."""
    return vadd(vadd(row3_vector(p, q, length, wv[0], wv[1], wv[2]),
                     row3_vector(p, q + width, length, wv[3], wv[4], wv[5])),
                row3_vector(p, q + 2 * width, length, wv[6], wv[7], wv[8]))


@kernel
def depthwise3x3_masked(x, w, out, mult, ep, masks):
    """3×3, padding-1, stride-1 depthwise conv with every plane one flat row-major array:
    output q = y·W + x reads tap (i, j) at q + (i − 1)·W + j − 1 of the input plane, so the
    whole plane is one loop over vectors of LANES outputs, the epilogue fused. The taps that
    fall outside the plane (the padding: a row above or below it, or a column left or right,
    which the flat index would take from the neighbouring row) are masked off their loads:
    ``masks[v, 3i + j]`` holds the lanes of vector v whose tap (i, j) lies inside
    (``tap_masks``; the same for every plane), so nothing is copied and every masked
    lane reads as the padding's zero. The loops run on explicit vectors: planes of 7×7 or
    14×14 are too short for LLVM's vectorized loop bodies (64 floats an iteration)."""
    run_jobs(depthwise3x3_masked_planes, job_count(out.shape[0] * out.shape[1]),
             (x, w, out, mult, ep, masks))


def tap_masks(height: int, width: int) -> np.ndarray:
    """``depthwise3x3_masked``'s masks of a height × width plane: per vector v of LANES flat
    outputs and tap (i, j), the lanes (``simd.lane_bits``) whose output lies in the plane
    and whose tap (row y + i − 1, column x + j − 1) does too."""
    pos = np.arange(-(-height * width // LANES) * LANES).reshape(-1, LANES)
    y, x = pos // width, pos % width
    masks = np.zeros((pos.shape[0], 9), np.int64)
    for i in range(3):
        for j in range(3):
            inside = ((pos < height * width) & (y + i - 1 >= 0) & (y + i - 1 < height)
                      & (x + j - 1 >= 0) & (x + j - 1 < width))
            masks[:, 3 * i + j] = [lane_bits(np.flatnonzero(row)) for row in inside]
    return masks


@tile_kernel
def depthwise3x3_masked_planes(job, args):
    """``depthwise3x3_masked``'s output planes of job ``job`` (plane n·O + o)."""
    x, w, out, mult, ep, masks = args
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_ch, n_q = out.shape[1], height * width
    first, last = job_items(job, out.shape[0] * out_ch)
    scale, shift, res, has_res, code, _ = ep
    lo_v, hi_v = clamp_vectors(code)
    xf, outf = x.reshape(-1), out.reshape(-1)
    for t in range(first, last):
        n, o = t // out_ch, t % out_ch
        plane = (n * channels + o // mult) * n_q
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = splat_3x3(w, o)
        sc, b = vsplat(scale[o]), vsplat(shift[o])
        base = t * n_q
        for v in range(masks.shape[0]):
            q, m = v * LANES, masks[v]
            top = plane + q - width - 1  # tap (0, 0) of the vector's first output
            total = taps_masked(xf, top, m, 0, w0, w1, w2, vsplat(np.float32(0.0)))
            total = taps_masked(xf, top + width, m, 3, w3, w4, w5, total)
            total = taps_masked(xf, top + 2 * width, m, 6, w6, w7, w8, total)
            finish_vector(outf, base + q, n_q - q, total, (sc, b, lo_v, hi_v), res, has_res)
        activate_flat(outf, base, n_q, ep)


@helper
def taps_masked(xf, at, m, first, wa, wb, wc, total):
    """``total`` plus one row of taps (``depthwise3x3_masked``): the loads at ``at``, ``at + 1``
    and ``at + 2`` through masks ``m[first]`` … ``m[first + 2]``."""
    total = vfma(wa, vload_masked(xf, at, vmask_bits(m[first])), total)
    total = vfma(wb, vload_masked(xf, at + 1, vmask_bits(m[first + 1])), total)
    return vfma(wc, vload_masked(xf, at + 2, vmask_bits(m[first + 2])), total)


@kernel
def depthwise3x3_same(x, w, out, mult, stride, ep, planes, acc):
    """3×3, padding-1 depthwise conv with every plane handled as one flat row-major array:
    the plane is copied in between a zero row above and one below, three times with an edge
    column masked (``masked_copies``; ``planes``: per thread, three copies of (H + 2)·W + 2
    floats and a vector of slack), so stride-1 output q = y·W + x reads tap (i, j) at
    q + i·W + j of copy j and the whole plane is one loop, the epilogue fused; the last
    partial vector goes through ``acc``. Stride 2 computes the even rows of the stride-1
    output into ``acc`` (W floats and a vector of slack) and keeps their even columns: twice
    the multiplies, none of the phase split's per-row work, which dominates small planes.
    The loops run on explicit vectors: planes of 7×7 or 14×14 are too short for LLVM's
    vectorized loop bodies (64 floats an iteration), and would run scalar."""
    run_jobs(depthwise3x3_planes, job_count(out.shape[0] * out.shape[1]),
             (x, w, out, (mult, stride), ep, planes, acc))


@tile_kernel
def depthwise3x3_planes(job, args):
    """``depthwise3x3_same``'s output planes of job ``job`` (plane n·O + o), in the scratch
    of the thread running it (``p``: the three masked copies, ``a``: the accumulator)."""
    x, w, out, (mult, stride), ep, planes, acc = args
    tid = numba.get_thread_id()
    p, a = planes[tid], acc[tid]
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_ch, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    first, last = job_items(job, out.shape[0] * out_ch)
    n_q, n_out = height * width, oh * ow
    whole = n_q - n_q % LANES
    length = p.shape[0] // 3
    scale, shift, res, has_res, code, _ = ep
    lo_v, hi_v = clamp_vectors(code)
    xf, outf = x.reshape(-1), out.reshape(-1)
    for t in range(first, last):
        n, o = t // out_ch, t % out_ch
        masked_copies(p, length, xf, (n * channels + o // mult) * n_q, height, width)
        wv = splat_3x3(w, o)
        sc, b = vsplat(scale[o]), vsplat(shift[o])
        base = (n * out_ch + o) * n_out
        if stride == 1:
            for q in range(0, n_q, LANES):  # the last vector runs into the slack
                total = vector_3x3(p, q, length, width, wv)
                if q == whole:
                    vstore(a, 0, total)
                else:
                    v = vfma(total, sc, b)
                    if has_res:
                        v = vadd(v, vload(res, base + q))
                    vstore(outf, base + q, vclamp(v, lo_v, hi_v))
            finish_flat(outf, base + whole, a, 0, n_q - whole, o, ep)
        else:
            for y in range(oh):
                for q in range(0, width, LANES):
                    vstore(a, q, vector_3x3(p, 2 * y * width + q, length, width, wv))
                for i in range(1, ow):
                    a[i] = a[2 * i]
                finish_flat(outf, base + y * ow, a, 0, ow, o, ep)
        activate_flat(outf, base, n_out, ep)


@helper
def row_masks(x0, width, stride):
    """The lane masks of the tap loads of outputs x0 … x0 + LANES − 1 of a padding-1 3×3
    conv on rows of ``width``: the lanes whose column lies in [0, width) (``taps_row``)."""
    at = stride * x0
    if stride == 1:  # columns x − 1, x and x + 1
        return (vmask(1 - at, width + 1 - at), vmask(0, width - at), vmask(0, width - 1 - at),
                vmask(0, 0))
    # 2x and 2x + 1 from two vectors at 2·x0, 2x − 1 from two at 2·x0 − 1
    return (vmask(0, width - at), vmask(0, width - at - LANES),
            vmask(1 - at, width + 1 - at), vmask(1 - at - LANES, width + 1 - at - LANES))


@helper
def taps_row(xf, row, x0, stride, masks, wa, wb, wc, total):
    """``total`` plus one input row's three taps for outputs x0 … x0 + LANES − 1 (the row's
    zero padding read through ``masks``, ``row_masks``): stride 2 takes the even and odd
    lanes of pairs of vectors."""
    if stride == 1:
        left = vload_masked(xf, row + x0 - 1, masks[0])
        middle = vload_masked(xf, row + x0, masks[1])
        right = vload_masked(xf, row + x0 + 1, masks[2])
    else:
        at = row + 2 * x0
        low, high = vload_masked(xf, at, masks[0]), vload_masked(xf, at + LANES, masks[1])
        left = veven(vload_masked(xf, at - 1, masks[2]),
                     vload_masked(xf, at - 1 + LANES, masks[3]))
        middle, right = veven(low, high), vodd(low, high)
    return vfma(wc, right, vfma(wb, middle, vfma(wa, left, total)))


@kernel
def depthwise3x3_rows(x, w, out, mult, stride, ep):
    """3×3, padding-1, stride-1 or 2 depthwise conv straight from the input planes, one
    output row at a time in vectors of LANES outputs: each vector reads its taps with lane
    masks (``simd.vload_masked``) that turn the columns outside the row into the padding's
    zeros, and the rows outside the plane are skipped, so nothing is copied. The epilogue is
    fused, the last partial vector of a row stored with a mask."""
    run_jobs(depthwise3x3_row_planes, job_count(out.shape[0] * out.shape[1]),
             (x, w, out, (mult, stride), ep))


@tile_kernel
def depthwise3x3_row_planes(job, args):
    """``depthwise3x3_rows``'s output planes of job ``job`` (plane n·O + o)."""
    x, w, out, (mult, stride), ep = args
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_ch, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    first, last = job_items(job, out.shape[0] * out_ch)
    xf, outf = x.reshape(-1), out.reshape(-1)
    for t in range(first, last):
        n, o = t // out_ch, t % out_ch
        plane = (n * channels + o // mult) * height * width
        depthwise3x3_plane_rows(xf, (plane, 0, height, width), w, o, outf, (t * oh * ow, ow),
                                0, oh, stride, ep)


# Input planes up to this size are walked down each column of output vectors at stride 2
# (``depthwise3x3_plane_rows``): 7 to 28 outputs a row ran 15-40% faster in MobileNetV2 than
# row by row, which makes each vector's four masks again. A larger plane is read from L2 or
# further as it goes, row by row (96 planes of 112x112: 99 -> 119 us by columns).
COLUMN_WALK_BYTES = HOST.l1_bytes // 2


@helper
def taps_vector(xf, source, y, x0, stride, masks, taps, outf, at, lanes, channel, res,
                has_res):
    """Outputs x0 … x0 + LANES − 1 of output row y (``depthwise3x3_plane_rows``) into
    ``outf[at:]`` through the epilogue (``finish_vector``)."""
    start, first, height, width = source
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = taps
    top = y * stride - 1  # the input row of the taps' first row
    row = start + (top - first) * width
    total = vsplat(np.float32(0.0))
    if top >= 0:
        total = taps_row(xf, row, x0, stride, masks, w0, w1, w2, total)
    total = taps_row(xf, row + width, x0, stride, masks, w3, w4, w5, total)
    if top + 2 < height:
        total = taps_row(xf, row + 2 * width, x0, stride, masks, w6, w7, w8, total)
    finish_vector(outf, at, lanes, total, channel, res, has_res)


@helper
def depthwise3x3_plane_rows(xf, source, w, o, outf, target, y0, y1, stride, ep):
    """Output rows [y0, y1) of channel ``o``'s plane (``target``: where its row 0 starts in
    ``outf``, and the row length) from its input plane (``source``: where input row
    ``first`` starts in ``xf``, ``first``, the plane's height and width; row r lies at
    ``(r − first)·width`` from there, and only rows in [0, height) are read)."""
    at, first, height, width = source
    base, ow = target
    scale, shift, res, has_res, code, _ = ep
    lo_v, hi_v = clamp_vectors(code)
    taps, channel = splat_3x3(w, o), (vsplat(scale[o]), vsplat(shift[o]), lo_v, hi_v)
    if stride == 2 and 4 * height * width <= COLUMN_WALK_BYTES:
        for x0 in range(0, ow, LANES):  # down each column of vectors, its masks made once
            masks = row_masks(x0, width, 2)
            for y in range(y0, y1):
                taps_vector(xf, source, y, x0, 2, masks, taps, outf, base + y * ow + x0,
                            ow - x0, channel, res, has_res)
    else:  # row by row (at stride 1 a 112-wide plane by columns ran 10-20% slower)
        for y in range(y0, y1):
            for x0 in range(0, ow, LANES):
                taps_vector(xf, source, y, x0, stride, row_masks(x0, width, stride), taps,
                            outf, base + y * ow + x0, ow - x0, channel, res, has_res)
    activate_flat(outf, base + y0 * ow, (y1 - y0) * ow, ep)


@helper
def depthwise_row3(dst, a, b, c, w, o, ow, sw, d):
    """One output row of a 3x3 depthwise conv from three zero-padded input rows: all nine
    taps in one expression so the loop over output columns vectorizes."""
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
def depthwise(x, w, out, mult, window, ep, padded):
    """Any depthwise conv (``window`` = kh, kw, sh, sw, pad_top, pad_left, dh, dw) with a
    fused epilogue. Each plane is first copied into the interior of the thread's
    zero-bordered buffer ``padded`` [threads, hp, wp], so every output is an interior one."""
    _, _, sh, sw, pad_top, pad_left, dh, dw = window
    n_img, channels, height, width = x.shape
    _, out_ch, oh, ow = out.shape
    outf = out.reshape(-1)
    for t in prange(n_img * out_ch):
        n, o = t // out_ch, t % out_ch
        plane = padded[numba.get_thread_id()]
        for y in range(height):
            copy_flat(plane[pad_top + y], pad_left, x[n, o // mult, y], 0, width)
        for y in range(oh):
            row = out[n, o, y]
            if w.shape[2] == 3 and w.shape[3] == 3:
                r = y * sh
                depthwise_row3(row, plane[r], plane[r + dh], plane[r + 2 * dh], w, o, ow,
                               sw, dw)
            else:
                depthwise_row(row, plane, y, w, o, ow, sh, sw, dh, dw)
            d = ((n * out_ch + o) * oh + y) * ow
            finish_flat(outf, d, outf, d, ow, o, ep)
            activate_flat(outf, d, ow, ep)
