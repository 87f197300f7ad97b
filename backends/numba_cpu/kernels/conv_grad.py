"""A convolution's weight gradient on the float32 micro-kernel (``simd``, ``gemm``).

``gW_g = Σ_n gy_g[n]·cols[n]ᵀ`` is computed transposed, ``gW_gᵀ [C/G·kh·kw, O/G] =
Σ_bands cols·gy_gᵀ``, so that the taps (often hundreds or thousands) are the GEMM's M and the
pixels of a band of output rows (or of a few whole images) its depth:

- A = a block of rows of the band's im2col columns, written straight into the micro-kernel's
  packed layout ``[row block][pixel][MR]`` (``im2col_packed``), never repacked;
- B = gy transposed once to pixel-major ``[N, OH·OW, O]`` (``batched_transpose``): a band's
  rows of it are contiguous, a group's columns a slice;
- C = rows of the result itself: the first band writes them, later bands add to them through
  the epilogue's residual (the residual is C: each tile reads its old value, writes the sum).

The threads split C's rows (groups × row blocks): each owns its rows across all bands, so no
two threads write one element, nothing is reduced afterwards, and the im2col work is split
with them (each thread im2col's only its rows). No BLAS runs, so nothing clashes with the
spinning OpenMP workers of the kernels around it.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from cnnir.backends.numba_cpu.kernels.conv import valid_range, zero_flat
from cnnir.backends.numba_cpu.kernels.gemm import L1_CHUNK_BYTES, NO_OFFSET, gemm_block
from cnnir.backends.numba_cpu.kernels.jit import helper, kernel, prange
from cnnir.backends.numba_cpu.kernels.simd import (
    _F32,
    MR,
    _data_ptr,
    _element_ptr,
    _float32_array,
    _load,
    _store,
)

TILE = 32  # rows of the source per task of a transpose
BLOCK = 8  # rows and columns of a block transposed in registers (whatever the vector width)
_VEC8 = ir.VectorType(_F32, BLOCK)

# An 8×8 transpose in three rounds of two-vector shuffles (unpack, pairs, halves).
_UNPACK = ([0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15])
_PAIRS = ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15])
_HALVES = ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15])


@intrinsic
def transpose8(typingctx, src, s_off, s_ld, dst, d_off, d_ld):
    """``dst[d_off + i·d_ld + r] = src[s_off + r·s_ld + i]`` for r, i < 8: eight rows of
    eight floats transposed in registers (float32 arrays of any rank, offsets and leading
    dimensions in elements)."""
    if not (_float32_array(src) and _float32_array(dst)):
        return None
    sig = types.void(src, types.intp, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, sig, args):
        src_arg, s_off_arg, ld_arg, dst_arg, d_off_arg, d_ld_arg = args
        ps = _data_ptr(context, builder, sig.args[0], src_arg, s_off_arg)
        pd = _data_ptr(context, builder, sig.args[3], dst_arg, d_off_arg)
        rows = [_load(builder, _element_ptr(builder, ps, builder.mul(
            ir.Constant(ir.IntType(64), r), ld_arg)), _VEC8) for r in range(BLOCK)]

        def mix(a, b, mask):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 8),
                                                            mask))

        t = [mix(rows[r], rows[r + 1], m) for r in (0, 2, 4, 6) for m in _UNPACK]
        u = [mix(t[a], t[a + 2], m) for a in (0, 1, 4, 5) for m in _PAIRS]
        # u = [u0, u1, u2, u3, u4, u5, u6, u7] as (t0,t2), (t1,t3), (t4,t6), (t5,t7) pairs
        for half, mask in enumerate(_HALVES):
            for i in range(4):
                out = mix(u[i], u[i + 4], mask)
                _store(builder, out, _element_ptr(builder, pd, builder.mul(
                    ir.Constant(ir.IntType(64), 4 * half + i), d_ld_arg)))
        return context.get_dummy_value()

    return sig, codegen


@kernel
def batched_transpose(src, dst):
    """``dst[b, j, i] = src[b, i, j]`` for 3-D float32 arrays, parallel over (batch, band of
    TILE rows); 8×8 blocks in registers (``transpose8``), the ragged edges element by
    element."""
    batches, rows, cols = src.shape
    sf = src.reshape(-1)
    df = dst.reshape(-1)
    tiles = (rows + TILE - 1) // TILE
    full_cols = cols - cols % BLOCK
    for t in prange(batches * tiles):
        b = t // tiles
        i0 = (t % tiles) * TILE
        i1 = min(rows, i0 + TILE)
        full_rows = i1 - (i1 - i0) % BLOCK
        s_base = b * rows * cols
        d_base = b * cols * rows
        for j0 in range(0, full_cols, BLOCK):
            for i in range(i0, full_rows, BLOCK):
                transpose8(sf, s_base + i * cols + j0, cols, df, d_base + j0 * rows + i, rows)
        for j in range(full_cols, cols):
            for i in range(i0, full_rows):
                dst[b, j, i] = src[b, i, j]
        for i in range(full_rows, i1):
            for j in range(cols):
                dst[b, j, i] = src[b, i, j]


@helper
def im2col_packed(x, packed, pixels, p_off, n, c0, r0, r1, window, y0, y1, ow, rows):
    """Rows [r0, r1) of the im2col columns of channels from c0 (row r = (c, i, j)), output
    rows [y0, y1) of image n, packed for the micro-kernel as columns ``p_off + p`` of a depth
    of ``pixels``: ``packed[(q // MR)·pixels·MR + (p_off + p)·MR + q % MR] = xpad[n, c0 + c,
    y·sh + i·dh, x·sw + j·dw]`` with q = r − r0 and p = (y − y0)·ow + x. Each block of MR rows
    is copied row by row into ``rows`` ([MR, ≥ (y1 − y0)·ow], contiguous copies), then
    interleaved eight pixels at a time (``transpose8``, when MR is 8). The rows padding the
    last block are zeros (the micro-kernel computes them but never stores)."""
    kh, kw, sh, sw, pad_top, pad_left, dh, dw = window
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    taps = kh * kw
    count = (y1 - y0) * ow
    xf = x.reshape(-1)
    rf = rows.reshape(-1)
    ld = rows.shape[1]
    for q0 in range(0, r1 - r0, MR):
        for q in range(MR):
            r = r0 + q0 + q
            d = q * ld
            if r >= r1:
                zero_flat(rf, d, count)
                continue
            c = r // taps
            i = (r % taps) // kw
            j = r % kw
            base = j * dw - pad_left
            lo, hi = valid_range(ow, sw, base, width)
            plane = ((n * channels + c0 + c) * height) * width
            for y in range(y0, y1):
                at = d + (y - y0) * ow
                iy = y * sh - pad_top + i * dh
                if iy < 0 or iy >= height:
                    zero_flat(rf, at, ow)
                    continue
                zero_flat(rf, at, lo)
                zero_flat(rf, at + hi, ow - hi)
                src = np.uint64(plane + iy * width + base + lo * sw)
                dst = np.uint64(at + lo)
                if sw == 1:
                    for xx in range(hi - lo):
                        u = np.uint64(xx)
                        rf[dst + u] = xf[src + u]
                else:
                    stride = np.uint64(sw)
                    for xx in range(hi - lo):
                        u = np.uint64(xx)
                        rf[dst + u] = xf[src + u * stride]
        block = (q0 // MR) * pixels * MR + p_off * MR
        full = count - count % BLOCK if MR == BLOCK else 0
        for p in range(0, full, BLOCK):
            transpose8(rf, p, ld, packed, block + p * MR, MR)
        for p in range(full, count):
            for q in range(MR):
                packed[block + p * MR + q] = rf[q * ld + p]


@kernel
def weight_grad(x, gyt, ow, bands, window, groups, block_rows, acc, packed, rows, scale,
                shift):
    """``acc[g] = Σ_bands cols_g·gy_gᵀ`` ([C/G·kh·kw, O/G] per group), ``gyt`` being gy
    pixel-major ``[N, OH·OW, O]``. Parallel over (group, block of ``block_rows`` rows of
    acc[g]); per band (n0, n1, y0, y1), output rows [y0, y1) of images [n0, n1), the block's
    rows of the columns are packed into the thread's buffer (through its ``rows`` buffer) and
    multiplied by the band's rows of gyt (the group's columns). ``scale`` (ones) and
    ``shift`` (zeros) are the epilogue's."""
    kh, kw = window[0], window[1]
    channels = x.shape[1]
    per_plane, out_ch = gyt.shape[1], gyt.shape[2]
    cg = channels // groups
    og = out_ch // groups
    k = cg * kh * kw
    blocks = (k + block_rows - 1) // block_rows
    gf = gyt.reshape(-1)
    for u in prange(groups * blocks):
        g = u // blocks
        r0 = (u % blocks) * block_rows
        r1 = min(k, r0 + block_rows)
        tid = numba.get_thread_id()
        a = packed[tid]
        c = acc[g].reshape(-1)
        for t in range(bands.shape[0]):
            n0, n1, y0, y1 = bands[t, 0], bands[t, 1], bands[t, 2], bands[t, 3]
            per_image = (y1 - y0) * ow
            pixels = (n1 - n0) * per_image
            for n in range(n0, n1):
                im2col_packed(x, a, pixels, (n - n0) * per_image, n, g * cg, r0, r1, window,
                              y0, y1, ow, rows[tid])
            ep = (scale, shift, c, t > 0, 0, 0.0)
            b_off = (n0 * per_plane + y0 * ow) * out_ch + g * og
            gemm_block((a, NO_OFFSET), (gf, b_off, out_ch), (c, r0 * og, og), r1 - r0, og,
                       pixels, r0, ep, L1_CHUNK_BYTES)
