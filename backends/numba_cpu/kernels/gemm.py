"""Float32 GEMM kernels on the register-blocked micro-kernel of ``simd``.

A GEMM is cut into blocks (``gemm_blocks``), each a band of output columns × a range of output
rows; a parallel kernel runs the blocks over Numba's threads. Within a block, each chunk of B's
columns stays in L1 while every MR-row tile of the packed A passes over it (for long
reductions copied into a contiguous panel first: ``pack_panel``), and each finished tile gets
the epilogue (scale, shift, residual, activation) in registers on its way to the output; a
row's last columns (fewer than a vector) are read and written in place. Convolutions feed B
straight from the image (1x1), from a per-thread im2col buffer of one band of output rows (k×k)
or from a padded copy of the band's input rows through a table of tap offsets (``direct``),
and no BLAS runs: no OpenBLAS threads to clash with Numba's.
"""

from __future__ import annotations

import numba
import numpy as np

from cnnir.backends.numba_cpu.kernels.activation import activate_flat, clamp_bounds
from cnnir.backends.numba_cpu.kernels.conv import im2col_rows
from cnnir.backends.numba_cpu.kernels.host import HOST
from cnnir.backends.numba_cpu.kernels.jit import helper, kernel, run_jobs, tile_kernel
from cnnir.backends.numba_cpu.kernels.simd import (
    COLUMN_TILE_MAX,
    EXTRA_COLUMN,
    LANES,
    MASKED_LOADS_NATIVE,
    MR,
    NR,
    TILE_VECTORS,
    row_offset,
    tile_columns1,
    tile_columns4,
    tile_mid,
    tile_narrow,
    tile_part,
    tile_wide,
    tile_wide_column,
    vfma,
    vload,
    vload_masked,
    vmask,
    vsplat,
    vstore,
    vstore_masked,
)

THREADS = numba.config.NUMBA_NUM_THREADS


LINE_FLOATS = 32  # two 64-byte cache lines: the adjacent-line prefetcher fetches pairs


def own_lines(floats: int) -> int:
    """``floats`` rounded up to whole pairs of cache lines: the length of a thread's row of
    a per-thread scratch buffer, so that it shares no line with its neighbour's (the arena's
    buffers start on line boundaries). Rows of 23 floats, written by both threads after
    every plane, kept the flat depthwise kernel on 7×7 planes from running faster on two
    threads than on one (MobileNetV2 at batch 8: depthwise layers 16.1 → 13.1 ms)."""
    return -(-floats // LINE_FLOATS) * LINE_FLOATS


# An offset of 0 passed as a variable: a literal 0 in a tuple argument types as Literal[int],
# and each such call would compile gemm_block again (about a second).
NO_OFFSET = np.int64(0)
# B's columns swept by every row block while in L1; an int64, not a Python int, for the
# reason NO_OFFSET is
L1_CHUNK_BYTES = np.int64(HOST.l1_bytes // 2)
# A 1x1 convolution whose input and output together span more than STREAM_MIN_BYTES streams
# them from and to memory. In chunks that fit L1, each chunk reads (and writes) one short
# run per channel, channels a plane apart: too many short streams for the prefetchers.
# Chunks of STREAM_CHUNK_BYTES make the runs longer: MobileNetV2's 1x1 layers on 56x56 and
# 112x112 planes at batch 8, 24->144 1230 -> 960 us, 144->24 1560 -> 1410, 96->24 985 ->
# 840, 32->16 1010 -> 920 (Zen 4). Where the operands stay in L3 the L1 chunk's reuse
# matters more: the same layers at batch 1 (2 MB) gained nothing and 24->144 lost 10%, and
# on a Zen 3 (L2 512 KiB) the 28x28 and 14x14 layers at batch 8 (4-6 MB) ran 13-24% slower
# in wide chunks (192->32 550 -> 690 us, 384->64 480 -> 625, 576->96 1020 -> 1200). Winograd's
# GEMMs (rows of tiles, not planes) lost up to 15% with them at batch 8 in ResNet-18.
STREAM_MIN_BYTES = HOST.l3_bytes // 4
STREAM_CHUNK_BYTES = np.int64(HOST.l2_bytes // 4)


def chunk_budget(batches: int, rows: int, k: int, cols: int) -> np.int64:
    """``gemm_block``'s budget for ``batches`` GEMMs [rows × k]·[k × cols] whose B and
    output are image planes (a 1x1 convolution's)."""
    span = 4 * batches * (k + rows) * cols
    return STREAM_CHUNK_BYTES if span > STREAM_MIN_BYTES else L1_CHUNK_BYTES


@tile_kernel(allocates=True)
def gemm_block(a, b, c, rows, cols, k, s_off, ep, budget):
    """``C[r, j] = act(scale[s_off + r]·(A·B)[r, j] + shift[s_off + r] (+ res))`` for r < rows,
    j < cols, on flat operands: ``a = (packed, offset)`` (``simd.pack_rows`` rows from
    offset), ``b = (array, offset, ld)`` with ``B[i, j] = array[offset + i·ld + j]``, and
    ``c = (array, offset, ld)`` likewise; the residual is indexed like C's array. The
    columns go in chunks of ``budget`` bytes of B (``chunk_columns``: L1_CHUNK_BYTES, or
    STREAM_CHUNK_BYTES for GEMMs too large for the caches), every row block sweeping a chunk
    before the next; with several row blocks and PACK_MIN_STEPS steps or more, each chunk is
    first copied into a contiguous panel, unless B's rows already lie that close, and so are
    the last columns (fewer than LANES) after the chunks: read in place, every row block's
    column tiles fetched B's rows a plane apart, one line per step from L2 (a 7×7 plane's
    49th column: 960->160 channels 78 -> 84 GFLOP/s on one Zen 3 core). Only the
    panel is allocated here: the products run in ``gemm_panel_block``, compiled without
    reference counting (see ``jit``), which would otherwise count the output's references
    once per row of every tile."""
    chunk = chunk_columns(k, budget)
    pack = rows > MR and k >= PACK_MIN_STEPS and b[2] > chunk
    full = cols - cols % LANES
    panel = np.empty(k * min(chunk, full) if pack else 0, np.float32)
    gemm_panel_block(a, b, c, rows, cols, k, s_off, ep, chunk, panel)


@tile_kernel
def gemm_panel_block(a, b, c, rows, cols, k, s_off, ep, chunk, panel):
    """``gemm_block`` with its chunk width (columns) and panel given (empty: B is read in
    place)."""
    packed, a_off = a
    out, o_off, ldo = c
    full = cols - cols % LANES
    last = (full - 1) // chunk * chunk  # where the last chunk starts
    # one column past the last chunk's widest tile: that tile takes it (``tile_wide_column``)
    one_more = (EXTRA_COLUMN and cols - full == 1 and full > 0
                and (full - last) % NR == 0)
    b_arr, b_off, ldb = b
    for j0 in range(0, full, chunk):
        j1 = min(full, j0 + chunk)
        source, first = chunk_source(b, j0, j1 - j0, k, panel)
        for r0 in range(0, rows, MR):
            sweep((packed, a_off + r0 * k), min(MR, rows - r0), k, source, first,
                  first + j1 - j0, (out, o_off + r0 * ldo + j0 - first, ldo), s_off + r0, ep,
                  (b_arr, b_off + full, ldb, one_more and j0 == last))
    if cols > full and not one_more:
        source, first = b, full
        if panel.shape[0] >= k * (cols - full):  # every row block reads the tail: copy it
            source, first = chunk_source(b, full, cols - full, k, panel)
        tail_columns(a, source, (out, o_off + full - first, ldo), rows, k, first, cols - full,
                     s_off, ep)


# From this many steps (B rows) up, a block of several row blocks copies each chunk of B's
# columns into a contiguous panel first (``pack_panel``)
PACK_MIN_STEPS = 64


@helper
def chunk_columns(k, budget):
    """How many of B's columns a block takes at a time for a reduction of ``k`` steps: as
    many whole NR-column panels as fit ``budget`` bytes, at least one."""
    return max(NR, budget // (4 * k) // NR * NR)


@helper
def chunk_source(b, j0, width, k, panel):
    """Where a block's row blocks read B's columns [j0, j0 + width): ``(operand, first
    column)``, ``pack_panel``'s copy into ``panel`` unless it is empty."""
    if panel.shape[0] > 0:
        pack_panel((panel, NO_OFFSET, width), b, j0, width, k)
        return (panel, NO_OFFSET, width), NO_OFFSET
    return b, j0


@helper
def pack_panel(panel, b, j0, width, k):
    """B's columns [j0, j0 + width) into ``panel = (array, offset, ld)``, row i at ``offset +
    i·ld``. B's rows are ``ld`` apart, or, for an int64 array ``ld``, at ``offset + ld[i]``
    (``direct``'s taps). Every row block of the GEMM sweeps the panel: read in place, k rows
    a plane apart map to a few L1 sets and evict each other, and span more pages than the
    TLB holds. On a Zen 3 (AVX2), 1×1 convs of 256 channels ran at 103–152 GFLOP/s by plane
    size (3136 pixels best, 3200 worst) and at 154–177 with the panel; ResNet's strided 3×3
    layers at batch 1 got 15–28% faster."""
    p_arr, p_off, ldp = panel
    b_arr, b_off, ldb = b
    full = width - width % LANES
    tail = vmask(0, width - full)
    for i in range(k):
        src, dst = b_off + row_offset(ldb, i) + j0, p_off + i * ldp
        for j in range(0, full, LANES):
            vstore(p_arr, dst + j, vload(b_arr, src + j))
        if MASKED_LOADS_NATIVE:  # one masked vector (rows narrower than a vector: direct's)
            if full < width:
                vstore_masked(p_arr, dst + full, vload_masked(b_arr, src + full, tail), tail)
        else:
            for j in range(full, width):
                p_arr[dst + j] = b_arr[src + j]


@helper
def tail_columns(a, b, c, rows, k, first, count, s_off, ep):
    """The last ``count`` (< LANES) columns from ``first``, read and written in place: up to
    COLUMN_TILE_MAX of them in tiles of 4 and 1 columns with A's rows in the lanes
    (``simd.column_tile_intrinsic``), more through lane masks (``simd.tile_part``)."""
    packed, a_off = a
    b_arr, b_off, ldb = b
    out, o_off, ldo = c
    scale, shift, res, has_res, code, _ = ep
    lo, hi = clamp_bounds(code)
    for r0 in range(0, rows, MR):
        valid, a_at, s_at = min(MR, rows - r0), a_off + r0 * k, s_off + r0
        c_off = o_off + r0 * ldo + first
        if count > COLUMN_TILE_MAX:
            tile_part(packed, a_at, b_arr, b_off + first, ldb, k, out, c_off, ldo, valid, scale,
                      shift, s_at, res, has_res, lo, hi, count)
        else:  # whole fours of columns, then one at a time
            fours = count - count % 4
            for j in range(0, fours, 4):
                tile_columns4(packed, a_at, b_arr, b_off + first + j, ldb, k, out, c_off + j,
                              ldo, valid, scale, shift, s_at, res, has_res, lo, hi)
            for j in range(fours, count):
                tile_columns1(packed, a_at, b_arr, b_off + first + j, ldb, k, out, c_off + j,
                              ldo, valid, scale, shift, s_at, res, has_res, lo, hi)
        for r in range(valid):
            activate_flat(out, c_off + r * ldo, count, ep)


MID = (TILE_VECTORS - 1) * LANES  # columns of ``tile_mid``


@helper
def sweep(a, valid, k, b, j0, j1, c, s_at, ep, extra):
    """One row block (``valid`` ≤ MR rows) over columns [j0, j1) (a multiple of LANES), in
    tiles of NR, NR − LANES or LANES columns; activations that are not clamps run on each
    finished tile. ``extra = (t, t_off, ldt, on)``: when on, the last tile (of NR columns)
    also computes the column right after j1, B's at ``t[t_off + step·ldt]``."""
    packed, a_at = a
    b_arr, b_off, ldb = b
    out, o_row, ldo = c
    scale, shift, res, has_res, code, alpha = ep
    t_arr, t_off, ldt, one_more = extra
    lo, hi = clamp_bounds(code)
    j = j0
    while j < j1:
        c_off = o_row + j
        left = j1 - j
        width = NR if left >= NR else MID if left >= MID else LANES
        if width == NR and one_more and left == NR:
            tile_wide_column(packed, a_at, b_arr, b_off + j, ldb, k, out, c_off, ldo, valid,
                             scale, shift, s_at, res, has_res, lo, hi, t_arr, t_off, ldt)
            width += 1  # the activation's columns
        elif width == NR:
            tile_wide(packed, a_at, b_arr, b_off + j, ldb, k, out, c_off, ldo, valid, scale,
                      shift, s_at, res, has_res, lo, hi)
        elif width == MID:
            tile_mid(packed, a_at, b_arr, b_off + j, ldb, k, out, c_off, ldo, valid, scale,
                     shift, s_at, res, has_res, lo, hi)
        else:
            tile_narrow(packed, a_at, b_arr, b_off + j, ldb, k, out, c_off, ldo, valid, scale,
                        shift, s_at, res, has_res, lo, hi)
        for r in range(valid):
            activate_flat(out, c_off + r * ldo, width, ep)
        j += width


@kernel
def gemm(packed, k, b, ldb, out, ldo, blocks, ep):
    """Each row of ``blocks`` (a_off, b_off, o_off, cols, s_off, rows, budget) is one
    ``gemm_block`` of the packed A, flat B and flat output; the blocks run in parallel."""
    run_jobs(gemm_job, blocks.shape[0], (packed, k, b, ldb, out, ldo, blocks, ep))


@tile_kernel
def gemm_job(t, args):
    """Block t of ``gemm``."""
    packed, k, b, ldb, out, ldo, blocks, ep = args
    a_off, b_off, o_off = blocks[t, 0], blocks[t, 1], blocks[t, 2]
    cols, s_off, rows = blocks[t, 3], blocks[t, 4], blocks[t, 5]
    gemm_block((packed, a_off), (b, b_off, ldb), (out, o_off, ldo), rows, cols, k, s_off, ep,
               blocks[t, 6])


@kernel
def im2col_gemm(packed, x, out, bands, window, ep, cols, filled):
    """A k×k (grouped, strided, dilated) convolution: per band (n, y0, y1, r0, r1) of output
    rows, im2col of each group into the thread's buffer ``cols``, then output channels
    [r0, r1) of every group as a ``gemm_block`` (``im2col_band``). ``packed`` holds each
    group's rows padded to MR; ``filled`` remembers, per thread, the band its buffer holds
    (when there is one group, the blocks of a band split by output channels reuse its
    columns)."""
    filled[:] = -1
    run_jobs(im2col_band, bands.shape[0], (packed, x, out, bands, window, ep, cols, filled))


@tile_kernel
def im2col_band(t, args):
    """``im2col_gemm``'s band t in the buffer of the thread running it, ``filled`` its entry
    the band that buffer holds (−1: none)."""
    packed, x, out, bands, window, ep, cols, filled = args
    tid = numba.get_thread_id()
    buffer, held = cols[tid], filled[tid]
    band = bands[t]
    n, y0, y1, r0, r1 = band[0], band[1], band[2], band[3], band[4]
    kh, kw = window[0], window[1]
    channels = x.shape[1]
    out_ch, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    cg = buffer.shape[0] // (kh * kw)
    groups = channels // cg
    og = out_ch // groups
    k = cg * kh * kw
    width = buffer.shape[1]
    group_stride = ((og + MR - 1) // MR) * MR * k
    out_flat = out.reshape(-1)
    this = (n * oh + y0) * (oh + 1) + y1
    for g in range(groups):
        if groups > 1 or held != this:
            im2col_rows(x, buffer, n, g * cg, cg, window, y0, y1, ow)
            held = this
        first = g * og + r0
        c_at = ((n * out_ch + first) * oh + y0) * ow
        gemm_block((packed, g * group_stride + r0 * k), (buffer.reshape(-1), NO_OFFSET, width),
                   (out_flat, c_at, oh * ow), r1 - r0, (y1 - y0) * ow, k, first, ep,
                   L1_CHUNK_BYTES)
    filled[tid] = held


def split(total: int, parts: int, unit: int) -> list[int]:
    """``parts + 1`` cut points of [0, total] on multiples of ``unit`` (the last is total)."""
    cuts = sorted({min(total, round(total * i / parts / unit) * unit) for i in range(parts)})
    return cuts + [total]


TILE_BYTES = HOST.l2_bytes  # a block's B columns plus its output columns stay in L2
PARALLEL_FLOPS = 1_000_000  # below this one thread does it all


def parts_wanted(flops: int) -> int:
    return 1 if flops < PARALLEL_FLOPS else 4 * THREADS if flops > 32 * PARALLEL_FLOPS \
        else THREADS


def column_parts(cols: int, rows: int, k: int, batches: int, flops: int) -> tuple[int, int]:
    """How many column bands and row ranges to cut each of ``batches`` GEMMs into: bands
    small enough for L2 (but at least 48 columns), and enough blocks to keep the threads
    busy: a multiple of the threads when there are few, since a static schedule of 3 blocks
    on 2 threads runs at 2/3 speed."""
    wanted = parts_wanted(flops)
    widest = max(1, cols // (2 * NR))
    by_cache = -(-4 * (k + rows) * cols // TILE_BYTES)
    col_parts = min(max(by_cache, -(-wanted // batches)), widest)
    if wanted > 1 and batches * col_parts < 4 * THREADS:
        while (batches * col_parts) % THREADS and col_parts < widest:
            col_parts += 1
    total = batches * col_parts
    row_parts = 1
    if wanted > 1 and (total < wanted or (total < 4 * THREADS and total % THREADS)):
        row_parts = max(1, min(-(-wanted // total), rows // (4 * MR)))
        if (total * row_parts) % THREADS and rows // (4 * MR) >= THREADS:
            row_parts = -(-row_parts // THREADS) * THREADS
    return col_parts, row_parts


def gemm_blocks(batches: int, rows: int, k: int, cols: int, a_stride: int, b_stride: int,
                o_stride: int, budget: int = L1_CHUNK_BYTES) -> np.ndarray:
    """Blocks (a_off, b_off, o_off, cols, s_off, rows, budget) for ``batches`` GEMMs [rows ×
    k]·[k × cols], the b-th with A, B and output ``b·*_stride`` elements in (row-major, ldb =
    ldo = cols); ``budget`` is ``gemm_block``'s."""
    flops = 2 * batches * rows * k * cols
    col_parts, row_parts = column_parts(cols, rows, k, batches, flops)
    col_cuts = split(cols, col_parts, NR)
    row_cuts = split(rows, row_parts, MR)
    out = []
    for bt in range(batches):
        for c0, c1 in zip(col_cuts, col_cuts[1:]):
            for r0, r1 in zip(row_cuts, row_cuts[1:]):
                out.append((bt * a_stride + r0 * k, bt * b_stride + c0,
                            bt * o_stride + r0 * cols + c0, c1 - c0, r0, r1 - r0, budget))
    return np.array(out, np.int64).reshape(-1, 7)


MIN_BAND_COLUMNS = 4 * NR  # narrower bands would run mostly on the micro-kernel's tails


def im2col_bands(n_img: int, oh: int, ow: int, rows: int, k: int) -> np.ndarray:
    """Bands (n, y0, y1, r0, r1) of output rows whose im2col columns fit L2 with their
    output (but at least MIN_BAND_COLUMNS wide); when there are too few bands for the threads,
    the output channels are split too, into consecutive blocks of the same band (a thread
    reuses a band's columns across its blocks)."""
    flops = 2 * n_img * rows * k * oh * ow
    band_rows = max(TILE_BYTES // (4 * (k + rows) * ow), -(-MIN_BAND_COLUMNS // ow), 1)
    per_image = -(-oh // band_rows)
    wanted = parts_wanted(flops)
    row_parts = 1
    if n_img * per_image < wanted:
        row_parts = max(1, min(-(-wanted // (n_img * per_image)), rows // (4 * MR)))
    y_cuts = split(oh, per_image, 1)
    r_cuts = split(rows, row_parts, MR)
    out = [(n, y0, y1, r0, r1) for n in range(n_img) for y0, y1 in zip(y_cuts, y_cuts[1:])
           for r0, r1 in zip(r_cuts, r_cuts[1:])]
    return np.array(out, np.int64).reshape(-1, 5)


SMALL_BATCH = 16  # up to this many rows, a linear layer is a weight-streaming GEMV


@kernel
def linear_small_batch(x, w, shift, out, zero):
    """``out[b, o] = Σ_i x[b, i]·w[o, i] + shift[o]`` for a few rows b: memory-bound on the
    weights, so each weight row is read once, for every b, while it is in L1; parallel over
    blocks of output features. ``zero`` is 0 in the compute dtype: the accumulator starts
    from it so it is float32 for float32 (a literal 0.0 would make the dot products float64)."""
    blocks = (w.shape[0] + LINEAR_SMALL_BLOCK - 1) // LINEAR_SMALL_BLOCK
    run_jobs(linear_dots, blocks, (x, w, shift, out, zero))


LINEAR_SMALL_BLOCK = 32  # output features per job of linear_small_batch


@tile_kernel
def linear_dots(c, args):
    """Features [c·LINEAR_SMALL_BLOCK, (c + 1)·LINEAR_SMALL_BLOCK) of ``linear_small_batch``."""
    x, w, shift, out, zero = args
    batch, k = x.shape
    for o in range(c * LINEAR_SMALL_BLOCK, min(w.shape[0], (c + 1) * LINEAR_SMALL_BLOCK)):
        row = w[o]
        for bi in range(batch):
            xs = x[bi]
            acc = zero
            for i in range(k):
                acc += row[i] * xs[i]
            out[bi, o] = acc + shift[o]


LINEAR_ROWS = 4  # x's rows per pass of linear_rows over the weights
LINEAR_BLOCK = 2 * LANES  # output features per job of linear_rows


@kernel
def linear_rows(x, blocks, shift, out):
    """``out = x·wᵀ + shift`` in float32 for a few rows: ``blocks`` [out' / LINEAR_BLOCK, in,
    LINEAR_BLOCK] holds w's rows by blocks of LINEAR_BLOCK features, zero-padded to whole
    blocks and transposed (each block's weights one contiguous run). Per block (in
    parallel), LINEAR_ROWS rows at a time, so each weight vector loaded serves all of them,
    where ``linear_small_batch``'s dot products load a weight and an input vector per
    multiply-add and end in a horizontal sum."""
    run_jobs(linear_block, blocks.shape[0], (x, blocks, shift, out))


@tile_kernel
def linear_block(block, args):
    """Features [block·LINEAR_BLOCK, (block + 1)·LINEAR_BLOCK) of ``linear_rows``."""
    x, blocks, shift, out = args
    for b0 in range(0, x.shape[0], LINEAR_ROWS):
        linear_tile(x, blocks[block].reshape(-1), shift, out, block * LINEAR_BLOCK, b0,
                    x.shape[1])


@helper
def linear_tile(x, w, shift, out, o, b0, k):
    """Features [o, o + LINEAR_BLOCK) of rows b0 … b0 + 3 of ``linear_rows``, their weights
    ``w`` (a row past the last repeats it, unstored)."""
    last = x.shape[0] - 1
    r1, r2, r3 = min(b0 + 1, last), min(b0 + 2, last), min(b0 + 3, last)
    m = out.shape[1]
    s0 = vload_masked(shift, o, vmask(0, m - o))
    s1 = vload_masked(shift, o + LANES, vmask(0, m - o - LANES))
    a00, a01, a10, a11, a20, a21, a30, a31 = s0, s1, s0, s1, s0, s1, s0, s1
    for i in range(k):
        w0, w1 = vload(w, i * LINEAR_BLOCK), vload(w, i * LINEAR_BLOCK + LANES)
        v = vsplat(x[b0, i])
        a00, a01 = vfma(v, w0, a00), vfma(v, w1, a01)
        v = vsplat(x[r1, i])
        a10, a11 = vfma(v, w0, a10), vfma(v, w1, a11)
        v = vsplat(x[r2, i])
        a20, a21 = vfma(v, w0, a20), vfma(v, w1, a21)
        v = vsplat(x[r3, i])
        a30, a31 = vfma(v, w0, a30), vfma(v, w1, a31)
    store_features(out, b0, o, a00, a01)
    if b0 + 1 <= last:
        store_features(out, r1, o, a10, a11)
    if b0 + 2 <= last:
        store_features(out, r2, o, a20, a21)
    if b0 + 3 <= last:
        store_features(out, r3, o, a30, a31)


@helper
def store_features(out, row, o, low, high):
    """Two vectors into features [o, o + 2·LANES) of ``out``'s row, those it has."""
    line, m = out[row], out.shape[1]
    if o + 2 * LANES <= m:
        vstore(line, o, low)
        vstore(line, o + LANES, high)
    else:
        vstore_masked(line, o, low, vmask(0, m - o))
        vstore_masked(line, o + LANES, high, vmask(0, m - o - LANES))
