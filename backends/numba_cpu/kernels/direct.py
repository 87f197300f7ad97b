"""Dense convolutions on the micro-kernel with B read in place: no im2col.

A job is a band of output rows (n, y0, y1) and output channels [r0, r1). The input rows the
band reads are copied into the thread's buffer, zero-padded and split by column phase
(``stencil.split_row``): ``padded[c, r]`` holds padded input row y0·sh + r of channel c as sw
phases of ``wq`` floats, phase b holding padded columns b, b + sw, b + 2·sw, … So tap (c, i,
j) of output pixel (y, x) is at

    index[(c, i, j)] + (y − y0)·sh·pitch + x,
    index[(c, i, j)] = (c·rows + i·dh)·pitch + ((j·dw) mod sw)·wq + (j·dw) div sw,

with ``pitch = sw·wq``: for every step of the reduction, an output row's pixels are one
contiguous run. The band's pixels, row after row, are then the columns of a GEMM of depth
C·kh·kw whose B rows are looked up in ``index`` instead of lying ``ld`` apart in an im2col
buffer, copied an L1 chunk of columns at a time into a contiguous panel (``pack_pixels``; a
chunk spans rows where they are narrow, so 16- or 8-pixel rows still fill the micro-kernel's
widest tiles) that the micro-kernel sweeps: the copy into the thread's buffer writes each
input value about once, where im2col writes it kh·kw times and the GEMM reads it back. Worth
most where C is small (a network's first layer: kh·kw taps of 3 channels, a short reduction
over many pixels) or the plane is (the weights are read once per chunk, not per row).
"""

from __future__ import annotations

import numba
import numpy as np

from cnnir.backends.numba_cpu.kernels.conv import zero_flat
from cnnir.backends.numba_cpu.kernels.gemm import (
    L1_CHUNK_BYTES,
    NO_OFFSET,
    chunk_columns,
    gemm_panel_block,
    pack_panel,
)
from cnnir.backends.numba_cpu.kernels.jit import helper, kernel, run_jobs, tile_kernel
from cnnir.backends.numba_cpu.kernels.pool import max_pool_rows
from cnnir.backends.numba_cpu.kernels.stencil import split_row


@kernel
def direct_conv(packed, x, out, bands, window, ep, index, padded, pooled):
    """An ungrouped convolution (``window`` = kh, kw, sh, sw, pad_top, pad_left, dh, dw) with
    a fused epilogue; ``packed``: the weights as ``simd.pack_rows``; ``bands``: output rows
    and channels (n, y0, y1, r0, r1); ``padded`` [threads, C, rows, pitch] zero outside the
    interiors it is given (see the module docstring). Unless ``pooled`` is empty, the 2×2 max
    pool of ``out`` (its windows tiling it; bands start on even rows) goes into ``pooled``,
    pairs of rows as soon as they are computed, from L1 (``max_pool_rows``)."""
    run_jobs(direct_band, bands.shape[0], (packed, x, out, bands, window, ep, index, padded,
                                            pooled))


@tile_kernel(allocates=True)
def direct_band(job, args):
    """``direct_conv``'s band ``job`` (n, y0, y1, r0, r1) in the buffers of the thread running
    it. Only the L1 panel is allocated here: the work is ``direct_panel_band``'s, compiled
    without reference counting. Allocated here, not passed in: a panel from the step's
    scratch timed 153-165 us against 126-133 on MobileNetV2's stem at batch 1; shifting this
    one's address moved it too, in a noisy hour, so the cause (aliasing, cache sets) is not
    known."""
    packed, x, out, bands, window, ep, index, padded, pooled = args
    band = bands[job]
    pixels = (band[2] - band[1]) * out.shape[3]
    chunk = pixel_chunk(index.shape[0], out.shape[3], pooled.shape[0] > 0)
    panel = np.empty(index.shape[0] * min(chunk, pixels), np.float32)
    direct_panel_band(packed, x, out, band, window, ep, index, padded[numba.get_thread_id()],
                      pooled, panel)


@helper
def pixel_chunk(k, ow, pooling):
    """How many of a band's pixels go through the panel at a time: ``chunk_columns``, in
    whole pairs of rows when each pair is pooled as soon as it is done."""
    chunk = chunk_columns(k, L1_CHUNK_BYTES)
    return max(2 * ow, chunk // (2 * ow) * (2 * ow)) if pooling else chunk


@tile_kernel
def direct_panel_band(packed, x, out, band, window, ep, index, padded, pooled, panel):
    """``direct_band`` with its panel given."""
    n, y0, y1, r0, r1 = band[0], band[1], band[2], band[3], band[4]
    kh, _, sh, sw, pad_top, pad_left, dh, _ = window
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_ch, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    rows, pitch = padded.shape[1], padded.shape[2]
    pf, xf = padded.reshape(-1), x.reshape(-1)
    for c in range(channels):
        for r in range((y1 - y0 - 1) * sh + (kh - 1) * dh + 1):
            iy = y0 * sh - pad_top + r
            at = (c * rows + r) * pitch
            if iy < 0 or iy >= height:
                zero_flat(pf, at, pitch)
            else:
                src = ((n * channels + c) * height + iy) * width
                split_row(pf, at, xf[src:src + width], width, pad_left, sw, pitch // sw)
    k = index.shape[0]
    pooling = pooled.shape[0] > 0
    chunk = pixel_chunk(k, ow, pooling)
    pixels, outf = (y1 - y0) * ow, out.reshape(-1)
    first = ((n * out_ch + r0) * oh + y0) * ow
    for p0 in range(0, pixels, chunk):
        width = min(chunk, pixels - p0)
        pack_pixels(panel, (pf, sh * pitch, index), p0, width, ow, k)
        gemm_panel_block((packed, r0 * k), (panel, NO_OFFSET, width),
                         (outf, first + p0, oh * ow), r1 - r0, width, k, r0, ep,
                         chunk_columns(k, L1_CHUNK_BYTES), panel[:0])
        if pooling:
            max_pool_rows(out, pooled, (n, y0 + p0 // ow, y0 + (p0 + width) // ow), r0, r1)


@helper
def pack_pixels(panel, taps, p0, width, ow, k):
    """A band's output pixels [p0, p0 + width), counted row after row (``ow`` a row), into
    ``panel``, tap after tap (``width`` apart): ``taps = (padded, row_step, index)`` puts tap
    i of the band's pixel (r, x) at ``index[i] + r·row_step + x``. Pixels of several rows
    share a panel, so that narrow rows still fill the micro-kernel's widest tiles."""
    pf, row_step, index = taps
    q, end = p0, p0 + width
    while q < end:
        r, x = q // ow, q % ow
        count = min(ow - x, end - q)
        pack_panel((panel, q - p0, width), (pf, r * row_step, index), x, count, k)
        q += count
