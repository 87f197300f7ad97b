"""Winograd F(2×2, 3×3) for 3×3, stride-1, undilated convolutions (Lavin & Gray, 2015).

Each 2×2 output tile comes from a 4×4 input tile d: ``Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A``, so
the 36 multiplies of direct convolution per tile and channel pair become 16, done as 16
GEMMs ``M[k] = U[k] · V[k]`` (U: transformed weights [16, O, C], V: transformed input tiles
[16, C, tiles]). With

    Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]
    G  = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]
    Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]

the transforms below are written out by hand (additions only, for B and A), one tile at a
time. It wins over F(4×4, 3×3) (``winograd4``) on small planes with few images, such as a
ResNet's last stage at batch 1: there F(4×4)'s GEMMs would have fewer columns than a vector
has lanes, and its transformed weights, read once per call, are 2.25× larger.
"""

from __future__ import annotations

import numpy as np

from cnnir.backends.numba_cpu.kernels import simd
from cnnir.backends.numba_cpu.kernels.activation import activate_flat, finish_flat
from cnnir.backends.numba_cpu.kernels.jit import (
    helper,
    job_count,
    job_items,
    kernel,
    prange,
    tile_kernel,
)
from cnnir.backends.numba_cpu.kernels.simd import MR

TILE = 2  # outputs per tile side
POINTS = 16  # (TILE + 2)² products per tile and channel pair
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
    stay zero. On one thread, as ``winograd4`` does: both builds would add half a second to
    the first compile."""
    weight_tiles_packed.serial(np.ascontiguousarray(w), packed, simd.padded_rows(w.shape[0]))


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


@helper
def load(plane, y, x, height, width):
    if 0 <= y < height and 0 <= x < width:
        return plane[y, x]
    return 0.0


@kernel
def input_tiles(x, v, pad_top, pad_left, th, tw):
    """``v[k, c, t] = (Bᵀ d B)[k]`` for the 4×4 tile d at (2·ty − pad_top, 2·tx − pad_left),
    plane by plane. (On wide planes, where vectorizing over a row of tiles would pay,
    F(4×4, 3×3) is faster still.)"""
    planes = x.shape[0] * x.shape[1]
    for job in prange(job_count(planes)):
        first, last = job_items(job, planes)
        input_planes(x, v, first, last, pad_top, pad_left, th, tw)


@tile_kernel
def input_planes(x, v, first, last, pad_top, pad_left, th, tw):
    """``input_tiles`` of planes [first, last) (plane c·N + n: image n's channel c), one tile
    at a time."""
    n_img, height, width = x.shape[0], x.shape[2], x.shape[3]
    for plane in range(first, last):
        n, c = plane % n_img, plane // n_img
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
def output_tiles(m, out, th, tw, ep):
    """``out[n, o, 2ty + a, 2tx + b] = act(scale·(Aᵀ m A)[a, b] + shift (+ res))``, plane by
    plane."""
    planes = out.shape[0] * out.shape[1]
    for job in prange(job_count(planes)):
        first, last = job_items(job, planes)
        output_planes(m, out, first, last, th, tw, ep)


@tile_kernel
def output_planes(m, out, first, last, th, tw, ep):
    """``output_tiles`` of planes [first, last) (plane o·N + n: image n's channel o): one
    tile at a time into the output plane, then the epilogue over it in place."""
    n_img, out_ch, oh, ow = out.shape
    outf = out.reshape(-1)
    for plane in range(first, last):
        n, o = plane % n_img, plane // n_img
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
