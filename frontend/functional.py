"""``cnnir.nn.functional``: torch.nn.functional's names, signatures and defaults.

Each function records one op in the active trace (see ``cnnir.trace``); attribute errors name
the function and the user's line. ``F.dropout`` defaults to ``training=True`` and ``F.rrelu``
to ``training=False``, as in PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnir import ops
from cnnir.errors import CnnirError
from cnnir.frontend.tensor import Tensor
from cnnir.frontend.tracer import build_attrs, current_tracer
from cnnir.ops.activation import (
    DropoutAttrs,
    EluAttrs,
    GeluAttrs,
    HardtanhAttrs,
    LeakyReluAttrs,
    RReluAttrs,
    SoftmaxAttrs,
    SoftplusAttrs,
)
from cnnir.ops.conv import Conv2dAttrs, ConvTranspose2dAttrs, normalize_padding
from cnnir.ops.loss import (
    ContrastiveAttrs,
    CrossEntropyAttrs,
    HuberAttrs,
    LossAttrs,
    NllAttrs,
    SmoothL1Attrs,
    TripletAttrs,
)
from cnnir.ops.norm import BatchNormAttrs, GroupNormAttrs, LayerNormAttrs
from cnnir.ops.pool import AdaptivePoolAttrs, AvgPoolAttrs, InterpolateAttrs, PoolAttrs
from cnnir.ops.registry import OpDef, pair, require
from cnnir.ops.tensor import (
    ChannelShuffleAttrs,
    DimAttrs,
    ExpandAttrs,
    FlattenAttrs,
    PadAttrs,
    ReduceAttrs,
    ReshapeAttrs,
    SplitAttrs,
    TransposeAttrs,
    chunk_sizes,
    normalize_dim,
)


def _emit(op: OpDef, inputs: Sequence[Any], attrs_cls: type | None = None,
          **attrs: Any) -> Tensor:
    tracer = current_tracer(f"F.{op.name}")
    built = build_attrs(attrs_cls, op.name, **attrs) if attrs_cls is not None else None
    return tracer.emit(op, inputs, built)[0]


def _emit_many(op: OpDef, inputs: Sequence[Any], attrs: Any) -> tuple[Tensor, ...]:
    return tuple(current_tracer(f"F.{op.name}").emit(op, inputs, attrs))


def _shape_of(x: Any) -> tuple:
    return tuple(x.shape)


# -- convolution and linear --------------------------------------------------------------


def conv2d(input: Tensor, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    kernel = _shape_of(weight)[2:]
    pads = build_attrs(lambda: normalize_padding(padding, pair(kernel, "kernel"),
                                                 pair(dilation, "dilation"),
                                                 pair(stride, "stride")), "conv2d")
    return _emit(ops.conv2d, [input, weight, bias], Conv2dAttrs, stride=stride, padding=pads,
                 dilation=dilation, groups=groups)


def conv1d(input: Tensor, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """conv2d on (N, C, 1, L) with a (O, C/g, 1, k) view of the weight, the result
    reshaped back to (N, O, L_out)."""
    def one(v: Any, name: str) -> int:
        v = v[0] if isinstance(v, (tuple, list)) and len(v) == 1 else v
        build_attrs(lambda: require(isinstance(v, int), f"{name} must be an int or a "
                                    f"1-tuple, got {v!r}"), "conv1d")
        return v

    shape = _shape_of(weight)
    build_attrs(lambda: require(len(shape) == 3, f"expects a 3-D weight (out_channels, "
                                f"in_channels/groups, kernel) but it is {list(shape)}"), "conv1d")
    build_attrs(lambda: require(input.ndim in (2, 3), f"expects a 2-D (C, L) or 3-D (N, C, L) "
                                f"input but it is {list(input.shape)}"), "conv1d")
    if input.ndim == 2:  # unbatched
        return squeeze(conv1d(unsqueeze(input, 0), weight, bias, stride, padding, dilation,
                              groups), 0)
    pad = padding if isinstance(padding, str) else (0, one(padding, "padding"))
    w = reshape(weight, (shape[0], shape[1], 1, shape[2]))
    y = conv2d(unsqueeze(input, -2), w, bias, (1, one(stride, "stride")), pad,
               (1, one(dilation, "dilation")), groups)
    return squeeze(y, -2)


def conv_transpose2d(input: Tensor, weight: Any, bias: Any = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                     dilation: Any = 1) -> Tensor:
    ph, pw = build_attrs(lambda: pair(padding, "padding"), "conv_transpose2d")
    return _emit(ops.conv_transpose2d, [input, weight, bias], ConvTranspose2dAttrs,
                 stride=stride, padding=(ph, pw, ph, pw), output_padding=output_padding,
                 groups=groups, dilation=dilation)


def deform_conv2d(input: Tensor, offset: Any, weight: Any, bias: Any = None, stride: Any = 1,
                  padding: Any = 0, dilation: Any = 1, mask: Any = None) -> Tensor:
    """torchvision.ops.deform_conv2d: groups and offset groups follow from the shapes."""
    ph, pw = build_attrs(lambda: pair(padding, "padding"), "deform_conv2d")
    return _emit(ops.deform_conv2d, [input, offset, weight, bias, mask], Conv2dAttrs,
                 stride=stride, padding=(ph, pw, ph, pw), dilation=dilation)


def linear(input: Tensor, weight: Any, bias: Any = None) -> Tensor:
    return _emit(ops.linear, [input, weight, bias])


def matmul(input: Any, other: Any) -> Tensor:
    return _emit(ops.matmul, [input, other])


# -- normalization, dropout, activations ---------------------------------------------------


def batch_norm(input: Tensor, running_mean: Any, running_var: Any, weight: Any = None,
               bias: Any = None, training: bool = False, momentum: float | None = 0.1,
               eps: float = 1e-5) -> Tensor:
    return _emit(ops.batch_norm, [input, running_mean, running_var, weight, bias],
                 BatchNormAttrs, training=training, momentum=momentum, eps=eps)


def group_norm(input: Tensor, num_groups: int, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> Tensor:
    return _emit(ops.group_norm, [input, weight, bias], GroupNormAttrs, num_groups=num_groups,
                 eps=eps)


def layer_norm(input: Tensor, normalized_shape: Any, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> Tensor:
    return _emit(ops.layer_norm, [input, weight, bias], LayerNormAttrs,
                 normalized_shape=normalized_shape, eps=eps)


def instance_norm(input: Tensor, running_mean: Any = None, running_var: Any = None,
                  weight: Any = None, bias: Any = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Statistics per sample and channel (group_norm with one channel per group); with
    ``use_input_stats=False``, the running statistics (batch_norm in eval). Updating running
    statistics from the input is not supported."""
    if not use_input_stats:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    if running_mean is not None:
        build_attrs(lambda: require(False, "cannot update running statistics from the "
                                    "input", "use track_running_stats=False, or eval mode "
                                    "(running statistics)"), "instance_norm")
    return group_norm(input, input.shape[1], weight, bias, eps)


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    return _emit(ops.dropout, [input], DropoutAttrs, p=p, training=training)


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True,
              inplace: bool = False) -> Tensor:
    return _emit(ops.dropout2d, [input], DropoutAttrs, p=p, training=training)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    return _emit(ops.relu, [input])


def abs(input: Tensor) -> Tensor:  # noqa: A001  (torch.abs)
    return _emit(ops.abs_, [input])


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    return _emit(ops.relu6, [input])


def sigmoid(input: Tensor) -> Tensor:
    return _emit(ops.sigmoid, [input])


def tanh(input: Tensor) -> Tensor:
    return _emit(ops.tanh, [input])


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    return _emit(ops.silu, [input])


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    return _emit(ops.hardsigmoid, [input])


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    return _emit(ops.hardswish, [input])


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    return _emit(ops.gelu, [input], GeluAttrs, approximate=approximate)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    return _emit(ops.leaky_relu, [input], LeakyReluAttrs, negative_slope=negative_slope)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    return _emit(ops.elu, [input], EluAttrs, alpha=alpha)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0,
             inplace: bool = False) -> Tensor:
    return _emit(ops.hardtanh, [input], HardtanhAttrs, min_val=min_val, max_val=max_val)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    return _emit(ops.softplus, [input], SoftplusAttrs, beta=beta, threshold=threshold)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    return _emit(ops.mish, [input])


def prelu(input: Tensor, weight: Any) -> Tensor:
    return _emit(ops.prelu, [input, weight])


def rrelu(input: Tensor, lower: float = 1.0 / 8, upper: float = 1.0 / 3,
          training: bool = False, inplace: bool = False) -> Tensor:
    return _emit(ops.rrelu, [input], RReluAttrs, lower=lower, upper=upper, training=training)


def legacy_softmax_dim(ndim: int) -> int:
    """torch's implicit softmax dim when ``dim=None``."""
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None) -> Tensor:
    dim = legacy_softmax_dim(input.ndim) if dim is None else dim
    return _emit(ops.softmax, [input], SoftmaxAttrs, dim=dim)


def log_softmax(input: Tensor, dim: int | None = None) -> Tensor:
    dim = legacy_softmax_dim(input.ndim) if dim is None else dim
    return _emit(ops.log_softmax, [input], SoftmaxAttrs, dim=dim)


# -- pooling and resampling ------------------------------------------------------------------


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    if return_indices:
        raise CnnirError("max_pool2d(return_indices=True) is not supported",
                         hint="cnnir's max_pool2d returns only the pooled values")
    return _emit(ops.max_pool2d, [input], PoolAttrs, kernel_size=kernel_size, stride=stride,
                 padding=padding, dilation=dilation, ceil_mode=ceil_mode)


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    return _emit(ops.avg_pool2d, [input], AvgPoolAttrs, kernel_size=kernel_size, stride=stride,
                 padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                 divisor_override=divisor_override)


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    return _emit(ops.adaptive_avg_pool2d, [input], AdaptivePoolAttrs, output_size=output_size)


def adaptive_max_pool2d(input: Tensor, output_size: Any, return_indices: bool = False) -> Tensor:
    if return_indices:
        raise CnnirError("adaptive_max_pool2d(return_indices=True) is not supported")
    return _emit(ops.adaptive_max_pool2d, [input], AdaptivePoolAttrs, output_size=output_size)


def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                align_corners: bool | None = None,
                recompute_scale_factor: bool | None = None) -> Tensor:
    return _emit(ops.interpolate, [input], InterpolateAttrs, size=size, scale_factor=scale_factor,
                 mode=mode, align_corners=align_corners,
                 recompute_scale_factor=recompute_scale_factor)


def upsample(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
             align_corners: bool | None = None) -> Tensor:
    return interpolate(input, size, scale_factor, mode, align_corners)


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    if mode != "constant":
        raise CnnirError(f"F.pad mode {mode!r} is not supported", hint="use mode='constant'")
    return _emit(ops.pad, [input], PadAttrs, pads=tuple(int(p) for p in pad), value=float(value))


def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:
    """(*, C·r², H, W) -> (*, C, H·r, W·r): a reshape, a transpose and a reshape."""
    r = upscale_factor
    *lead, c, h, w = _pixel_input(input, r, "pixel_shuffle")
    build_attrs(lambda: require(c % (r * r) == 0, f"expects its input's number of channels "
                                f"to be divisible by the square of upscale_factor, but input."
                                f"size(-3)={c} is not divisible by {r * r}"), "pixel_shuffle")
    k = len(lead)
    x = reshape(input, (*lead, c // (r * r), r, r, h, w))
    x = permute(x, (*range(k + 1), k + 3, k + 1, k + 4, k + 2))
    return reshape(x, (*lead, c // (r * r), h * r, w * r))


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:
    """(*, C, H·r, W·r) -> (*, C·r², H, W), pixel_shuffle's inverse."""
    r = downscale_factor
    *lead, c, h, w = _pixel_input(input, r, "pixel_unshuffle")
    build_attrs(lambda: require(h % r == 0 and w % r == 0, f"expects height {h} and width {w} "
                                f"to be divisible by downscale_factor={r}"), "pixel_unshuffle")
    k = len(lead)
    x = reshape(input, (*lead, c, h // r, r, w // r, r))
    x = permute(x, (*range(k + 1), k + 2, k + 4, k + 1, k + 3))
    return reshape(x, (*lead, c * r * r, h // r, w // r))


def _pixel_input(input: Tensor, r: Any, where: str) -> tuple:
    shape = tuple(input.shape)
    build_attrs(lambda: require(isinstance(r, int) and r >= 1, f"the factor must be a "
                                f"positive int, got {r!r}"), where)
    build_attrs(lambda: require(len(shape) >= 3 and all(isinstance(d, int) for d in shape[-3:]),
                                f"expects an input (*, C, H, W) with static C, H, W but it is "
                                f"{list(shape)}"), where)
    return shape


def channel_shuffle(input: Tensor, groups: int) -> Tensor:
    return _emit(ops.channel_shuffle, [input], ChannelShuffleAttrs, groups=groups)


# -- tensor ops ------------------------------------------------------------------------------


def add(input: Any, other: Any) -> Tensor:
    return _emit(ops.add, [input, other])


def sub(input: Any, other: Any) -> Tensor:
    return _emit(ops.sub, [input, other])


def mul(input: Any, other: Any) -> Tensor:
    return _emit(ops.mul, [input, other])


def div(input: Any, other: Any) -> Tensor:
    return _emit(ops.div, [input, other])


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    return _emit(ops.cat, list(tensors), DimAttrs, dim=dim)


concat = cat


def reshape(input: Tensor, shape: Sequence[Any]) -> Tensor:
    return _emit(ops.reshape, [input], ReshapeAttrs, shape=tuple(shape))


def expand(input: Tensor, sizes: Sequence[Any]) -> Tensor:
    """torch.Tensor.expand: broadcast to ``sizes``; -1 keeps that dim's size."""
    sizes = tuple(sizes)
    lead = len(sizes) - input.ndim
    shape = tuple(input.shape[i - lead] if s == -1 and i >= lead else s
                  for i, s in enumerate(sizes))
    return _emit(ops.expand, [input], ExpandAttrs, shape=shape)


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return _emit(ops.flatten, [input], FlattenAttrs, start_dim=start_dim, end_dim=end_dim)


def permute(input: Tensor, dims: Sequence[int]) -> Tensor:
    return _emit(ops.transpose, [input], TransposeAttrs, perm=tuple(dims))


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    perm = list(range(input.ndim))
    d0, d1 = normalize_dim(dim0, input.ndim), normalize_dim(dim1, input.ndim)
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return permute(input, perm)


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    shape = list(input.shape)
    shape.insert(normalize_dim(dim, input.ndim + 1), 1)
    return reshape(input, shape)


def squeeze(input: Tensor, dim: int | None = None) -> Tensor:
    dims = range(input.ndim) if dim is None else [normalize_dim(dim, input.ndim)]
    shape = [d for i, d in enumerate(input.shape) if not (i in dims and d == 1)]
    return reshape(input, shape)


def split(input: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
    d = normalize_dim(dim, input.ndim)
    length = input.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        sizes = tuple(min(step, length - i) for i in range(0, length, step)) if step > 0 else ()
    else:
        sizes = tuple(split_size_or_sections)
    attrs = build_attrs(SplitAttrs, "split", sizes=sizes, dim=d)
    return _emit_many(ops.split, [input], attrs)


def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    d = normalize_dim(dim, input.ndim)
    sizes = build_attrs(lambda: chunk_sizes(input.shape[d], chunks), "chunk")
    return split(input, sizes, d)


def _reduce_dims(dim: Any) -> tuple[int, ...] | None:
    if dim is None:
        return None
    return (dim,) if isinstance(dim, int) else tuple(dim)


def mean(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return _emit(ops.mean, [input], ReduceAttrs, dims=_reduce_dims(dim), keepdim=keepdim)


def sum(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A001
    return _emit(ops.sum_, [input], ReduceAttrs, dims=_reduce_dims(dim), keepdim=keepdim)


def amax(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return _emit(ops.amax, [input], ReduceAttrs, dims=_reduce_dims(dim), keepdim=keepdim)


def identity(input: Tensor) -> Tensor:
    return _emit(ops.identity, [input])


# -- losses ----------------------------------------------------------------------------------


def cross_entropy(input: Tensor, target: Any, weight: Any = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    return _emit(ops.cross_entropy, [input, target, weight], CrossEntropyAttrs,
                 reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)


def nll_loss(input: Tensor, target: Any, weight: Any = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    return _emit(ops.nll_loss, [input, target, weight], NllAttrs, reduction=reduction,
                 ignore_index=ignore_index)


def binary_cross_entropy(input: Tensor, target: Any, weight: Any = None,
                         reduction: str = "mean") -> Tensor:
    return _emit(ops.binary_cross_entropy, [input, target, weight], LossAttrs,
                 reduction=reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Any, weight: Any = None,
                                     reduction: str = "mean", pos_weight: Any = None) -> Tensor:
    return _emit(ops.binary_cross_entropy_with_logits, [input, target, weight, pos_weight],
                 LossAttrs, reduction=reduction)


def l1_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    return _emit(ops.l1_loss, [input, target], LossAttrs, reduction=reduction)


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    return _emit(ops.mse_loss, [input, target], LossAttrs, reduction=reduction)


def smooth_l1_loss(input: Tensor, target: Any, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    return _emit(ops.smooth_l1_loss, [input, target], SmoothL1Attrs, reduction=reduction,
                 beta=beta)


def huber_loss(input: Tensor, target: Any, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    return _emit(ops.huber_loss, [input, target], HuberAttrs, reduction=reduction, delta=delta)


def triplet_margin_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0,
                        p: float = 2, eps: float = 1e-6, swap: bool = False,
                        reduction: str = "mean") -> Tensor:
    return _emit(ops.triplet_margin_loss, [anchor, positive, negative], TripletAttrs,
                 reduction=reduction, margin=margin, p=p, eps=eps, swap=swap)


def contrastive_loss(x1: Tensor, x2: Tensor, label: Any, margin: float = 1.0, eps: float = 1e-6,
                     reduction: str = "mean") -> Tensor:
    """cnnir's convention (no torch op): label 0 = similar, 1 = dissimilar, margin 1.0,
    ``mean[(1−Y)·½·D² + Y·½·max(0, m − D)²]`` with ``D = ‖x1 − x2 + eps‖₂``."""
    return _emit(ops.contrastive_loss, [x1, x2, label], ContrastiveAttrs, reduction=reduction,
                 margin=margin, eps=eps)
