"""Converters for the layers: convolutions, normalization, pooling, resizing.

ONNX ``pads`` are all begins then all ends, which for 2-D is cnnir's own
(top, left, bottom, right). ``auto_pad=SAME_*`` is resolved from the static input size
(``out = ceil(L/s)``, total ``max((out−1)s + d(k−1) + 1 − L, 0)``, the odd pixel at the end
for SAME_UPPER and at the beginning for SAME_LOWER) and refused when L is symbolic. 1-D
convolutions and pools run as 2-D ones on an ``(N, C, 1, L)`` view. Attribute values with no
cnnir/torch meaning are refused with the reason, never approximated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnnir import ops
from cnnir.ir import TensorType, Value
from cnnir.ir.types import is_static, shape_str
from cnnir.ops.conv import Conv2dAttrs, ConvTranspose2dAttrs
from cnnir.ops.norm import BatchNormAttrs, GroupNormAttrs, LayerNormAttrs
from cnnir.ops.pool import AdaptivePoolAttrs, AvgPoolAttrs, InterpolateAttrs, PoolAttrs
from cnnir.ops.tensor import PadAttrs, ReduceAttrs, ReshapeAttrs

from .context import ImportContext, OnnxNode, converter, shortest_float32
from .fold import as_dims


@dataclass(frozen=True)
class Window:
    """A 2-D sliding window: kernel, strides, dilations and (top, left, bottom, right) pads."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]


def spatial_rank(ctx: ImportContext, n: OnnxNode, t: TensorType) -> int:
    """1 or 2 spatial dims (cnnir's layers are 2-D; 1-D runs on an (N, C, 1, L) view)."""
    if t.rank not in (3, 4):
        ctx.fail(n, f"has a {t.rank}-D input {shape_str(t.shape)}; cnnir's layers are 2-D "
                    f"(NCHW) and 1-D (NCL) only", "3-D convolutions and pools are not supported")
    return t.rank - 2


def _same_pads(ctx: ImportContext, n: OnnxNode, sizes: tuple, kernel: list[int],
               strides: list[int], dilations: list[int]) -> list[int]:
    mode = n.attr("auto_pad")
    if not all(is_static(s) for s in sizes):
        ctx.fail(n, f"has auto_pad={mode} on the symbolic input size {list(sizes)}",
                 "give the model static spatial dims")
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
        small = total // 2
        begins.append(small if mode == "SAME_UPPER" else total - small)
        ends.append(total - begins[-1])
    return begins + ends


def explicit_pads(ctx: ImportContext, n: OnnxNode, sizes: tuple, kernel: list[int],
                  strides: list[int], dilations: list[int]) -> list[int]:
    """``pads`` (begins, then ends) from the attribute or from ``auto_pad``."""
    mode = n.attr("auto_pad", "NOTSET")
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(ctx, n, sizes, kernel, strides, dilations)
    if mode == "VALID":
        return [0] * (2 * len(sizes))
    if mode != "NOTSET":
        ctx.fail(n, f"has an unknown auto_pad {mode!r}")
    return list(n.attr("pads", [0] * (2 * len(sizes))))


def window(ctx: ImportContext, n: OnnxNode, t: TensorType, kernel: list[int]) -> Window:
    """The node's window as 2-D (a 1-D window gets a unit first axis)."""
    rank = len(kernel)
    strides = list(n.attr("strides", [1] * rank))
    dilations = list(n.attr("dilations", [1] * rank))
    pads = explicit_pads(ctx, n, t.shape[2:], kernel, strides, dilations)
    if rank == 1:
        return Window((1, kernel[0]), (1, strides[0]), (1, dilations[0]), (0, pads[0], 0, pads[1]))
    return Window(tuple(kernel), tuple(strides), tuple(dilations), tuple(pads))


def to_2d(ctx: ImportContext, n: OnnxNode, x: Value, rank: int) -> Value:
    """``(N, C, L)`` viewed as ``(N, C, 1, L)``; 2-D inputs pass through."""
    if rank == 2:
        return x
    shape = (*x.type.shape[:2], 1, x.type.shape[2])
    return ctx.emit(n, ops.reshape, [x], ReshapeAttrs(shape), suffix="/to_2d")


def from_2d(ctx: ImportContext, n: OnnxNode, y: Value, rank: int) -> Value:
    if rank == 2:
        return y
    shape = (*y.type.shape[:2], y.type.shape[3])
    return ctx.emit(n, ops.reshape, [y], ReshapeAttrs(shape), suffix="/to_1d")


def weight_2d(ctx: ImportContext, n: OnnxNode, name: str, rank: int) -> Value:
    """A conv weight as a parameter; a 1-D kernel ``[O, C, k]`` becomes ``[O, C, 1, k]``."""
    if rank == 2 or not ctx.is_const(name):
        w = ctx.param(name)
        return w if rank == 2 else to_2d(ctx, n, w, 1)
    array = ctx.const(name)
    return ctx.constant_value(name, array.reshape(*array.shape[:2], 1, array.shape[2]),
                              ctx.kinds.get(name, "parameter"))


def _conv_like(ctx: ImportContext, n: OnnxNode) -> tuple[Value, int, Window, Value]:
    x = ctx.tensor(n.input(0))
    rank = spatial_rank(ctx, n, x.type)
    w_type = ctx.type(n.input(1))
    kernel = list(n.attr("kernel_shape", w_type.shape[2:]))
    return x, rank, window(ctx, n, x.type, kernel), weight_2d(ctx, n, n.input(1), rank)


@converter("Conv", 1)
def conv(ctx: ImportContext, n: OnnxNode) -> None:
    x, rank, win, w = _conv_like(ctx, n)
    attrs = Conv2dAttrs(win.stride, win.pads, win.dilation, n.attr("group", 1))
    y = ctx.emit(n, ops.conv2d, [to_2d(ctx, n, x, rank), w, ctx.param(n.input(2))], attrs)
    ctx.bind(n.output(0), from_2d(ctx, n, y, rank))


def _transpose_pads(ctx: ImportContext, n: OnnxNode, x: TensorType, win: Window,
                    output_padding: list[int]) -> tuple[tuple[int, ...], list[int]]:
    """Pads (and output_padding) of a ConvTranspose with ``output_shape`` or ``auto_pad=SAME``:
    total = s(L−1) + output_padding + d(k−1) + 1 − out, split as the ONNX spec says; a
    negative total (output larger than the natural size) becomes extra output_padding."""
    sizes = x.shape[2:] if len(x.shape) == 4 else (1, x.shape[2])
    wanted = n.attr("output_shape")
    mode = n.attr("auto_pad", "NOTSET")
    if wanted is None and mode not in ("SAME_UPPER", "SAME_LOWER"):
        return win.pads, output_padding
    if not all(is_static(s) for s in sizes):
        ctx.fail(n, f"needs static spatial dims to resolve its padding, got {shape_str(x.shape)}")
    if wanted is None:
        wanted = [size * s for size, s in zip(sizes, win.stride)]
    wanted = list(wanted)[-2:] if len(sizes) == 2 and len(wanted) > 1 else [1, wanted[-1]]
    begins, ends = [], []
    for axis in range(2):
        k, s, d = win.kernel[axis], win.stride[axis], win.dilation[axis]
        total = s * (sizes[axis] - 1) + output_padding[axis] + d * (k - 1) + 1 - wanted[axis]
        if total < 0:
            output_padding[axis] -= total
            total = 0
        small = total // 2
        begin = small if mode == "SAME_UPPER" else total - small
        begins.append(begin)
        ends.append(total - begin)
    return (begins[0], begins[1], ends[0], ends[1]), output_padding


@converter("ConvTranspose", 1)
def conv_transpose(ctx: ImportContext, n: OnnxNode) -> None:
    x, rank, win, w = _conv_like(ctx, n)
    output_padding = list(n.attr("output_padding", [0] * rank))
    output_padding = output_padding if rank == 2 else [0, output_padding[0]]
    pads, output_padding = _transpose_pads(ctx, n, x.type, win, output_padding)
    attrs = ConvTranspose2dAttrs(win.stride, pads, win.dilation, n.attr("group", 1),
                                 tuple(output_padding))
    y = ctx.emit(n, ops.conv_transpose2d, [to_2d(ctx, n, x, rank), w, ctx.param(n.input(2))],
                 attrs)
    ctx.bind(n.output(0), from_2d(ctx, n, y, rank))


@converter("DeformConv", 19)
def deform_conv(ctx: ImportContext, n: OnnxNode) -> None:
    """``DeformConv(X, W, offset, B?, mask?)`` -> ``deform_conv2d(input, offset, weight, bias,
    mask)``; the weight and offset groups follow from the shapes and must agree."""
    x = ctx.tensor(n.input(0))
    if x.type.rank != 4:
        ctx.fail(n, f"has a {x.type.rank}-D input; cnnir's deform_conv2d is 2-D")
    w_type = ctx.type(n.input(1))
    win = window(ctx, n, x.type, list(n.attr("kernel_shape", w_type.shape[2:])))
    group = n.attr("group", 1)
    if is_static(x.type.shape[1]) and x.type.shape[1] != group * w_type.shape[1]:
        ctx.fail(n, f"has group={group} but the weight {shape_str(w_type.shape)} implies "
                    f"{x.type.shape[1] // w_type.shape[1]} groups")
    inputs = [x, ctx.tensor(n.input(2)), ctx.param(n.input(1)), ctx.param(n.input(3)),
              ctx.tensor(n.input(4))]
    attrs = Conv2dAttrs(win.stride, win.pads, win.dilation)
    ctx.bind(n.output(0), ctx.emit(n, ops.deform_conv2d, inputs, attrs))


def _used(ctx: ImportContext, name: str) -> bool:
    return bool(name) and (name in ctx.graph_outputs or bool(ctx.consumers.get(name)))


@converter("BatchNormalization", 7)
def batch_norm(ctx: ImportContext, n: OnnxNode) -> None:
    """``BatchNormalization(X, scale, B, mean, var)``; torch momentum = 1 − ONNX momentum."""
    if n.attr("spatial", 1) != 1:
        ctx.fail(n, "has spatial=0 (per-element statistics), which cnnir does not support")
    if any(_used(ctx, n.output(i)) for i in (1, 2, 3, 4)):
        ctx.fail(n, "uses the running-statistics outputs, which cnnir's batch_norm does not "
                    "return", "export the model in eval mode")
    attrs = BatchNormAttrs(training=bool(n.attr("training_mode", 0)),
                           momentum=shortest_float32(1.0 - n.attr("momentum", 0.9)),
                           eps=n.attr("epsilon", 1e-5))
    inputs = [ctx.tensor(n.input(0)), ctx.buffer(n.input(3)), ctx.buffer(n.input(4)),
              ctx.param(n.input(1)), ctx.param(n.input(2))]
    ctx.bind(n.output(0), ctx.emit(n, ops.batch_norm, inputs, attrs))


def _static_channels(ctx: ImportContext, n: OnnxNode, x: Value) -> int:
    channels = x.type.shape[1] if x.type.rank >= 3 else None
    if not is_static(channels):
        ctx.fail(n, f"needs an input (N, C, ...) with a static C, got "
                    f"{shape_str(x.type.shape)}")
    return channels


def _norm_params(ctx: ImportContext, n: OnnxNode) -> list[Value | None]:
    """The scale and bias of a normalization, or None for cnnir's own export of absent ones
    (literal ones and zeros): the layer then has no affine parameters, as before export."""
    fills = (1.0, 0.0)
    literal = [ctx.kinds.get(n.input(i)) == "literal" and ctx.is_const(n.input(i))
               and bool(np.all(ctx.const(n.input(i)) == fills[i - 1])) for i in (1, 2)]
    if all(literal) or (literal[0] and not n.input(2)):
        return [None, None]
    return [ctx.param(n.input(1)), ctx.param(n.input(2))]


@converter("InstanceNormalization", 6)
def instance_norm(ctx: ImportContext, n: OnnxNode) -> None:
    """``InstanceNormalization(X, scale, B)``: group_norm with one channel per group."""
    x = ctx.tensor(n.input(0))
    attrs = GroupNormAttrs(_static_channels(ctx, n, x), n.attr("epsilon", 1e-5))
    ctx.bind(n.output(0), ctx.emit(n, ops.group_norm, [x, *_norm_params(ctx, n)], attrs))


def _group_norm(ctx: ImportContext, n: OnnxNode, per_group: bool) -> None:
    x = ctx.tensor(n.input(0))
    channels, groups = _static_channels(ctx, n, x), n.attr("num_groups")
    if per_group and groups != channels:
        ctx.fail(n, f"has a scale per group ({groups} groups of {channels} channels), "
                    f"opset 18's form, which torch's GroupNorm (a scale per channel) cannot "
                    f"express", "export with opset 21 or later")
    attrs = GroupNormAttrs(groups, n.attr("epsilon", 1e-5))
    ctx.bind(n.output(0), ctx.emit(n, ops.group_norm, [x, *_norm_params(ctx, n)], attrs))


@converter("GroupNormalization", 18)
def group_norm_18(ctx: ImportContext, n: OnnxNode) -> None:
    _group_norm(ctx, n, per_group=True)


@converter("GroupNormalization", 21)
def group_norm(ctx: ImportContext, n: OnnxNode) -> None:
    _group_norm(ctx, n, per_group=False)


@converter("LayerNormalization", 17)
def layer_norm(ctx: ImportContext, n: OnnxNode) -> None:
    """``LayerNormalization(X, Scale, B, axis)`` over the dims from ``axis`` on."""
    if any(_used(ctx, n.output(i)) for i in (1, 2)):
        ctx.fail(n, "uses its Mean or InvStdDev output, which cnnir's layer_norm does not "
                    "return")
    x = ctx.tensor(n.input(0))
    shape = x.type.shape[n.attr("axis", -1) % x.type.rank:]
    if not all(is_static(d) for d in shape):
        ctx.fail(n, f"normalizes the symbolic dims {list(shape)} of input "
                    f"{shape_str(x.type.shape)}", "give the model static trailing dims")
    attrs = LayerNormAttrs(tuple(shape), n.attr("epsilon", 1e-5))
    ctx.bind(n.output(0), ctx.emit(n, ops.layer_norm, [x, *_norm_params(ctx, n)], attrs))


# -- pooling -------------------------------------------------------------------------------


def _fits_torch_padding(win: Window) -> bool:
    """Symmetric pads of at most half the (effective) kernel, as torch's pools require."""
    top, left, bottom, right = win.pads
    if (top, left) != (bottom, right):
        return False
    return all(p <= k // 2 and p <= (d * (k - 1) + 1) // 2
               for p, k, d in zip((top, left), win.kernel, win.dilation))


def _pre_pad(ctx: ImportContext, n: OnnxNode, x: Value, win: Window, value: float) -> Value:
    top, left, bottom, right = win.pads
    return ctx.emit(n, ops.pad, [x], PadAttrs((left, right, top, bottom), value), suffix="/pad")


def _real_counts(x: TensorType, y: TensorType, win: Window) -> np.ndarray:
    """Input pixels (not padding) under each output window, ``[OH, OW]``."""
    counts = []
    for axis in range(2):
        start = np.arange(y.shape[2 + axis]) * win.stride[axis] - win.pads[axis]
        end = np.minimum(start + win.kernel[axis], x.shape[2 + axis])
        counts.append(end - np.maximum(start, 0))
    return np.outer(counts[0], counts[1])


def _exclude_pad_rescale(ctx: ImportContext, n: OnnxNode, x: Value, y: Value,
                         win: Window) -> Value:
    """An average over explicitly zero-padded input, rescaled from kh·kw to the count of
    real pixels: ONNX's count_include_pad=0 for pads torch cannot express."""
    if not all(is_static(d) for d in x.type.shape[2:]):  # a symbolic batch is fine
        ctx.fail(n, f"needs static spatial dims for pads {list(win.pads)} with "
                    f"count_include_pad=0, got {shape_str(x.type.shape)}")
    scale = win.kernel[0] * win.kernel[1] / _real_counts(x.type, y.type, win)
    factor = ctx.graph.add_literal(scale.astype(y.type.dtype), f"{n.name}/count")
    return ctx.emit(n, ops.mul, [y, factor], suffix="/exclude_pad")


def _pool(ctx: ImportContext, n: OnnxNode, average: bool) -> None:
    x = ctx.tensor(n.input(0))
    rank = spatial_rank(ctx, n, x.type)
    win = window(ctx, n, x.type, list(n.attr("kernel_shape")))
    ceil_mode = bool(n.attr("ceil_mode", 0))
    include_pad = bool(n.attr("count_include_pad", 0))
    if average and win.dilation != (1, 1):
        ctx.fail(n, f"has dilations {list(win.dilation)}; avg_pool2d has no dilation (as in "
                    f"torch)")
    x2 = padded = to_2d(ctx, n, x, rank)
    padding, explicit = win.pads[:2], not _fits_torch_padding(win)
    if explicit:
        if ceil_mode:
            ctx.fail(n, f"has pads {list(win.pads)} that torch's pools cannot express "
                        f"(asymmetric or over half the kernel) together with ceil_mode=1")
        padded, padding = _pre_pad(ctx, n, x2, win, 0.0 if average else -math.inf), (0, 0)
    if average:
        attrs = AvgPoolAttrs(win.kernel, win.stride, padding, ceil_mode=ceil_mode,
                             count_include_pad=include_pad or explicit)
    else:
        attrs = PoolAttrs(win.kernel, win.stride, padding, win.dilation, ceil_mode)
    y = ctx.emit(n, ops.avg_pool2d if average else ops.max_pool2d, [padded], attrs)
    if average and explicit and not include_pad:
        y = _exclude_pad_rescale(ctx, n, x2, y, win)
    ctx.bind(n.output(0), from_2d(ctx, n, y, rank))


@converter("MaxPool", 1)
def max_pool(ctx: ImportContext, n: OnnxNode) -> None:
    if _used(ctx, n.output(1)):
        ctx.fail(n, "uses the Indices output, which cnnir's max_pool2d does not return")
    _pool(ctx, n, average=False)


@converter("AveragePool", 1)
def average_pool(ctx: ImportContext, n: OnnxNode) -> None:
    _pool(ctx, n, average=True)


def _global_pool(ctx: ImportContext, n: OnnxNode, adaptive: object, reduce: object) -> None:
    x = ctx.tensor(n.input(0))
    if x.type.rank == 4:
        y = ctx.emit(n, adaptive, [x], AdaptivePoolAttrs((1, 1)))
    else:
        y = ctx.emit(n, reduce, [x], ReduceAttrs(tuple(range(2, x.type.rank)), keepdim=True))
    ctx.bind(n.output(0), y)


@converter("GlobalAveragePool", 1)
def global_average_pool(ctx: ImportContext, n: OnnxNode) -> None:
    _global_pool(ctx, n, ops.adaptive_avg_pool2d, ops.mean)


@converter("GlobalMaxPool", 1)
def global_max_pool(ctx: ImportContext, n: OnnxNode) -> None:
    _global_pool(ctx, n, ops.adaptive_max_pool2d, ops.amax)


# -- resizing ------------------------------------------------------------------------------


def _per_axis(ctx: ImportContext, n: OnnxNode, x: TensorType, values: np.ndarray,
              fill: list) -> list:
    """A scales/sizes input (with the ``axes`` attribute) spread over all ``x`` dims."""
    axes = n.attr("axes")
    values = as_dims(values) if values.dtype.kind in "iuO" else values.reshape(-1).tolist()
    if axes is None:
        if len(values) != x.rank:
            ctx.fail(n, f"has {len(values)} scales/sizes for the {x.rank}-D input")
        return values
    full = list(fill)
    for axis, value in zip(axes, values):
        full[axis % x.rank] = value
    return full


def _nearest_ties(outs: list[int], scales: list[float]) -> bool:
    """Whether half_pixel + round_prefer_floor hits an exact .5 (where it differs from
    torch's nearest-exact, which rounds those up). Over 2²⁴ output rows it answers yes
    without looking (a file declaring absurd sizes allocates nothing)."""
    for out, scale in zip(outs, scales):
        if out > 1 << 24:
            return True
        x = (np.arange(out, dtype=np.float64) + 0.5) / scale - 0.5
        frac = x - np.floor(x)
        if np.any(np.abs(frac - 0.5) < 1e-6):
            return True
    return False


def _torch_mode(ctx: ImportContext, n: OnnxNode, x: TensorType, outs: list,
                scales: list[float]) -> tuple[str, bool | None]:
    """(interpolate mode, align_corners) for the Resize attributes (docs/semantics.md §7.3)."""
    mode = n.attr("mode", "nearest")
    transform = n.attr("coordinate_transformation_mode", "half_pixel")
    nearest = n.attr("nearest_mode", "round_prefer_floor")
    if mode == "nearest":
        if transform == "asymmetric" and nearest == "floor":
            return "nearest", None
        if transform == "half_pixel" and nearest == "round_prefer_ceil":
            return "nearest-exact", None
        if (transform == "half_pixel" and nearest == "round_prefer_floor" and x.is_static
                and not _nearest_ties(outs, scales)):
            return "nearest-exact", None
    elif mode == "linear":
        if transform == "align_corners":
            return "bilinear", True
        if transform == "half_pixel" or (transform == "pytorch_half_pixel"
                                         and all(is_static(o) and o > 1 for o in outs)):
            return "bilinear", False
    ctx.fail(n, f"has mode={mode!r}, coordinate_transformation_mode={transform!r}, "
                f"nearest_mode={nearest!r}, which match no torch interpolate mode",
             "cnnir imports nearest (asymmetric, floor), nearest-exact (half_pixel, "
             "round_prefer_ceil) and bilinear (half_pixel or align_corners)")


def _check_resize_attrs(ctx: ImportContext, n: OnnxNode, roi: np.ndarray | None,
                        scales: list[float]) -> None:
    whole = np.concatenate([np.zeros(roi.size // 2), np.ones(roi.size // 2)]) if roi is not None \
        else None
    if roi is not None and roi.size and not np.array_equal(roi.astype(np.float64), whole):
        ctx.fail(n, f"has a region of interest {roi.tolist()}, which cnnir does not support",
                 "only the whole image (roi [0, …, 0, 1, …, 1]) is accepted")
    if n.attr("antialias", 0) and min(scales) < 1:
        ctx.fail(n, "has antialias=1 for downsampling; torch interpolate(antialias=False) "
                    "has no antialiasing")
    if n.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        ctx.fail(n, f"has keep_aspect_ratio_policy="
                    f"{n.attr('keep_aspect_ratio_policy')!r}; only 'stretch' is supported")


def _resize(ctx: ImportContext, n: OnnxNode, x: Value, roi: np.ndarray | None,
            scales: np.ndarray | None, sizes: np.ndarray | None) -> None:
    t = x.type
    if t.rank != 4:
        ctx.fail(n, f"resizes a {t.rank}-D input; cnnir's interpolate is 2-D")
    if sizes is not None and sizes.size:
        full = _per_axis(ctx, n, t, sizes, list(t.shape))
        if tuple(full[:2]) != t.shape[:2]:
            ctx.fail(n, f"resizes N or C (sizes {full} for input {shape_str(t.shape)})")
        outs = list(full[2:])
        if not all(is_static(d) for d in outs):
            ctx.fail(n, f"has symbolic output sizes {outs}", "give static spatial sizes")
        factors = [o / s if is_static(s) else 1.0 for o, s in zip(outs, t.shape[2:])]
        attrs = {"size": tuple(outs)}
    elif scales is not None and scales.size:
        full = [shortest_float32(s) if scales.dtype == np.float32 else float(s)
                for s in _per_axis(ctx, n, t, scales, [1.0] * t.rank)]
        if full[:2] != [1.0, 1.0]:
            ctx.fail(n, f"scales N or C (scales {full})", "only H and W can be resized")
        factors = full[2:]
        outs = [math.floor(s * f) if is_static(s) else s for s, f in zip(t.shape[2:], factors)]
        attrs = {"scale_factor": tuple(factors)}
    else:
        ctx.fail(n, "has neither constant scales nor constant sizes")
    _check_resize_attrs(ctx, n, roi, factors)
    mode, align = _torch_mode(ctx, n, t, outs, factors)
    y = ctx.emit(n, ops.interpolate, [x], InterpolateAttrs(mode=mode, align_corners=align,
                                                          **attrs))
    ctx.bind(n.output(0), y)


def _const_or_fail(ctx: ImportContext, n: OnnxNode, i: int) -> np.ndarray | None:
    name = n.input(i)
    if not name:
        return None
    if not ctx.is_const(name):
        ctx.fail(n, f"has the non-constant input '{name}'", "cnnir needs constant scales/sizes")
    return ctx.const(name)


@converter("Resize", 10)
def resize_10(ctx: ImportContext, n: OnnxNode) -> None:
    """Resize-10: ``(X, scales)``."""
    _resize(ctx, n, ctx.tensor(n.input(0)), None, _const_or_fail(ctx, n, 1), None)


@converter("Resize", 11)
def resize(ctx: ImportContext, n: OnnxNode) -> None:
    """Resize-11+: ``(X, roi, scales, sizes)``; later versions add attributes only."""
    roi, scales, sizes = (_const_or_fail(ctx, n, i) for i in (1, 2, 3))
    _resize(ctx, n, ctx.tensor(n.input(0)), roi, scales, sizes)


def _upsample(ctx: ImportContext, n: OnnxNode, scales: np.ndarray) -> None:
    """The deprecated Upsample: nearest is asymmetric + floor (torch's nearest)."""
    mode = n.attr("mode", "nearest")
    if mode != "nearest":
        ctx.fail(n, f"has mode={mode!r}: Upsample's linear mode is asymmetric, which is no "
                    f"torch mode")
    n.attrs.update({"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"})
    _resize(ctx, n, ctx.tensor(n.input(0)), None, scales, None)


@converter("Upsample", 7)
def upsample_7(ctx: ImportContext, n: OnnxNode) -> None:
    _upsample(ctx, n, np.asarray(n.attr("scales"), dtype=np.float32))


@converter("Upsample", 9)
def upsample(ctx: ImportContext, n: OnnxNode) -> None:
    _upsample(ctx, n, _const_or_fail(ctx, n, 1))
