"""CUDA kernels and lowerings of the convolutions: conv2d, conv2d_fused, conv_transpose2d and
deform_conv2d (docs/semantics.md §1.1–§1.3).

conv2d is an implicit GEMM: per group g, ``C[o, p] = Σ_k W[g·O/G + o, k]·
cols[k, p]`` with k = (c', i, j) over C/G·kh·kw and p = (n, oh, ow) over every output pixel
of the batch, the columns ``cols[k, p] = xp[n, g·C/G + c', oh·s_h + i·d_h, ow·s_w + j·d_w]``
never stored: each K step stages them straight from the image into the shared B tile (zero
outside the image: padding, asymmetric included, costs nothing), each thread's pixel decoded
once and each row k = (c', i, j) read from a tap table made at lowering (no divisions in the
loop). The tiling, the double-buffered register micro-tiles and the epilogue are the linear
family's GEMM (``linear.tiled_gemm``: 64 × 64 output tile of (output channel, output pixel)
per block of 256 threads, K slices of 16 in shared memory), so bias, residual and activation
(conv2d_fused, after BatchNorm folding) are applied to the accumulators before the one store.
Grid: (pixel tiles, channel tiles, groups × K splits). A 1×1 convolution is the same GEMM.
One launch, or two when the GEMM splits K (few output tiles: deep layers at batch 1).

A depthwise convolution (G = C, one input channel per group) has a K of kh·kw only: it is a
halo-tiled stencil (one launch): a block of 16 × 16 threads stages the input patch that a
16 × 16 tile of one output plane reads (up to ``HALO``² = 48 × 48, zero in the padding) in
shared memory, so each input is read from global memory once per tile, then every thread
computes one output from the patch, accumulating in float64, with the same epilogue. Grid:
(tiles, channels, images). When a tile's windows span more than the patch (large strides or
dilations), one thread per output reads the image directly (``depthwise_kernel``).

conv_transpose2d gathers (one thread per output element, one launch): output (y, x) of
channel g·O/G + co' receives ``x[n, ci, h, w]·W[ci, co', i, j]`` for every tap with
``y + p_top = h·s_h + i·d_h`` (and likewise x) inside the input, so taps are skipped unless
the division is exact; rows past the canvas (output padding) get only the bias.

deform_conv2d is two launches: the bilinear-sampling im2col (one thread per column element,
``cols[n, c·kh·kw + tap, p]``, masked) into a buffer allocated at lowering, then the GEMM
over (image, group) batches with the bias as its epilogue.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.epilogue import activation_code
from cnnir.backends.numba_cuda.linear import (
    BIAS_M,
    CODE,
    GEMM_FIELDS,
    LOADS,
    SA_K,
    SA_M,
    SB_K,
    SB_N,
    SC_M,
    SC_N,
    THREADS_2D,
    TILE,
    K,
    M,
    N,
    finish,
    gemm_step,
    tiled_gemm,
)
from cnnir.backends.numba_cuda.runtime import cuda, flat, launch, lower
from cnnir.ir import Node

# geometry of a convolution (an int64 array, uploaded once per node)
(IMAGES, CHANNELS, HEIGHT, WIDTH, OUT_CHANNELS, OUT_HEIGHT, OUT_WIDTH, PER_GROUP, OUT_PER_GROUP,
 KH, KW, SH, SW, PAD_TOP, PAD_LEFT, DH, DW, GEO_HAS_BIAS, GEO_HAS_RES, GEO_CODE) = range(20)


def conv_geometry(x, out, w_shape: tuple[int, ...], groups: int, attrs, has_bias: bool,
                  has_res: bool, code: int) -> np.ndarray:
    """The geometry array a convolution kernel reads (indices above); ``w_shape`` in conv2d's
    layout ``[O, C/G, kh, kw]``."""
    n, c, h, w = x.shape
    o, oh, ow = out.shape[1:]
    return np.array([n, c, h, w, o, oh, ow, c // groups, o // groups, *w_shape[2:],
                     *attrs.stride, *attrs.padding[:2], *attrs.dilation, has_bias, has_res,
                     code], np.int64)


# the implicit GEMM's fields after the GEMM's own (``linear.GEMM_FIELDS``)
(PIXELS, COL_OUT_WIDTH, IN_IMAGE, OUT_IMAGE, COL_HEIGHT, COL_WIDTH, COL_SH, COL_SW, COL_PAD_TOP,
 COL_PAD_LEFT) = range(GEMM_FIELDS, GEMM_FIELDS + 10)


@cuda.jit(device=True, inline=True)
def conv_column(geo, n0, t):
    """The output pixel whose column this thread stages, decoded once: its image's offset plus
    its window's origin (``base``), and the origin (y0, x0) itself."""
    p = n0 + t % TILE
    img, q = p // geo[PIXELS], p % geo[PIXELS]
    y0 = (q // geo[COL_OUT_WIDTH]) * geo[COL_SH] - geo[COL_PAD_TOP]
    x0 = (q % geo[COL_OUT_WIDTH]) * geo[COL_SW] - geo[COL_PAD_LEFT]
    return img * geo[IN_IMAGE] + y0 * geo[COL_WIDTH] + x0, y0, x0


@cuda.jit(device=True, inline=True)
def load_columns(x, b0, geo, table, column, n0, k0, t, regs, zero):
    """This thread's elements of the implicit im2col slice at ``k0``: rows k of its pixel's
    column, read from the image through the tap table (``table[:, k]`` = offset, Δy, Δx of
    k = (c', i, j): no divisions), 0 in the padding."""
    base, y0, x0 = column
    valid = n0 + t % TILE < geo[N]
    height, width = geo[COL_HEIGHT], geo[COL_WIDTH]
    for q in range(LOADS):
        k = k0 + t // TILE + q * (THREADS_2D // TILE)
        v = zero
        if valid and k < geo[K]:
            yy, xx = y0 + table[1, k], x0 + table[2, k]
            if 0 <= yy < height and 0 <= xx < width:
                v = x[b0 + base + table[0, k]]
        regs[q] = v


@cuda.jit(device=True, inline=True)
def place_nchw(geo, c0, m, n):
    """The output offset of channel row m (of the group at ``c0``) and column n = (image,
    pixel)."""
    return c0 + m * geo[PIXELS] + (n // geo[PIXELS]) * geo[OUT_IMAGE] + n % geo[PIXELS]


def tap_table(per_group: int, height: int, width: int, kernel: tuple[int, int],
              dilation: tuple[int, int]) -> np.ndarray:
    """``[offset, Δy, Δx]`` per row k = (c', i, j) of the implicit im2col."""
    c, i, j = np.meshgrid(np.arange(per_group), np.arange(kernel[0]), np.arange(kernel[1]),
                          indexing="ij")
    dy, dx = (i * dilation[0]).ravel(), (j * dilation[1]).ravel()
    return np.stack([c.ravel() * height * width + dy * width + dx, dy, dx]).astype(np.int64)


def implicit_gemm_step(b: Builder, node: Node, x, w, out, bias, res, code: int,
                       alpha: float) -> Step:
    """The tiled GEMM per group (grid z) over (output channel, output pixel of the batch),
    B the implicit im2col of the image (module docstring)."""
    a = node.attrs
    n_img, channels, height, width = x.shape
    out_ch, per_group, kh, kw = w.shape
    groups, pixels = a.groups, out.shape[2] * out.shape[3]
    og, depth = out_ch // groups, per_group * kh * kw
    geometry = {M: og, N: n_img * pixels, K: depth, SA_M: depth, SA_K: 1, BIAS_M: 1,
                CODE: code, PIXELS: pixels, COL_OUT_WIDTH: out.shape[3],
                IN_IMAGE: channels * height * width, OUT_IMAGE: out_ch * pixels,
                COL_HEIGHT: height, COL_WIDTH: width, COL_SH: a.stride[0],
                COL_SW: a.stride[1], COL_PAD_TOP: a.padding[0], COL_PAD_LEFT: a.padding[1]}
    offsets = np.array([(g * og * depth, g * per_group * height * width, g * og * pixels,
                         g * og) for g in range(groups)], np.int64)
    kernel = tiled_gemm(b.dtype, conv_column, load_columns, place_nchw)
    table = tap_table(per_group, height, width, (kh, kw), a.dilation)
    return gemm_step(b, w, x, out, geometry, offsets, bias, res, alpha, kernel, table,
                     (pixels, out_ch))


@cuda.jit
def depthwise_kernel(x, w, out, bias, res, geo, alpha):
    """One output element per thread: ``Σ_{i,j} W[o, 0, i, j]·xp[n, o // mult, ...]``, then
    the epilogue."""
    index = cuda.grid(1)
    if index >= out.size:
        return
    out_h, out_w, out_ch = geo[OUT_HEIGHT], geo[OUT_WIDTH], geo[OUT_CHANNELS]
    height, width, kh, kw = geo[HEIGHT], geo[WIDTH], geo[KH], geo[KW]
    ox, rest = index % out_w, index // out_w
    oy, rest = rest % out_h, rest // out_h
    o, n = rest % out_ch, rest // out_ch
    c = o // (out_ch // geo[CHANNELS])
    y0, x0 = oy * geo[SH] - geo[PAD_TOP], ox * geo[SW] - geo[PAD_LEFT]
    plane, taps = (n * geo[CHANNELS] + c) * height * width, o * kh * kw
    acc = 0.0
    for i in range(kh):
        yy = y0 + i * geo[DH]
        if 0 <= yy < height:
            for j in range(kw):
                xx = x0 + j * geo[DW]
                if 0 <= xx < width:
                    acc += w[taps + i * kw + j] * x[plane + yy * width + xx]
    out[index] = finish(acc, bias, o, geo[GEO_HAS_BIAS] != 0, res, index,
                        geo[GEO_HAS_RES] != 0, geo[GEO_CODE], alpha)


STENCIL_TILE = 16  # output rows and columns per block of the halo-tiled depthwise kernel
HALO = 48  # input rows and columns it stages (the tile's window must fit)


def stencil_extent(attrs, kernel: tuple[int, int]) -> tuple[int, int]:
    """Input rows and columns the windows of a ``STENCIL_TILE``² output tile span."""
    return tuple((STENCIL_TILE - 1) * attrs.stride[i] + (kernel[i] - 1) * attrs.dilation[i] + 1
                 for i in range(2))


@functools.cache
def depthwise_stencil_kernel(dtype: np.dtype):
    """The halo-tiled depthwise convolution for one float dtype: a block of 16 × 16 threads
    computes a 16 × 16 tile of one (image, channel) output plane from the input patch its
    windows span, staged once in shared memory (zero in the padding)."""
    ftype = numba.from_dtype(np.dtype(dtype))

    @cuda.jit
    def depthwise_stencil(x, w, out, bias, res, geo, alpha):
        patch = cuda.shared.array((HALO, HALO), ftype)
        out_h, out_w, out_ch = geo[OUT_HEIGHT], geo[OUT_WIDTH], geo[OUT_CHANNELS]
        height, width, kh, kw = geo[HEIGHT], geo[WIDTH], geo[KH], geo[KW]
        sh, sw, dh, dw = geo[SH], geo[SW], geo[DH], geo[DW]
        tiles_x = (out_w + STENCIL_TILE - 1) // STENCIL_TILE
        oy0 = (cuda.blockIdx.x // tiles_x) * STENCIL_TILE
        ox0 = (cuda.blockIdx.x % tiles_x) * STENCIL_TILE
        o, n = cuda.blockIdx.y, cuda.blockIdx.z
        plane = (n * geo[CHANNELS] + o // (out_ch // geo[CHANNELS])) * height * width
        rows = (STENCIL_TILE - 1) * sh + (kh - 1) * dh + 1
        cols = (STENCIL_TILE - 1) * sw + (kw - 1) * dw + 1
        y_org, x_org = oy0 * sh - geo[PAD_TOP], ox0 * sw - geo[PAD_LEFT]
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        for e in range(ty * STENCIL_TILE + tx, rows * cols, STENCIL_TILE * STENCIL_TILE):
            yy, xx = y_org + e // cols, x_org + e % cols
            v = ftype(0)
            if 0 <= yy < height and 0 <= xx < width:
                v = x[plane + yy * width + xx]
            patch[e // cols, e % cols] = v
        cuda.syncthreads()
        oy, ox = oy0 + ty, ox0 + tx
        if oy < out_h and ox < out_w:
            acc = 0.0
            taps = o * kh * kw
            for i in range(kh):
                for j in range(kw):
                    acc += w[taps + i * kw + j] * patch[ty * sh + i * dh, tx * sw + j * dw]
            index = ((n * out_ch + o) * out_h + oy) * out_w + ox
            out[index] = finish(acc, bias, o, geo[GEO_HAS_BIAS] != 0, res, index,
                                geo[GEO_HAS_RES] != 0, geo[GEO_CODE], alpha)

    return depthwise_stencil


def conv_step(b: Builder, node: Node, res_value, code: int, alpha: float) -> Step:
    """conv2d with its epilogue: depthwise as the halo-tiled stencil (or, when a tile's
    windows span more than the staged patch, one thread per output), anything else the
    implicit GEMM."""
    x, w = b.array(node.inputs[0]), b.array(node.inputs[1])
    bias, res = b.array((node.inputs + [None])[2]), b.array(res_value)
    out = b.array(node.output)
    groups = node.attrs.groups
    if w.shape[1] != 1 or groups != x.shape[1]:
        return implicit_gemm_step(b, node, x, w, out, bias, res, code, alpha)
    geo = cuda.to_device(conv_geometry(x, out, tuple(w.shape), groups, node.attrs,
                                       bias is not None, res is not None, code))
    outf = flat(out)
    args = (flat(x), flat(w), outf, flat(bias) if bias is not None else outf,
            flat(res) if res is not None else outf, geo, float(alpha))
    if max(stencil_extent(node.attrs, tuple(w.shape[2:]))) > HALO:
        return launch(depthwise_kernel, out.size, *args)
    tiles = -(-out.shape[2] // STENCIL_TILE) * -(-out.shape[3] // STENCIL_TILE)
    grid, block = (tiles, out.shape[1], out.shape[0]), (STENCIL_TILE, STENCIL_TILE)
    kernel = depthwise_stencil_kernel(b.dtype)
    return lambda: kernel[grid, block](*args)


@lower(ops.conv2d)
def conv2d(b: Builder, node: Node) -> Step:
    return conv_step(b, node, None, 0, 0.0)


@lower(ops.conv2d_fused)
def conv2d_fused(b: Builder, node: Node) -> Step:
    """conv2d with bias (a folded BatchNorm's shift), residual and activation applied to the
    accumulators (one launch)."""
    a = node.attrs
    code, alpha = (0, 0.0) if a.activation is None else activation_code(a.activation,
                                                                      a.activation_attrs)
    return conv_step(b, node, (node.inputs + [None, None])[3], int(code), alpha)


@cuda.jit
def transpose_kernel(x, w, out, bias, geo):
    """One output element per thread, gathering every (input channel, tap) that lands on it
    (the module docstring)."""
    index = cuda.grid(1)
    if index >= out.size:
        return
    out_h, out_w, out_ch = geo[OUT_HEIGHT], geo[OUT_WIDTH], geo[OUT_CHANNELS]
    height, width, kh, kw = geo[HEIGHT], geo[WIDTH], geo[KH], geo[KW]
    sh, sw, dh, dw = geo[SH], geo[SW], geo[DH], geo[DW]
    cg, og = geo[PER_GROUP], geo[OUT_PER_GROUP]
    ox, rest = index % out_w, index // out_w
    oy, rest = rest % out_h, rest // out_h
    o, n = rest % out_ch, rest // out_ch
    g, co = o // og, o % og
    acc = 0.0
    if geo[GEO_HAS_BIAS] != 0:
        acc += bias[o]
    ty, tx = oy + geo[PAD_TOP], ox + geo[PAD_LEFT]
    for i in range(kh):
        hy = ty - i * dh
        if hy < 0 or hy % sh != 0 or hy // sh >= height:
            continue
        for j in range(kw):
            wx = tx - j * dw
            if wx < 0 or wx % sw != 0 or wx // sw >= width:
                continue
            pixel = (hy // sh) * width + wx // sw
            for ci in range(g * cg, (g + 1) * cg):
                acc += (x[(n * geo[CHANNELS] + ci) * height * width + pixel]
                        * w[((ci * og + co) * kh + i) * kw + j])
    out[index] = acc


@lower(ops.conv_transpose2d)
def conv_transpose2d(b: Builder, node: Node) -> Step:
    x, w = b.array(node.inputs[0]), b.array(node.inputs[1])
    bias, out = b.array((node.inputs + [None])[2]), b.array(node.output)
    groups = node.attrs.groups
    as_conv = (w.shape[1] * groups, w.shape[0] // groups, *w.shape[2:])  # [O, C/G, kh, kw]
    geo = conv_geometry(x, out, as_conv, groups, node.attrs, bias is not None, False, 0)
    outf = flat(out)
    return launch(transpose_kernel, out.size, flat(x), flat(w), outf,
                  flat(bias) if bias is not None else outf, cuda.to_device(geo))


@cuda.jit(device=True, inline=True)
def bilinear(x, plane, height, width, y, xs):
    """``x`` sampled at the real point (y, xs) of the plane starting at ``plane``, zero
    outside the image (docs/semantics.md §1.3)."""
    if y <= -1 or y >= height or xs <= -1 or xs >= width:
        return 0.0
    y0, x0 = math.floor(y), math.floor(xs)
    ly, lx = y - y0, xs - x0
    iy, ix = int(y0), int(x0)
    total = 0.0
    for dy in range(2):
        yy = iy + dy
        wy = ly if dy else 1.0 - ly
        if 0 <= yy < height:
            for dx in range(2):
                xx = ix + dx
                wx = lx if dx else 1.0 - lx
                if 0 <= xx < width:
                    total += wy * wx * x[plane + yy * width + xx]
    return total


@cuda.jit
def deform_columns_kernel(x, offset, mask, has_mask, cols, geo, offset_groups):
    """``cols[n, c·kh·kw + tap, p] = mask·sample(x[n, c], y, x)``, one element per thread."""
    index = cuda.grid(1)
    if index >= cols.size:
        return
    out_h, out_w = geo[OUT_HEIGHT], geo[OUT_WIDTH]
    channels, kh, kw = geo[CHANNELS], geo[KH], geo[KW]
    taps, pixels = kh * kw, out_h * out_w
    p, rest = index % pixels, index // pixels
    tap, rest = rest % taps, rest // taps
    c, n = rest % channels, rest // channels
    oy, ox = p // out_w, p % out_w
    entry = (c // (channels // offset_groups)) * taps + tap
    dy = offset[((n * offset_groups * taps + entry) * 2) * pixels + p]
    dx = offset[((n * offset_groups * taps + entry) * 2 + 1) * pixels + p]
    y = oy * geo[SH] - geo[PAD_TOP] + (tap // kw) * geo[DH] + dy
    xs = ox * geo[SW] - geo[PAD_LEFT] + (tap % kw) * geo[DW] + dx
    height, width = geo[HEIGHT], geo[WIDTH]
    v = bilinear(x, (n * channels + c) * height * width, height, width, y, xs)
    if has_mask:
        v *= mask[(n * offset_groups * taps + entry) * pixels + p]
    cols[index] = v


@lower(ops.deform_conv2d)
def deform_conv2d(b: Builder, node: Node) -> Step:
    """The sampled columns, then ``out[n, g] = W_g·cols[n, g] + b`` as one GEMM launch over
    every (image, group)."""
    x, offset, w, bias, mask = (b.array(v) for v in (node.inputs + [None, None])[:5])
    out = b.array(node.output)
    n_img, channels = x.shape[:2]
    out_ch, per_group, kh, kw = w.shape
    groups, taps, pixels = channels // per_group, kh * kw, out.shape[2] * out.shape[3]
    og, depth = out_ch // groups, per_group * taps
    offset_groups = offset.shape[1] // (2 * taps)
    geo = cuda.to_device(conv_geometry(x, out, tuple(w.shape), groups, node.attrs, False,
                                       False, 0))
    cols = b.scratch((n_img, channels * taps, pixels))
    colsf = flat(cols)
    sample = launch(deform_columns_kernel, cols.size, flat(x), flat(offset),
                    flat(mask) if mask is not None else colsf, mask is not None, colsf, geo,
                    offset_groups)
    table = np.array([(g * og * depth, (n * channels * taps + g * depth) * pixels,
                       (n * out_ch + g * og) * pixels, g * og)
                      for n in range(n_img) for g in range(groups)], np.int64)
    geometry = {M: og, N: pixels, K: depth, SA_M: depth, SA_K: 1, SB_K: pixels, SB_N: 1,
                SC_M: pixels, SC_N: 1, BIAS_M: 1, CODE: 0}
    product = gemm_step(b, w, cols, out, geometry, table, bias, bias_layout=(pixels, out_ch))

    def step() -> None:
        sample()
        product()

    return step
