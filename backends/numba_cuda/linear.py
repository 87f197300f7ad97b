"""CUDA kernels and lowerings of the linear family: linear, linear_fused and matmul, on one
shared-memory tiled GEMM that the convolutions share (``backends/numba_cuda/conv.py``).

The GEMM (``tiled_gemm``). A block of ``BLOCK_SIDE``² = 256 threads computes a ``TILE`` ×
``TILE`` (64 × 64) tile of ``C = A·B``, each thread a register-blocked ``REG`` × ``REG``
(4 × 4) micro-tile at rows ``ty + 16r`` and columns ``tx + 16c``. The K loop stages ``DEPTH``
(16) deep slices of A and B in shared memory, each loaded by all 256 threads (4 elements of
each), and every thread runs its 4 × 4 outer products over the slice from registers
(``multiply_tiles``: 16 FMAs per 8 shared loads). Double-buffered: the next slice's global
loads go to registers before the current slice's products, and slices alternate between two
shared buffers, so one barrier per slice suffices. The accumulators then pass through a
shared tile to the epilogue, ``act(acc + bias + residual)`` (``finish``), whose stores
coalesce (neighbouring threads, neighbouring columns). Out-of-range elements are staged as 0.

Operands are read through element strides, so B may be a transposed weight read in place
(linear reads ``W[out, in]`` as ``Wᵀ``, no repacking); the loads follow whichever of B's axes
is contiguous, so they coalesce either way. A convolution passes its own B loader (the
implicit im2col) and output placement (NCHW) to the same kernel factory.

Batches (matmul's broadcast batch dims, a convolution's groups, the deformable convolution's
(image, group) pairs) are the grid's z axis, each reading the element offsets of its A, B, C
and bias from a table made at lowering (numpy broadcasting resolved on the host, once); the
bias is indexed by row or by column (``BIAS_M``, ``BIAS_N`` strides). One launch per op,
except that a GEMM of fewer output tiles than ``TARGET_BLOCKS`` (about two per SM of an H200:
the deep layers of a CNN at batch 1, a classifier) splits its K loop over more blocks
(split-K, ``split_k``), which write partial sums to a scratch buffer allocated at lowering; a
second launch adds them up and applies the epilogue (``split_sum_kernel``).

Checked without a GPU by compiling to PTX for sm_90: no local memory (the accumulators stay
in registers), the inner loop 16 FMAs per 8 shared loads plus a few adds.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.epilogue import activation_code
from cnnir.backends.numba_cuda.elementwise import activate
from cnnir.backends.numba_cuda.runtime import cuda, flat, launch, lower
from cnnir.ir import Node

TILE = 64  # output rows and columns per block
DEPTH = 16  # the K slice staged in shared memory per step
BLOCK_SIDE = 16  # threads per block: BLOCK_SIDE × BLOCK_SIDE
REG = TILE // BLOCK_SIDE  # each thread's micro-tile: REG × REG accumulators
THREADS_2D = BLOCK_SIDE * BLOCK_SIDE
LOADS = TILE * DEPTH // THREADS_2D  # elements of each tile one thread stages per step
SLICE = DEPTH * TILE  # one staged slice of A or B
BUFFERS = 2 * SLICE  # double buffering
U_TILE, U_SIDE = np.uint64(TILE), np.uint64(BLOCK_SIDE)
PADDED_TILE = TILE + 1  # the output tile's row length in shared memory: no bank conflicts
POOL = max(2 * BUFFERS, TILE * PADDED_TILE)  # shared memory per block, in elements

# The geometry every tiled GEMM reads (an int64 array, uploaded once per node); a convolution
# appends its own fields after ``GEMM_FIELDS``.
(M, N, K, SA_M, SA_K, SB_K, SB_N, SC_M, SC_N, BIAS_M, BIAS_N, HAS_BIAS, HAS_RES, CODE, SPLITS,
 K_CHUNK, OUT_SIZE, BIAS_DIV, BIAS_MOD) = range(19)
GEMM_FIELDS = 19

# Split-K: a GEMM of fewer output tiles than about two per SM of an H200 (132 SMs), the deep
# layers at batch 1, splits its K loop over more blocks, each split at least this many slices
TARGET_BLOCKS = 264
MIN_SPLIT_SLICES = 4


@cuda.jit(device=True, inline=True)
def load_a(a, a0, geo, m0, k0, t, regs, zero):
    """This thread's ``LOADS`` elements of the A slice at ``k0`` into registers (neighbouring
    threads read along k; 0 outside the matrix)."""
    for q in range(LOADS):
        e = t + q * THREADS_2D
        kk, mm = e % DEPTH, e // DEPTH
        v = zero
        if m0 + mm < geo[M] and k0 + kk < geo[K]:
            v = a[a0 + (m0 + mm) * geo[SA_M] + (k0 + kk) * geo[SA_K]]
        regs[q] = v


@cuda.jit(device=True, inline=True)
def strided_column(geo, n0, t):
    """A strided B needs no per-column state (a convolution's ``column`` decodes a pixel)."""
    return 0, 0, 0


@cuda.jit(device=True, inline=True)
def load_b_strided(b, b0, geo, table, column, n0, k0, t, regs, zero):
    """This thread's elements of the B slice at ``k0``, along whichever axis of B is
    contiguous (``stage`` puts them back in place)."""
    contiguous = geo[SB_K] == 1
    for q in range(LOADS):
        e = t + q * THREADS_2D
        if contiguous:
            kk, nn = e % DEPTH, e // DEPTH
        else:
            kk, nn = e // TILE, e % TILE
        v = zero
        if n0 + nn < geo[N] and k0 + kk < geo[K]:
            v = b[b0 + (k0 + kk) * geo[SB_K] + (n0 + nn) * geo[SB_N]]
        regs[q] = v


@cuda.jit(device=True, inline=True)
def place_strided(geo, c0, m, n):
    """The element offset of ``C[m, n]``."""
    return c0 + m * geo[SC_M] + n * geo[SC_N]


@cuda.jit(device=True, inline=True)
def stage(a_regs, b_regs, a_tile, b_tile, buf, t, b_k_contiguous):
    """The registers of ``load_a`` and a B loader into shared buffer ``buf`` (the tiles are
    flat: buffer, k, column)."""
    for q in range(LOADS):
        e = t + q * THREADS_2D
        base = buf * SLICE
        a_tile[base + (e % DEPTH) * TILE + e // DEPTH] = a_regs[q]
        if b_k_contiguous:
            b_tile[base + (e % DEPTH) * TILE + e // DEPTH] = b_regs[q]
        else:
            b_tile[base + e] = b_regs[q]


@cuda.jit(device=True, inline=True)
def multiply_tiles(a_tile, b_tile, buf, acc, a_frag, b_frag, tx, ty):
    """``acc[r, c] += Σ_k a_tile[k, ty + 16r]·b_tile[k, tx + 16c]`` over the staged slice.
    The shared indices are unsigned: numba wraps negative signed indices around, which costs
    more integer instructions than the 16 FMAs per k they feed."""
    a_at = numba.uint64(buf * SLICE + ty)
    b_at = numba.uint64(buf * SLICE + tx)
    for _ in range(DEPTH):
        for r in range(REG):
            a_frag[r] = a_tile[a_at + numba.uint64(r) * U_SIDE]
            b_frag[r] = b_tile[b_at + numba.uint64(r) * U_SIDE]
        for r in range(REG):
            for c in range(REG):
                acc[r, c] += a_frag[r] * b_frag[c]
        a_at += U_TILE
        b_at += U_TILE


@cuda.jit(device=True, inline=True)
def finish(v, bias, bias_index, has_bias, res, index, has_res, code, alpha):
    """The epilogue of one output: ``act(v + bias + residual)`` (docs/semantics.md §1.5)."""
    if has_bias:
        v += bias[bias_index]
    if has_res:
        v += res[index]
    return activate(v, code, alpha)


@functools.cache
def tiled_gemm(dtype: np.dtype, column=strided_column, load_b=load_b_strided,
               place=place_strided):
    """The batched tiled GEMM with its epilogue, for one float dtype (shared and local arrays
    need their type at compile time) and one way of reading B and placing C: strided
    matrices by default; a convolution passes its im2col loader and NCHW placement.

    Double-buffered: the next slice's global loads are issued into registers before the
    products of the current one, and each slice alternates between two shared buffers, so
    one barrier per slice suffices (a thread past it knows every thread finished the
    products of the buffer it is about to refill)."""
    ftype = numba.from_dtype(np.dtype(dtype))

    @cuda.jit
    def gemm(a, src, out, bias, res, geo, offsets, table, alpha):
        zero = ftype(0)
        # one pool: the A and B slices (two buffers of [DEPTH, TILE] each) while the K loop
        # runs, then the output tile (rows of PADDED_TILE): under the 48 KiB of static
        # shared memory in float64 too
        pool = cuda.shared.array(POOL, ftype)
        a_tile, b_tile = pool[:BUFFERS], pool[BUFFERS:2 * BUFFERS]
        acc = cuda.local.array((REG, REG), ftype)
        a_regs = cuda.local.array(LOADS, ftype)
        b_regs = cuda.local.array(LOADS, ftype)
        a_frag = cuda.local.array(REG, ftype)
        b_frag = cuda.local.array(REG, ftype)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        t = ty * BLOCK_SIDE + tx
        splits = geo[SPLITS]
        batch, split = cuda.blockIdx.z // splits, cuda.blockIdx.z % splits
        a0, b0, c0, bias0 = (offsets[batch, 0], offsets[batch, 1], offsets[batch, 2],
                             offsets[batch, 3])
        m0, n0 = cuda.blockIdx.y * TILE, cuda.blockIdx.x * TILE
        col = column(geo, n0, t)
        b_k_contiguous = geo[SB_K] == 1
        k_begin = split * geo[K_CHUNK]
        k_end = k_begin + geo[K_CHUNK]
        if k_end > geo[K]:
            k_end = geo[K]
        for r in range(REG):
            for c in range(REG):
                acc[r, c] = zero
        load_a(a, a0, geo, m0, k_begin, t, a_regs, zero)
        load_b(src, b0, geo, table, col, n0, k_begin, t, b_regs, zero)
        buf = 0
        for k0 in range(k_begin, k_end, DEPTH):
            stage(a_regs, b_regs, a_tile, b_tile, buf, t, b_k_contiguous)
            cuda.syncthreads()
            if k0 + DEPTH < k_end:
                load_a(a, a0, geo, m0, k0 + DEPTH, t, a_regs, zero)
                load_b(src, b0, geo, table, col, n0, k0 + DEPTH, t, b_regs, zero)
            multiply_tiles(a_tile, b_tile, buf, acc, a_frag, b_frag, tx, ty)
            buf = 1 - buf
        # The accumulators go through shared memory to the epilogue: indexed by constants
        # only, they stay in registers (one call of the epilogue in an unrolled loop would
        # need a dynamic index, which puts the array in local memory).
        cuda.syncthreads()  # every thread's last products read the pool
        for r in range(REG):
            for c in range(REG):
                pool[(ty + r * BLOCK_SIDE) * PADDED_TILE + tx + c * BLOCK_SIDE] = acc[r, c]
        cuda.syncthreads()
        rows, cols = geo[M], geo[N]
        has_bias, has_res, code = geo[HAS_BIAS] != 0, geo[HAS_RES] != 0, geo[CODE]
        for e in range(t, TILE * TILE, THREADS_2D):
            mm, nn = e // TILE, e % TILE
            m, n = m0 + mm, n0 + nn
            if m < rows and n < cols:
                index = place(geo, c0, m, n)
                if splits > 1:  # a partial sum: split_sum_kernel adds them up
                    out[split * geo[OUT_SIZE] + index] = pool[mm * PADDED_TILE + nn]
                    continue
                out[index] = finish(pool[mm * PADDED_TILE + nn], bias, bias0 + m * geo[BIAS_M]
                                    + n * geo[BIAS_N], has_bias, res, index, has_res, code,
                                    alpha)

    return gemm


@cuda.jit
def split_sum_kernel(partial, out, bias, res, geo, alpha):
    """The sum of a split-K GEMM's partial products, then the epilogue; one output per
    thread, the bias channel ``(index // BIAS_DIV) % BIAS_MOD``."""
    index = cuda.grid(1)
    size = geo[OUT_SIZE]
    if index >= size:
        return
    v = partial[index]
    for split in range(1, geo[SPLITS]):
        v += partial[split * size + index]
    out[index] = finish(v, bias, (index // geo[BIAS_DIV]) % geo[BIAS_MOD], geo[HAS_BIAS] != 0,
                        res, index, geo[HAS_RES] != 0, geo[CODE], alpha)


def split_k(blocks: int, depth: int) -> tuple[int, int]:
    """(splits, K per split, a multiple of ``DEPTH``) for a GEMM of ``blocks`` output tiles."""
    slices = max(1, -(-depth // DEPTH))
    splits = max(1, min(-(-TARGET_BLOCKS // blocks), slices // MIN_SPLIT_SLICES))
    per_split = -(-slices // splits)
    return -(-slices // per_split), per_split * DEPTH


def gemm_step(b: Builder, a, src, out, geometry: dict[int, int], offsets: np.ndarray,
              bias=None, res=None, alpha: float = 0.0, kernel=None, table=None,
              bias_layout: tuple[int, int] = (1, 1)) -> Step:
    """A step launching ``kernel`` (the strided ``tiled_gemm`` by default) over
    ``len(offsets)`` batches (rows: the A, B, C and bias element offsets); ``geometry`` maps
    field indices (``M``… and a convolution's) to their values (absent: 0); ``table`` is the
    B loader's lookup table, if it has one. With too few output tiles, the K loop is split
    (``split_k``) into partial sums in a scratch buffer, which a second launch adds up with
    the epilogue, finding each output's bias at ``bias_layout`` = (BIAS_DIV, BIAS_MOD)."""
    geo = np.zeros(max(GEMM_FIELDS, max(geometry) + 1), np.int64)
    for key, value in geometry.items():
        geo[key] = value
    grid = [-(-geo[N] // TILE), -(-geo[M] // TILE), len(offsets)]
    splits, geo[K_CHUNK] = split_k(grid[0] * grid[1] * grid[2], geo[K])
    grid[2] *= splits
    geo[SPLITS], geo[OUT_SIZE] = splits, out.size
    geo[HAS_BIAS], geo[HAS_RES] = bias is not None, res is not None
    geo[BIAS_DIV], geo[BIAS_MOD] = bias_layout
    geo_dev, outf = cuda.to_device(geo), flat(out)
    bias_arg = flat(bias) if bias is not None else outf
    res_arg = flat(res) if res is not None else outf
    target = outf if splits == 1 else b.scratch((splits * out.size,), owner="split-k")
    args = (flat(a), flat(src), target, bias_arg, res_arg, geo_dev,
            cuda.to_device(np.ascontiguousarray(offsets, np.int64)),
            cuda.to_device(table if table is not None else np.zeros((1, 1), np.int64)),
            float(alpha))
    kernel = kernel if kernel is not None else tiled_gemm(np.dtype(b.dtype))
    grid_dims, block_dims = tuple(grid), (BLOCK_SIDE, BLOCK_SIDE)
    # configured at each call, as ``runtime.launch`` does: the simulator's kernel[grid, block]
    # reconfigures the (shared) kernel object itself
    if splits == 1:
        return lambda: kernel[grid_dims, block_dims](*args)
    total = launch(split_sum_kernel, out.size, target, outf, bias_arg, res_arg, geo_dev,
                   float(alpha))

    def step() -> None:
        kernel[grid_dims, block_dims](*args)
        total()

    return step


def linear_step(b: Builder, node: Node, bias_value, res_value, code: int,
                alpha: float) -> Step:
    """``out = act(x·Wᵀ + b (+ r))`` over the rows of x (every leading dim): A is x [rows, in],
    B is W [out, in] read as Wᵀ, the bias indexed by column."""
    x, w, out = b.array(node.inputs[0]), b.array(node.inputs[1]), b.array(node.output)
    out_f, in_f = w.shape
    rows = x.size // in_f
    geometry = {M: rows, N: out_f, K: in_f, SA_M: in_f, SA_K: 1, SB_K: 1, SB_N: in_f,
                SC_M: out_f, SC_N: 1, BIAS_N: 1, CODE: code}
    return gemm_step(b, x, w, out, geometry, np.zeros((1, 4), np.int64),
                     b.array(bias_value), b.array(res_value), alpha, bias_layout=(1, out_f))


@lower(ops.linear)
def linear(b: Builder, node: Node) -> Step:
    return linear_step(b, node, (node.inputs + [None])[2], None, 0, 0.0)


@lower(ops.linear_fused)
def linear_fused(b: Builder, node: Node) -> Step:
    """linear with its residual and activation in the GEMM's epilogue (one launch)."""
    a = node.attrs
    bias, res = (node.inputs + [None, None])[2:4]
    code, alpha = (0, 0.0) if a.activation is None else activation_code(a.activation,
                                                                      a.activation_attrs)
    return linear_step(b, node, bias, res, int(code), alpha)


def batch_offsets(a_shape: tuple[int, ...], b_shape: tuple[int, ...],
                  batch: tuple[int, ...]) -> np.ndarray:
    """Per output batch index (row-major over ``batch``): the element offsets of its A and B
    matrices (numpy broadcasting of the batch dims) and of its C matrix; bias 0."""
    def offsets(shape: tuple[int, ...]) -> np.ndarray:
        lead, size = shape[:-2], shape[-2] * shape[-1]
        index = np.arange(int(np.prod(lead, dtype=np.int64))).reshape(lead) * size
        return np.broadcast_to(index.reshape((1,) * (len(batch) - len(lead)) + lead),
                               batch).reshape(-1)

    count = int(np.prod(batch, dtype=np.int64))
    rows, cols = a_shape[-2], b_shape[-1]
    table = np.zeros((count, 4), np.int64)
    table[:, 0], table[:, 1] = offsets(a_shape), offsets(b_shape)
    table[:, 2] = np.arange(count) * rows * cols
    return table


@lower(ops.matmul)
def matmul(b: Builder, node: Node) -> Step:
    """torch.matmul: 1-D operands promoted ([K] as [1, K] or [K, 1]), batch dims broadcast;
    one GEMM launch over every output batch."""
    x, y, out = b.array(node.inputs[0]), b.array(node.inputs[1]), b.array(node.output)
    a_shape = (1, *x.shape) if x.ndim == 1 else tuple(x.shape)
    b_shape = (*y.shape, 1) if y.ndim == 1 else tuple(y.shape)
    batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    rows, depth, cols = a_shape[-2], a_shape[-1], b_shape[-1]
    geometry = {M: rows, N: cols, K: depth, SA_M: depth, SA_K: 1, SB_K: cols, SB_N: 1,
                SC_M: cols, SC_N: 1}
    return gemm_step(b, x, y, out, geometry, batch_offsets(a_shape, b_shape, batch))
