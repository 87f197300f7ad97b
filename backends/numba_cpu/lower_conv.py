"""Lowerings of the convolutions: conv2d (and conv2d_fused), conv_transpose2d, deform_conv2d,
and the backward ops of their gradients (conv2d_weight_grad, deform_conv2d_data_grad,
deform_conv2d_weight_grad).

Per-op algorithm choice, by timing the candidates at compile time (``Builder.choose``):

- float32 (the default) runs on the register-blocked micro-kernel (``kernels.simd``,
  ``kernels.gemm``): a 1x1/stride-1/unpadded convolution is one GEMM per image read straight
  from the image, every other dense or grouped one im2col per band of output rows + GEMM,
  and a 3x3/stride-1 one may instead be Winograd F(2x2, 3x3) or F(4x4, 3x3), whose GEMMs run
  on the same micro-kernel; an ungrouped one with a small output plane and a deep reduction
  may run with vectors over output channels instead of pixels (``kernels.pixel_gemm``);
- float64 runs the same structure on numpy's BLAS (``*_blas``);
- a depthwise convolution is a stencil (``kernels.stencil``): flat 3×3 planes, phase planes
  when undilated with equal strides, row by row otherwise.

Bias, a folded BatchNorm, a residual and the activation are applied where the output is
produced (``epilogue``). Packed and transformed weights are derived forms of the weight in the
program state (``Builder.derived``): made once, remade if the weight changes; a weight that is
not a parameter or literal (a graph input, as in gradient checks) has its forms remade before
every run (``Builder.derived``).

Gradients: conv2d's input gradient is a conv_transpose2d, which at stride 1 runs as the
convolution of the flipped weight (all of the above applies), strided on the micro-kernel
(``cols = Wᵀ·x``) + col2im, or, with one output channel per group (depthwise), as a direct
scatter. ``conv2d_weight_grad`` is an im2col per band of output rows + GEMM, accumulated
(float32: on the micro-kernel, ``kernels.conv_grad``, or on BLAS, chosen by timing), or a
direct kernel when depthwise. The deformable gradients are per-image GEMMs around
torchvision's col2im / col2im_coord as parallel Numba kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.blas import WORKERS, batched_matmul, parallel_tiles
from cnnir.backends.numba_cpu.blas import matmul as gemm
from cnnir.backends.numba_cpu.epilogue import (
    Epilogue,
    activation_code,
    as3d,
    epilogue_step,
    fused_epilogue,
    plain_epilogue,
)
from cnnir.backends.numba_cpu.kernels import activation as ak
from cnnir.backends.numba_cpu.kernels import conv as ck
from cnnir.backends.numba_cpu.kernels import conv_grad as cgk
from cnnir.backends.numba_cpu.kernels import direct as dk
from cnnir.backends.numba_cpu.kernels import expand as ek
from cnnir.backends.numba_cpu.kernels import gemm as gk
from cnnir.backends.numba_cpu.kernels import pixel_gemm as pgk
from cnnir.backends.numba_cpu.kernels import simd
from cnnir.backends.numba_cpu.kernels import stencil as sk
from cnnir.backends.numba_cpu.kernels import winograd as wk
from cnnir.backends.numba_cpu.kernels.jit import bound
from cnnir.backends.numba_cpu.layout import algorithm, blocked_conv_step, runs_blocked
from cnnir.backends.numba_cpu.program import lower
from cnnir.ir import Node, Value
from cnnir.ops.conv import (
    Conv2dAttrs,
    conv2d_weight_grad,
    deform_conv2d_data_grad,
    deform_conv2d_weight_grad,
)


def window_of(attrs, kernel_size: tuple[int, int]) -> tuple[int, ...]:
    """The kernels' window tuple: (kh, kw, sh, sw, pad_top, pad_left, dh, dw)."""
    return (*kernel_size, *attrs.stride, *attrs.padding[:2], *attrs.dilation)


class Weight:
    """A convolution's weight as its kernels read it, in conv2d's layout ``[O, C/G, kh, kw]``
    (``array``): the node's weight, or a transform of it (a transposed convolution's,
    flipped). Its forms (the transform, packed rows, Winograd's) are derived forms of the
    node's weight (``Builder.derived``): remade when a parameter changes, or before every run
    when the weight is computed at run time."""

    def __init__(self, b: Builder, value: Value, transform=None, kind: Any = None) -> None:
        """``transform(array, out=None)`` makes the form (into ``out`` when given)."""
        self.b, self.value, self.kind = b, value, kind
        source = b.array(value)
        self.array = source if transform is None else b.derived(
            [value], kind, lambda: transform(source), lambda form: transform(source, form))

    def derived(self, kind: Any, make, remake=None) -> Any:
        """A form ``make()`` computes from ``array`` (packed rows, Winograd transforms);
        ``remake(form)`` recomputes it in place."""
        return self.b.derived([self.value], (kind, self.kind) if self.kind is not None
                              else kind, make, remake)


def conv_step(b: Builder, node: Node, x: np.ndarray, weight: Value | Weight, out: np.ndarray,
              ep: Epilogue, attrs=None) -> Step:
    """The fastest applicable algorithm for this convolution (``attrs``, by default the
    node's), chosen by measurement."""
    attrs = attrs if attrs is not None else node.attrs
    wt = weight if isinstance(weight, Weight) else Weight(b, weight)
    w = wt.array
    if runs_blocked(b, node):
        return b.choose_among(node, {algorithm(b, node): lambda: blocked_conv_step(
            b, node, x, w, out, ep)})
    channels, (_, per_group, kh, kw) = x.shape[1], w.shape
    if per_group == 1 and attrs.groups == channels:
        return b.choose_among(node, depthwise_candidates(b, attrs, x, w, out, ep))
    pointwise = (kh, kw, *attrs.stride, attrs.groups) == (1, 1, 1, 1, 1) and not any(attrs.padding)
    makers: dict[str, Callable[[], Step]] = {}
    if b.dtype == np.float32:  # the register-blocked micro-kernel
        if pointwise:
            makers["pointwise-microkernel"] = lambda: pointwise_mk_step(b, x, wt, out, ep)
        else:
            makers["im2col-microkernel"] = lambda: im2col_mk_step(b, attrs, x, wt, out, ep)
            if direct_applies(attrs, w.size):
                makers["direct-microkernel"] = lambda: direct_mk_step(b, attrs, x, wt, out, ep)
        if (attrs.groups == 1 and w[0].size >= PIXEL_GEMM_MIN_DEPTH
                and out.shape[2] * out.shape[3] <= PIXEL_GEMM_MAX_PIXELS
                and (simd.LANES >= PIXEL_GEMM_MIN_LANES or b.tune == "pixel-gemm-microkernel")):
            makers["pixel-gemm-microkernel"] = lambda: pixel_gemm_step(b, attrs, x, wt, out, ep)
    elif pointwise:
        makers["pointwise-blas"] = lambda: pointwise_step(x, w, out, ep)
    else:
        makers["im2col-blas"] = lambda: im2col_step(b, attrs, x, w, out, ep)
    if winograd_applies(attrs, (kh, kw)):
        makers["winograd-f2x2-3x3"] = lambda: winograd_step(b, attrs, x, wt, out, ep, wk.F2)
        # with fewer tiles than vector lanes its GEMMs leave lanes idle: tried only by name
        if winograd_tiles(out, wk.F4.tile) >= simd.LANES or b.tune == "winograd-f4x4-3x3":
            makers["winograd-f4x4-3x3"] = lambda: winograd_step(b, attrs, x, wt, out, ep, wk.F4)
    return b.choose_among(node, makers)


def direct_applies(attrs, weight_elements: int) -> bool:
    """Whether ``direct-microkernel`` runs this convolution: ungrouped, its weights within
    DIRECT_MAX_WEIGHT_BYTES."""
    return attrs.groups == 1 and 4 * weight_elements <= DIRECT_MAX_WEIGHT_BYTES


def winograd_applies(attrs, kernel_size: tuple[int, int]) -> bool:
    """Whether Winograd's F(m×m, 3×3) runs this convolution: 3×3, stride 1, undilated,
    ungrouped."""
    return (*kernel_size, *attrs.stride, *attrs.dilation, attrs.groups) == (3, 3, 1, 1, 1, 1, 1)


def depthwise_candidates(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                         ep: Epilogue) -> dict[str, Callable[[], Step]]:
    makers: dict[str, Callable[[], Step]] = {}
    flat_3x3 = ((*w.shape[2:], *attrs.dilation, *attrs.padding) == (3, 3, 1, 1, 1, 1, 1, 1)
                and attrs.stride in ((1, 1), (2, 2)))
    if flat_3x3 and b.dtype == np.float32:
        makers["depthwise-3x3-flat"] = lambda: depthwise3x3_step(b, attrs, x, w, out, ep)
        makers["depthwise-3x3-rows"] = lambda: depthwise3x3_rows_step(attrs, x, w, out, ep)
        if attrs.stride == (1, 1) and simd.MASKED_LOADS_NATIVE:
            makers["depthwise-3x3-masked"] = lambda: depthwise3x3_masked_step(b, x, w, out, ep)
    if attrs.dilation == (1, 1) and attrs.stride[0] == attrs.stride[1]:
        makers["depthwise-phases"] = lambda: depthwise_phases_step(b, attrs, x, w, out, ep)
    else:
        makers["depthwise-direct"] = lambda: depthwise_step(b, attrs, x, w, out, ep)
    return makers


def pointwise_mk_step(b: Builder, x: np.ndarray, wt: Weight, out: np.ndarray,
                      ep: Epilogue) -> Step:
    """1x1, stride 1, unpadded: one GEMM per image read straight from the image."""
    w = wt.array
    n_img, k = x.shape[:2]
    m, p = w.shape[0], x.shape[2] * x.shape[3]
    packed = wt.derived("rows", lambda: simd.pack_rows(w.reshape(m, k)))
    blocks = gk.gemm_blocks(n_img, m, k, p, 0, k * p, m * p, gk.chunk_budget(n_img, m, k, p))
    xf, outf, args = x.reshape(-1), out.reshape(-1), ep.args()
    gemm_kernel = gk.gemm.over(len(blocks))
    return bound(gemm_kernel, packed, k, xf, p, outf, p, blocks, args)


def im2col_mk_step(b: Builder, attrs, x: np.ndarray, wt: Weight, out: np.ndarray,
                   ep: Epilogue) -> Step:
    """k×k: per band of output rows, im2col into the thread's buffer, then the GEMM."""
    w = wt.array
    out_ch, per_group, kh, kw = w.shape
    groups, k = attrs.groups, per_group * kh * kw
    ow = out.shape[3]
    bands = gk.im2col_bands(x.shape[0], out.shape[2], ow, out_ch // groups, k)
    width = int(max((bands[:, 2] - bands[:, 1]).max() * ow, 1))
    packed = wt.derived(("rows", groups),
                                 lambda: simd.pack_rows(w.reshape(out_ch, k), groups))
    cols = b.scratch((gk.THREADS, k, width))
    window, args = window_of(attrs, (kh, kw)), ep.args()
    filled = np.zeros(gk.THREADS, np.int64)
    im2col_gemm = gk.im2col_gemm.over(len(bands))
    return bound(im2col_gemm, packed, x, out, bands, window, args, cols, filled)


# The direct convolution reads all the weights once per chunk of pixels (an L1 panel): at
# batch 8 it beat im2col, pixel-gemm and Winograd on every strided 3x3 layer of ResNet-18 up
# to 256 -> 512 channels (4.7 MiB, 4.4 ms against 4.9), and at batch 1 on 64 -> 128 (568 us
# against 823). Past this size the weights stream from L3 for every chunk.
DIRECT_MAX_WEIGHT_BYTES = 8 * gk.TILE_BYTES
NOT_POOLED = np.empty((0, 0, 0, 0), np.float32)  # a kernel's ``pooled`` when none is


def direct_mk_step(b: Builder, attrs, x: np.ndarray, wt: Weight, out: np.ndarray,
                   ep: Epilogue, pooled: np.ndarray = NOT_POOLED) -> Step:
    """k×k, ungrouped: per band of output rows (and channels), a padded copy of its input
    rows, then the GEMM of its pixels with B packed from there (``kernels.direct``); then,
    given ``pooled``, the 2×2 max pool of its rows into it."""
    w = wt.array
    out_ch, channels, kh, kw = w.shape
    (sh, sw), (dh, dw) = attrs.stride, attrs.dilation
    pad_left = attrs.padding[1]
    oh, ow = out.shape[2:]
    # a phase row holds every input column and every column a tap of an output reads
    wq = max(ow + (kw - 1) * dw // sw, -(-(pad_left + x.shape[3]) // sw))
    bands = direct_bands(x.shape[0], out.shape[1:], channels * sh * sw * wq,
                         (kh - 1) * dh + 1, 2 * w.size * oh * ow * x.shape[0],
                         2 if pooled.size else 1)
    rows = int((bands[:, 2] - bands[:, 1]).max() - 1) * sh + (kh - 1) * dh + 1
    index = np.array([(c * rows + i * dh) * sw * wq + (j * dw) % sw * wq + j * dw // sw
                      for c in range(channels) for i in range(kh) for j in range(kw)], np.int64)
    padded = b.scratch((gk.THREADS, channels, rows, sw * wq),
                       owner=("direct", pad_left, x.shape[3]))  # zero outside the interiors
    padded.fill(0.0)
    packed = wt.derived(("rows", 1), lambda: simd.pack_rows(w.reshape(out_ch, -1)))
    window, args = window_of(attrs, (kh, kw)), ep.args()
    direct_conv = dk.direct_conv.over(len(bands))
    return bound(direct_conv, packed, x, out, bands, window, args, index, padded, pooled)


# Narrower bands split by output channels instead: SmallCIFAR's 64 -> 128 channels at 8x8,
# batch 1, ran 50 us in two bands of 4 rows (32 pixels) and 54 in two of 64 channels (each
# thread then copies and packs all of the input).
DIRECT_MIN_BAND_PIXELS = 2 * simd.LANES


def direct_bands(images: int, out_shape: tuple[int, int, int], floats_per_row: int,
                 overlap: int, flops: int, row_multiple: int = 1) -> np.ndarray:
    """Bands (n, y0, y1, r0, r1) of ``direct_mk_step``: as many as the threads want
    (``gk.parts_wanted``), of at least DIRECT_MIN_BAND_PIXELS where the plane allows, each
    band's padded rows (``floats_per_row`` each, ``overlap`` more than its output rows read)
    within half of L2, and a count the threads share evenly (a static schedule of 3 bands
    on 2 threads runs at 2/3 speed). Where the images' rows give fewer bands than threads,
    the output channels are split too. Bands start on a multiple of ``row_multiple``."""
    out_ch, oh, ow = out_shape
    wanted = gk.parts_wanted(flops)
    per_image = max(1, min(-(-wanted // images), oh // -(-DIRECT_MIN_BAND_PIXELS // ow)))
    while (per_image < oh
           and 4 * floats_per_row * (-(-oh // per_image) + overlap) > gk.TILE_BYTES // 2):
        per_image += 1
    while images * per_image > gk.THREADS and images * per_image % gk.THREADS and per_image < oh:
        per_image += 1
    channel_parts = min(-(-wanted // (images * per_image)), max(1, out_ch // (4 * simd.MR)))
    y_cuts = gk.split(oh, per_image, row_multiple)
    r_cuts = gk.split(out_ch, channel_parts, simd.MR)
    return np.array([(n, y0, y1, r0, r1) for n in range(images)
                     for y0, y1 in zip(y_cuts, y_cuts[1:]) for r0, r1 in zip(r_cuts, r_cuts[1:])],
                    np.int64)


# Below this reduction depth, pixel_gemm's transposing store costs as much as its products
# (1x1/stride-2 convolutions of 64 and 128 channels ran 1.3x slower than im2col).
PIXEL_GEMM_MIN_DEPTH = 256
# On larger planes im2col's tiles are full too, and in ResNet-18 at batch 8 the tuner's
# pick of pixel_gemm for 56x56 planes ran slower in the network than Winograd.
PIXEL_GEMM_MAX_PIXELS = 256
# Its vectors over output channels pay where a row of pixels leaves a 16-lane vector part
# empty. With 8 lanes (AVX2) it lost every layer it was timed on in ResNet-18 and SmallCIFAR
# at batch 1 and 8 on a Zen 3 (1.14-4.1x the winner's time), and its kernels took a cold
# compile 2.3 s that the first process waited on: there it runs only when asked by name.
PIXEL_GEMM_MIN_LANES = 16


def pixel_gemm_step(b: Builder, attrs, x: np.ndarray, wt: Weight, out: np.ndarray,
                    ep: Epilogue) -> Step:
    """Vectors over output channels, pixels read in place (``kernels.pixel_gemm``)."""
    w = wt.array
    out_ch, channels, kh, kw = w.shape
    panels = wt.derived("columns", lambda: simd.pack_columns(w.reshape(out_ch, -1)))
    oh, ow = out.shape[2:]
    blocks = oh * -(-ow // simd.MR)
    jobs = pgk.jobs_for(x.shape[0], out_ch, blocks)
    (sh, sw), (dh, dw) = attrs.stride, attrs.dilation
    # the lanes of a row's last block run past it, into the slack after the last row
    hp, wp = padded_extent(attrs, x, (kh, kw), out)
    padded = b.scratch((gk.THREADS, channels, hp + 1, wp + (simd.MR - 1) * sw),
                       owner=("pixel-gemm", *attrs.padding[:2], *x.shape[2:]))
    plane, row = padded.shape[2] * padded.shape[3], padded.shape[3]
    c, i, j = np.meshgrid(np.arange(channels), np.arange(kh), np.arange(kw), indexing="ij")
    index = (c * plane + i * dh * row + j * dw).reshape(-1).astype(np.int64)
    geometry = (index, *attrs.padding[:2], sh, sw, (kh - 1) * dh + 1)
    tiles = b.scratch((gk.THREADS, pgk.group_size(blocks) * simd.MR * simd.NR))
    scratch = (padded, tiles, np.zeros(gk.THREADS, np.int64))
    unit = (np.ones(simd.MR, np.float32), np.zeros(simd.MR, np.float32))
    kernel, args = pgk.pixel_gemm.over(len(jobs)), ep.args()
    return bound(kernel, panels, x, out, jobs, geometry, args, scratch, unit)


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
    return bound(kernel, x, w, out, mult, window, args, padded)


def depthwise3x3_step(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                      ep: Epilogue) -> Step:
    """3×3/padding 1/stride 1 or 2 depthwise conv on flat planes (``sk.depthwise3x3_same``)."""
    height, width = x.shape[2:]
    slack = simd.LANES  # the last vector of a plane or row runs past it
    planes = b.scratch((gk.THREADS, 3 * gk.own_lines((height + 2) * width + 2 + slack)),
                       owner=("depthwise-3x3", height, width))  # zero outside the interiors
    acc = b.scratch((gk.THREADS, gk.own_lines(width + slack)), owner=("depthwise-row", width))
    mult, stride, args = w.shape[0] // x.shape[1], attrs.stride[0], ep.args()
    kernel = sk.depthwise3x3_same.sized(out.size * 9 * stride * stride)
    return bound(kernel, x, w, out, mult, stride, args, planes, acc)


def depthwise3x3_masked_step(b: Builder, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                             ep: Epilogue) -> Step:
    """3×3/padding 1/stride 1 depthwise conv on flat planes read in place through lane masks
    (``sk.depthwise3x3_masked``)."""
    height, width = x.shape[2:]
    masks = b.derived([], ("tap-masks", height, width), lambda: sk.tap_masks(height, width))
    mult, args = w.shape[0] // x.shape[1], ep.args()
    kernel = sk.depthwise3x3_masked.sized(out.size * 9)
    return bound(kernel, x, w, out, mult, args, masks)


def depthwise3x3_rows_step(attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                           ep: Epilogue) -> Step:
    """3×3/padding 1/stride 1 or 2 depthwise conv row by row on masked vectors, with no
    scratch (``sk.depthwise3x3_rows``)."""
    mult, stride, args = w.shape[0] // x.shape[1], attrs.stride[0], ep.args()
    kernel = sk.depthwise3x3_rows.sized(out.size * 9)
    return bound(kernel, x, w, out, mult, stride, args)


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
    size = gk.own_lines(max(hq, oh + (kh - 1) // stride + 1) * wq + kw)
    phases = b.scratch((gk.THREADS, stride * stride, size),
                       owner=("phases", border, pad_top, pad_left, wq, *x.shape[2:]))
    phases.fill(border)
    # each thread's rows, then at least two cache lines of slack: no line shared
    acc = b.scratch((gk.THREADS, oh + -(-gk.LINE_FLOATS // wq), wq), owner="phases-acc")
    return phases, acc


def depthwise_phases_step(b: Builder, attrs, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                          ep: Epilogue) -> Step:
    """An undilated depthwise conv with equal strides over phase planes."""
    phases, acc = phase_scratch(b, attrs, x, w.shape[2:], out, 0.0)
    mult, stride, args = w.shape[0] // x.shape[1], attrs.stride[0], ep.args()
    pad_top, pad_left = attrs.padding[:2]
    kernel = sk.depthwise_phases.sized(out.size * w.shape[2] * w.shape[3])
    return bound(kernel, x, w, out, mult, stride, pad_top, pad_left, args, phases, acc)


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


def winograd_tiles(out: np.ndarray, tile: int) -> int:
    """The columns of Winograd's GEMMs: output tiles of tile × tile pixels, all images."""
    n_img, _, oh, ow = out.shape
    return n_img * -(-oh // tile) * -(-ow // tile)


def winograd_step(b: Builder, attrs, x: np.ndarray, wt: Weight, out: np.ndarray,
                  ep: Epilogue, variant: wk.Variant, pooled: np.ndarray = NOT_POOLED) -> Step:
    """Winograd F(2x2, 3x3) or F(4x4, 3x3) (``variant``: ``wk.F2`` or ``wk.F4``): input
    tiles, a GEMM per transform point, output tiles with the epilogue; given ``pooled``
    (F(2×2) in float32, a clamp for activation), the max of each output tile into it
    instead: the 2×2 max pool of the output, which is not written."""
    w = wt.array
    channels = x.shape[1]
    out_ch = w.shape[0]
    points = variant.points
    tiles = winograd_tiles(out, variant.tile)
    if variant is wk.F2 and b.dtype == np.float32:  # rows of tiles (kernels.winograd)
        # each point a cache line further than whole planes, so that a tile's points do not
        # all map to one L1 set (planes of 1,024 or 2,048 floats: the transforms ran 3x slower)
        v_step, m_step = channels * tiles + gk.LINE_FLOATS, out_ch * tiles + gk.LINE_FLOATS
        vf, mf = b.scratch((points * v_step,)), b.scratch((points * m_step,), owner=-1)
        input_tiles, output_tiles = f2_row_transforms(attrs, x, (vf, v_step), (mf, m_step),
                                                      out, ep, pooled)
    else:
        v_step, m_step = channels * tiles, out_ch * tiles
        v = b.scratch((points, channels, tiles))
        m = b.scratch((points, out_ch, tiles), owner=-1)  # never the same buffer as v
        input_tiles, output_tiles = winograd_transforms(b, attrs, x, v, m, out, ep, variant)
        vf, mf = v.reshape(-1), m.reshape(-1)
    if b.dtype == np.float32:
        packed = wt.derived(f"winograd{points}-rows", lambda: wk.packed_weights(w, variant),
                            lambda form: wk.pack_weights_into(w, form, variant))
        blocks = gk.gemm_blocks(points, out_ch, channels, tiles,
                                simd.padded_rows(out_ch) * channels, v_step, m_step)
        identity = Epilogue(np.ones(out_ch, b.dtype), np.zeros(out_ch, b.dtype)).args()
        gemm_kernel = gk.gemm.over(len(blocks))

        def products() -> None:
            gemm_kernel(packed, channels, vf, tiles, mf, tiles, blocks, identity)
    else:
        u = wt.derived(f"winograd{points}",
                       lambda: wk.transform_weights(w, b.dtype, variant))

        def products() -> None:
            batched_matmul(u, v, m)

    def winograd() -> None:
        input_tiles()
        products()
        output_tiles()

    return winograd


def winograd_transforms(b: Builder, attrs, x: np.ndarray, v: np.ndarray, m: np.ndarray,
                        out: np.ndarray, ep: Epilogue, variant: wk.Variant
                        ) -> tuple[Step, Step]:
    """The input and output transforms on chunks of tiles in per-thread scratch."""
    pad_top, pad_left = attrs.padding[:2]
    tile = variant.tile
    th, tw = -(-out.shape[2] // tile), -(-out.shape[3] // tile)
    grid = (v.shape[2], th, tw, pad_top, pad_left, tile)
    shapes = wk.scratch_shapes(*out.shape[2:], tile)
    work = {key: b.scratch((gk.THREADS, *shape), owner=("winograd", key))
            for key, shape in shapes.items()}
    before, after, plane = work["before"], work["after"], work["plane"]
    four = variant is wk.F4
    inputs = (wk.input_tiles_f4 if four else wk.input_tiles_f2).sized(v.size)
    outputs = (wk.output_tiles_f4 if four else wk.output_tiles_f2).sized(m.size)
    args = ep.args()
    return (lambda: inputs(x, v, grid, before, after),
            lambda: outputs(m, out, (tw, tile), args, before, after, plane))


def f2_row_transforms(attrs, x: np.ndarray, v: tuple[np.ndarray, int],
                      m: tuple[np.ndarray, int], out: np.ndarray, ep: Epilogue,
                      pooled: np.ndarray) -> tuple[Step, Step]:
    """F(2×2)'s input and output transforms in float32, on rows of tiles: ``v`` and ``m``
    are (flat array, elements from one point to the next)."""
    th, tw = -(-out.shape[2] // 2), -(-out.shape[3] // 2)
    grid = (x.shape[0] * th * tw, th, tw, *attrs.padding[:2], 2)
    inputs, outputs = wk.input_rows_f2.over(x.shape[1]), wk.output_rows_f2.over(out.shape[1])
    return (bound(inputs, x, *v, grid),
            bound(outputs, *m, (out, pooled), tw, ep.args()))


@lower(ops.conv2d)
def conv2d(b: Builder, node: Node) -> Step:
    x, weight, bias = node.inputs
    out = b.array(node.output)
    return conv_step(b, node, b.array(x), weight, out,
                     plain_epilogue(b, b.types[id(node.output)].shape[1], b.array(bias)))


@lower(ops.conv2d_fused)
def conv2d_fused(b: Builder, node: Node) -> Step | None:
    if node.name in b.taken_over:  # its expansion's lowering made the step of both
        return b.taken_over.pop(node.name)
    step = fused_conv_step(b, node)
    if (depthwise := depthwise_reader(b, node)) is not None:
        return fuse_pair(b, node, step, depthwise, fused_conv_step(b, depthwise),
                         {EXPAND_DEPTHWISE: lambda: expand_depthwise_step(b, node, depthwise)})
    if (pool := pool_reader(b, node)) is not None:
        from cnnir.backends.numba_cpu.lower_pool import max_pool2d  # it imports this module

        return fuse_pair(b, node, step, pool, max_pool2d(b, pool),
                         conv_max_pool_makers(b, node, b.array(pool.output)))
    return step


def fused_reader(b: Builder, node: Node) -> Node | None:
    """The node whose step also does this one's work, when ``conv2d_fused`` may fuse them."""
    return depthwise_reader(b, node) or pool_reader(b, node)


def fused_conv_step(b: Builder, node: Node) -> Step:
    out = b.array(node.output)
    return conv_step(b, node, b.array(node.inputs[0]), node.inputs[1], out,
                     fused_epilogue(b, node, b.types[id(node.output)].shape[1]))


def fuse_pair(b: Builder, node: Node, step: Step, reader: Node, alone: Step,
              fused: dict[str, Callable[[], Step]]) -> Step | None:
    """``node``'s own ``step``, or None when a step one of ``fused`` builds (by name) runs
    faster than ``step`` and the reader's own step ``alone`` together, all timed as a pair
    under a key naming both. The reader's lowering then returns the step made here for it
    (``Builder.taken_over``): the fused one, or its own, already tuned."""
    pair = Node(reader.op, (node.attrs, reader.attrs),
                [*node.inputs[:2], *reader.inputs[1:]], f"{node.name}+{reader.name}")
    pair.outputs = reader.outputs

    def apart() -> None:
        step()
        alone()

    chosen = b.choose_among(pair, {"apart": lambda: apart, **fused})
    name = b.choices.pop(pair.name)
    if name == "apart":
        b.taken_over[reader.name] = alone
        return step
    b.taken_over[reader.name] = chosen
    b.choices[node.name] = b.choices[reader.name] = name
    return None


# --- an inverted residual's expansion and depthwise conv in one pass (kernels.expand) ---------

EXPAND_DEPTHWISE = "expand-depthwise-fused"


def depthwise_reader(b: Builder, node: Node) -> Node | None:
    """The 3×3 depthwise conv (padding 1, stride 1 or 2) that alone reads this conv2d_fused
    node's output when it is a 1x1 expansion (stride 1, unpadded, ungrouped, no residual),
    in float32, both weights constants; else None. Decided from the graph and its types
    (before memory is planned: ``CpuBuilder.late_reads``). Constant weights: the pair's steps
    are made while the expansion is lowered, where forms of a weight computed at run time
    would be remade before the wrong step, or not at all."""
    out = node.output
    if (node.op is not ops.conv2d_fused or b.dtype != np.float32 or node.inputs[0].is_constant
            or node.inputs[3] is not None or len(out.users) != 1
            or any(v is out for v in b.graph.outputs) or runs_blocked(b, node)
            or runs_blocked(b, out.users[0])):
        return None
    attrs, shape = node.attrs, b.types[id(node.inputs[1])].shape
    if (tuple(shape[2:]), attrs.stride, attrs.dilation, attrs.groups, any(attrs.padding)) != (
            (1, 1), (1, 1), (1, 1), 1, False):
        return None
    reader, channels = out.users[0], shape[0]
    if (reader.op is not ops.conv2d_fused or reader.inputs[0] is not out
            or any(v is out for v in reader.inputs[1:])
            or not (node.inputs[1].is_constant and reader.inputs[1].is_constant)):
        return None
    r = reader.attrs
    if (tuple(b.types[id(reader.inputs[1])].shape), r.groups, r.padding, r.dilation) != (
            (channels, 1, 3, 3), channels, (1, 1, 1, 1), (1, 1)):
        return None
    return reader if r.stride in ((1, 1), (2, 2)) else None


def expand_depthwise_step(b: Builder, node: Node, depthwise: Node) -> Step:
    """``kernels.expand``: per band of the depthwise output's rows, the expanded rows it reads
    into the thread's buffer (at most half of L2), then its output rows."""
    x, out = b.array(node.inputs[0]), b.array(depthwise.output)
    wt = Weight(b, node.inputs[1])
    channels, k = wt.array.shape[:2]
    packed = wt.derived("rows", lambda: simd.pack_rows(wt.array.reshape(channels, k)))
    stride, (n_img, _, oh, _), width = depthwise.attrs.stride[0], out.shape, x.shape[3]
    row_bytes = 4 * channels * width
    band = max(1, min(oh, (gk.TILE_BYTES // 2 // row_bytes - 3) // stride + 1))
    per_image = max(-(-oh // band), min(oh, -(-2 * gk.THREADS // n_img)))
    cuts = gk.split(oh, per_image, 1)
    bands = np.array([(n, y0, y1) for n in range(n_img) for y0, y1 in zip(cuts, cuts[1:])],
                     np.int64)
    tallest = int((bands[:, 2] - bands[:, 1]).max())
    plane = gk.own_lines(min(x.shape[2], (tallest - 1) * stride + 3) * width)
    buffers = b.scratch((gk.THREADS, channels * plane), owner=("expand-depthwise", plane))
    w, ep_expand = b.array(depthwise.inputs[1]), fused_epilogue(b, node, channels).args()
    ep_depthwise = fused_epilogue(b, depthwise, channels).args()
    kernel = ek.expand_depthwise.over(len(bands))
    return bound(kernel, packed, x, w, out, bands, stride, ep_expand, ep_depthwise, buffers)


# --- a convolution and the 2×2 max pool that alone reads it, in one pass (kernels.direct) ----

# Each pair of output rows is pooled as soon as the GEMM has written it, from L1, in the
# convolution's parallel loop: SmallCIFAR's first stage (3 -> 32 channels, 32x32, batch 1)
# 18.8 -> 15.5 us, its network 130-132 -> 126-129 us.
CONV_MAX_POOL = "direct-max-pool-fused"
WINOGRAD_MAX_POOL = "winograd-f2x2-max-pool-fused"


def pool_reader(b: Builder, node: Node) -> Node | None:
    """The max_pool2d of 2×2 windows tiling the image that alone reads this conv2d_fused
    node's output, when one of ``conv_max_pool_makers`` applies, there is no residual and
    the weight and bias are constants; else None. Decided from the graph and its types, like
    ``depthwise_reader``."""
    from cnnir.backends.numba_cpu.lower_pool import tiles_2x2  # it imports this module

    out = node.output
    if (node.op is not ops.conv2d_fused or b.dtype != np.float32 or node.inputs[0].is_constant
            or node.inputs[3] is not None or len(out.users) != 1
            or any(v is out for v in b.graph.outputs)
            or not all(v is None or v.is_constant for v in node.inputs[1:3])
            or not pooled_convs(b, node) or runs_blocked(b, node)):
        return None
    reader = out.users[0]
    if reader.op is not ops.max_pool2d or reader.inputs[0] is not out:
        return None
    in_hw, out_hw = b.types[id(out)].shape[2:], b.types[id(reader.output)].shape[2:]
    return reader if tiles_2x2(reader.attrs, in_hw, out_hw) else None


def pooled_convs(b: Builder, node: Node) -> list[str]:
    """The convolution algorithms that can pool their own output for this node: the direct
    one (ungrouped, weights within DIRECT_MAX_WEIGHT_BYTES), and Winograd F(2×2) (3×3,
    stride 1, undilated, ungrouped) where the activation is a clamp (ReLU, ReLU6 or none),
    whose 2×2 output tiles are the pool's windows."""
    a, w_type = node.attrs, b.types[id(node.inputs[1])]
    clamp = a.activation is None or activation_code(a.activation, a.activation_attrs)[0] <= (
        ak.LAST_CLAMP)
    names = [CONV_MAX_POOL] if direct_applies(a, w_type.numel) else []
    if clamp and winograd_applies(a, tuple(w_type.shape[2:])):
        names.append(WINOGRAD_MAX_POOL)
    return names


def conv_max_pool_makers(b: Builder, node: Node, pooled: np.ndarray
                         ) -> dict[str, Callable[[], Step]]:
    """The steps that convolve and write the 2×2 max pool of the output into ``pooled``: the
    direct convolution pooling each band's rows, Winograd F(2×2) pooling each output tile."""
    out = b.array(node.output)
    x, wt = b.array(node.inputs[0]), Weight(b, node.inputs[1])
    ep = fused_epilogue(b, node, out.shape[1])
    makers = {CONV_MAX_POOL: lambda: direct_mk_step(b, node.attrs, x, wt, out, ep, pooled),
              WINOGRAD_MAX_POOL: lambda: winograd_step(b, node.attrs, x, wt, out, ep, wk.F2,
                                                       pooled)}
    return {name: makers[name] for name in pooled_convs(b, node)}


def flipped_transpose_weight(w: np.ndarray, groups: int,
                             out: np.ndarray | None = None) -> np.ndarray:
    """A transposed convolution's W ``[C_in, O/G, kh, kw]`` as the conv2d weight
    ``[O, C_in/G, kh, kw]`` of the same map at stride 1:
    ``W'[g·O/G + co, ci', i, j] = W[g·C_in/G + ci', co, kh−1−i, kw−1−j]`` (into ``out``
    when given)."""
    c_in, og, kh, kw = w.shape
    wg = w.reshape(groups, c_in // groups, og, kh, kw)[:, :, :, ::-1, ::-1]
    view = wg.transpose(0, 2, 1, 3, 4)
    if out is None:
        out = np.empty((groups * og, c_in // groups, kh, kw), w.dtype)
    np.copyto(out.reshape(view.shape), view)
    return out


def transpose_as_conv(attrs, kernel_size: tuple[int, int]) -> Conv2dAttrs | None:
    """The conv2d attributes of a stride-1 transposed convolution with the flipped weight
    (``flipped_transpose_weight``): each side padded by ``d(k−1)`` minus its padding, the
    output padding added bottom/right; None when strided or a side would be negative."""
    if attrs.stride != (1, 1):
        return None
    ext = [attrs.dilation[i] * (kernel_size[i] - 1) for i in range(2)]
    pt, pl, pb, pr = attrs.padding
    op_h, op_w = attrs.output_padding
    pads = (ext[0] - pt, ext[1] - pl, ext[0] - pb + op_h, ext[1] - pr + op_w)
    if min(pads) < 0:
        return None
    return Conv2dAttrs(stride=(1, 1), padding=pads, dilation=attrs.dilation,
                       groups=attrs.groups)


@lower(ops.conv_transpose2d)
def conv_transpose2d(b: Builder, node: Node) -> Step:
    """At stride 1, the convolution of the flipped weight (``conv_step``: micro-kernel,
    Winograd or a depthwise stencil, chosen by timing), which covers the input gradient of
    most convolutions. Strided, with one output channel per group (a depthwise conv's input
    gradient): a direct scatter per (image, channel). Otherwise ``cols = Wgᵀ·x_g`` per image
    and group (GEMM), scattered into the output by col2im."""
    x_value, weight, bias_value = (node.inputs + [None])[:3]
    x, w, bias = b.array(x_value), b.array(weight), b.array(bias_value)
    out = b.array(node.output)
    groups = node.attrs.groups
    kernel_size = (w.shape[2], w.shape[3])
    as_conv = transpose_as_conv(node.attrs, kernel_size)
    if as_conv is not None:
        wt = Weight(b, weight, lambda src, out=None: flipped_transpose_weight(
            src, groups, out), ("flipped", groups))
        return conv_step(b, node, x, wt, out, plain_epilogue(b, out.shape[1], bias), as_conv)
    wt = Weight(b, weight)
    window = window_of(node.attrs, kernel_size)
    bias = bias if bias is not None else np.zeros(out.shape[1], out.dtype)
    if w.shape[1] == 1:
        scatter = ck.transpose_one_per_group.sized(x.size * kernel_size[0] * kernel_size[1])
        fill = bias[:, None, None]

        def direct() -> None:
            out[:] = fill
            scatter(x, w, out, window)

        return direct
    if b.dtype == np.float32:
        return transpose_mk_step(b, node, x, wt, out, bias)
    return transpose_blas_step(b, node, x, wt, out, bias)


TRANSPOSE_COLUMNS_BYTES = 16 * 1024 * 1024  # the columns of a chunk of images


def transpose_mk_step(b: Builder, node: Node, x: np.ndarray, wt: Weight, out: np.ndarray,
                      bias: np.ndarray) -> Step:
    """float32, strided: per chunk of images, ``cols = Wgᵀ·x_g`` for every (image, group) on
    the micro-kernel (B read straight from the image), then ``col2im_planes`` (bias, then
    the scatter), both Numba-parallel: no BLAS, so no thread-pool clash between them."""
    n_img, c_in, height, width = x.shape
    groups, w = node.attrs.groups, wt.array
    cg, og, kh, kw = c_in // groups, w.shape[1], w.shape[2], w.shape[3]
    rows, pixels = og * kh * kw, height * width
    packed = wt.derived(("transposed-rows", groups), lambda: simd.pack_rows(
        w.reshape(groups, cg, rows).transpose(0, 2, 1).reshape(groups * rows, cg), groups))
    chunk = max(1, min(n_img, TRANSPOSE_COLUMNS_BYTES // (4 * groups * rows * pixels)))
    cols = b.scratch((chunk, groups * rows, pixels), owner="transpose-columns")
    group_stride = simd.padded_rows(rows) * cg

    def blocks_for(count: int) -> np.ndarray:
        blocks = gk.gemm_blocks(count * groups, rows, cg, pixels, group_stride, cg * pixels,
                                rows * pixels)
        blocks[:, 0] %= groups * group_stride  # A is the same for every image
        return blocks

    plans = [(n0, min(chunk, n_img - n0)) for n0 in range(0, n_img, chunk)]
    blocks = {count: blocks_for(count) for _, count in plans}
    identity = Epilogue(np.ones(rows, b.dtype), np.zeros(rows, b.dtype)).args()
    xf, colsf = x.reshape(-1), cols.reshape(-1)
    window = window_of(node.attrs, (kh, kw))
    col2im = ck.col2im_planes.sized(out.size * kh * kw)

    def step() -> None:
        for n0, count in plans:
            gemm_kernel = gk.gemm.over(len(blocks[count]))
            gemm_kernel(packed, cg, xf[n0 * c_in * pixels:], pixels, colsf, pixels,
                        blocks[count], identity)
            col2im(cols, out, n0, count, bias, window, height, width)

    return step


def transpose_blas_step(b: Builder, node: Node, x: np.ndarray, wt: Weight, out: np.ndarray,
                        bias: np.ndarray) -> Step:
    """float64, strided: per image and group, ``cols = Wgᵀ·x_g`` (BLAS), then col2im."""
    n_img, c_in, height, width = x.shape
    groups, w = node.attrs.groups, wt.array
    cg, og, kh, kw = c_in // groups, w.shape[1], w.shape[2], w.shape[3]
    wtr = wt.derived("transposed", lambda: np.ascontiguousarray(
        w.reshape(groups, cg, og * kh * kw).transpose(0, 2, 1)))
    cols = b.scratch((og * kh * kw, height * width))
    x3, fill = as3d(x), bias[:, None, None]
    window = window_of(node.attrs, (kh, kw))
    col2im = ck.col2im.sized(cols.size)

    def step() -> None:
        out[:] = fill
        for n in range(n_img):
            for g in range(groups):
                gemm(wtr[g], x3[n, g * cg:(g + 1) * cg], cols)
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


# -- backward ops ------------------------------------------------------------------------------


def weight_grad_bands(n_img: int, oh: int, ow: int, k: int, itemsize: int) -> list[tuple]:
    """(n, y0, y1) bands of output rows whose im2col columns (k rows) fit L2."""
    band_rows = max(1, min(oh, gk.TILE_BYTES // (itemsize * k * ow)))
    return [(n, y0, min(oh, y0 + band_rows)) for n in range(n_img)
            for y0 in range(0, oh, band_rows)]


def weight_grad_gemm_step(b: Builder, attrs, x: np.ndarray, gy: np.ndarray,
                          out: np.ndarray) -> Step:
    """``gW_gᵀ += cols·gy_gᵀ`` per band of output rows and group: im2col of the band
    (``im2col_rows``; a 1x1/stride-1/unpadded conv reads the image itself) into the worker's
    buffer, one BLAS GEMM into the worker's scratch, added to the worker's own (transposed)
    accumulator. The bands are split over cnnir's worker threads (``blas.parallel_tiles``)
    and the accumulators summed at the end: no two threads ever write one array. (The
    transposed product, [C/G·kh·kw, O/G], runs about 1.3x faster on OpenBLAS than
    ``gy_g·colsᵀ``: its long dimension is the GEMM's M.)"""
    out_ch, cg, kh, kw = out.shape
    groups = attrs.groups
    og, k = out_ch // groups, cg * kh * kw
    n_img, _, oh, ow = gy.shape
    pointwise = (kh, kw, *attrs.stride) == (1, 1, 1, 1) and not any(attrs.padding)
    bands = weight_grad_bands(n_img, oh, ow, k, b.dtype.itemsize)
    width = max((y1 - y0) * ow for _, y0, y1 in bands)
    cols = [b.scratch((k, width), owner=i) for i in range(WORKERS)]
    totals = [b.scratch((groups, k, og), owner=("weight-grad", i)) for i in range(WORKERS)]
    partial = [b.scratch((k, og), owner=("weight-grad-gemm", i)) for i in range(WORKERS)]
    x3, gy3 = as3d(x), as3d(gy)
    out3 = out.reshape(groups, og, k)
    window = window_of(attrs, (kh, kw))
    flops = 2 * out_ch * k * n_img * oh * ow

    def run_range(worker: int, lo: int, hi: int) -> None:
        buffer, total, product = cols[worker], totals[worker], partial[worker]
        for n, y0, y1 in bands[lo:hi]:
            p0, p1 = y0 * ow, y1 * ow
            for g in range(groups):
                if pointwise:
                    columns = x3[n, g * cg:(g + 1) * cg, p0:p1]
                else:
                    ck.im2col_rows(x, buffer, n, g * cg, cg, window, y0, y1, ow)
                    columns = buffer[:, :p1 - p0]
                np.matmul(columns, gy3[n, g * og:(g + 1) * og, p0:p1].T, out=product)
                np.add(total[g], product, out=total[g])

    def step() -> None:
        for total in totals:
            total.fill(0)
        parallel_tiles(len(bands), run_range, flops)
        for total in totals[1:]:
            np.add(totals[0], total, out=totals[0])
        np.copyto(out3, totals[0].transpose(0, 2, 1))

    return step


WEIGHT_GRAD_ROWS = 512  # rows of C (taps) one thread's block may have, at most
WEIGHT_GRAD_DEPTH = 512  # pixels per GEMM, at most: a 24-column panel of B stays near L1


def weight_grad_plan(n_img: int, oh: int, ow: int, k: int, groups: int) -> tuple[int, list]:
    """Rows per block of C (a multiple of MR, at most about ``WEIGHT_GRAD_ROWS``; with fewer
    groups than threads each group is cut into blocks for every thread) and the bands
    (n0, n1, y0, y1) of the GEMM depth: up to ``WEIGHT_GRAD_DEPTH`` pixels, and no more than
    keep a block's packed columns in L2 — output rows of one image, or whole images."""
    per_group = -(-gk.THREADS // groups) * -(-k // (gk.THREADS * WEIGHT_GRAD_ROWS))
    rows = min(simd.padded_rows(k), simd.padded_rows(-(-k // max(1, per_group))))
    depth = max(gk.MIN_BAND_COLUMNS, min(WEIGHT_GRAD_DEPTH, gk.TILE_BYTES // (4 * rows)))
    if oh * ow > depth:
        band_rows = max(1, depth // ow)
        bands = [(n, n + 1, y0, min(oh, y0 + band_rows)) for n in range(n_img)
                 for y0 in range(0, oh, band_rows)]
    else:
        images = max(1, depth // (oh * ow))
        bands = [(n0, min(n_img, n0 + images), 0, oh) for n0 in range(0, n_img, images)]
    return rows, bands


def weight_grad_mk_step(b: Builder, attrs, x: np.ndarray, gy: np.ndarray,
                        out: np.ndarray) -> Step:
    """float32: gy to pixel-major, then ``gW_gᵀ = Σ_bands cols·gy_gᵀ`` on the micro-kernel,
    threads owning blocks of rows (``kernels.conv_grad``), then gWᵀ transposed into ``out``."""
    out_ch, cg, kh, kw = out.shape
    groups = attrs.groups
    og, k = out_ch // groups, cg * kh * kw
    n_img, _, oh, ow = gy.shape
    rows, band_list = weight_grad_plan(n_img, oh, ow, k, groups)
    bands = np.array(band_list, np.int64).reshape(-1, 4)
    depth = max((n1 - n0) * (y1 - y0) * ow for n0, n1, y0, y1 in band_list)
    gyt = b.scratch((n_img, oh * ow, out_ch), owner="weight-grad-gyt")
    acc = b.scratch((groups, k, og), owner="weight-grad-acc")
    packed = b.scratch((gk.THREADS, simd.padded_rows(rows) * depth), owner="weight-grad-cols")
    per_image = max((y1 - y0) * ow for _, _, y0, y1 in band_list)
    row_buffers = b.scratch((gk.THREADS, simd.MR, per_image), owner="weight-grad-rows")
    scale, shift = np.ones(k, b.dtype), np.zeros(k, b.dtype)
    window = window_of(attrs, (kh, kw))
    to_pixels = cgk.batched_transpose.sized(gy.size)
    kernel = cgk.weight_grad.over(groups * -(-k // rows))
    to_out = cgk.batched_transpose.sized(out.size)
    gy3, out3 = as3d(gy), out.reshape(groups, og, k)

    def step() -> None:
        to_pixels(gy3, gyt)
        kernel(x, gyt, ow, bands, window, groups, rows, acc, packed, row_buffers, scale, shift)
        to_out(acc, out3)

    return step


@lower(conv2d_weight_grad)
def conv2d_weight_grad_lowering(b: Builder, node: Node) -> Step:
    """A depthwise convolution's weight gradient is a direct kernel parallel over output
    channels (``depthwise_weight_grad``); any other is an im2col + GEMM per band of output
    rows, accumulated per thread: on the micro-kernel (float32) or BLAS, chosen by timing."""
    x, gy = (b.array(v) for v in node.inputs)
    out = b.array(node.output)
    attrs = node.attrs
    out_ch, per_group, kh, kw = out.shape
    if per_group == 1 and attrs.groups == x.shape[1]:
        kernel = ck.depthwise_weight_grad.sized(gy.size * kh * kw)
        mult, window, zero = out_ch // x.shape[1], window_of(attrs, (kh, kw)), b.dtype.type(0)
        return lambda: kernel(x, gy, out, mult, window, zero)
    makers: dict[str, Callable[[], Step]] = {}
    if b.dtype == np.float32:
        makers["weight-grad-microkernel"] = lambda: weight_grad_mk_step(b, attrs, x, gy, out)
    makers["weight-grad-blas"] = lambda: weight_grad_gemm_step(b, attrs, x, gy, out)
    return b.choose_among(node, makers)


def _no_mask(b: Builder, mask: np.ndarray | None) -> np.ndarray:
    return mask if mask is not None else np.zeros((1, 1, 1, 1), b.dtype)


@lower(deform_conv2d_data_grad)
def deform_conv2d_data_grad_lowering(b: Builder, node: Node) -> Step:
    """Per image: gcol = Wgᵀ·gy_g (one GEMM per group), then the input's col2im and the
    offsets' and mask's col2im_coord (``kernels.conv``)."""
    x, offset, w, gy, mask = (b.array(v) for v in (node.inputs + [None])[:5])
    outs = [b.array(v) for v in node.outputs]
    gx, goff = outs[0], outs[1]
    gmask = outs[2] if mask is not None else _no_mask(b, None)
    n_img, channels = x.shape[:2]
    out_ch, per_group, kh, kw = w.shape
    groups, taps = channels // per_group, kh * kw
    og, k = out_ch // groups, per_group * taps
    offset_groups = offset.shape[1] // (2 * taps)
    gcol = b.scratch((channels * taps, gy.shape[2] * gy.shape[3]))
    w2, gy3 = w.reshape(out_ch, k), as3d(gy)
    mask_arr, has_mask = _no_mask(b, mask), mask is not None
    window = window_of(node.attrs, (kh, kw))
    col2im = ck.deform_col2im_input.sized(gcol.size)
    col2im_coord = ck.deform_col2im_coord.sized(gcol.size)

    def step() -> None:
        for n in range(n_img):
            for g in range(groups):
                gemm(w2[g * og:(g + 1) * og].T, gy3[n, g * og:(g + 1) * og],
                     gcol[g * k:(g + 1) * k])
            col2im(gcol, offset, mask_arr, has_mask, gx, n, window, offset_groups)
            col2im_coord(gcol, x, offset, mask_arr, has_mask, goff, gmask, n, window,
                         offset_groups)

    return step


@lower(deform_conv2d_weight_grad)
def deform_conv2d_weight_grad_lowering(b: Builder, node: Node) -> Step:
    """Per image: the forward's bilinear-sampling im2col, then ``gW_g += gy_g·cols_gᵀ`` (one
    GEMM per group)."""
    x, offset, gy, mask = (b.array(v) for v in (node.inputs + [None])[:4])
    out = b.array(node.output)
    n_img, channels = x.shape[:2]
    out_ch, per_group, kh, kw = out.shape
    groups, taps = node.attrs.groups, kh * kw
    og, k = out_ch // groups, per_group * taps
    offset_groups = offset.shape[1] // (2 * taps)
    cols = b.scratch((channels * taps, gy.shape[2] * gy.shape[3]))
    product = b.scratch((og, k), owner="deform-weight-grad")
    out2, gy3 = out.reshape(out_ch, k), as3d(gy)
    mask_arr, has_mask = _no_mask(b, mask), mask is not None
    window = window_of(node.attrs, (kh, kw))
    deform_im2col = ck.deform_im2col.sized(cols.size)

    def step() -> None:
        out2.fill(0)
        for n in range(n_img):
            deform_im2col(x, offset, mask_arr, has_mask, cols, n, window, offset_groups)
            for g in range(groups):
                gemm(gy3[n, g * og:(g + 1) * og], cols[g * k:(g + 1) * k].T, product)
                out2[g * og:(g + 1) * og] += product

    return step
