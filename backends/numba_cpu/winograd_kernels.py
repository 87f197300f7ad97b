"""Winograd F(2×2, 3×3) for 3×3, stride-1, undilated convolutions (Lavin & Gray, 2015).

Each 2×2 output tile comes from a 4×4 input tile d: ``Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A``, so
the 36 multiplies of direct convolution per tile and channel pair become 16, done as 16
GEMMs ``M[k] = U[k] · V[k]`` (U: transformed weights [16, O, C], V: transformed input tiles
[16, C, tiles]) on BLAS. With

    Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]
    G  = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]
    Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]

the transforms below are written out by hand (additions only, for B and A).
"""

from __future__ import annotations

import numpy as np

from cnnir.backends.numba_cpu.act_kernels import finish_row
from cnnir.backends.numba_cpu.jit import helper, kernel, prange

G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def transform_weights(w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``U[4i + j, o, c] = (G w[o, c] Gᵀ)[i, j]``, computed once at compile time."""
    u = np.einsum("ia,ocab,jb->ijoc", G, w.astype(np.float64), G)
    return np.ascontiguousarray(u.reshape(16, w.shape[0], w.shape[1]), dtype=dtype)


@helper
def load(plane, y, x, height, width):
    if 0 <= y < height and 0 <= x < width:
        return plane[y, x]
    return 0.0


@kernel
def input_tiles(x, v, pt, pl, th, tw):
    """``v[k, c, t] = (Bᵀ d B)[k]`` for the 4×4 tile d at (2·ty − pt, 2·tx − pl)."""
    n_img, channels, height, width = x.shape
    for idx in prange(channels * n_img):
        c = idx // n_img
        n = idx % n_img
        p = x[n, c]
        for ty in range(th):
            y0 = 2 * ty - pt
            for tx in range(tw):
                x0 = 2 * tx - pl
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
def output_tiles(m, out, scale, shift, res, has_res, th, tw, code, alpha):
    """``out[n, o, 2ty + a, 2tx + b] = act(scale·(Aᵀ m A)[a, b] + shift (+ res))``."""
    n_img, out_ch, oh, ow = out.shape
    for idx in prange(out_ch * n_img):
        o = idx // n_img
        n = idx % n_img
        s = scale[o]
        b = shift[o]
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
                out[n, o, y, xo] = (u0 + u1 + u2) * s + b
                if xo + 1 < ow:
                    out[n, o, y, xo + 1] = (u1 - u2 - u3) * s + b
                if y + 1 < oh:
                    out[n, o, y + 1, xo] = (w0 + w1 + w2) * s + b
                    if xo + 1 < ow:
                        out[n, o, y + 1, xo + 1] = (w1 - w2 - w3) * s + b
        for y in range(oh):
            row = out[n, o, y]
            finish_row(row, row, 1.0, 0.0, res[n, o, y] if has_res else res[0, 0, 0], has_res,
                       code, alpha)
