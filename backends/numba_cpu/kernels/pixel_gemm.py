"""A convolution with vectors over output channels: ``Cᵀ = im2colᵀ · Wᵀ`` on the micro-kernel
of ``simd``, for planes too small to fill its pixel-wide tiles (a 7×7 plane is 48 + 1
pixels: the last vector of 16 lanes would carry one).

The roles of ``gemm`` swap: the weights are the streamed operand B (``simd.pack_columns``:
panels of NR output channels, each step one contiguous run), and the pixels are the
broadcast operand A, read in place from a zero-padded copy of the image through a table of
each (channel, tap)'s offset (``simd.gather_tile_intrinsic``), so nothing is im2col'ed. A
block of A is MR pixels of one output row (a 7-wide row wastes one lane of 8; lanes past the
row read the padding's slack and are dropped). Tiles (pixels × channels) accumulate over
chunks of K that keep a panel's chunk in L1 while every block of a group passes over it,
then go into the NCHW output transposed, with the epilogue (``store_channels``): a scalar
pass that costs as much as the products when K is small, so the lowering offers this
algorithm only for deep reductions.
"""

from __future__ import annotations

import numba
import numpy as np

from cnnir.backends.numba_cpu.kernels.activation import activate_flat, clamp_bounds
from cnnir.backends.numba_cpu.kernels.gemm import L1_CHUNK_BYTES, THREADS, split
from cnnir.backends.numba_cpu.kernels.host import HOST
from cnnir.backends.numba_cpu.kernels.jit import helper, kernel, run_jobs, tile_kernel
from cnnir.backends.numba_cpu.kernels.simd import (
    LANES,
    MR,
    NR,
    TILE_VECTORS,
    gather_tile_intrinsic,
)

# steps of K per pass over a group of blocks: a panel's NR columns of them fill half of L1
DEPTH_CHUNK = max(64, L1_CHUNK_BYTES // (4 * NR))
GROUP_BYTES = HOST.l2_bytes // 8  # the accumulating tiles of a group of pixel blocks

gather_wide = gather_tile_intrinsic(TILE_VECTORS)
gather_mid = gather_tile_intrinsic(TILE_VECTORS - 1)
gather_narrow = gather_tile_intrinsic(1)


@helper
def pad_rows(x, n, padded, pad_top, pad_left, first, last):
    """Rows [first, last) of the zero-padded image n (padded coordinates) into ``padded``
    [C, hp, wp]: their interior part (the borders stay zero)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    hp, wp = padded.shape[1], padded.shape[2]
    pf = padded.reshape(-1)
    xf = x.reshape(-1)
    for c in range(channels):
        for y in range(max(first - pad_top, 0), min(last - pad_top, height)):
            src = np.uint64(((n * channels + c) * height + y) * width)
            dst = np.uint64((c * hp + pad_top + y) * wp + pad_left)
            for q in range(width):
                u = np.uint64(q)
                pf[dst + u] = xf[src + u]


@helper
def block_tile(a, a_off, index, step, b, b_off, ldb, tile, t_off, vectors, accumulate, unit):
    """``tile[t_off:] (+)= A·B`` for one block of MR pixels of the padded image ``a`` (from
    ``a_off``, one step per entry of ``index``, ``step`` apart) over ``vectors`` vectors of
    channels; accumulating, the tile's residual input is its own last value. ``unit`` is
    (ones, zeros): the tile's own scale and shift."""
    ones, zeros = unit
    depth = index.shape[0]
    if vectors == TILE_VECTORS:
        gather_wide(a, a_off, index, step, b, b_off, ldb, depth, tile, t_off, NR, MR, ones,
                    zeros, 0, tile, accumulate, -np.inf, np.inf)
    elif vectors == TILE_VECTORS - 1:
        gather_mid(a, a_off, index, step, b, b_off, ldb, depth, tile, t_off, NR, MR, ones,
                   zeros, 0, tile, accumulate, -np.inf, np.inf)
    else:
        gather_narrow(a, a_off, index, step, b, b_off, ldb, depth, tile, t_off, NR, MR, ones,
                      zeros, 0, tile, accumulate, -np.inf, np.inf)


@helper
def store_channels(tile, out, o_at, pixels, valid, width, first, ep):
    """``out[o_at + j·pixels + r] = act(scale[first + j]·tile[r·NR + j] + shift[first + j]
    (+ res))`` for pixels r < valid and channels j < width: one tile (pixels × channels)
    into NCHW with the epilogue."""
    scale, shift, res, has_res, code, _ = ep
    lo, hi = clamp_bounds(code)
    for j in range(width):
        s, b = scale[first + j], shift[first + j]
        d = o_at + j * pixels
        for r in range(valid):
            v = tile[r * NR + j] * s + b
            if has_res:
                v += res[d + r]
            v = lo if v < lo else v
            out[d + r] = hi if v > hi else v
        activate_flat(out, d, valid, ep)


@helper
def panel_products(image, geometry, panels, panel, tile, blocks, row_blocks, unit):
    """Every block in ``blocks`` = [g0, g1) against one panel of channels
    ``panel = (p0, width, ldb)``, DEPTH_CHUNK steps at a time, each block into its tile."""
    index, _, _, sh, sw, _ = geometry
    p0, width, ldb = panel
    g0, g1 = blocks
    k = index.shape[0]
    wp = image.shape[2]
    vectors = -(-width // LANES)
    for k0 in range(0, k, DEPTH_CHUNK):
        chunk = index[k0:min(k, k0 + DEPTH_CHUNK)]
        for blk in range(g0, g1):
            y = blk // row_blocks
            x0 = (blk - y * row_blocks) * MR
            block_tile(image, y * sh * wp + x0 * sw, chunk, sw, panels, p0 * k + k0 * ldb, ldb,
                       tile, (blk - g0) * MR * NR, vectors, k0 > 0, unit)


@kernel
def pixel_gemm(panels, x, out, jobs, geometry, ep, scratch, unit):
    """Per job (n, o0, o1, b0, b1): output channels [o0, o1) of pixel blocks [b0, b1) of
    image n (``pixel_job``), the jobs spread over the threads. ``scratch = (padded, tiles,
    filled)``: per thread, the padded image, the tiles of a group of blocks and the part of
    the image its padded copy holds."""
    scratch[2][:] = -1
    run_jobs(pixel_job, jobs.shape[0], (panels, x, out, jobs, geometry, ep, scratch, unit))


@tile_kernel
def pixel_job(t, args):
    """Job t of ``pixel_gemm`` in the scratch of the thread running it. ``geometry = (index,
    pad_top, pad_left, sh, sw, reach)``: ``index[(c, i, j)]`` the tap's offset in the padded
    image, ``reach = (kh − 1)·dh + 1`` the rows a window spans. Only the rows of the job's
    blocks are padded, and only if the part of the image the thread's padded copy holds
    differs."""
    panels, x, out, jobs, geometry, ep, (padded, tiles, filled), unit = args
    tid = numba.get_thread_id()
    image, tile = padded[tid], tiles[tid]
    n, o0, o1, b0, b1 = jobs[t, 0], jobs[t, 1], jobs[t, 2], jobs[t, 3], jobs[t, 4]
    _, pad_top, pad_left, sh, _, reach = geometry
    out_ch, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    row_blocks = -(-ow // MR)
    group = tile.shape[0] // (MR * NR)
    padded_ch = -(-out_ch // LANES) * LANES
    out_flat = out.reshape(-1)
    part = n * (oh * row_blocks + 1) + b0
    if filled[tid] != part:
        pad_rows(x, n, image, pad_top, pad_left, b0 // row_blocks * sh,
                 (b1 - 1) // row_blocks * sh + reach)
        filled[tid] = part
    for g0 in range(b0, b1, group):
        g1 = min(b1, g0 + group)
        for p0 in range(o0, o1, NR):
            width = min(NR, o1 - p0)
            panel_products(image, geometry, panels, (p0, width, min(NR, padded_ch - p0)), tile,
                           (g0, g1), row_blocks, unit)
            for blk in range(g0, g1):
                y = blk // row_blocks
                x0 = (blk - y * row_blocks) * MR
                store_channels(tile[(blk - g0) * MR * NR:], out_flat,
                               (n * out_ch + p0) * oh * ow + y * ow + x0, oh * ow,
                               min(MR, ow - x0), width, p0, ep)


def group_size(blocks: int) -> int:
    """Blocks of pixels whose tiles ``pixel_gemm`` keeps at once (MR × NR floats each)."""
    return max(1, min(blocks, GROUP_BYTES // (4 * MR * NR)))


def jobs_for(n_img: int, out_ch: int, blocks: int) -> np.ndarray:
    """Jobs (n, o0, o1, b0, b1) of ``pixel_gemm``: whole images when they spread evenly
    over the threads, else each image cut into one part per thread: by channels on panel
    bounds when there are at least two panels a thread, else by blocks of pixels."""
    if n_img % THREADS == 0:
        parts = [(0, out_ch, 0, blocks)]
    elif -(-out_ch // NR) >= 2 * THREADS:
        cuts = split(out_ch, THREADS, NR)
        parts = [(o0, o1, 0, blocks) for o0, o1 in zip(cuts, cuts[1:])]
    else:
        cuts = split(blocks, THREADS, 1)
        parts = [(0, out_ch, b0, b1) for b0, b1 in zip(cuts, cuts[1:])]
    return np.array([(n, *part) for n in range(n_img) for part in parts],
                    np.int64).reshape(-1, 5)
