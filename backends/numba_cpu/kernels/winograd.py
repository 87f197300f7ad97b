"""Winograd F(2×2, 3×3) for 3×3, stride-1, undilated convolutions (Lavin & Gray, 2015).

Each 2×2 output tile comes from a 4×4 input tile d: ``Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A``, so
the 36 multiplies of direct convolution per tile and channel pair become 16, done as 16
GEMMs ``M[k] = U[k] · V[k]`` (U: transformed weights [16, O, C], V: transformed input tiles
[16, C, tiles]). With

    Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]
    G  = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]
    Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]

the transforms below are written out by hand (additions only, for B and A).
"""

from __future__ import annotations

import numba
import numpy as np

from cnnir.backends.numba_cpu.kernels import simd
from cnnir.backends.numba_cpu.kernels.activation import activate_flat, finish_flat
from cnnir.backends.numba_cpu.kernels.jit import helper, kernel, prange
from cnnir.backends.numba_cpu.kernels.simd import MR

G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def transform_weights(w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``U[4i + j, o, c] = (G w[o, c] Gᵀ)[i, j]``, in float64 then rounded to ``dtype``: at
    compile time, and again after each training step changes the weights."""
    u = np.empty((16, w.shape[0], w.shape[1]), dtype)
    weight_tiles.sized(u.size)(np.ascontiguousarray(w), u)
    return u


def packed_weights(w: np.ndarray) -> np.ndarray:
    """``transform_weights(w)`` as ``simd.pack_rows`` lays out the A operand of the 16 GEMMs
    (rows padded to MR with zeros), in one pass."""
    packed = np.zeros(16 * simd.padded_rows(w.shape[0]) * w.shape[1], np.float32)
    pack_weights_into(w, packed)
    return packed


def pack_weights_into(w: np.ndarray, packed: np.ndarray) -> None:
    """Rewrite ``packed`` (``packed_weights``'s layout) from new weights; the padding rows
    stay zero."""
    weight_tiles_packed.sized(packed.size)(np.ascontiguousarray(w), packed,
                                           simd.padded_rows(w.shape[0]))


@helper
def expand3(a, b, c):
    """``G·(a, b, c)``: the four entries G makes of a column (or row) of three."""
    return a, 0.5 * (a + b + c), 0.5 * (a - b + c), c


@kernel
def weight_tiles(w, u):
    """``u[4i + j, o, c] = (G w[o, c] Gᵀ)[i, j]``: G along the columns, then along the rows."""
    for o in prange(w.shape[0]):
        for c in range(w.shape[1]):
            g = w[o, c]  # G g by columns, in float64 (a helper returning them breaks parfors)
            col0 = expand3(np.float64(g[0, 0]), np.float64(g[1, 0]), np.float64(g[2, 0]))
            col1 = expand3(np.float64(g[0, 1]), np.float64(g[1, 1]), np.float64(g[2, 1]))
            col2 = expand3(np.float64(g[0, 2]), np.float64(g[1, 2]), np.float64(g[2, 2]))
            for i in range(4):
                row = expand3(col0[i], col1[i], col2[i])
                for j in range(4):
                    u[4 * i + j, o, c] = row[j]


@kernel
def weight_tiles_packed(w, packed, m_pad):
    """``weight_tiles`` written straight into ``simd.pack_rows``'s layout of ``U`` as 16
    groups of ``[m_pad / MR][C][MR]``: element (k, o, c) at
    ``((k·m_pad/MR + o/MR)·C + c)·MR + o mod MR``."""
    outs, chans = w.shape[0], w.shape[1]
    blocks = m_pad // MR
    for o in prange(outs):
        block, lane = o // MR, o % MR
        for c in range(chans):
            g = w[o, c]  # G g by columns, in float64 (a helper returning them breaks parfors)
            col0 = expand3(np.float64(g[0, 0]), np.float64(g[1, 0]), np.float64(g[2, 0]))
            col1 = expand3(np.float64(g[0, 1]), np.float64(g[1, 1]), np.float64(g[2, 1]))
            col2 = expand3(np.float64(g[0, 2]), np.float64(g[1, 2]), np.float64(g[2, 2]))
            for i in range(4):
                row = expand3(col0[i], col1[i], col2[i])
                for j in range(4):
                    k = 4 * i + j
                    packed[((k * blocks + block) * chans + c) * MR + lane] = row[j]


# tiles per row from which the vectorized transforms beat the per-tile ones (measured)
VECTOR_MIN_TILES_IN = 8
VECTOR_MIN_TILES_OUT = 16
CHUNK = 64  # tiles per pass of a row of tiles
LW = CHUNK + 1  # entries per even/odd column buffer: a chunk's tiles reach one further


def scratch_shapes(width: int, pad_left: int, tw: int) -> dict[str, tuple[int, ...]]:
    """Per-thread scratch of the transforms (``input_tiles``/``output_tiles``)."""
    return {"rows": (4, max(2 * tw + 2, pad_left + width)), "split": (8 * LW,),
            "block": (16 * CHUNK,), "out_rows": (4 * CHUNK,)}


@helper
def copy_rows(dst, d0, d_stride, src, s0, s_stride, count):
    """The 16 rows of a tile chunk: ``dst[d0 + k·d_stride + i] = src[s0 + k·s_stride + i]``."""
    for k in range(16):
        to = dst[d0 + k * d_stride:d0 + k * d_stride + count]
        fro = src[s0 + k * s_stride:s0 + k * s_stride + count]
        for i in range(count):
            to[i] = fro[i]


@helper
def load_padded_rows(rows, plane, ty, pad_top, pad_left):
    """The four zero-padded input rows of tile row ``ty``."""
    height, width = plane.shape
    for r in range(4):
        line = rows[r]
        line[:] = 0.0
        iy = 2 * ty - pad_top + r
        if 0 <= iy < height:
            line[pad_left:pad_left + width] = plane[iy]


@helper
def split_even_odd(split, rows, t0, count):
    """Even and odd columns of the four rows for tiles [t0, t0 + count), LW apart: tile tx's
    columns are then even[tx], odd[tx], even[tx + 1], odd[tx + 1]."""
    for r in range(4):
        line = rows[r]
        for i in range(count + 1):
            split[2 * r * LW + i] = line[2 * (t0 + i)]
            split[(2 * r + 1) * LW + i] = line[2 * (t0 + i) + 1]


@helper
def transform_input_chunk(split, block, count):
    """``block[k·CHUNK + tx] = (Bᵀ d B)[k]`` for the ``count`` tiles of a chunk."""
    for tx in range(count):
        # Bᵀ along x in each row: (d0 − d2, d1 + d2, d2 − d1, d1 − d3)
        e0, e0n, o0, o0n = split[tx], split[tx + 1], split[LW + tx], split[LW + tx + 1]
        e1, e1n = split[2 * LW + tx], split[2 * LW + tx + 1]
        o1, o1n = split[3 * LW + tx], split[3 * LW + tx + 1]
        e2, e2n = split[4 * LW + tx], split[4 * LW + tx + 1]
        o2, o2n = split[5 * LW + tx], split[5 * LW + tx + 1]
        e3, e3n = split[6 * LW + tx], split[6 * LW + tx + 1]
        o3, o3n = split[7 * LW + tx], split[7 * LW + tx + 1]
        a0, a1, a2, a3 = e0 - e0n, o0 + e0n, e0n - o0, o0 - o0n
        b0, b1, b2, b3 = e1 - e1n, o1 + e1n, e1n - o1, o1 - o1n
        c0, c1, c2, c3 = e2 - e2n, o2 + e2n, e2n - o2, o2 - o2n
        d0, d1, d2, d3 = e3 - e3n, o3 + e3n, e3n - o3, o3 - o3n
        # then Bᵀ along y
        block[tx] = a0 - c0
        block[CHUNK + tx] = a1 - c1
        block[2 * CHUNK + tx] = a2 - c2
        block[3 * CHUNK + tx] = a3 - c3
        block[4 * CHUNK + tx] = b0 + c0
        block[5 * CHUNK + tx] = b1 + c1
        block[6 * CHUNK + tx] = b2 + c2
        block[7 * CHUNK + tx] = b3 + c3
        block[8 * CHUNK + tx] = c0 - b0
        block[9 * CHUNK + tx] = c1 - b1
        block[10 * CHUNK + tx] = c2 - b2
        block[11 * CHUNK + tx] = c3 - b3
        block[12 * CHUNK + tx] = b0 - d0
        block[13 * CHUNK + tx] = b1 - d1
        block[14 * CHUNK + tx] = b2 - d2
        block[15 * CHUNK + tx] = b3 - d3


@kernel
def input_tiles(x, v, pad_top, pad_left, th, tw, rows, split, block):
    """``v[k, c, t] = (Bᵀ d B)[k]`` for the 4×4 tile d at (2·ty − pad_top, 2·tx − pad_left).

    For each row of tiles: its four input rows, zero-padded (``rows``); per chunk of CHUNK
    tiles, their even and odd columns (``split``); the 16 transformed values of each tile into
    ``block`` (rows CHUNK apart); then 16 contiguous copies into v. Every offset inside the
    transform loop is a constant, so LLVM vectorizes it over the tiles (with runtime strides
    it would need a pairwise alias check per row and gives up)."""
    n_img, channels = x.shape[0], x.shape[1]
    tiles = v.shape[2]
    k_stride = channels * tiles
    vf = v.reshape(-1)
    for idx in prange(channels * n_img):
        c = idx // n_img
        n = idx % n_img
        tid = numba.get_thread_id()
        padded, columns, transformed = rows[tid], split[tid], block[tid]
        plane = x[n, c]
        for ty in range(th):
            load_padded_rows(padded, plane, ty, pad_top, pad_left)
            for t0 in range(0, tw, CHUNK):
                count = min(CHUNK, tw - t0)
                split_even_odd(columns, padded, t0, count)
                transform_input_chunk(columns, transformed, count)
                copy_rows(vf, c * tiles + (n * th + ty) * tw + t0, k_stride, transformed, 0,
                          CHUNK, count)


@kernel
def output_tiles(m, out, th, tw, ep, block, out_rows):
    """``out[n, o, 2ty + a, 2tx + b] = act(scale·(Aᵀ m A)[a, b] + shift (+ res))``: per chunk
    of a row of tiles, the 16 rows of m are copied to ``block`` (constant offsets again), the
    two output rows computed into ``out_rows``, then written through the epilogue."""
    n_img, out_ch, oh, ow = out.shape
    tiles = m.shape[2]
    k_stride = out_ch * tiles
    mf = m.reshape(-1)
    outf = out.reshape(-1)
    for idx in prange(out_ch * n_img):
        o = idx // n_img
        n = idx % n_img
        tid = numba.get_thread_id()
        mb, rb = block[tid], out_rows[tid]
        for ty in range(th):
            for t0 in range(0, tw, CHUNK):
                count = min(CHUNK, tw - t0)
                copy_rows(mb, 0, CHUNK, mf, o * tiles + (n * th + ty) * tw + t0, k_stride, count)
                for tx in range(count):
                    m0, m1, m2, m3 = mb[tx], mb[CHUNK + tx], mb[2 * CHUNK + tx], mb[3 * CHUNK + tx]
                    m4, m5 = mb[4 * CHUNK + tx], mb[5 * CHUNK + tx]
                    m6, m7 = mb[6 * CHUNK + tx], mb[7 * CHUNK + tx]
                    m8, m9 = mb[8 * CHUNK + tx], mb[9 * CHUNK + tx]
                    m10, m11 = mb[10 * CHUNK + tx], mb[11 * CHUNK + tx]
                    m12, m13 = mb[12 * CHUNK + tx], mb[13 * CHUNK + tx]
                    m14, m15 = mb[14 * CHUNK + tx], mb[15 * CHUNK + tx]
                    u0, u1, u2, u3 = m0 + m4 + m8, m1 + m5 + m9, m2 + m6 + m10, m3 + m7 + m11
                    w0, w1 = m4 - m8 - m12, m5 - m9 - m13
                    w2, w3 = m6 - m10 - m14, m7 - m11 - m15
                    rb[2 * tx] = u0 + u1 + u2
                    rb[2 * tx + 1] = u1 - u2 - u3
                    rb[2 * CHUNK + 2 * tx] = w0 + w1 + w2
                    rb[2 * CHUNK + 2 * tx + 1] = w1 - w2 - w3
                x0 = 2 * t0
                cols = min(2 * count, ow - x0)
                for a in range(2):
                    y = 2 * ty + a
                    if y >= oh:
                        break
                    d = ((n * out_ch + o) * oh + y) * ow + x0
                    finish_flat(outf, d, rb, a * 2 * CHUNK, cols, o, ep)
                    activate_flat(outf, d, cols, ep)


@helper
def load(plane, y, x, height, width):
    if 0 <= y < height and 0 <= x < width:
        return plane[y, x]
    return 0.0


@kernel
def input_tiles_scalar(x, v, pad_top, pad_left, th, tw):
    """``input_tiles`` one tile at a time, for narrow planes (few tiles per row), where the
    vectorized kernel's per-row setup costs more than it saves."""
    n_img, channels, height, width = x.shape
    for idx in prange(channels * n_img):
        c = idx // n_img
        n = idx % n_img
        p = x[n, c]
        for ty in range(th):
            y0 = 2 * ty - pad_top
            for tx in range(tw):
                x0 = 2 * tx - pad_left
                t = (n * th + ty) * tw + tx
                # rows of Bᵀ d (a combination of input rows), each then times B
                a0 = load(p, y0, x0, height, width)
                a1 = load(p, y0, x0 + 1, height, width)
                a2 = load(p, y0, x0 + 2, height, width)
                a3 = load(p, y0, x0 + 3, height, width)
                b0 = load(p, y0 + 1, x0, height, width)
                b1 = load(p, y0 + 1, x0 + 1, height, width)
                b2 = load(p, y0 + 1, x0 + 2, height, width)
                b3 = load(p, y0 + 1, x0 + 3, height, width)
                c0 = load(p, y0 + 2, x0, height, width)
                c1 = load(p, y0 + 2, x0 + 1, height, width)
                c2 = load(p, y0 + 2, x0 + 2, height, width)
                c3 = load(p, y0 + 2, x0 + 3, height, width)
                e0 = load(p, y0 + 3, x0, height, width)
                e1 = load(p, y0 + 3, x0 + 1, height, width)
                e2 = load(p, y0 + 3, x0 + 2, height, width)
                e3 = load(p, y0 + 3, x0 + 3, height, width)
                store_row(v, 0, c, t, a0 - c0, a1 - c1, a2 - c2, a3 - c3)
                store_row(v, 4, c, t, b0 + c0, b1 + c1, b2 + c2, b3 + c3)
                store_row(v, 8, c, t, c0 - b0, c1 - b1, c2 - b2, c3 - b3)
                store_row(v, 12, c, t, b0 - e0, b1 - e1, b2 - e2, b3 - e3)


@helper
def store_row(v, k, c, t, r0, r1, r2, r3):
    """One row of Bᵀ d times B."""
    v[k, c, t] = r0 - r2
    v[k + 1, c, t] = r1 + r2
    v[k + 2, c, t] = r2 - r1
    v[k + 3, c, t] = r1 - r3


@kernel
def output_tiles_scalar(m, out, th, tw, ep):
    """``output_tiles`` one tile at a time, for narrow planes: Aᵀ m A into the output plane,
    then the epilogue over it in place."""
    n_img, out_ch, oh, ow = out.shape
    outf = out.reshape(-1)
    for idx in prange(out_ch * n_img):
        o = idx // n_img
        n = idx % n_img
        for ty in range(th):
            y = 2 * ty
            for tx in range(tw):
                t = (n * th + ty) * tw + tx
                xo = 2 * tx
                # Aᵀ m, column by column
                u0 = m[0, o, t] + m[4, o, t] + m[8, o, t]
                u1 = m[1, o, t] + m[5, o, t] + m[9, o, t]
                u2 = m[2, o, t] + m[6, o, t] + m[10, o, t]
                u3 = m[3, o, t] + m[7, o, t] + m[11, o, t]
                w0 = m[4, o, t] - m[8, o, t] - m[12, o, t]
                w1 = m[5, o, t] - m[9, o, t] - m[13, o, t]
                w2 = m[6, o, t] - m[10, o, t] - m[14, o, t]
                w3 = m[7, o, t] - m[11, o, t] - m[15, o, t]
                out[n, o, y, xo] = u0 + u1 + u2
                if xo + 1 < ow:
                    out[n, o, y, xo + 1] = u1 - u2 - u3
                if y + 1 < oh:
                    out[n, o, y + 1, xo] = w0 + w1 + w2
                    if xo + 1 < ow:
                        out[n, o, y + 1, xo + 1] = w1 - w2 - w3
        d = (n * out_ch + o) * oh * ow
        finish_flat(outf, d, outf, d, oh * ow, o, ep)
        activate_flat(outf, d, oh * ow, ep)
