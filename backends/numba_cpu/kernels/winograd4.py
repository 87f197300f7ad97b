"""Winograd F(4×4, 3×3) for 3×3, stride-1, undilated convolutions (Lavin & Gray, 2015).

Each 4×4 output tile comes from a 6×6 input tile d: ``Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A``, so the
144 multiplies of direct convolution per tile and channel pair become 36, done as 36 GEMMs
``M[k] = U[k] · V[k]`` (U: transformed weights [36, O, C], V: transformed input tiles
[36, C, tiles]). F(2×2, 3×3) (``winograd``) saves 2.25× of the multiplies and writes 4 values
of V per input value; this one saves 4× and writes 2.25, at the cost of a float32 error
about ten times larger (still far inside the backend's tolerance). With the points 0, ±1, ±2:

    Bᵀ = [[4, 0, −5, 0, 1, 0], [0, −4, −4, 1, 1, 0], [0, 4, −4, −1, 1, 0],
          [0, −2, −1, 2, 1, 0], [0, 2, −1, −2, 1, 0], [0, 4, 0, −5, 0, 1]]
    G  = [[¼, 0, 0], [−⅙, −⅙, −⅙], [−⅙, ⅙, −⅙], [1/24, 1/12, ⅙], [1/24, −1/12, ⅙], [0, 0, 1]]
    Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, −1, 2, −2, 0], [0, 1, 1, 4, 4, 0], [0, 1, −1, 8, −8, 1]]

Both transforms run on chunks of CHUNK tiles: the input's over V's flat (channel, tile)
order, so narrow planes still fill a chunk, and the output's along a row of tiles, whose four
output rows then get the epilogue. A chunk's 36 values per tile sit CHUNK apart in a
per-thread buffer, so every offset in the transform loops is a constant and LLVM vectorizes
them over the tiles. The per-chunk steps are functions the kernels call (not inlined into
each kernel build), which keeps the compile short.
"""

from __future__ import annotations

import numba
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

TILE = 4  # outputs per tile side
POINTS = 36  # (TILE + 2)² products per tile and channel pair
CHUNK = 64  # tiles per transform pass

G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])


def transform_weights(w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``U[6i + j, o, c] = (G w[o, c] Gᵀ)[i, j]``, in float64 then rounded to ``dtype``."""
    u = np.einsum("ia,ocab,jb->ijoc", G, w.astype(np.float64), G, optimize=True)
    return u.reshape(POINTS, *w.shape[:2]).astype(dtype)


def packed_weights(w: np.ndarray) -> np.ndarray:
    """``transform_weights(w)`` as ``simd.pack_rows`` lays out the A operand of the 36 GEMMs
    (rows padded to MR with zeros), in one pass."""
    packed = np.zeros(POINTS * simd.padded_rows(w.shape[0]) * w.shape[1], np.float32)
    pack_weights_into(w, packed)
    return packed


def pack_weights_into(w: np.ndarray, packed: np.ndarray) -> None:
    """Rewrite ``packed`` (``packed_weights``'s layout) from new weights; the padding rows
    stay zero. On one thread: 10 ms for a 512×512 layer, and a parallel build would add a
    second to the first compile."""
    weight_tiles_packed.serial(np.ascontiguousarray(w), packed, simd.padded_rows(w.shape[0]))


@helper
def expand3(a, b, c):
    """``G·(a, b, c)``: the six entries G makes of a column (or row) of three."""
    return (a / 4, -(a + b + c) / 6, (b - a - c) / 6, a / 24 + b / 12 + c / 6,
            a / 24 - b / 12 + c / 6, c)


@kernel
def weight_tiles_packed(w, packed, m_pad):
    """``U[6i + j, o, c] = (G w[o, c] Gᵀ)[i, j]`` in float64, written straight into
    ``simd.pack_rows``'s layout of U as 36 groups of ``[m_pad / MR][C][MR]``: element
    (k, o, c) at ``((k·m_pad/MR + o/MR)·C + c)·MR + o mod MR``, the MR rows of a block
    innermost so that each k's stores fill whole cache lines in turn."""
    outs, chans = w.shape[0], w.shape[1]
    blocks = m_pad // MR
    k_stride = blocks * chans * MR
    for block in prange(blocks):
        for c in range(chans):
            for o in range(block * MR, min(outs, block * MR + MR)):
                at = (block * chans + c) * MR + o % MR
                g = w[o, c]  # G g by columns, then G along each row of that
                col0 = expand3(np.float64(g[0, 0]), np.float64(g[1, 0]), np.float64(g[2, 0]))
                col1 = expand3(np.float64(g[0, 1]), np.float64(g[1, 1]), np.float64(g[2, 1]))
                col2 = expand3(np.float64(g[0, 2]), np.float64(g[1, 2]), np.float64(g[2, 2]))
                for i in range(6):
                    row = expand3(col0[i], col1[i], col2[i])
                    for j in range(6):
                        packed[at + (6 * i + j) * k_stride] = row[j]


def scratch_shapes(out_h: int, out_w: int) -> dict[str, tuple[int, ...]]:
    """Per-thread scratch of the transforms: a chunk's tiles before and after, and one output
    plane rounded up to whole tiles."""
    return {"before": (POINTS * CHUNK,), "after": (POINTS * CHUNK,),
            "plane": (TILE * -(-out_h // TILE) * TILE * -(-out_w // TILE),)}


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
def twice(value):
    """2·value in value's own type (an integer literal factor would promote float32 to
    float64, halving the vector lanes)."""
    return value + value


@helper
def bt6(d):
    """Bᵀ·d for a row (or column) of six."""
    d0, d1, d2, d3, d4, d5 = d
    d4_d2, twice_d1_d3 = d4 - d2, twice(d1 - d3)
    return (twice(twice(d0 - d2)) + d4_d2, d3 + d4 - twice(twice(d1 + d2)),
            twice(twice(d1 - d2)) + d4 - d3, d4_d2 - twice_d1_d3, d4_d2 + twice_d1_d3,
            twice(twice(d1 - d3)) + d5 - d3)


@helper
def at6(m):
    """Aᵀ·m: the four outputs of a row (or column) of six."""
    m0, m1, m2, m3, m4, m5 = m
    s12, d12, s34, d34 = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    twice_d34 = twice(d34)
    return (m0 + s12 + s34, d12 + twice_d34, s12 + twice(twice(s34)),
            d12 + twice(twice(twice_d34)) + m5)


@helper
def six(buf, first):
    """``buf[first + i·CHUNK]`` for i < 6: one row of a tile, CHUNK apart."""
    return (buf[first], buf[first + CHUNK], buf[first + 2 * CHUNK], buf[first + 3 * CHUNK],
            buf[first + 4 * CHUNK], buf[first + 5 * CHUNK])


@tile_kernel
def transform_input_chunk(before, after, count):
    """``after[k·CHUNK + t] = (Bᵀ d B)[k]`` for the tiles d of ``before`` (the same layout)."""
    for t in range(count):
        r0, r1, r2 = bt6(six(before, t)), bt6(six(before, 6 * CHUNK + t)), \
            bt6(six(before, 12 * CHUNK + t))
        r3, r4, r5 = bt6(six(before, 18 * CHUNK + t)), bt6(six(before, 24 * CHUNK + t)), \
            bt6(six(before, 30 * CHUNK + t))
        for j in range(6):  # Bᵀ down column j of d·B
            col = bt6((r0[j], r1[j], r2[j], r3[j], r4[j], r5[j]))
            for i in range(6):
                after[(6 * i + j) * CHUNK + t] = col[i]


@helper
def store4(after, t, b, col):
    """Column b of a tile's outputs: ``after[(4a + b)·CHUNK + t] = col[a]``."""
    after[b * CHUNK + t] = col[0]
    after[(TILE + b) * CHUNK + t] = col[1]
    after[(2 * TILE + b) * CHUNK + t] = col[2]
    after[(3 * TILE + b) * CHUNK + t] = col[3]


@tile_kernel
def transform_output_chunk(before, after, count):
    """``after[(4a + b)·CHUNK + t] = (Aᵀ m A)[a, b]`` for the tiles m of ``before``."""
    for t in range(count):
        r0, r1, r2 = at6(six(before, t)), at6(six(before, 6 * CHUNK + t)), \
            at6(six(before, 12 * CHUNK + t))
        r3, r4, r5 = at6(six(before, 18 * CHUNK + t)), at6(six(before, 24 * CHUNK + t)), \
            at6(six(before, 30 * CHUNK + t))
        store4(after, t, 0, at6((r0[0], r1[0], r2[0], r3[0], r4[0], r5[0])))
        store4(after, t, 1, at6((r0[1], r1[1], r2[1], r3[1], r4[1], r5[1])))
        store4(after, t, 2, at6((r0[2], r1[2], r2[2], r3[2], r4[2], r5[2])))
        store4(after, t, 3, at6((r0[3], r1[3], r2[3], r3[3], r4[3], r5[3])))


@tile_kernel
def gather_tiles(before, x, first, count, grid):
    """The 6×6 input tiles of V's flat positions [first, first + count) (channel-major, then
    image, tile row, tile column) into ``before``, zero outside the image."""
    tiles, th, tw, pad_top, pad_left = grid
    height, width = x.shape[2], x.shape[3]
    for i in range(count):
        f = first + i
        c, t = f // tiles, f % tiles
        n, within = t // (th * tw), t % (th * tw)
        y0 = TILE * (within // tw) - pad_top
        x0 = TILE * (within % tw) - pad_left
        plane = x[n, c]
        if 0 <= y0 and y0 + 6 <= height and 0 <= x0 and x0 + 6 <= width:
            for r in range(6):
                for j in range(6):
                    before[(6 * r + j) * CHUNK + i] = plane[y0 + r, x0 + j]
        else:
            for r in range(6):
                y = y0 + r
                for j in range(6):
                    xx = x0 + j
                    inside = 0 <= y < height and 0 <= xx < width
                    before[(6 * r + j) * CHUNK + i] = plane[y, xx] if inside else 0.0


@kernel
def input_tiles(x, v, grid, before, after):
    """``v[k, c, t] = (Bᵀ d B)[k]`` for the 6×6 tile d at (4·ty − pad_top, 4·tx − pad_left)
    of image n, t = (n·th + ty)·tw + tx (``grid`` = (tiles, th, tw, pad_top, pad_left)),
    chunk by chunk of v's flat [C, tiles] order."""
    total = v.shape[1] * v.shape[2]
    vf = v.reshape(-1)
    for q in prange((total + CHUNK - 1) // CHUNK):
        tid = numba.get_thread_id()
        gathered, transformed = before[tid], after[tid]
        first = q * CHUNK
        count = min(CHUNK, total - first)
        gather_tiles(gathered, x, first, count, grid)
        transform_input_chunk(gathered, transformed, count)
        copy_rows(vf, first, total, transformed, 0, CHUNK, count, POINTS)


@tile_kernel
def scatter_tiles(plane, after, t0, count, tw):
    """Tiles [t0, t0 + count) of a plane from ``after`` to their places in ``plane`` (whole
    tiles, 4·tw wide)."""
    width = TILE * tw
    ty, tx = t0 // tw, t0 % tw
    for i in range(count):
        at = TILE * (ty * width + tx)
        for a in range(TILE):
            for b in range(TILE):
                plane[at + a * width + b] = after[(TILE * a + b) * CHUNK + i]
        tx += 1
        if tx == tw:
            tx, ty = 0, ty + 1


@kernel
def output_tiles(m, out, tw, ep, before, after, plane):
    """``out[n, o, 4ty + a, 4tx + b] = act(scale·(Aᵀ m A)[a, b] + shift (+ res))``, plane by
    plane, each in the scratch of its thread (``output_planes``)."""
    planes = out.shape[0] * out.shape[1]
    for job in prange(job_count(planes)):
        first, last = job_items(job, planes)
        tid = numba.get_thread_id()
        output_planes(m, out, first, last, tw, ep, (before[tid], after[tid], plane[tid]))


@tile_kernel
def output_planes(m, out, first, last, tw, ep, scratch):
    """``output_tiles`` of planes [first, last) (plane o·N + n: image n's channel o): chunk
    by chunk of a plane's tiles, the outputs go to a plane of whole tiles (``scratch`` =
    (gathered, transformed, plane)), then row by row through the epilogue."""
    gathered, transformed, rows = scratch
    n_img, out_ch, oh, ow = out.shape
    tiles = m.shape[2]
    per_image = tiles // n_img
    width = TILE * tw
    mf, outf = m.reshape(-1), out.reshape(-1)
    for idx in range(first, last):
        o, n = idx // n_img, idx % n_img
        for t0 in range(0, per_image, CHUNK):
            count = min(CHUNK, per_image - t0)
            copy_rows(gathered, 0, CHUNK, mf, o * tiles + n * per_image + t0, out_ch * tiles,
                      count, POINTS)
            transform_output_chunk(gathered, transformed, count)
            scatter_tiles(rows, transformed, t0, count, tw)
        for y in range(oh):
            d = ((n * out_ch + o) * oh + y) * ow
            finish_flat(outf, d, rows, y * width, ow, o, ep)
            activate_flat(outf, d, ow, ep)
