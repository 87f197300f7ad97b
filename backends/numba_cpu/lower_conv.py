"""Lowerings of the compute-heavy ops: convolutions, linear, matmul and batch norm.

Per-op algorithm choice, by timing the candidates at compile time (``Builder.choose``):

- float32 (the default) runs on the register-blocked micro-kernel (``simd``, ``gemm_kernels``):
  a 1x1/stride-1/unpadded convolution is one GEMM per image read straight from the image,
  every other dense or grouped one im2col per band of output rows + GEMM, and a 3x3/stride-1
  one may instead be Winograd F(2x2, 3x3), whose 16 GEMMs run on the same micro-kernel;
- float64 runs the same structure on numpy's BLAS (``*_blas``);
- a depthwise convolution is a direct stencil: over phase planes (``depthwise-phases``) when
  undilated with equal strides, row by row otherwise (``depthwise-direct``).

Bias, a folded BatchNorm, a residual and the activation are applied where the output is
produced: in the micro-kernel's registers, or in the stencil's or transform's last pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnir import ops
from cnnir.backends.numba_cpu import act_kernels as ak
from cnnir.backends.numba_cpu import conv_kernels as ck
from cnnir.backends.numba_cpu import gemm_kernels as gk
from cnnir.backends.numba_cpu import simd
from cnnir.backends.numba_cpu import winograd_kernels as wk
from cnnir.backends.numba_cpu.gemm import WORKERS, batched_matmul, parallel_tiles
from cnnir.backends.numba_cpu.gemm import matmul as gemm
from cnnir.backends.numba_cpu.plan import Builder, Step, lower
from cnnir.ir import Node


@dataclass
class Epilogue:
    """``act(scale·y + shift (+ residual))`` per output channel."""

    scale: np.ndarray
    shift: np.ndarray
    residual: np.ndarray | None = None
    code: int = 0
    alpha: float = 0.0

    @property
    def trivial(self) -> bool:
        return (self.residual is None and self.code == 0 and not self.shift.any()
                and bool((self.scale == 1).all()))


def plain_epilogue(b: Builder, channels: int, bias: np.ndarray | None) -> Epilogue:
    shift = bias if bias is not None else np.zeros(channels, b.dtype)
    return Epilogue(np.ones(channels, b.dtype), np.ascontiguousarray(shift, b.dtype))


def as3d(a: np.ndarray) -> np.ndarray:
    """[N, C, ...] -> [N, C, P] view."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def run_epilogue(src3: np.ndarray, out3: np.ndarray, ep: Epilogue) -> None:
    res = as3d(ep.residual) if ep.residual is not None else ak.dummy(out3.dtype)
    ak.epilogue.sized(out3.size)(src3, ep.scale, ep.shift, res, ep.residual is not None, out3,
                                 ep.code, ep.alpha)


def conv_step(b: Builder, node: Node, x: np.ndarray, w: np.ndarray, out: np.ndarray,
              ep: Epilogue) -> Step:
    """The fastest applicable algorithm for this convolution, chosen by measurement."""
    attrs = node.attrs
    channels, (_, per_group, kh, kw) = x.shape[1], w.shape
    if per_group == 1 and attrs.groups == channels:
        return b.choose(node, depthwise_candidates(b, attrs, x, w, out, ep))
    candidates = {}
    pointwise = (kh, kw, *attrs.stride, attrs.groups) == (1, 1, 1, 1, 1) and not any(attrs.padding)
    if b.dtype == np.float32:  # the register-blocked micro-kernel
        if pointwise:
            candidates["pointwise-microkernel"] = pointwise_mk_step(b, x, w, out, ep)
        else:
            candidates["im2col-microkernel"] = im2col_mk_step(b, attrs, x, w, out, ep)
    elif pointwise:
        candidates["pointwise-blas"] = pointwise_step(x, w, out, ep)
    else:
        candidates["im2col-blas"] = im2col_step(b, attrs, x, w, out, ep)
    if (kh, kw, *attrs.stride, *attrs.dilation, attrs.groups) == (3, 3, 1, 1, 1, 1, 1):
        candidates["winograd-f2x2-3x3"] = winograd_step(b, attrs, x, w, out, ep)
    return b.choose(node, candidates)


def depthwise_candidates(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                         ep: Epilogue) -> dict[str, Step]:
    candidates = {}
    if (*w.shape[2:], *attrs.stride, *attrs.dilation, *attrs.padding) == (3, 3, 1, 1, 1, 1,
                                                                         1, 1, 1, 1) \
            and x.shape[3] >= 2:
        candidates["depthwise-3x3-flat"] = depthwise3x3_step(b, x, w, out, ep)
    if attrs.dilation == (1, 1) and attrs.stride[0] == attrs.stride[1]:
        candidates["depthwise-phases"] = window_phases_step(b, attrs, x, w, out, ep)
    else:
        candidates["depthwise-direct"] = depthwise_step(b, attrs, x, w, out, ep)
    return candidates


def _flat_residual(ep: Epilogue, dtype: np.dtype) -> np.ndarray:
    return ep.residual.reshape(-1) if ep.residual is not None else np.zeros(1, dtype)


def pointwise_mk_step(b: Builder, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                      ep: Epilogue) -> Step:
    """1x1, stride 1, unpadded: one GEMM per image read straight from the image."""
    n_img, k = x.shape[:2]
    m, p = w.shape[0], x.shape[2] * x.shape[3]
    ap = b.pack((id(w), "rows"), lambda: simd.pack_rows(w.reshape(m, k)))
    blocks = gk.gemm_blocks(n_img, m, k, p, 0, k * p, m * p)
    scratch = b.scratch((gk.THREADS, gk.scratch_size(k)))
    xf, outf, res = x.reshape(-1), out.reshape(-1), _flat_residual(ep, out.dtype)
    gemm = gk.gemm.over(len(blocks))
    return lambda: gemm(ap, k, xf, p, outf, p, blocks, ep.scale, ep.shift, res,
                        ep.residual is not None, ep.code, ep.alpha, scratch)


def im2col_mk_step(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                   ep: Epilogue) -> Step:
    """k×k: per band of output rows, im2col into the thread's buffer, then the GEMM."""
    out_ch, per_group, kh, kw = w.shape
    groups, k = attrs.groups, per_group * kh * kw
    oh, ow = out.shape[2], out.shape[3]
    bands = gk.im2col_bands(x.shape[0], oh, ow, out_ch // groups, k)
    width = int(max((bands[:, 2] - bands[:, 1]).max() * ow, 1))
    ap = b.pack((id(w), "rows", groups),
                lambda: simd.pack_rows(w.reshape(out_ch, k), groups))
    cols = b.scratch((gk.THREADS, k, width))
    scratch = b.scratch((gk.THREADS, gk.scratch_size(k)))
    res = _residual4(ep, out.dtype)
    pt, pl = attrs.padding[:2]
    (sh, sw), (dh, dw) = attrs.stride, attrs.dilation
    im2col_gemm = gk.im2col_gemm.over(len(bands))
    filled = np.zeros(gk.THREADS, np.int64)
    return lambda: im2col_gemm(ap, x, cols, out, bands, ep.scale, ep.shift, res,
                               ep.residual is not None, ep.code, ep.alpha, scratch,
                               kh, kw, sh, sw, pt, pl, dh, dw, filled)


def _residual4(ep: Epilogue, dtype: np.dtype) -> np.ndarray:
    return ep.residual if ep.residual is not None else ak.dummy(dtype)[None]


def _padded_extent(attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray) -> tuple[int, int]:
    """Height and width of the zero-padded input a strided, dilated window reads."""
    pt, pl = attrs.padding[:2]
    (sh, sw), (dh, dw) = attrs.stride, attrs.dilation
    (height, width), (kh, kw), (oh, ow) = x.shape[2:], w.shape[2:], out.shape[2:]
    return (max((oh - 1) * sh + (kh - 1) * dh + 1, pt + height),
            max((ow - 1) * sw + (kw - 1) * dw + 1, pl + width))


def depthwise_step(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                   ep: Epilogue) -> Step:
    """Any depthwise conv (dilated, unequal strides): a padded plane, row by row."""
    pt, pl = attrs.padding[:2]
    (sh, sw), (dh, dw) = attrs.stride, attrs.dilation
    hp, wp = _padded_extent(attrs, x, w, out)
    # zero borders stay zero: this buffer's users all write the same interior
    padded = b.scratch((gk.THREADS, hp, wp), owner=("depthwise", pt, pl, *x.shape[2:]))
    mult = w.shape[0] // x.shape[1]
    res = _residual4(ep, out.dtype)
    depthwise = ck.depthwise.sized(out.size * w.shape[2] * w.shape[3])
    return lambda: depthwise(x, w, ep.scale, ep.shift, res, ep.residual is not None,
                             out, mult, sh, sw, pt, pl, dh, dw, ep.code, ep.alpha, padded)


def depthwise3x3_step(b: Builder, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                      ep: Epilogue) -> Step:
    """3×3/stride 1/padding 1 depthwise conv on flat planes (``ck.depthwise3x3_same``)."""
    height, width = x.shape[2:]
    slack = simd.LANES  # the last vector of a plane runs past it
    planes = b.scratch((gk.THREADS, (height + 2) * width + 2 + slack),
                       owner=("depthwise-3x3", height, width))  # zero outside the interior
    acc = b.scratch((gk.THREADS, height * width + slack), owner="depthwise-acc")
    mult = w.shape[0] // x.shape[1]
    res = _residual4(ep, out.dtype)
    kernel = ck.depthwise3x3_same.sized(out.size * 9)
    return lambda: kernel(x, w, ep.scale, ep.shift, res, ep.residual is not None, out, mult,
                          ep.code, ep.alpha, planes, acc)


def window_phases_step(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                       ep: Epilogue, is_max: bool = False) -> Step:
    """An undilated depthwise conv, or max pool, with equal strides over stride² phase planes
    (``ck.window_phases``)."""
    pt, pl = attrs.padding[:2]
    stride = attrs.stride[0]
    kh, kw = w.shape[2:]
    oh = out.shape[2]
    hp, wp = _padded_extent(attrs, x, w, out)
    hq, wq = -(-hp // stride), -(-wp // stride)
    # The flat tap reads of the last output row run up to (kh − 1)/s rows and (kw − 1)/s
    # columns past oh·wq; the padding keeps them inside the border.
    size = max(hq, oh + (kh - 1) // stride + 1) * wq + kw
    phases = b.scratch((gk.THREADS, stride * stride, size),
                       owner=("window-phases", is_max, pt, pl, wq, *x.shape[2:]))
    if is_max:
        phases.fill(-np.inf)  # borders stay −∞: this buffer's users all write one interior
    acc = b.scratch((gk.THREADS, oh * wq), owner="window-acc")
    mult = w.shape[0] // x.shape[1]
    res = _residual4(ep, out.dtype)
    kernel = ck.window_phases.sized(out.size * kh * kw)
    return lambda: kernel(x, w, ep.scale, ep.shift, res, ep.residual is not None, out, mult,
                          stride, pt, pl, ep.code, ep.alpha, phases, acc, is_max)


class TiledEpilogue:
    """The epilogue applied in place to one block: ``out[n, o0:o1, p0:p1]``."""

    def __init__(self, ep: Epilogue, out3: np.ndarray) -> None:
        self.ep = ep
        self.out3 = out3
        self.res3 = as3d(ep.residual) if ep.residual is not None else None
        self.dummy = np.zeros((1, 1), out3.dtype)

    def __call__(self, n: int, o0: int, o1: int, p0: int, p1: int) -> None:
        ep = self.ep
        if ep.trivial:
            return
        res = self.res3[n] if self.res3 is not None else self.dummy
        ak.epilogue_tile(self.out3[n], o0, o1, p0, p1, ep.scale, ep.shift, res,
                         self.res3 is not None, ep.code, ep.alpha)


def pointwise_step(x: np.ndarray, w: np.ndarray, out: np.ndarray, ep: Epilogue) -> Step:
    """1x1, stride 1, unpadded, on BLAS (float64): a GEMM per band of output rows (the bands
    of ``gk.im2col_bands``) straight from the input, each with its epilogue while in cache."""
    w2 = w.reshape(w.shape[0], x.shape[1])
    x3, out3 = as3d(x), as3d(out)
    ow = out.shape[3]
    bands = gk.im2col_bands(x.shape[0], out.shape[2], ow, w.shape[0], x.shape[1]).tolist()
    epilogue = TiledEpilogue(ep, out3)

    def run_range(worker: int, lo: int, hi: int) -> None:
        for n, y0, y1, o0, o1 in bands[lo:hi]:
            p0, p1 = y0 * ow, y1 * ow
            np.matmul(w2[o0:o1], x3[n, :, p0:p1], out=out3[n, o0:o1, p0:p1])
            epilogue(n, o0, o1, p0, p1)

    flops = 2 * w2.size * x3.shape[0] * x3.shape[2]
    return lambda: parallel_tiles(len(bands), run_range, flops)


def im2col_step(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                ep: Epilogue) -> Step:
    """Any other convolution on BLAS (float64): per band of output rows (``gk.im2col_bands``),
    im2col of each group into the worker's own buffer, one GEMM per group into the output,
    then the epilogue, all before the band leaves the cache."""
    out_ch, per_group, kh, kw = w.shape
    groups = attrs.groups
    pt, pl = attrs.padding[:2]
    (sh, sw), (dh, dw) = attrs.stride, attrs.dilation
    oh, ow = out.shape[2], out.shape[3]
    og, k = out_ch // groups, per_group * kh * kw
    bands = gk.im2col_bands(x.shape[0], oh, ow, og, k).tolist()
    width = max((y1 - y0) * ow for _, y0, y1, _, _ in bands)
    cols = [b.scratch((k, width), owner=i) for i in range(WORKERS)]
    w2 = w.reshape(out_ch, k)
    out3 = as3d(out)
    epilogue = TiledEpilogue(ep, out3)
    flops = 2 * w2.size * out3.shape[0] * out3.shape[2]

    def run_range(worker: int, lo: int, hi: int) -> None:
        buffer = cols[worker]
        for n, y0, y1, r0, r1 in bands[lo:hi]:
            p0, p1 = y0 * ow, y1 * ow
            for g in range(groups):
                ck.im2col_rows(x, buffer, n, g * per_group, per_group, kh, kw, sh, sw, pt, pl,
                               dh, dw, y0, y1, ow)
                o0, o1 = g * og + r0, g * og + r1
                np.matmul(w2[o0:o1], buffer[:, :p1 - p0], out=out3[n, o0:o1, p0:p1])
                epilogue(n, o0, o1, p0, p1)

    return lambda: parallel_tiles(len(bands), run_range, flops)


def winograd_step(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                  ep: Epilogue) -> Step:
    """Winograd F(2x2, 3x3): input tiles, 16 GEMMs, output tiles with the epilogue."""
    n_img, channels = x.shape[:2]
    oh, ow = out.shape[2], out.shape[3]
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    tiles = n_img * th * tw
    u = b.pack((id(w), "winograd"), lambda: wk.transform_weights(w, b.dtype))
    pt, pl = attrs.padding[:2]
    v = b.scratch((16, channels, tiles))
    m = b.scratch((16, w.shape[0], tiles), owner=-1)  # never the same buffer as v
    res = _residual4(ep, out.dtype)
    work = {key: b.scratch((gk.THREADS, *shape), owner=("winograd", key))
            for key, shape in wk.scratch_shapes(x.shape[3], pl, tw).items()}
    if tw >= wk.VECTOR_MIN_TILES_IN:
        input_kernel = wk.input_tiles.sized(v.size)

        def input_tiles() -> None:
            input_kernel(x, v, pt, pl, th, tw, work["rows"], work["split"], work["block"])
    else:
        input_scalar = wk.input_tiles_scalar.sized(v.size)

        def input_tiles() -> None:
            input_scalar(x, v, pt, pl, th, tw)

    if tw >= wk.VECTOR_MIN_TILES_OUT:
        output_kernel = wk.output_tiles.sized(m.size)

        def output_tiles() -> None:
            output_kernel(m, out, ep.scale, ep.shift, res, ep.residual is not None, th, tw,
                          ep.code, ep.alpha, work["block"], work["out_rows"])
    else:
        output_scalar = wk.output_tiles_scalar.sized(m.size)

        def output_tiles() -> None:
            output_scalar(m, out, ep.scale, ep.shift, res, ep.residual is not None, th, tw,
                          ep.code, ep.alpha)

    if b.dtype == np.float32:
        out_ch, channels = w.shape[0], w.shape[1]
        ap = b.pack((id(w), "winograd-rows"),
                    lambda: simd.pack_rows(u.reshape(16 * out_ch, channels), 16))
        blocks = gk.gemm_blocks(16, out_ch, channels, tiles, simd.padded_rows(out_ch) * channels,
                                channels * tiles, out_ch * tiles)
        scratch = b.scratch((gk.THREADS, gk.scratch_size(channels)))
        ones, zeros = np.ones(out_ch, b.dtype), np.zeros(out_ch, b.dtype)
        vf, mf, no_res = v.reshape(-1), m.reshape(-1), np.zeros(1, b.dtype)
        gemm = gk.gemm.over(len(blocks))

        def products() -> None:
            gemm(ap, channels, vf, tiles, mf, tiles, blocks, ones, zeros, no_res, False, 0, 0.0,
                 scratch)
    else:
        def products() -> None:
            batched_matmul(u, v, m)

    def winograd() -> None:
        input_tiles()
        products()
        output_tiles()

    return winograd


@lower(ops.conv2d)
def conv2d(b: Builder, node: Node) -> Step:
    x, w, bias = (b.array(v) for v in node.inputs)
    out = b.array(node.output)
    return conv_step(b, node, x, w, out, plain_epilogue(b, w.shape[0], bias))


@lower(ops.conv_transpose2d)
def conv_transpose2d(b: Builder, node: Node) -> Step:
    """Per image and group: ``cols = Wgᵀ·x_g`` (GEMM), then col2im scatters into the output."""
    x, w, bias = (b.array(v) for v in node.inputs)
    out = b.array(node.output)
    a = node.attrs
    n_img, c_in, height, width = x.shape
    groups = a.groups
    cg, og, kh, kw = c_in // groups, w.shape[1], w.shape[2], w.shape[3]
    wt = b.pack((id(w), "convT"), lambda: np.ascontiguousarray(
        w.reshape(groups, cg, og * kh * kw).transpose(0, 2, 1)))
    cols = b.scratch((og * kh * kw, height * width))
    fill = (bias if bias is not None else np.zeros(out.shape[1], out.dtype))[:, None, None]
    x3 = as3d(x)
    col2im = ck.col2im.sized(cols.size)

    def step() -> None:
        out[:] = fill
        for n in range(n_img):
            for g in range(groups):
                gemm(wt[g], x3[n, g * cg:(g + 1) * cg], cols)
                col2im(cols, out, n, g * og, og, kh, kw, a.stride[0], a.stride[1],
                          a.padding[0], a.padding[1], a.dilation[0], a.dilation[1],
                          height, width)

    return step


@lower(ops.deform_conv2d)
def deform_conv2d(b: Builder, node: Node) -> Step:
    x, offset, w, bias, mask = (b.array(v) for v in (node.inputs + [None])[:5])
    out = b.array(node.output)
    a = node.attrs
    n_img, channels = x.shape[:2]
    out_ch, per_group, kh, kw = w.shape
    groups, taps = channels // per_group, kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    og = out_ch // groups
    cols = b.scratch((channels * taps, out.shape[2] * out.shape[3]))
    w2 = w.reshape(out_ch, per_group * taps)
    out3 = as3d(out)
    ep = plain_epilogue(b, out_ch, bias)
    mask_arr = mask if mask is not None else np.zeros((1, 1, 1, 1), out.dtype)
    deform_im2col = ck.deform_im2col.sized(cols.size)

    def step() -> None:
        for n in range(n_img):
            deform_im2col(x, offset, mask_arr, mask is not None, cols, n, kh, kw,
                             a.stride[0], a.stride[1], a.padding[0], a.padding[1],
                             a.dilation[0], a.dilation[1], offset_groups)
            for g in range(groups):
                rows = slice(g * per_group * taps, (g + 1) * per_group * taps)
                gemm(w2[g * og:(g + 1) * og], cols[rows], out3[n, g * og:(g + 1) * og])
        if not ep.trivial:
            run_epilogue(out3, out3, ep)

    return step


def linear_step(b: Builder, x: np.ndarray, w: np.ndarray, shift: np.ndarray | None,
                out2: np.ndarray) -> Step:
    """``out2 = x·wᵀ (+ shift)``: a few rows stream the weights once (``linear_small_batch``);
    more rows are a BLAS GEMM on the pre-transposed weights."""
    x2 = x.reshape(-1, w.shape[1])
    if x2.shape[0] <= gk.SMALL_BATCH:
        shift = shift if shift is not None else np.zeros(w.shape[0], b.dtype)
        kernel = gk.linear_small_batch.sized(w.size)
        zero = b.dtype.type(0)
        return lambda: kernel(x2, w, shift, out2, zero)
    wt = b.pack((id(w), "T"), lambda: np.ascontiguousarray(w.T))

    def step() -> None:
        gemm(x2, wt, out2)
        if shift is not None:
            np.add(out2, shift, out=out2)

    return step


@lower(ops.linear)
def linear(b: Builder, node: Node) -> Step:
    x, w, bias = (b.array(v) for v in node.inputs)
    out = b.array(node.output)
    return linear_step(b, x, w, bias, out.reshape(-1, w.shape[0]))


@lower(ops.matmul)
def matmul(b: Builder, node: Node) -> Step:
    x, y = (b.array(v) for v in node.inputs)
    out = b.array(node.output)
    return lambda: np.matmul(x, y, out=out)


@lower(ops.batch_norm)
def batch_norm(b: Builder, node: Node) -> Step:
    """Eval: a precomputed per-channel scale and shift. Batch statistics (training, or no
    running stats): biased mean and variance over every axis but the channels."""
    x, rm, rv, gamma, beta = (b.array(v) for v in node.inputs)
    out = b.array(node.output)
    a = node.attrs
    channels = x.shape[1]
    g64 = gamma.astype(np.float64) if gamma is not None else np.ones(channels)
    b64 = beta.astype(np.float64) if beta is not None else np.zeros(channels)
    x3, out3 = as3d(x), as3d(out)
    stats = [v for v in node.inputs[1:] if v is not None]
    if not (a.training or rm is None) and not all(v.is_constant for v in stats):
        def running_stats() -> None:  # statistics fed as graph inputs: read them per call
            g = gamma.astype(np.float64) if gamma is not None else np.ones(channels)
            scale = g / np.sqrt(rv.astype(np.float64) + a.eps)
            shift = (beta if beta is not None else 0.0) - rm.astype(np.float64) * scale
            run_epilogue(x3, out3, Epilogue(scale.astype(b.dtype), shift.astype(b.dtype)))

        return running_stats
    if not (a.training or rm is None):
        scale = g64 / np.sqrt(rv.astype(np.float64) + a.eps)
        shift = b64 - rm.astype(np.float64) * scale
        ep = Epilogue(scale.astype(b.dtype), shift.astype(b.dtype))
        return lambda: run_epilogue(x3, out3, ep)

    def batch_stats() -> None:
        mean = x3.mean(axis=(0, 2), dtype=np.float64)
        var = x3.var(axis=(0, 2), dtype=np.float64)
        scale = g64 / np.sqrt(var + a.eps)
        run_epilogue(x3, out3, Epilogue(scale.astype(b.dtype),
                                        (b64 - mean * scale).astype(b.dtype)))

    return batch_stats


ACTIVATION_CODES = {ops.relu: ak.ACT["relu"], ops.relu6: ak.ACT["relu6"],
                    ops.leaky_relu: ak.ACT["leaky_relu"], ops.hardswish: ak.ACT["hardswish"],
                    ops.sigmoid: ak.ACT["sigmoid"]}


def fused_epilogue(b: Builder, node: Node, channels: int) -> Epilogue:
    """The epilogue of conv2d_fused / linear_fused: bias, residual, activation."""
    a = node.attrs
    bias = b.array(node.inputs[2])
    ep = plain_epilogue(b, channels, bias)
    ep.residual = b.array(node.inputs[3])
    if a.activation is not None:
        ep.code = ACTIVATION_CODES[a.activation]
        ep.alpha = getattr(a.activation_attrs, "negative_slope", 0.01)
    return ep


@lower(ops.conv2d_fused)
def conv2d_fused(b: Builder, node: Node) -> Step:
    x, w = b.array(node.inputs[0]), b.array(node.inputs[1])
    out = b.array(node.output)
    return conv_step(b, node, x, w, out, fused_epilogue(b, node, w.shape[0]))


@lower(ops.linear_fused)
def linear_fused(b: Builder, node: Node) -> Step:
    """The product, then the epilogue over the output viewed as [rows, out_features, 1]."""
    x, w = b.array(node.inputs[0]), b.array(node.inputs[1])
    out = b.array(node.output)
    out2 = out.reshape(-1, w.shape[0])
    ep = fused_epilogue(b, node, w.shape[0])
    product = linear_step(b, x, w, ep.shift, out2)
    ep.shift = np.zeros_like(ep.shift)
    if ep.residual is not None:
        ep.residual = ep.residual.reshape(out2.shape + (1,))
    out3 = out2[:, :, None]

    def step() -> None:
        product()
        if not ep.trivial:
            run_epilogue(out3, out3, ep)

    return step
