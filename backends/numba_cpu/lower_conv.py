"""Lowerings of the convolutions: conv2d (and conv2d_fused), conv_transpose2d, deform_conv2d.

Per-op algorithm choice, by timing the candidates at compile time (``Builder.choose``):

- float32 (the default) runs on the register-blocked micro-kernel (``kernels.simd``,
  ``kernels.gemm``): a 1x1/stride-1/unpadded convolution is one GEMM per image read straight
  from the image, every other dense or grouped one im2col per band of output rows + GEMM,
  and a 3x3/stride-1 one may instead be Winograd F(2x2, 3x3), whose 16 GEMMs run on the same
  micro-kernel;
- float64 runs the same structure on numpy's BLAS (``*_blas``);
- a depthwise convolution is a stencil (``kernels.stencil``): flat 3×3 planes, phase planes
  when undilated with equal strides, row by row otherwise.

Bias, a folded BatchNorm, a residual and the activation are applied where the output is
produced (``epilogue``). Packed and transformed weights are derived forms of the weight in the
program state (``Builder.derived``): made once, remade if the weight changes.
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.blas import WORKERS, batched_matmul, parallel_tiles
from cnnir.backends.numba_cpu.blas import matmul as gemm
from cnnir.backends.numba_cpu.epilogue import (
    Epilogue,
    as3d,
    epilogue_step,
    fused_epilogue,
    plain_epilogue,
)
from cnnir.backends.numba_cpu.kernels import activation as ak
from cnnir.backends.numba_cpu.kernels import conv as ck
from cnnir.backends.numba_cpu.kernels import gemm as gk
from cnnir.backends.numba_cpu.kernels import simd
from cnnir.backends.numba_cpu.kernels import stencil as sk
from cnnir.backends.numba_cpu.kernels import winograd as wk
from cnnir.backends.numba_cpu.program import lower
from cnnir.ir import Node, Value


def window_of(attrs, kernel_size: tuple[int, int]) -> tuple[int, ...]:
    """The kernels' window tuple: (kh, kw, sh, sw, pad_top, pad_left, dh, dw)."""
    return (*kernel_size, *attrs.stride, *attrs.padding[:2], *attrs.dilation)


def conv_step(b: Builder, node: Node, x: np.ndarray, weight: Value, out: np.ndarray,
              ep: Epilogue) -> Step:
    """The fastest applicable algorithm for this convolution, chosen by measurement."""
    attrs = node.attrs
    w = b.array(weight)
    channels, (_, per_group, kh, kw) = x.shape[1], w.shape
    if per_group == 1 and attrs.groups == channels:
        return b.choose(node, depthwise_candidates(b, attrs, x, w, out, ep))
    pointwise = (kh, kw, *attrs.stride, attrs.groups) == (1, 1, 1, 1, 1) and not any(attrs.padding)
    candidates = {}
    if b.dtype == np.float32:  # the register-blocked micro-kernel
        if pointwise:
            candidates["pointwise-microkernel"] = pointwise_mk_step(b, x, weight, out, ep)
        else:
            candidates["im2col-microkernel"] = im2col_mk_step(b, attrs, x, weight, out, ep)
    elif pointwise:
        candidates["pointwise-blas"] = pointwise_step(x, w, out, ep)
    else:
        candidates["im2col-blas"] = im2col_step(b, attrs, x, w, out, ep)
    if (kh, kw, *attrs.stride, *attrs.dilation, attrs.groups) == (3, 3, 1, 1, 1, 1, 1):
        candidates["winograd-f2x2-3x3"] = winograd_step(b, attrs, x, weight, out, ep)
    return b.choose(node, candidates)


def depthwise_candidates(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                         ep: Epilogue) -> dict[str, Step]:
    candidates = {}
    same_3x3 = (*w.shape[2:], *attrs.stride, *attrs.dilation, *attrs.padding) == (
        3, 3, 1, 1, 1, 1, 1, 1, 1, 1)
    if same_3x3 and x.shape[3] >= 2 and b.dtype == np.float32:
        candidates["depthwise-3x3-flat"] = depthwise3x3_step(b, x, w, out, ep)
    if attrs.dilation == (1, 1) and attrs.stride[0] == attrs.stride[1]:
        candidates["depthwise-phases"] = depthwise_phases_step(b, attrs, x, w, out, ep)
    else:
        candidates["depthwise-direct"] = depthwise_step(b, attrs, x, w, out, ep)
    return candidates


def pointwise_mk_step(b: Builder, x: np.ndarray, weight: Value, out: np.ndarray,
                      ep: Epilogue) -> Step:
    """1x1, stride 1, unpadded: one GEMM per image read straight from the image."""
    w = b.array(weight)
    n_img, k = x.shape[:2]
    m, p = w.shape[0], x.shape[2] * x.shape[3]
    packed = b.derived([weight], "rows", lambda: simd.pack_rows(w.reshape(m, k)))
    blocks = gk.gemm_blocks(n_img, m, k, p, 0, k * p, m * p)
    scratch = b.scratch((gk.THREADS, gk.scratch_size(k)))
    xf, outf, args = x.reshape(-1), out.reshape(-1), ep.args()
    gemm_kernel = gk.gemm.over(len(blocks))
    return lambda: gemm_kernel(packed, k, xf, p, outf, p, blocks, args, scratch)


def im2col_mk_step(b: Builder, attrs, x: np.ndarray, weight: Value, out: np.ndarray,
                   ep: Epilogue) -> Step:
    """k×k: per band of output rows, im2col into the thread's buffer, then the GEMM."""
    w = b.array(weight)
    out_ch, per_group, kh, kw = w.shape
    groups, k = attrs.groups, per_group * kh * kw
    ow = out.shape[3]
    bands = gk.im2col_bands(x.shape[0], out.shape[2], ow, out_ch // groups, k)
    width = int(max((bands[:, 2] - bands[:, 1]).max() * ow, 1))
    packed = b.derived([weight], ("rows", groups),
                       lambda: simd.pack_rows(w.reshape(out_ch, k), groups))
    cols = b.scratch((gk.THREADS, k, width))
    scratch = b.scratch((gk.THREADS, gk.scratch_size(k)))
    window, args = window_of(attrs, (kh, kw)), ep.args()
    filled = np.zeros(gk.THREADS, np.int64)
    im2col_gemm = gk.im2col_gemm.over(len(bands))
    return lambda: im2col_gemm(packed, x, out, bands, window, args, cols, scratch, filled)


def padded_extent(attrs, x: np.ndarray, kernel_size: tuple[int, int],
                  out: np.ndarray) -> tuple[int, int]:
    """Height and width of the zero-padded input a strided, dilated window reads."""
    pad_top, pad_left = attrs.padding[:2]
    (sh, sw), (dh, dw) = attrs.stride, attrs.dilation
    (height, width), (kh, kw), (oh, ow) = x.shape[2:], kernel_size, out.shape[2:]
    return (max((oh - 1) * sh + (kh - 1) * dh + 1, pad_top + height),
            max((ow - 1) * sw + (kw - 1) * dw + 1, pad_left + width))


def depthwise_step(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                   ep: Epilogue) -> Step:
    """Any depthwise conv (dilated, unequal strides): a padded plane, row by row."""
    hp, wp = padded_extent(attrs, x, w.shape[2:], out)
    # zero borders stay zero: this buffer's users all write the same interior
    padded = b.scratch((gk.THREADS, hp, wp), owner=("depthwise", *attrs.padding[:2],
                                                     *x.shape[2:]))
    mult = w.shape[0] // x.shape[1]
    window, args = window_of(attrs, w.shape[2:]), ep.args()
    kernel = sk.depthwise.sized(out.size * w.shape[2] * w.shape[3])
    return lambda: kernel(x, w, out, mult, window, args, padded)


def depthwise3x3_step(b: Builder, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                      ep: Epilogue) -> Step:
    """3×3/stride 1/padding 1 depthwise conv on flat planes (``sk.depthwise3x3_same``)."""
    height, width = x.shape[2:]
    slack = simd.LANES  # the last vector of a plane runs past it
    planes = b.scratch((gk.THREADS, (height + 2) * width + 2 + slack),
                       owner=("depthwise-3x3", height, width))  # zero outside the interior
    acc = b.scratch((gk.THREADS, height * width + slack), owner="depthwise-acc")
    mult, args = w.shape[0] // x.shape[1], ep.args()
    kernel = sk.depthwise3x3_same.sized(out.size * 9)
    return lambda: kernel(x, w, out, mult, args, planes, acc)


def phase_scratch(b: Builder, attrs, x: np.ndarray, kernel_size: tuple[int, int],
                  out: np.ndarray, border: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-thread phase planes (borders ``border``, only interiors ever written) and the
    accumulator of a stencil over phase planes (``kernels.stencil``)."""
    pad_top, pad_left = attrs.padding[:2]
    stride, (kh, kw), oh = attrs.stride[0], kernel_size, out.shape[2]
    hp, wp = padded_extent(attrs, x, kernel_size, out)
    hq, wq = -(-hp // stride), -(-wp // stride)
    # The flat tap reads of the last output row run up to (kh − 1)/s rows and (kw − 1)/s
    # columns past oh·wq; the padding keeps them inside the border.
    size = max(hq, oh + (kh - 1) // stride + 1) * wq + kw
    phases = b.scratch((gk.THREADS, stride * stride, size),
                       owner=("phases", border, pad_top, pad_left, wq, *x.shape[2:]))
    phases.fill(border)
    acc = b.scratch((gk.THREADS, oh * wq), owner="phases-acc")
    return phases, acc


def depthwise_phases_step(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                          ep: Epilogue) -> Step:
    """An undilated depthwise conv with equal strides over phase planes."""
    phases, acc = phase_scratch(b, attrs, x, w.shape[2:], out, 0.0)
    mult, stride, args = w.shape[0] // x.shape[1], attrs.stride[0], ep.args()
    pad_top, pad_left = attrs.padding[:2]
    kernel = sk.depthwise_phases.sized(out.size * w.shape[2] * w.shape[3])
    return lambda: kernel(x, w, out, mult, stride, pad_top, pad_left, args, phases, acc)


def pointwise_step(x: np.ndarray, w: np.ndarray, out: np.ndarray, ep: Epilogue) -> Step:
    """1x1, stride 1, unpadded, on BLAS (float64): a GEMM per band of output rows (the bands
    of ``gk.im2col_bands``) straight from the input, each with its epilogue while in cache."""
    w2 = w.reshape(w.shape[0], x.shape[1])
    x3, out3 = as3d(x), as3d(out)
    ow = out.shape[3]
    bands = gk.im2col_bands(x.shape[0], out.shape[2], ow, w.shape[0], x.shape[1]).tolist()
    finish = block_epilogue(ep, out)

    def run_range(worker: int, lo: int, hi: int) -> None:
        for n, y0, y1, o0, o1 in bands[lo:hi]:
            p0, p1 = y0 * ow, y1 * ow
            np.matmul(w2[o0:o1], x3[n, :, p0:p1], out=out3[n, o0:o1, p0:p1])
            finish(n, o0, o1, p0, p1)

    flops = 2 * w2.size * x3.shape[0] * x3.shape[2]
    return lambda: parallel_tiles(len(bands), run_range, flops)


def im2col_step(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                ep: Epilogue) -> Step:
    """Any other convolution on BLAS (float64): per band of output rows (``gk.im2col_bands``),
    im2col of each group into the worker's own buffer, one GEMM per group into the output,
    then the epilogue, all before the band leaves the cache."""
    out_ch, per_group, kh, kw = w.shape
    groups = attrs.groups
    ow = out.shape[3]
    og, k = out_ch // groups, per_group * kh * kw
    bands = gk.im2col_bands(x.shape[0], out.shape[2], ow, og, k).tolist()
    width = max((y1 - y0) * ow for _, y0, y1, _, _ in bands)
    cols = [b.scratch((k, width), owner=i) for i in range(WORKERS)]
    w2 = w.reshape(out_ch, k)
    out3 = as3d(out)
    window = window_of(attrs, (kh, kw))
    finish = block_epilogue(ep, out)
    flops = 2 * w2.size * out3.shape[0] * out3.shape[2]

    def run_range(worker: int, lo: int, hi: int) -> None:
        buffer = cols[worker]
        for n, y0, y1, r0, r1 in bands[lo:hi]:
            p0, p1 = y0 * ow, y1 * ow
            for g in range(groups):
                ck.im2col_rows(x, buffer, n, g * per_group, per_group, window, y0, y1, ow)
                o0, o1 = g * og + r0, g * og + r1
                np.matmul(w2[o0:o1], buffer[:, :p1 - p0], out=out3[n, o0:o1, p0:p1])
                finish(n, o0, o1, p0, p1)

    return lambda: parallel_tiles(len(bands), run_range, flops)


def block_epilogue(ep: Epilogue, out: np.ndarray):
    """``finish(n, o0, o1, p0, p1)``: the epilogue in place on channels [o0, o1) × pixels
    [p0, p1) of image n, right after a BLAS GEMM wrote them (nothing when trivial)."""
    channels, pixels = out.shape[1], out[0, 0].size
    outf, args = out.reshape(-1), ep.args()

    def finish(n: int, o0: int, o1: int, p0: int, p1: int) -> None:
        if not ep.trivial:
            ak.epilogue_block(outf, (n * channels + o0) * pixels + p0, o1 - o0, pixels,
                              p1 - p0, o0, args)

    return finish


def winograd_step(b: Builder, attrs, x: np.ndarray, weight: Value, out: np.ndarray,
                  ep: Epilogue) -> Step:
    """Winograd F(2x2, 3x3): input tiles, 16 GEMMs, output tiles with the epilogue."""
    w = b.array(weight)
    n_img, channels = x.shape[:2]
    out_ch, oh, ow = w.shape[0], out.shape[2], out.shape[3]
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    tiles = n_img * th * tw
    v = b.scratch((16, channels, tiles))
    m = b.scratch((16, out_ch, tiles), owner=-1)  # never the same buffer as v
    input_tiles = winograd_input_step(b, attrs, x, v, th, tw)
    output_tiles = winograd_output_step(b, attrs, x, m, out, ep, th, tw)
    if b.dtype == np.float32:
        packed = b.derived([weight], "winograd-rows", lambda: simd.pack_rows(
            wk.transform_weights(w, b.dtype).reshape(16 * out_ch, channels), 16))
        blocks = gk.gemm_blocks(16, out_ch, channels, tiles,
                                simd.padded_rows(out_ch) * channels, channels * tiles,
                                out_ch * tiles)
        scratch = b.scratch((gk.THREADS, gk.scratch_size(channels)))
        identity = Epilogue(np.ones(out_ch, b.dtype), np.zeros(out_ch, b.dtype)).args()
        vf, mf = v.reshape(-1), m.reshape(-1)
        gemm_kernel = gk.gemm.over(len(blocks))

        def products() -> None:
            gemm_kernel(packed, channels, vf, tiles, mf, tiles, blocks, identity, scratch)
    else:
        u = b.derived([weight], "winograd", lambda: wk.transform_weights(w, b.dtype))

        def products() -> None:
            batched_matmul(u, v, m)

    def winograd() -> None:
        input_tiles()
        products()
        output_tiles()

    return winograd


def winograd_input_step(b: Builder, attrs, x: np.ndarray, v: np.ndarray, th: int,
                        tw: int) -> Step:
    """``v`` = the transformed input tiles: vectorized over a row of tiles when it is wide
    enough, one tile at a time otherwise."""
    pad_top, pad_left = attrs.padding[:2]
    if tw < wk.VECTOR_MIN_TILES_IN:
        scalar = wk.input_tiles_scalar.sized(v.size)
        return lambda: scalar(x, v, pad_top, pad_left, th, tw)
    work = winograd_scratch(b, x, pad_left, tw)
    kernel = wk.input_tiles.sized(v.size)
    return lambda: kernel(x, v, pad_top, pad_left, th, tw, work["rows"], work["split"],
                          work["block"])


def winograd_output_step(b: Builder, attrs, x: np.ndarray, m: np.ndarray, out: np.ndarray,
                         ep: Epilogue, th: int, tw: int) -> Step:
    """``out`` = the output tiles of the products ``m``, through the epilogue."""
    args = ep.args()
    if tw < wk.VECTOR_MIN_TILES_OUT:
        scalar = wk.output_tiles_scalar.sized(m.size)
        return lambda: scalar(m, out, th, tw, args)
    work = winograd_scratch(b, x, attrs.padding[1], tw)
    kernel = wk.output_tiles.sized(m.size)
    return lambda: kernel(m, out, th, tw, args, work["block"], work["out_rows"])


def winograd_scratch(b: Builder, x: np.ndarray, pad_left: int, tw: int) -> dict:
    return {key: b.scratch((gk.THREADS, *shape), owner=("winograd", key))
            for key, shape in wk.scratch_shapes(x.shape[3], pad_left, tw).items()}


@lower(ops.conv2d)
def conv2d(b: Builder, node: Node) -> Step:
    x, weight, bias = node.inputs
    out = b.array(node.output)
    return conv_step(b, node, b.array(x), weight, out,
                     plain_epilogue(b, out.shape[1], b.array(bias)))


@lower(ops.conv2d_fused)
def conv2d_fused(b: Builder, node: Node) -> Step:
    out = b.array(node.output)
    return conv_step(b, node, b.array(node.inputs[0]), node.inputs[1], out,
                     fused_epilogue(b, node, out.shape[1]))


@lower(ops.conv_transpose2d)
def conv_transpose2d(b: Builder, node: Node) -> Step:
    """Per image and group: ``cols = Wgᵀ·x_g`` (GEMM), then col2im scatters into the output."""
    x, weight, bias = node.inputs
    x, w, bias = b.array(x), b.array(weight), b.array(bias)
    out = b.array(node.output)
    n_img, c_in, height, width = x.shape
    groups = node.attrs.groups
    cg, og, kh, kw = c_in // groups, w.shape[1], w.shape[2], w.shape[3]
    wt = b.derived([weight], "transposed", lambda: np.ascontiguousarray(
        w.reshape(groups, cg, og * kh * kw).transpose(0, 2, 1)))
    cols = b.scratch((og * kh * kw, height * width))
    fill = (bias if bias is not None else np.zeros(out.shape[1], out.dtype))[:, None, None]
    x3 = as3d(x)
    window = window_of(node.attrs, (kh, kw))
    col2im = ck.col2im.sized(cols.size)

    def step() -> None:
        out[:] = fill
        for n in range(n_img):
            for g in range(groups):
                gemm(wt[g], x3[n, g * cg:(g + 1) * cg], cols)
                col2im(cols, out, n, g * og, og, window, height, width)

    return step


@lower(ops.deform_conv2d)
def deform_conv2d(b: Builder, node: Node) -> Step:
    """Per image: the bilinear-sampling im2col, then one GEMM per group, then the bias."""
    x, offset, w, bias, mask = (b.array(v) for v in (node.inputs + [None])[:5])
    out = b.array(node.output)
    n_img, channels = x.shape[:2]
    out_ch, per_group, kh, kw = w.shape
    groups, taps = channels // per_group, kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    og = out_ch // groups
    cols = b.scratch((channels * taps, out.shape[2] * out.shape[3]))
    w2 = w.reshape(out_ch, per_group * taps)
    out3 = as3d(out)
    add_bias = epilogue_step(out, out, plain_epilogue(b, out_ch, bias))
    mask_arr = mask if mask is not None else np.zeros((1, 1, 1, 1), out.dtype)
    window = window_of(node.attrs, (kh, kw))
    deform_im2col = ck.deform_im2col.sized(cols.size)

    def step() -> None:
        for n in range(n_img):
            deform_im2col(x, offset, mask_arr, mask is not None, cols, n, window, offset_groups)
            for g in range(groups):
                rows = slice(g * per_group * taps, (g + 1) * per_group * taps)
                gemm(w2[g * og:(g + 1) * og], cols[rows], out3[n, g * og:(g + 1) * og])
        if bias is not None:
            add_bias()

    return step
