"""Convolutions on the channel-blocked layout NCHWc: [N, C / LANES, H, W, LANES].

Each pixel holds a vector of LANES consecutive channels, so a kernel works on whole vectors
of channels with no per-plane overhead and no lane masks:

- ``pointwise_blocked``: a 1x1 convolution, tiles of PIXEL_TILE pixels × two blocks of
  output channels (twelve accumulators, each a vector of channels), every input channel
  broadcast from the pixel it belongs to and multiplied by a vector of the weights;
- ``depthwise_blocked``: a 3×3 depthwise convolution with padding 1, stride 1 or 2, a
  vector of channels per output pixel, the nine taps' weights held in registers;
- ``global_pool_blocked``: adaptive pooling to 1×1 (a network's head), a vector of
  channels at a time;
- ``reorder``: the layout changes at a blocked region's borders.

Read straight from NCHW, a 1x1 convolution's step of the reduction reads one short run
from each of k planes, and a depthwise convolution on a 7×7 plane spends more on the plane's
edges than on its 49 outputs; blocked, both read one contiguous run per block of channels.
The epilogue (scale, shift, residual, activation) is applied in registers, the residual in
the same layout as the output.
"""

from __future__ import annotations

import numpy as np

from cnnir.backends.numba_cpu.kernels.activation import activate_flat, clamp_bounds
from cnnir.backends.numba_cpu.kernels.host import HOST
from cnnir.backends.numba_cpu.kernels.jit import (
    helper,
    job_count,
    job_items,
    kernel,
    run_jobs,
    tile_kernel,
)
from cnnir.backends.numba_cpu.kernels.simd import (
    LANES,
    vadd,
    vclamp,
    vfma,
    vload,
    vmax,
    vsplat,
    vstore,
)
from cnnir.backends.numba_cpu.kernels.stencil import finish_vector

PIXEL_TILE = 6  # pixels per tile of pointwise_blocked (twelve accumulators, sixteen registers)


def pack_pointwise(w: np.ndarray) -> np.ndarray:
    """A 1x1 convolution's weights [M, K] as float32 ``[M / LANES][K][LANES]``, flat: per
    block of output channels and input channel, the vector of their weights."""
    m, k = w.shape
    return np.ascontiguousarray(w.reshape(m // LANES, LANES, k).transpose(0, 2, 1),
                                np.float32).reshape(-1)


def pack_depthwise(w: np.ndarray) -> np.ndarray:
    """A 3×3 depthwise convolution's weights [C, 1, 3, 3] as float32 ``[C / LANES][9][LANES]``,
    flat."""
    c = w.shape[0]
    return np.ascontiguousarray(w.reshape(c // LANES, LANES, 9).transpose(0, 2, 1),
                                np.float32).reshape(-1)


def pointwise_tiles(images: int, pixels: int, blocks: int, k: int, l2_bytes: int,
                    wanted: int, threads: int) -> np.ndarray:
    """Jobs (n, p0, p1, b0, b1) of ``pointwise_blocked``: runs of pixels whose input (k
    channels) fits half of L2, cut further until there are ``wanted`` jobs where the layer
    has them: by output blocks first on small planes (whose last tile is short: cut into
    runs of pixels, a 7×7 plane's two runs were 4 and 5 tiles), else by runs of whole tiles;
    when there are few, a multiple of the ``threads`` where the tiles allow (a static
    schedule of 7 jobs on 2 threads runs at 7/8 speed)."""
    per_run = max(PIXEL_TILE, l2_bytes // 2 // (4 * k) // PIXEL_TILE * PIXEL_TILE)
    tiles = -(-pixels // PIXEL_TILE)
    runs, parts = min(-(-pixels // per_run), tiles), 1

    def split_blocks() -> int:
        count = parts
        while images * runs * count < wanted and count * 2 <= blocks // 2:
            count *= 2
        return count

    if tiles < SMALL_PLANE_TILES * wanted:
        parts = split_blocks()
    while runs < tiles and (images * runs * parts < wanted
                            or (wanted > 1 and images * runs * parts < 4 * threads
                                and images * runs * parts % threads)):
        runs += 1
    parts = split_blocks()
    cuts = sorted({min(pixels, round(pixels * i / runs / PIXEL_TILE) * PIXEL_TILE)
                   for i in range(runs)} | {pixels})
    b_cuts = sorted({blocks * i // parts // 2 * 2 for i in range(parts)} | {blocks})
    jobs = [(n, p0, p1, b0, b1) for n in range(images) for p0, p1 in zip(cuts, cuts[1:])
            for b0, b1 in zip(b_cuts, b_cuts[1:])]
    return np.array(jobs, np.int64).reshape(-1, 5)


SMALL_PLANE_TILES = 8  # fewer tiles of pixels than this per job wanted: split blocks first


@kernel
def pointwise_blocked(x, packed, out, tiles, ep):
    """``out = ep(W·x)`` for a 1x1 convolution, ``x`` [N, K/L, H, W, L] and ``out`` [N, M/L,
    H, W, L] blocked, ``packed`` the weights (``pack_pointwise``); per job of ``tiles``
    (``pointwise_tiles``) in parallel."""
    run_jobs(pointwise_job, tiles.shape[0], (x, packed, out, tiles, ep))


@tile_kernel
def pointwise_job(t, args):
    """Job t (n, p0, p1, b0, b1) of ``pointwise_blocked``: pixels [p0, p1) of image n, output
    blocks [b0, b1). A projection (more input channels than output) whose weights fit half
    of L1 takes two tiles of pixels at a time through every block, each tile read from
    memory once: MobileNetV2's 144 -> 24 channels on 56×56 planes at batch 8, 1.32-1.54 ->
    1.15-1.20 ms (Zen 3). Otherwise each pair of blocks (its weights in L1) goes through
    every tile, writing long runs of each output block: its expansions (24 -> 144) lost
    5-20% the other way."""
    x, packed, out, tiles, ep = args
    n, p0, p1, b0, b1 = tiles[t, 0], tiles[t, 1], tiles[t, 2], tiles[t, 3], tiles[t, 4]
    k_blocks, m_blocks = x.shape[1], out.shape[1]
    weight_bytes = 4 * (b1 - b0) * k_blocks * LANES * LANES
    by_tiles = weight_bytes <= L1_BYTES // 2 and k_blocks > b1 - b0
    at = (n * k_blocks * x.shape[2] * x.shape[3] * LANES, n * m_blocks)  # image n's
    pointwise_run(x.reshape(-1), at, x.shape, packed, out.reshape(-1), (p0, p1), (b0, b1),
                  2 * PIXEL_TILE if by_tiles else p1 - p0, ep)


L1_BYTES = HOST.l1_bytes


@tile_kernel
def pointwise_run(xf, at, shape, packed, of, pixels, blocks, chunk, ep):
    """Pixels [p0, p1) × output blocks [b0, b1) of ``pointwise_job``'s image, ``chunk``
    pixels at a time: the blocks two at a time, each pair over every tile of pixels; a lone
    last block over two tiles at a time (the second set of accumulators takes the next
    tile; where there is none, the first's, unstored). A tile past p1 is moved back to end
    there (the plane has at least PIXEL_TILE pixels), the pixels it repeats unstored. A
    tile kernel of its own: inlined into the job, its products and epilogues were copied
    through each level of inlining (Numba copies an inlined function's IR block by block,
    with all its variables each time), and the job compiled in 9-29 s."""
    x_at, o_first = at
    p_start, p_end = pixels
    b0, b1 = blocks
    k_blocks, plane = shape[1], shape[2] * shape[3] * LANES
    weights = k_blocks * LANES * LANES  # of a block
    for c in range(p_start, p_end, chunk):
        p0, p1 = c, min(c + chunk, p_end)
        for b in range(b0, b1 - 1, 2):
            for p in range(p0, p1, PIXEL_TILE):
                first = min(p, p1 - PIXEL_TILE)
                o_at = (o_first + b) * plane + first * LANES
                # the second set: the same pixels (a constant: their loads are shared)
                pointwise_sums(xf, x_at + first * LANES, SAME_PIXELS, plane, k_blocks, packed,
                               (b * weights, (b + 1) * weights), of, (o_at, o_at + plane),
                               (p - first, p - first), (b, b + 1), ep)
        if (b1 - b0) % 2:
            b = b1 - 1
            for p in range(p0, p1, 2 * PIXEL_TILE):
                first = min(p, p1 - PIXEL_TILE)
                second = min(p + PIXEL_TILE, p1 - PIXEL_TILE)
                skip2 = p + PIXEL_TILE - second if p + PIXEL_TILE < p1 else PIXEL_TILE
                o_at = (o_first + b) * plane + first * LANES
                shift = (second - first) * LANES
                pointwise_sums(xf, x_at + first * LANES, shift, plane, k_blocks, packed,
                               (b * weights, b * weights), of, (o_at, o_at + shift),
                               (p - first, skip2), (b, b), ep)


SAME_PIXELS = 0  # pointwise_sums' second set of pixels: its first


@helper
def pointwise_sums(xf, at0, shift, plane, k_blocks, packed, w_at, of, o_at, skips, blocks,
                   ep):
    """Two sets of PIXEL_TILE accumulators of ``pointwise_run``: the first for the
    PIXEL_TILE pixels from ``at0`` (where the first one's channel 0 lies) with the weights at
    ``w_at[0]``, the second for those ``shift`` floats further with the weights at
    ``w_at[1]``; each set stored at ``o_at`` as output block ``blocks[i]`` but for its first
    ``skips[i]`` pixels. The pixels' offsets within a tile are constants (one address
    register per set): runtime offsets, one register each, ran 1.7-2.5× slower."""
    zero = vsplat(np.float32(0.0))
    a00, a01, a10, a11, a20, a21 = zero, zero, zero, zero, zero, zero
    a30, a31, a40, a41, a50, a51 = zero, zero, zero, zero, zero, zero
    w0, w1 = w_at
    for kb in range(k_blocks):
        xb = at0 + kb * plane
        wb = kb * LANES * LANES
        for lane in range(LANES):
            step = wb + lane * LANES
            u0, u1 = vload(packed, w0 + step), vload(packed, w1 + step)
            at = np.uint64(xb + lane)
            at2 = at + np.uint64(shift)
            a00 = vfma(vsplat(xf[at]), u0, a00)
            a01 = vfma(vsplat(xf[at2]), u1, a01)
            a10 = vfma(vsplat(xf[at + ONE]), u0, a10)
            a11 = vfma(vsplat(xf[at2 + ONE]), u1, a11)
            a20 = vfma(vsplat(xf[at + TWO]), u0, a20)
            a21 = vfma(vsplat(xf[at2 + TWO]), u1, a21)
            a30 = vfma(vsplat(xf[at + THREE]), u0, a30)
            a31 = vfma(vsplat(xf[at2 + THREE]), u1, a31)
            a40 = vfma(vsplat(xf[at + FOUR]), u0, a40)
            a41 = vfma(vsplat(xf[at2 + FOUR]), u1, a41)
            a50 = vfma(vsplat(xf[at + FIVE]), u0, a50)
            a51 = vfma(vsplat(xf[at2 + FIVE]), u1, a51)
    first, second = o_at
    finish_pixels(of, first, skips[0], blocks[0], ep, (a00, a10, a20, a30, a40, a50))
    finish_pixels(of, second, skips[1], blocks[1], ep, (a01, a11, a21, a31, a41, a51))


# pixel r of a tile, r·LANES floats from its first (unsigned: no wraparound check)
ONE, TWO, THREE = np.uint64(LANES), np.uint64(2 * LANES), np.uint64(3 * LANES)
FOUR, FIVE = np.uint64(4 * LANES), np.uint64(5 * LANES)


@helper
def finish_pixels(of, at, skip, b, ep, sums):
    """Block b's vectors of a tile's pixels but its first ``skip`` (``sums``, PIXEL_TILE of
    them) through the epilogue into ``of[at:]``: a whole tile in registers, in straight
    code; a tile moved back stored first, then finished from L1. Few branches: Numba
    copies an inlined function's IR block by block, each time with all its variables, and
    a branch per pixel took the job's compile from 5 to 9 s."""
    scale, shift, res, has_res, code, _ = ep
    sc, sh = vload(scale, b * LANES), vload(shift, b * LANES)
    lo, hi = clamp_bounds(code)
    lo_v, hi_v = vsplat(lo), vsplat(hi)
    c0, c1, c2, c3, c4, c5 = sums
    if skip == 0:
        c0, c1, c2 = vfma(c0, sc, sh), vfma(c1, sc, sh), vfma(c2, sc, sh)
        c3, c4, c5 = vfma(c3, sc, sh), vfma(c4, sc, sh), vfma(c5, sc, sh)
        if has_res:
            c0, c1 = vadd(c0, vload(res, at)), vadd(c1, vload(res, at + LANES))
            c2, c3 = vadd(c2, vload(res, at + 2 * LANES)), vadd(c3, vload(res, at + 3 * LANES))
            c4, c5 = vadd(c4, vload(res, at + 4 * LANES)), vadd(c5, vload(res, at + 5 * LANES))
        vstore(of, at, vclamp(c0, lo_v, hi_v))
        vstore(of, at + LANES, vclamp(c1, lo_v, hi_v))
        vstore(of, at + 2 * LANES, vclamp(c2, lo_v, hi_v))
        vstore(of, at + 3 * LANES, vclamp(c3, lo_v, hi_v))
        vstore(of, at + 4 * LANES, vclamp(c4, lo_v, hi_v))
        vstore(of, at + 5 * LANES, vclamp(c5, lo_v, hi_v))
    else:  # a tile moved back: its first pixels are another tile's
        for r in range(skip, PIXEL_TILE):
            vstore(of, at + r * LANES, sums[r])
        for r in range(skip, PIXEL_TILE):
            finish_vector(of, at + r * LANES, LANES, vload(of, at + r * LANES),
                          (sc, sh, lo_v, hi_v), res, has_res)
    if skip < PIXEL_TILE:
        activate_flat(of, at + skip * LANES, (PIXEL_TILE - skip) * LANES, ep)


@kernel
def depthwise_blocked(x, packed, out, stride, ep):
    """A 3×3 depthwise convolution, padding 1, ``stride`` 1 or 2, ``x`` and ``out`` blocked,
    ``packed`` the weights (``pack_depthwise``): one block plane (n, c) after another,
    in parallel."""
    run_jobs(depthwise_blocked_planes, job_count(out.shape[0] * out.shape[1]),
             (x, packed, out, stride, ep))


@tile_kernel
def depthwise_blocked_planes(job, args):
    """The block planes of job ``job`` of ``depthwise_blocked``."""
    x, packed, out, stride, ep = args
    blocks, height, width = x.shape[1], x.shape[2], x.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    first, last = job_items(job, out.shape[0] * blocks)
    xf, of = x.reshape(-1), out.reshape(-1)
    for t in range(first, last):
        depthwise_plane(xf, t * height * width * LANES, (height, width), packed, t % blocks,
                        of, t * oh * ow * LANES, (oh, ow), stride, ep)


@helper
def depthwise_plane(xf, x_at, in_hw, packed, b, of, o_at, out_hw, stride, ep):
    """One block plane: output row by row, each row's first and last pixels (which read the
    padding) apart from its interior."""
    height, width = in_hw
    oh, ow = out_hw
    w = b * 9 * LANES
    taps = (vload(packed, w), vload(packed, w + LANES), vload(packed, w + 2 * LANES),
            vload(packed, w + 3 * LANES), vload(packed, w + 4 * LANES),
            vload(packed, w + 5 * LANES), vload(packed, w + 6 * LANES),
            vload(packed, w + 7 * LANES), vload(packed, w + 8 * LANES))
    scale, shift, res, has_res, code, _ = ep
    lo, hi = clamp_bounds(code)
    channel = (vload(scale, b * LANES), vload(shift, b * LANES), vsplat(lo), vsplat(hi))
    row = width * LANES
    inner_end = -(-(width - 1) // stride)  # outputs from here on read the right padding
    for y in range(oh):
        top = y * stride - 1
        rows = (x_at + top * row, top >= 0, top + 2 < height)
        at = o_at + y * ow * LANES
        if inner_end > 0:
            depthwise_pixel(xf, rows, -1, width, taps, of, at, channel, res, has_res, False,
                            True)
        else:  # a plane one pixel wide
            depthwise_pixel(xf, rows, -1, width, taps, of, at, channel, res, has_res, False,
                            False)
        for x0 in range(1, min(inner_end, ow)):
            depthwise_pixel(xf, rows, x0 * stride - 1, width, taps, of, at + x0 * LANES,
                            channel, res, has_res, True, True)
        for x0 in range(max(inner_end, 1), ow):
            depthwise_pixel(xf, rows, x0 * stride - 1, width, taps, of, at + x0 * LANES,
                            channel, res, has_res, True, False)
    activate_flat(of, o_at, oh * ow * LANES, ep)


@helper
def depthwise_pixel(xf, rows, left, width, taps, of, at, channel, res, has_res, left_in,
                    right_in):
    """One output pixel's vector: the taps of input rows top … top + 2 (``rows`` = (where
    row top starts, whether it exists, whether row top + 2 does)) and columns left … left + 2
    (the first read only when ``left_in``, the last only when ``right_in``: the padding's
    zeros are skipped)."""
    top_at, top_in, bottom_in = rows
    row = width * LANES
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = taps
    at0 = top_at + left * LANES
    middle = row3(xf, at0 + row, w3, w4, w5, left_in, right_in)
    if top_in:
        middle = vadd(middle, row3(xf, at0, w0, w1, w2, left_in, right_in))
    if bottom_in:
        middle = vadd(middle, row3(xf, at0 + 2 * row, w6, w7, w8, left_in, right_in))
    finish_vector(of, at, LANES, middle, channel, res, has_res)


@helper
def row3(xf, at, wa, wb, wc, left_in, right_in):
    """``wa·x[at] + wb·x[at + L] + wc·x[at + 2L]`` on vectors, the first term only when
    ``left_in``, the last only when ``right_in``."""
    total = vfma(wb, vload(xf, at + LANES), vsplat(np.float32(0.0)))
    if left_in:
        total = vfma(wa, vload(xf, at), total)
    if right_in:
        total = vfma(wc, vload(xf, at + 2 * LANES), total)
    return total


@kernel
def reorder(nchw, blocked, into):
    """``blocked[n, c / L, h, w, c % L] = nchw[n, c, h, w]`` when ``into``, else the reverse,
    per block plane in parallel."""
    run_jobs(reorder_planes, job_count(blocked.shape[0] * blocked.shape[1]),
             (nchw, blocked, into))


@tile_kernel
def reorder_planes(job, args):
    """The block planes of job ``job`` of ``reorder``: each the same L·H·W floats in both
    layouts. Pixel by pixel, unsigned indices: lane by lane, or with signed indices, the 32
    channels of a 112×112 MobileNetV2 stem took 107–174 µs to convert, against 46–50."""
    nchw, blocked, into = args
    pixels = blocked.shape[2] * blocked.shape[3]
    first, last = job_items(job, blocked.shape[0] * blocked.shape[1])
    nf, bf = nchw.reshape(-1), blocked.reshape(-1)
    for t in range(first, last):  # pixel by pixel: the blocked side one vector each
        at = np.uint64(t * LANES * pixels)
        if into:
            for p in range(pixels):
                for lane in range(LANES):
                    bf[at + np.uint64(p * LANES + lane)] = nf[at + np.uint64(lane * pixels + p)]
        else:
            for p in range(pixels):
                for lane in range(LANES):
                    nf[at + np.uint64(lane * pixels + p)] = bf[at + np.uint64(p * LANES + lane)]


@kernel
def global_pool_blocked(x, out, is_max):
    """Adaptive pooling to 1×1 of a blocked ``x`` into ``out`` [N, C, 1, 1]: per block plane
    (in parallel), the maximum (NaN winning) or the mean of its pixels' vectors."""
    run_jobs(global_pool_blocked_planes, job_count(x.shape[0] * x.shape[1]), (x, out, is_max))


@tile_kernel
def global_pool_blocked_planes(job, args):
    """The block planes of job ``job`` of ``global_pool_blocked``."""
    x, out, is_max = args
    pixels = x.shape[2] * x.shape[3]
    first, last = job_items(job, x.shape[0] * x.shape[1])
    xf, of = x.reshape(-1), out.reshape(-1)
    for t in range(first, last):
        at = t * pixels * LANES
        total = vload(xf, at)
        if is_max:
            for p in range(1, pixels):
                total = vmax(total, vload(xf, at + p * LANES))
        else:
            for p in range(1, pixels):
                total = vadd(total, vload(xf, at + p * LANES))
            total = vfma(total, vsplat(np.float32(1.0 / pixels)), vsplat(np.float32(0.0)))
        vstore(of, t * LANES, total)
