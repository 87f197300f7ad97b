"""Winograd F(2×2, 3×3) and F(4×4, 3×3) for 3×3, stride-1, undilated convolutions (Lavin &
Gray, 2015).

Each m×m output tile (m = ``tile``, 2 or 4) comes from an α×α input tile d (α = m + 2):
``Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A``, so the 9m² multiplies of direct convolution per tile and
channel pair become α², done as α² GEMMs ``M[k] = U[k] · V[k]`` (U: transformed weights
[α², O, C], V: transformed input tiles [α², C, tiles]). F(2×2) saves 2.25× of the
multiplies and writes 4 values of V per input value; F(4×4) saves 4× and writes 2.25, at the
cost of a float32 error about ten times larger (still far inside the backend's tolerance).
F(2×2) wins on small planes with few images, such as a ResNet's last stage at batch 1: there
F(4×4)'s GEMMs would have fewer columns than a vector has lanes, and its transformed weights,
read once per call, are 2.25× larger. With the points 0, ±1 (and ±2 for F(4×4)):

    F(2×2): Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]
            G  = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]
            Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]
    F(4×4): Bᵀ = [[4, 0, −5, 0, 1, 0], [0, −4, −4, 1, 1, 0], [0, 4, −4, −1, 1, 0],
                  [0, −2, −1, 2, 1, 0], [0, 2, −1, −2, 1, 0], [0, 4, 0, −5, 0, 1]]
            G  = [[¼, 0, 0], [−⅙, −⅙, −⅙], [−⅙, ⅙, −⅙], [1/24, 1/12, ⅙], [1/24, −1/12, ⅙],
                  [0, 0, 1]]
            Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, −1, 2, −2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, −1, 8, −8, 1]]

In float32, F(2×2)'s transforms run on rows of tiles, a vector of LANES tiles at a time: the
four input rows a row of tiles reads are loaded straight from the image (the padding through
lane masks), each tile's columns picked from them by lane shuffles (``veven``/``vodd``), and
the output's two columns per tile interleaved back the same way (``vzip_low``/``vzip_high``)
on their way through the epilogue; no tile is gathered or scattered alone. F(4×4) and float64
run on chunks of CHUNK tiles: the input's over V's flat (channel, tile) order, so narrow
planes still fill a chunk, and the output's along a row of tiles, whose output rows then get
the epilogue. A chunk's α² values per tile sit CHUNK apart in a
per-thread buffer, so every offset in the transform loops is a constant and LLVM vectorizes
them over the tiles. There the two variants share every kernel but the transforms, which are
called (not inlined) by tile size: one compile of the chunk machinery serves both.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from cnnir.backends.numba_cpu.kernels import simd
from cnnir.backends.numba_cpu.kernels.activation import activate_flat, clamp_bounds, finish_flat
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
    MR,
    vclamp,
    veven,
    vfma,
    vload_masked,
    vmask,
    vmax,
    vodd,
    vsplat,
    vstore,
    vstore_masked,
    vzip_high,
    vzip_low,
)
from cnnir.backends.numba_cpu.kernels.stencil import finish_vector

CHUNK = 64  # tiles per transform pass


class Variant(NamedTuple):
    """One F(m×m, 3×3): ``tile`` = m outputs per tile side, ``g`` its α×3 weight transform."""

    tile: int
    g: np.ndarray

    @property
    def points(self) -> int:
        """α²: the products per tile and channel pair, and the GEMMs per call."""
        return (self.tile + 2) ** 2


F2 = Variant(2, np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]]))
F4 = Variant(4, np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                          [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]))
MAX_POINTS = F4.points  # the size of a chunk's buffers, shared by both variants


# --- the weights ------------------------------------------------------------------------------


def transform_weights(w: np.ndarray, dtype: np.dtype, variant: Variant) -> np.ndarray:
    """``U[αi + j, o, c] = (G w[o, c] Gᵀ)[i, j]``, in float64 then rounded to ``dtype``."""
    g = variant.g
    u = np.einsum("ia,ocab,jb->ijoc", g, w.astype(np.float64), g, optimize=True)
    return u.reshape(variant.points, *w.shape[:2]).astype(dtype)


def packed_weights(w: np.ndarray, variant: Variant) -> np.ndarray:
    """``transform_weights(w)`` as ``simd.pack_rows`` lays out the A operand of the α² GEMMs
    (rows padded to MR with zeros), in one pass."""
    packed = np.zeros(variant.points * simd.padded_rows(w.shape[0]) * w.shape[1], np.float32)
    pack_weights_into(w, packed, variant)
    return packed


def pack_weights_into(w: np.ndarray, packed: np.ndarray, variant: Variant) -> None:
    """Rewrite ``packed`` (``packed_weights``'s layout) from new weights; the padding rows
    stay zero. On one thread: a parallel build would add a second to the first compile."""
    weight_tiles_packed.serial(np.ascontiguousarray(w), packed, simd.padded_rows(w.shape[0]),
                               variant.g)


@helper
def row_times_column(g, i, f, j):
    """(G·f)[i, j] in float64."""
    return (g[i, 0] * np.float64(f[0, j]) + g[i, 1] * np.float64(f[1, j])
            + g[i, 2] * np.float64(f[2, j]))


@kernel
def weight_tiles_packed(w, packed, m_pad, g):
    """``U[αi + j, o, c] = (G w[o, c] Gᵀ)[i, j]`` in float64 (``g`` = G, α×3), written
    straight into ``simd.pack_rows``'s layout of U as α² groups of ``[m_pad / MR][C][MR]``:
    element (k, o, c) at ``((k·m_pad/MR + o/MR)·C + c)·MR + o mod MR``, the MR rows of a
    block innermost so that each k's stores fill whole cache lines in turn."""
    run_jobs(weight_block, m_pad // MR, (w, packed, m_pad, g))


@tile_kernel
def weight_block(block, args):
    """Output channels [block·MR, (block + 1)·MR) of ``weight_tiles_packed``."""
    w, packed, m_pad, g = args
    outs, chans, alpha = w.shape[0], w.shape[1], g.shape[0]
    k_stride = m_pad * chans
    for c in range(chans):
        for o in range(block * MR, min(outs, block * MR + MR)):
            at = (block * chans + c) * MR + o % MR
            f = w[o, c]
            for i in range(alpha):  # row i of G·f, then G along it
                r0 = row_times_column(g, i, f, 0)
                r1 = row_times_column(g, i, f, 1)
                r2 = row_times_column(g, i, f, 2)
                for j in range(alpha):
                    packed[at + (alpha * i + j) * k_stride] = \
                        g[j, 0] * r0 + g[j, 1] * r1 + g[j, 2] * r2


# --- the transforms of a chunk of tiles -------------------------------------------------------


@helper
def twice(value):
    """2·value in value's own type (an integer literal factor would promote float32 to
    float64, halving the vector lanes)."""
    return value + value


@helper
def bt4(d):
    """F(2×2)'s Bᵀ·d for a row (or column) of four."""
    d0, d1, d2, d3 = d
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@helper
def at4(m):
    """F(2×2)'s Aᵀ·m: the two outputs of a row (or column) of four."""
    m0, m1, m2, m3 = m
    return m0 + m1 + m2, m1 - m2 - m3


@helper
def bt6(d):
    """F(4×4)'s Bᵀ·d for a row (or column) of six."""
    d0, d1, d2, d3, d4, d5 = d
    d4_d2, twice_d1_d3 = d4 - d2, twice(d1 - d3)
    return (twice(twice(d0 - d2)) + d4_d2, d3 + d4 - twice(twice(d1 + d2)),
            twice(twice(d1 - d2)) + d4 - d3, d4_d2 - twice_d1_d3, d4_d2 + twice_d1_d3,
            twice(twice(d1 - d3)) + d5 - d3)


@helper
def at6(m):
    """F(4×4)'s Aᵀ·m: the four outputs of a row (or column) of six."""
    m0, m1, m2, m3, m4, m5 = m
    s12, d12, s34, d34 = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    twice_d34 = twice(d34)
    return (m0 + s12 + s34, d12 + twice_d34, s12 + twice(twice(s34)),
            d12 + twice(twice(twice_d34)) + m5)


@helper
def four(buf, first):
    """``buf[first + i·CHUNK]`` for i < 4: one row of a 4×4 tile, CHUNK apart."""
    return buf[first], buf[first + CHUNK], buf[first + 2 * CHUNK], buf[first + 3 * CHUNK]


@helper
def six(buf, first):
    """``buf[first + i·CHUNK]`` for i < 6: one row of a 6×6 tile, CHUNK apart."""
    return (buf[first], buf[first + CHUNK], buf[first + 2 * CHUNK], buf[first + 3 * CHUNK],
            buf[first + 4 * CHUNK], buf[first + 5 * CHUNK])


@tile_kernel
def transform_input_f2(before, after, count):
    """``after[k·CHUNK + t] = (Bᵀ d B)[k]`` for the 4×4 tiles d of ``before`` (the same
    layout)."""
    for t in range(count):
        r0, r1 = bt4(four(before, t)), bt4(four(before, 4 * CHUNK + t))
        r2, r3 = bt4(four(before, 8 * CHUNK + t)), bt4(four(before, 12 * CHUNK + t))
        for j in range(4):  # Bᵀ down column j of d·B
            col = bt4((r0[j], r1[j], r2[j], r3[j]))
            for i in range(4):
                after[(4 * i + j) * CHUNK + t] = col[i]


@tile_kernel
def transform_input_f4(before, after, count):
    """``after[k·CHUNK + t] = (Bᵀ d B)[k]`` for the 6×6 tiles d of ``before``."""
    for t in range(count):
        r0, r1, r2 = bt6(six(before, t)), bt6(six(before, 6 * CHUNK + t)), \
            bt6(six(before, 12 * CHUNK + t))
        r3, r4, r5 = bt6(six(before, 18 * CHUNK + t)), bt6(six(before, 24 * CHUNK + t)), \
            bt6(six(before, 30 * CHUNK + t))
        for j in range(6):
            col = bt6((r0[j], r1[j], r2[j], r3[j], r4[j], r5[j]))
            for i in range(6):
                after[(6 * i + j) * CHUNK + t] = col[i]


@tile_kernel
def transform_output_f2(before, after, count):
    """``after[(2a + b)·CHUNK + t] = (Aᵀ m A)[a, b]`` for the 4×4 tiles m of ``before``."""
    for t in range(count):
        r0, r1 = at4(four(before, t)), at4(four(before, 4 * CHUNK + t))
        r2, r3 = at4(four(before, 8 * CHUNK + t)), at4(four(before, 12 * CHUNK + t))
        for b in range(2):
            col = at4((r0[b], r1[b], r2[b], r3[b]))
            after[b * CHUNK + t] = col[0]
            after[(2 + b) * CHUNK + t] = col[1]


@tile_kernel
def transform_output_f4(before, after, count):
    """``after[(4a + b)·CHUNK + t] = (Aᵀ m A)[a, b]`` for the 6×6 tiles m of ``before``."""
    for t in range(count):
        r0, r1, r2 = at6(six(before, t)), at6(six(before, 6 * CHUNK + t)), \
            at6(six(before, 12 * CHUNK + t))
        r3, r4, r5 = at6(six(before, 18 * CHUNK + t)), at6(six(before, 24 * CHUNK + t)), \
            at6(six(before, 30 * CHUNK + t))
        for b in range(4):
            col = at6((r0[b], r1[b], r2[b], r3[b], r4[b], r5[b]))
            for a in range(4):
                after[(4 * a + b) * CHUNK + t] = col[a]


# --- F(2×2) on rows of tiles ---------------------------------------------------------------


# Jobs of F(2×2)'s row transforms: one per thread (a small layer's channel is little work
# next to a job's call of its tile kernel).
ROW_JOBS = numba.config.NUMBA_NUM_THREADS


@kernel
def input_rows_f2(x, vf, k_step, grid):
    """F(2×2)'s ``vf[k·k_step + c·tiles + t] = (Bᵀ d B)[k]`` for channel c's tile t
    (``grid`` = (tiles, th, tw, pad_top, pad_left, 2), t = (n·th + ty)·tw + tx), a row of
    tiles at a time, LANES tiles to a vector (``transform_tiles_f2``), read straight from
    the image, the padding through lane masks."""
    parts = min(x.shape[1], ROW_JOBS)
    run_jobs(input_channels_f2, parts, (x, (vf, k_step), grid, parts))


@tile_kernel
def input_channels_f2(job, args):
    """``input_rows_f2``'s share ``job`` of ``parts`` of the channels: per vector of a row's
    tiles, the lane masks of its loads once, then that vector of every row of tiles of
    those channels."""
    x, (vf, k_step), grid, parts = args
    tiles, th, tw, pad_top, pad_left, _ = grid
    n_img, channels, height, width = x.shape
    first, last = channels * job // parts, channels * (job + 1) // parts
    xf = x.reshape(-1)
    for tx in range(0, tw, LANES):
        x0 = 2 * tx - pad_left  # the first column the vector's first tile reads
        loads = (vmask(-x0, width - x0), vmask(-x0 - LANES, width - x0 - LANES),
                 vmask(-x0 - 2, width - x0 - 2), vmask(-x0 - 2 - LANES, width - x0 - 2 - LANES))
        stores = (vmask(0, tw - tx), tw - tx)
        for c in range(first, last):
            for n in range(n_img):
                plane = (n * channels + c) * height
                for ty in range(th):
                    y0 = 2 * ty - pad_top
                    transform_tiles_f2(xf, ((plane + y0) * width + x0, (y0, height, width)),
                                       loads, vf, c * tiles + (n * th + ty) * tw + tx,
                                       (k_step, stores))


@helper
def transform_tiles_f2(xf, rows, loads, vf, at, stores):
    """``vf[at + k·k_step + t]`` = point k of the Bᵀ d B of tile t of a vector of a row's
    tiles (``stores = (k_step, (lanes, count))``, the first ``count`` in ``lanes``), their d
    the four input rows from row y0 (``rows = (index of the first one's column x0, (y0,
    height, width))``, rows outside the plane zero), each read through ``loads``."""
    at_x, (y0, height, width) = rows
    k_step, (lanes, count) = stores
    d0 = bt4(rows_f2(xf, at_x, loads, 0 <= y0 < height))
    d1 = bt4(rows_f2(xf, at_x + width, loads, 0 <= y0 + 1 < height))
    d2 = bt4(rows_f2(xf, at_x + 2 * width, loads, 0 <= y0 + 2 < height))
    d3 = bt4(rows_f2(xf, at_x + 3 * width, loads, 0 <= y0 + 3 < height))
    for j in range(4):  # Bᵀ down column j of d·B
        col = bt4((d0[j], d1[j], d2[j], d3[j]))
        for i in range(4):
            store_tiles(vf, at + (4 * i + j) * k_step, col[i], count, lanes)


@helper
def rows_f2(xf, at, loads, inside):
    """``columns_f2`` of the row at ``at``, or zeros for a row outside the plane."""
    if inside:
        return columns_f2(xf, (at, loads))
    zero = vsplat(np.float32(0.0))
    return zero, zero, zero, zero


@helper
def columns_f2(xf, row):
    """Columns x0 + 2t, x0 + 2t + 1, x0 + 2t + 2 and x0 + 2t + 3 of an input row for
    t < LANES, as four vectors: the four a row of LANES F(2×2) tiles reads (``row = (at,
    masks)``, ``at`` the index of column x0, ``masks`` the lanes inside the row of the loads
    at x0, x0 + LANES, x0 + 2 and x0 + 2 + LANES)."""
    at, (m0, m1, m2, m3) = row
    a, b = vload_masked(xf, at, m0), vload_masked(xf, at + LANES, m1)
    c, d = vload_masked(xf, at + 2, m2), vload_masked(xf, at + 2 + LANES, m3)
    return veven(a, b), vodd(a, b), veven(c, d), vodd(c, d)


@helper
def store_tiles(vf, at, value, count, lanes):
    """A vector of tiles' values to ``vf[at:]``: the first ``count`` lanes (``lanes``)."""
    if count >= LANES:
        vstore(vf, at, value)
    else:
        vstore_masked(vf, at, value, lanes)


@kernel
def output_rows_f2(mf, k_step, outs, tw, ep):
    """F(2×2)'s ``out[n, o, 2ty + a, 2tx + b] = act(scale·(Aᵀ M A)[a, b] + shift (+ res))``,
    point k of tile t's M at ``mf[k·k_step + o·tiles + t]``: a row of tiles at a time, LANES
    tiles to a vector, the two columns of each output row interleaved back by lane shuffles
    and written through the epilogue."""
    parts = min(outs[0].shape[1], ROW_JOBS)
    run_jobs(output_channels_f2, parts, ((mf, k_step), outs, tw, ep, parts))


@tile_kernel
def output_channels_f2(job, args):
    """``output_rows_f2``'s share ``job`` of ``parts`` of the output channels; with a
    non-empty ``pooled`` (of ``outs = (out, pooled)``), each tile's maximum into it instead
    (``tile_maxima``)."""
    (mf, k_step), (out, pooled), tw, ep, parts = args
    n_img, out_ch, oh, ow = out.shape
    first, last = out_ch * job // parts, out_ch * (job + 1) // parts
    th = -(-oh // 2)
    tiles, outf = n_img * th * tw, out.reshape(-1)
    pooling, pooledf = pooled.shape[0] > 0, pooled.reshape(-1)
    scale, shift, res, has_res, code, _ = ep
    lo, hi = clamp_bounds(code)
    for o in range(first, last):
        channel = (vsplat(scale[o]), vsplat(shift[o]), vsplat(lo), vsplat(hi))
        for n in range(n_img):
            for ty in range(th):
                rows = min(2, oh - 2 * ty)
                row_at = ((n * out_ch + o) * oh + 2 * ty) * ow
                for tx in range(0, tw, LANES):
                    lanes = vmask(0, tw - tx)
                    at = o * tiles + (n * th + ty) * tw + tx
                    m_columns = (column_f2(mf, at, k_step, 0, lanes),
                                 column_f2(mf, at, k_step, 1, lanes),
                                 column_f2(mf, at, k_step, 2, lanes),
                                 column_f2(mf, at, k_step, 3, lanes))
                    if pooling:
                        vstore_masked(pooledf, ((n * out_ch + o) * th + ty) * tw + tx,
                                      tile_maxima(m_columns, channel), lanes)
                    else:
                        output_pair_rows(outf, (row_at + 2 * tx, ow - 2 * tx, ow, rows),
                                         m_columns, channel, (res, has_res))
                if not pooling:
                    for a in range(rows):
                        activate_flat(outf, row_at + a * ow, ow, ep)


@helper
def output_pair_rows(outf, place, m_columns, channel, residual):
    """The output rows (one or two: ``place = (at, left, ow, rows)``, ``left`` columns from
    ``at`` to a row's end) of LANES tiles whose Aᵀ·M columns are ``m_columns``, Aᵀ along each
    row, its two columns per tile interleaved back by lane shuffles, through the epilogue."""
    at, left, ow, rows = place
    res, has_res = residual
    c0, c1, c2, c3 = m_columns
    for a in range(rows):
        even, odd = at4((c0[a], c1[a], c2[a], c3[a]))
        d = at + a * ow
        finish_vector(outf, d, left, vzip_low(even, odd), channel, res, has_res)
        if left > LANES:
            finish_vector(outf, d + LANES, left - LANES, vzip_high(even, odd), channel, res,
                          has_res)


@helper
def tile_maxima(m_columns, channel):
    """The maximum of each of LANES tiles' four outputs, each after ``clamp(scale·y +
    shift)`` (``channel = (scale, shift, lo, hi)``, splat): a 2×2 max pool of the tiles."""
    c0, c1, c2, c3 = m_columns
    top = at4((c0[0], c1[0], c2[0], c3[0]))
    bottom = at4((c0[1], c1[1], c2[1], c3[1]))
    return vmax(vmax(clamped(top[0], channel), clamped(top[1], channel)),
                vmax(clamped(bottom[0], channel), clamped(bottom[1], channel)))


@helper
def clamped(y, channel):
    """``clamp(scale·y + shift)`` of a vector (``channel = (scale, shift, lo, hi)``, splat)."""
    sc, b, lo_v, hi_v = channel
    return vclamp(vfma(y, sc, b), lo_v, hi_v)


@helper
def column_f2(mf, at, k_step, j, lanes):
    """Aᵀ down column j of LANES tiles' M, point k of the first at ``mf[at + k·k_step]``; the
    lanes past the row's tiles (``lanes``) are not read."""
    return at4((vload_masked(mf, at + j * k_step, lanes),
                vload_masked(mf, at + (4 + j) * k_step, lanes),
                vload_masked(mf, at + (8 + j) * k_step, lanes),
                vload_masked(mf, at + (12 + j) * k_step, lanes)))


# --- the chunk machinery, shared ----------------------------------------------------------------


def scratch_shapes(out_h: int, out_w: int, tile: int) -> dict[str, tuple[int, ...]]:
    """Per-thread scratch of the transforms: a chunk's tiles before and after, and one output
    plane rounded up to whole tiles."""
    return {"before": (MAX_POINTS * CHUNK,), "after": (MAX_POINTS * CHUNK,),
            "plane": (tile * -(-out_h // tile) * tile * -(-out_w // tile),)}


@helper
def copy_rows(dst, d0, d_stride, src, s0, s_stride, count, rows):
    """The rows of a tile chunk: ``dst[d0 + k·d_stride + i] = src[s0 + k·s_stride + i]`` for
    k < rows, i < count."""
    for k in range(rows):
        to = dst[d0 + k * d_stride:d0 + k * d_stride + count]
        fro = src[s0 + k * s_stride:s0 + k * s_stride + count]
        for i in range(count):
            to[i] = fro[i]


@helper
def gather_tile(before, i, plane, y0, x0, side):
    """Tile i of a chunk: the ``side``×``side`` input values from (y0, x0), zero outside the
    plane. Called with a constant ``side``, so the inner loops unroll."""
    height, width = plane.shape
    if 0 <= y0 and y0 + side <= height and 0 <= x0 and x0 + side <= width:
        for r in range(side):
            for j in range(side):
                before[(side * r + j) * CHUNK + i] = plane[y0 + r, x0 + j]
    else:
        for r in range(side):
            y = y0 + r
            for j in range(side):
                xx = x0 + j
                inside = 0 <= y < height and 0 <= xx < width
                before[(side * r + j) * CHUNK + i] = plane[y, xx] if inside else 0.0


@tile_kernel
def gather_tiles(before, x, first, count, grid):
    """The input tiles of V's flat positions [first, first + count) (channel-major, then
    image, tile row, tile column) into ``before``; ``grid`` = (tiles, th, tw, pad_top,
    pad_left, tile)."""
    tiles, th, tw, pad_top, pad_left, tile = grid
    c, t = first // tiles, first % tiles  # divided once: the tiles follow in order
    n, within = t // (th * tw), t % (th * tw)
    ty, tx = within // tw, within % tw
    for i in range(count):
        y0, x0 = tile * ty - pad_top, tile * tx - pad_left
        if tile == 4:
            gather_tile(before, i, x[n, c], y0, x0, 6)
        else:
            gather_tile(before, i, x[n, c], y0, x0, 4)
        tx += 1
        if tx == tw:
            tx, ty = 0, ty + 1
            if ty == th:
                ty, n = 0, n + 1
                if n == x.shape[0]:
                    n, c = 0, c + 1


# Each variant has its own pair of chunk kernels, the transform a compile-time choice: in
# float32 only F(4×4) runs on chunks (F(2×2) on rows of tiles), and kernels that picked the
# transform at run time compiled F(2×2)'s two as well, 0.8 s of a cold compile.


@kernel
def input_tiles_f2(x, v, grid, before, after):
    """F(2×2)'s input transform, chunk by chunk (``input_chunk``)."""
    run_jobs(input_chunk_f2, -(-v.shape[1] * v.shape[2] // CHUNK), (x, v, grid, before, after))


@kernel
def input_tiles_f4(x, v, grid, before, after):
    """F(4×4)'s input transform, chunk by chunk (``input_chunk``)."""
    run_jobs(input_chunk_f4, -(-v.shape[1] * v.shape[2] // CHUNK), (x, v, grid, before, after))


@tile_kernel
def input_chunk_f2(q, args):
    input_chunk(q, args, transform_input_f2)


@tile_kernel
def input_chunk_f4(q, args):
    input_chunk(q, args, transform_input_f4)


@helper
def input_chunk(q, args, transform):
    """Chunk q of an ``input_tiles_*`` kernel, in the scratch of the thread running it:
    ``v[k, c, t] = (Bᵀ d B)[k]`` for the α×α tile d at (m·ty − pad_top, m·tx − pad_left) of
    image n, t = (n·th + ty)·tw + tx (``grid`` = (tiles, th, tw, pad_top, pad_left, m)),
    chunk by chunk of v's flat [C, tiles] order, ``transform`` the variant's."""
    x, v, grid, before, after = args
    tid = numba.get_thread_id()
    gathered, transformed = before[tid], after[tid]
    total = v.shape[1] * v.shape[2]
    first = q * CHUNK
    count = min(CHUNK, total - first)
    gather_tiles(gathered, x, first, count, grid)
    transform(gathered, transformed, count)
    copy_rows(v.reshape(-1), first, total, transformed, 0, CHUNK, count, v.shape[0])


@helper
def scatter_tile(plane, at, width, after, i, tile):
    """Tile i of a chunk to ``plane`` from ``at`` (rows ``width`` apart). Called with a
    constant ``tile``."""
    for a in range(tile):
        for b in range(tile):
            plane[at + a * width + b] = after[(tile * a + b) * CHUNK + i]


@tile_kernel
def scatter_tiles(plane, after, t0, count, tw, tile):
    """Tiles [t0, t0 + count) of a plane from ``after`` to their places in ``plane`` (whole
    tiles, tile·tw wide)."""
    width = tile * tw
    ty, tx = t0 // tw, t0 % tw
    for i in range(count):
        at = tile * (ty * width + tx)
        if tile == 4:
            scatter_tile(plane, at, width, after, i, 4)
        else:
            scatter_tile(plane, at, width, after, i, 2)
        tx += 1
        if tx == tw:
            tx, ty = 0, ty + 1


@kernel
def output_tiles_f2(m, out, tiling, ep, before, after, plane):
    """F(2×2)'s output transform, plane by plane (``output_planes``)."""
    run_jobs(output_planes_f2, job_count(out.shape[0] * out.shape[1]),
             (m, out, tiling, ep, before, after, plane))


@kernel
def output_tiles_f4(m, out, tiling, ep, before, after, plane):
    """F(4×4)'s output transform, plane by plane (``output_planes``)."""
    run_jobs(output_planes_f4, job_count(out.shape[0] * out.shape[1]),
             (m, out, tiling, ep, before, after, plane))


@tile_kernel
def output_planes_f2(job, args):
    output_planes(job, args, transform_output_f2)


@tile_kernel
def output_planes_f4(job, args):
    output_planes(job, args, transform_output_f4)


@helper
def output_planes(job, args, transform):
    """The planes of job ``job`` of an ``output_tiles_*`` kernel (plane o·N + n: image n's
    channel o), in the scratch of the thread running it: ``out[n, o, m·ty + a, m·tx + b] =
    act(scale·(Aᵀ M A)[a, b] + shift (+ res))`` (``tiling`` = (tw, m)), chunk by chunk of a
    plane's tiles through the variant's ``transform`` into a plane of whole tiles, then row
    by row through the epilogue."""
    m, out, (tw, tile), ep, before, after, plane = args
    tid = numba.get_thread_id()
    gathered, transformed, rows = before[tid], after[tid], plane[tid]
    n_img, out_ch, oh, ow = out.shape
    first, last = job_items(job, n_img * out_ch)
    points, tiles = m.shape[0], m.shape[2]
    per_image = tiles // n_img
    width = tile * tw
    mf, outf = m.reshape(-1), out.reshape(-1)
    for idx in range(first, last):
        o, n = idx // n_img, idx % n_img
        for t0 in range(0, per_image, CHUNK):
            count = min(CHUNK, per_image - t0)
            copy_rows(gathered, 0, CHUNK, mf, o * tiles + n * per_image + t0, out_ch * tiles,
                      count, points)
            transform(gathered, transformed, count)
            scatter_tiles(rows, transformed, t0, count, tw, tile)
        for y in range(oh):
            d = ((n * out_ch + o) * oh + y) * ow
            finish_flat(outf, d, rows, y * width, ow, o, ep)
            activate_flat(outf, d, ow, ep)
