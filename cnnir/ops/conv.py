"""Convolutions: conv2d, conv_transpose2d and torchvision's deform_conv2d.

conv2d (W ``[O, C/G, kh, kw]``, groups G, padding ``(top, left, bottom, right)``):
    OH = floor((H + pt + pb - d_h(kh - 1) - 1) / s_h) + 1
    MACs = N·O·OH·OW·(C/G)·kh·kw;  FLOPs = 2·MACs (+ N·O·OH·OW with a bias)
conv_transpose2d (W ``[C_in, O/G, kh, kw]``, the adjoint of conv2d):
    OH = (H - 1)·s_h - pt - pb + d_h(kh - 1) + output_padding_h + 1
    MACs = N·C_in·H·W·(O/G)·kh·kw, counted on the *input* grid (the true multiply count)
deform_conv2d (offset ``[N, 2·og·kh·kw, OH, OW]``, optional mask ``[N, og·kh·kw, OH, OW]``):
    MACs as conv2d on the output grid; FLOPs add 7 per bilinear sample (4 mul + 3 add) for
    N·C·kh·kw·OH·OW samples, reported as sampling FLOPs, and 1 per sample with a mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from cnnir.errors import ShapeError
from cnnir.ir.types import Dim, TensorType, dim_add, dim_floordiv, dim_mul, is_static, shape_str
from cnnir.ops.registry import (
    Cost,
    OpDef,
    Window,
    expect_rank,
    nonnegative_pair,
    positive_pair,
    register,
    require,
    same_dtype,
    static_numel,
)

if TYPE_CHECKING:
    from cnnir.ir.graph import Node

Pads = tuple[int, int, int, int]


def normalize_padding(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int],
                      stride: tuple[int, int]) -> Pads:
    """``padding`` as given to PyTorch (int, pair, ``'same'``, ``'valid'``) as
    ``(top, left, bottom, right)``. ``'same'`` pads ``d(k-1)`` in total, the odd pixel on the
    bottom/right, and like PyTorch is refused for strided convolutions."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        require(stride == (1, 1), f"padding='same' needs stride 1, got stride={stride}",
                "PyTorch refuses 'same' for strided convolutions; give explicit padding")
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
    if isinstance(padding, str):
        raise ShapeError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        pads = tuple(int(p) for p in padding)
        require(min(pads) >= 0, f"padding must be >= 0, got {padding!r}")
        return pads  # type: ignore[return-value]
    ph, pw = nonnegative_pair(padding, "padding")
    return (ph, pw, ph, pw)


@dataclass(frozen=True)
class Conv2dAttrs:
    stride: tuple[int, int] = (1, 1)
    padding: Pads = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "stride", positive_pair(self.stride, "stride"))
        object.__setattr__(self, "dilation", positive_pair(self.dilation, "dilation"))
        pads = self.padding
        if isinstance(pads, str):
            raise ShapeError(f"padding={pads!r} depends on the kernel size; normalize it with "
                             f"normalize_padding(padding, kernel, dilation, stride) first")
        if not (isinstance(pads, tuple) and len(pads) == 4):
            pads = normalize_padding(pads, (1, 1), self.dilation, self.stride)
        require(min(pads) >= 0, f"padding must be >= 0, got {pads}")
        object.__setattr__(self, "padding", tuple(int(p) for p in pads))
        require(isinstance(self.groups, int) and self.groups >= 1,
                f"groups must be an int >= 1, got {self.groups!r}")


@dataclass(frozen=True)
class ConvTranspose2dAttrs(Conv2dAttrs):
    output_padding: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        op = nonnegative_pair(self.output_padding, "output_padding")
        object.__setattr__(self, "output_padding", op)
        for axis in range(2):
            require(op[axis] < max(self.stride[axis], self.dilation[axis]),
                    f"output padding must be smaller than either stride or dilation, got "
                    f"output_padding={op}, stride={self.stride}, dilation={self.dilation}")


def conv_out_dim(size: Dim, kernel: int, stride: int, pad_total: int, dilation: int) -> Dim:
    """``floor((L + pads - d(k-1) - 1) / s) + 1``."""
    return dim_add(dim_floordiv(dim_add(size, pad_total - dilation * (kernel - 1) - 1), stride), 1)


def _check_window_fits(x: TensorType, kernel: tuple[int, int], a: Conv2dAttrs) -> None:
    for axis, (name, k) in enumerate(zip("HW", kernel)):
        size = x.shape[2 + axis]
        if not is_static(size):
            continue
        padded = size + a.padding[axis] + a.padding[axis + 2]
        eff = a.dilation[axis] * (k - 1) + 1
        require(eff <= padded,
                lambda name=name, k=k, axis=axis, eff=eff, padded=padded:
                f"has an effective kernel {name} of {eff} (kernel {k}, dilation "
                f"{a.dilation[axis]}) larger than the padded input {name} of {padded} "
                f"(input {shape_str(x.shape)}, padding {a.padding})",
                "pad the input more or use a smaller kernel")


def _conv_spatial(x: TensorType, kernel: tuple[int, int], a: Conv2dAttrs) -> tuple[Dim, Dim]:
    _check_window_fits(x, kernel, a)
    return tuple(  # type: ignore[return-value]
        conv_out_dim(x.shape[2 + i], kernel[i], a.stride[i], a.padding[i] + a.padding[i + 2],
                     a.dilation[i])
        for i in range(2)
    )


def _check_bias(b: TensorType | None, channels: Dim) -> None:
    if b is not None and b.shape != (channels,):
        raise ShapeError(f"expects a bias of shape [{channels}] but it is {shape_str(b.shape)}")


def infer_conv2d(a: Conv2dAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x, w, b = (types + [None])[:3]
    expect_rank(x, 4, "its input (N, C, H, W)")
    expect_rank(w, 4, "its weight (O, C/groups, kh, kw)")
    dtype = same_dtype([x, w, b])
    out_ch, in_per_group = w.shape[0], w.shape[1]
    g = a.groups
    if is_static(out_ch):
        require(out_ch % g == 0,
                f"has groups={g}, which must divide out_channels={out_ch} "
                f"(weight {shape_str(w.shape)})")
    require(x.shape[1] == dim_mul(in_per_group, g),
            lambda: f"expects {dim_mul(in_per_group, g)} input channels (weight "
                    f"{shape_str(w.shape)}, groups={g}) but its input is {shape_str(x.shape)}",
            "check in_channels of this layer against the previous layer's output")
    _check_bias(b, out_ch)
    oh, ow = _conv_spatial(x, (w.shape[2], w.shape[3]), a)
    return [TensorType((x.shape[0], out_ch, oh, ow), dtype)]


def cost_conv2d(a: Conv2dAttrs, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
    w = ins[1]
    out_elems = static_numel(outs[0])
    macs = out_elems * w.shape[1] * w.shape[2] * w.shape[3]
    return Cost(macs=macs, flops=2 * macs + (out_elems if ins[2] is not None else 0))


def conv_window(a: Conv2dAttrs, types: list[TensorType | None]) -> Window:
    w = types[1]
    kernel = tuple(a.dilation[i] * (w.shape[2 + i] - 1) + 1 for i in range(2))
    return Window(kernel, (Fraction(a.stride[0]), Fraction(a.stride[1])))


def _conv_onnx_attrs(a: Conv2dAttrs, w: TensorType) -> dict[str, Any]:
    """Shared Conv/ConvTranspose/DeformConv attributes; ``pads`` is [top, left, bottom, right]
    (begins, then ends), which is cnnir's own order. Never ``auto_pad``."""
    return {"kernel_shape": list(w.shape[2:]), "strides": list(a.stride),
            "pads": list(a.padding), "dilations": list(a.dilation)}


def onnx_conv2d(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Conv(X, W, B?)`` with ``group``; W keeps torch's layout."""
    attrs = _conv_onnx_attrs(node.attrs, node.inputs[1].type)
    return [b.op("Conv", [b.input(0), b.input(1), b.input(2)], group=node.attrs.groups,
                 **attrs)]


conv2d = register(OpDef(
    name="conv2d",
    inputs=("input", "weight", "bias?"),
    params=("weight", "bias"),
    attrs=Conv2dAttrs,
    infer=infer_conv2d,
    cost=cost_conv2d,
    window=conv_window,
    onnx=onnx_conv2d,
    flop_rule="2·MACs, plus one add per output element with a bias",
))


def infer_conv_transpose2d(a: ConvTranspose2dAttrs,
                           types: list[TensorType | None]) -> list[TensorType]:
    x, w, b = (types + [None])[:3]
    expect_rank(x, 4, "its input (N, C, H, W)")
    expect_rank(w, 4, "its weight (C_in, O/groups, kh, kw)")
    dtype = same_dtype([x, w, b])
    g = a.groups
    require(x.shape[1] == w.shape[0],
            f"expects {w.shape[0]} input channels (weight {shape_str(w.shape)} is "
            f"[C_in, O/groups, kh, kw]) but its input is {shape_str(x.shape)}")
    if is_static(w.shape[0]):
        require(w.shape[0] % g == 0,
                f"has groups={g}, which must divide in_channels={w.shape[0]}")
    out_ch = dim_mul(w.shape[1], g)
    _check_bias(b, out_ch)
    spatial = []
    for i in range(2):
        k = w.shape[2 + i]
        size = dim_add(dim_mul(dim_add(x.shape[2 + i], -1), a.stride[i]),
                       a.dilation[i] * (k - 1) + a.output_padding[i] + 1
                       - a.padding[i] - a.padding[i + 2])
        if is_static(size):
            require(size > 0, f"gives a non-positive output size {size} on axis {'HW'[i]} "
                    f"(input {shape_str(x.shape)}, padding {a.padding})")
        spatial.append(size)
    return [TensorType((x.shape[0], out_ch, *spatial), dtype)]


def cost_conv_transpose2d(a: ConvTranspose2dAttrs, ins: list[TensorType | None],
                          outs: list[TensorType]) -> Cost:
    w = ins[1]
    macs = static_numel(ins[0]) * w.shape[1] * w.shape[2] * w.shape[3]
    bias = static_numel(outs[0]) if ins[2] is not None else 0
    return Cost(macs=macs, flops=2 * macs + bias)


def conv_transpose_window(a: ConvTranspose2dAttrs, types: list[TensorType | None]) -> Window:
    w = types[1]
    kernel = tuple(
        math.ceil((a.dilation[i] * (w.shape[2 + i] - 1) + 1) / a.stride[i]) for i in range(2)
    )
    return Window(kernel, (Fraction(1, a.stride[0]), Fraction(1, a.stride[1])))


def onnx_conv_transpose2d(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``ConvTranspose(X, W, B?)`` with explicit pads and ``output_padding``
    (never ``output_shape``); W is ``[C_in, O/G, kh, kw]`` in both."""
    a = node.attrs
    attrs = _conv_onnx_attrs(a, node.inputs[1].type)
    return [b.op("ConvTranspose", [b.input(0), b.input(1), b.input(2)], group=a.groups,
                 output_padding=list(a.output_padding), **attrs)]


conv_transpose2d = register(OpDef(
    name="conv_transpose2d",
    inputs=("input", "weight", "bias?"),
    params=("weight", "bias"),
    attrs=ConvTranspose2dAttrs,
    infer=infer_conv_transpose2d,
    cost=cost_conv_transpose2d,
    window=conv_transpose_window,
    onnx=onnx_conv_transpose2d,
    flop_rule="2·MACs (MACs on the input grid), plus one add per output element with a bias",
))


def _deform_groups(x: TensorType, offset: TensorType, w: TensorType) -> tuple[int, int]:
    kh, kw = w.shape[2], w.shape[3]
    channels, per_group = x.shape[1], w.shape[1]
    require(is_static(channels) and channels % per_group == 0,
            f"expects input channels divisible by weight.shape[1]={per_group} but the input "
            f"is {shape_str(x.shape)}")
    off_ch = offset.shape[1]
    require(is_static(off_ch) and off_ch % (2 * kh * kw) == 0 and off_ch > 0,
            f"expects offset channels to be a multiple of 2·kh·kw = {2 * kh * kw} but the "
            f"offset is {shape_str(offset.shape)}")
    offset_groups = off_ch // (2 * kh * kw)
    require(channels % offset_groups == 0,
            f"has {offset_groups} offset groups, which must divide the {channels} input channels")
    return channels // per_group, offset_groups


def infer_deform_conv2d(a: Conv2dAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x, offset, w, b, mask = (types + [None, None])[:5]
    expect_rank(x, 4, "its input (N, C, H, W)")
    expect_rank(offset, 4, "its offset (N, 2·og·kh·kw, OH, OW)")
    expect_rank(w, 4, "its weight (O, C/groups, kh, kw)")
    dtype = same_dtype([x, offset, w, b, mask])
    groups, offset_groups = _deform_groups(x, offset, w)
    require(w.shape[0] % groups == 0,
            f"has {groups} weight groups, which must divide out_channels={w.shape[0]}")
    _check_bias(b, w.shape[0])
    oh, ow = _conv_spatial(x, (w.shape[2], w.shape[3]), a)
    kk = w.shape[2] * w.shape[3]
    want = (x.shape[0], 2 * offset_groups * kk, oh, ow)
    require(offset.shape == want, f"expects an offset of shape {shape_str(want)} but it is "
            f"{shape_str(offset.shape)}")
    if mask is not None:
        want_mask = (x.shape[0], offset_groups * kk, oh, ow)
        require(mask.shape == want_mask, f"expects a mask of shape {shape_str(want_mask)} but "
                f"it is {shape_str(mask.shape)}")
    return [TensorType((x.shape[0], w.shape[0], oh, ow), dtype)]


def cost_deform_conv2d(a: Conv2dAttrs, ins: list[TensorType | None],
                       outs: list[TensorType]) -> Cost:
    x, w, bias, mask = ins[0], ins[2], ins[3], (ins + [None])[4]
    out = outs[0]
    out_elems = static_numel(out)
    macs = out_elems * w.shape[1] * w.shape[2] * w.shape[3]
    samples = out.shape[0] * x.shape[1] * w.shape[2] * w.shape[3] * out.shape[2] * out.shape[3]
    sampling = 7 * samples
    flops = 2 * macs + sampling + (samples if mask is not None else 0)
    flops += out_elems if bias is not None else 0
    return Cost(macs=macs, flops=flops, sampling_flops=sampling)


def deform_window(a: Conv2dAttrs, types: list[TensorType | None]) -> Window:
    return conv_window(a, [types[0], types[2]])


def onnx_deform_conv2d(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``DeformConv(X, W, offset, B?, mask?)`` (opset 19; B comes *before* the
    mask, ``""`` when absent); offsets are interleaved (Δy, Δx) per tap in both."""
    x, offset, w = (node.inputs[i].type for i in range(3))
    groups, offset_groups = _deform_groups(x, offset, w)
    attrs = _conv_onnx_attrs(node.attrs, w)
    inputs = [b.input(0), b.input(2), b.input(1), b.input(3), b.input(4)]
    return [b.op("DeformConv", inputs, group=groups, offset_group=offset_groups, **attrs)]


deform_conv2d = register(OpDef(
    name="deform_conv2d",
    inputs=("input", "offset", "weight", "bias?", "mask?"),
    params=("weight", "bias"),
    attrs=Conv2dAttrs,
    infer=infer_deform_conv2d,
    cost=cost_deform_conv2d,
    window=deform_window,
    onnx=onnx_deform_conv2d,
    flop_rule="2·MACs + 7 per bilinear sample (N·C·kh·kw·OH·OW samples) + 1 per sample with a "
              "mask + one add per output element with a bias",
))
