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

Gradients (docs/semantics.md §3), emitted as IR by the ``vjp`` rules below:
conv2d: gx = conv_transpose2d(gy, W) with the forward's stride, padding, dilation and groups
    and output_padding = H − ((OH−1)·s − pt − pb + d(k−1) + 1) (JAX's transpose rule);
    gW = conv2d_weight_grad(x, gy); gb = Σ gy over (N, OH, OW).
conv_transpose2d: gx = conv2d(gy, W) and gW = conv2d_weight_grad(gy, x) with the same
    attributes: its weight gradient is conv2d's with the roles of input and output swapped
    (``[C_in, O/G, kh, kw]`` is exactly conv2d_weight_grad's ``[O', C'/G, kh, kw]``).
deform_conv2d: gx, gΔ and gmask from one ``deform_conv2d_data_grad`` node (all three read
    gcol = Wᵀ·gy, computed once), gW from ``deform_conv2d_weight_grad``, gb = Σ gy.
Backward costs (docs/semantics.md §6.3): grad-input and grad-weight each cost the forward's
MACs (conv_transpose2d counts its MACs on its input grid, which is the forward's output);
the deformable ones add their bilinear work per sample S = N·C·kh·kw·OH·OW (see their rules).
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
from cnnir.ops.tensor import PadAttrs, ReduceAttrs, pad, sum_

if TYPE_CHECKING:
    from cnnir.ir.graph import Node, Value

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


@dataclass(frozen=True)
class Conv2dWeightGradAttrs(Conv2dAttrs):
    """A weight gradient's convolution (stride, padding, dilation, groups) and the kernel size
    of the weight it produces (the weight itself is not an input of the backward op)."""

    kernel_size: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "kernel_size", positive_pair(self.kernel_size, "kernel_size"))


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


def _static_spatial(ad: Any, *types: TensorType) -> None:
    """Gradient rules need concrete H and W (output_padding, crops); the batch may stay
    symbolic."""
    for t in types:
        if not all(is_static(d) for d in t.shape[2:]):
            ad.fail(f"cannot differentiate a convolution over the symbolic spatial size "
                    f"{shape_str(t.shape)}", "trace with concrete H and W")


def weight_grad_attrs(a: Conv2dAttrs, kernel: tuple[int, int],
                      groups: int | None = None) -> Conv2dWeightGradAttrs:
    return Conv2dWeightGradAttrs(stride=a.stride, padding=a.padding, dilation=a.dilation,
                                 groups=a.groups if groups is None else groups,
                                 kernel_size=tuple(kernel))


def bias_grad(ad: Any, g: Value) -> Value:
    """``gb[o] = Σ gy[:, o]``: a sum over (N, OH, OW)."""
    return ad.op(sum_, [g], ReduceAttrs((0, 2, 3)))


def vjp_conv2d(ad: Any, node: Node, grads: list) -> list:
    """``gx = conv_transpose2d(gy, W, s, p, d, G, output_padding)`` (skipped for the first
    layer), ``gW = conv2d_weight_grad(x, gy)``, ``gb = Σ gy`` (docs/semantics.md §3)."""
    g = grads[0]
    x, w, bias = (node.inputs + [None])[:3]
    a = node.attrs
    kernel = (w.type.shape[2], w.type.shape[3])
    gx = gw = gb = None
    if ad.needs(0):
        _static_spatial(ad, x.type, g.type)
        out_pad = tuple(
            x.type.shape[2 + i] - ((g.type.shape[2 + i] - 1) * a.stride[i] - a.padding[i]
                                   - a.padding[i + 2] + a.dilation[i] * (kernel[i] - 1) + 1)
            for i in range(2))
        gx = ad.op(conv_transpose2d, [g, w, None], ConvTranspose2dAttrs(
            stride=a.stride, padding=a.padding, dilation=a.dilation, groups=a.groups,
            output_padding=out_pad))
    if ad.needs(1):
        gw = ad.op(conv2d_weight_grad, [x, g], weight_grad_attrs(a, kernel))
    if bias is not None and ad.needs(2):
        gb = bias_grad(ad, g)
    return [gx, gw, gb]


conv2d = register(OpDef(
    name="conv2d",
    inputs=("input", "weight", "bias?"),
    params=("weight", "bias"),
    attrs=Conv2dAttrs,
    infer=infer_conv2d,
    cost=cost_conv2d,
    window=conv_window,
    onnx=onnx_conv2d,
    vjp=vjp_conv2d,
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


def transposed_as_conv(ad: Any, g: Value,
                       a: ConvTranspose2dAttrs) -> tuple[Value, Conv2dAttrs]:
    """``gy`` and the conv2d attributes whose convolution of it has the transposed conv's
    input size: s, p, d and G stay; only when output_padding ≥ s (possible when d > s) the
    bottom/right padding shrinks by s·⌊op/s⌋ (the conv would otherwise give ⌊op/s⌋ extra
    rows), cropping gy rows that no kept window reads where it would go negative."""
    pads = list(a.padding)
    crop = [0, 0]
    for i in range(2):
        pads[i + 2] -= a.stride[i] * (a.output_padding[i] // a.stride[i])
        if pads[i + 2] < 0:
            crop[i], pads[i + 2] = -pads[i + 2], 0
    if any(crop):
        g = ad.op(pad, [g], PadAttrs((0, -crop[1], 0, -crop[0])))
    attrs = Conv2dAttrs(stride=a.stride, padding=tuple(pads), dilation=a.dilation,
                        groups=a.groups)
    return g, attrs


def vjp_conv_transpose2d(ad: Any, node: Node, grads: list) -> list:
    """``gx = conv2d(gy, W, s, p, d, G)``; ``gW = conv2d_weight_grad(gy, x)`` (conv2d's weight
    gradient with input and output swapped); ``gb = Σ gy``."""
    g = grads[0]
    x, w, bias = (node.inputs + [None])[:3]
    _static_spatial(ad, x.type, g.type)
    kernel = (w.type.shape[2], w.type.shape[3])
    gx = gw = gb = None
    if ad.needs(0) or ad.needs(1):
        g_conv, conv_attrs = transposed_as_conv(ad, g, node.attrs)
        if ad.needs(0):
            gx = ad.op(conv2d, [g_conv, w, None], conv_attrs)
        if ad.needs(1):
            gw = ad.op(conv2d_weight_grad, [g_conv, x], weight_grad_attrs(conv_attrs, kernel))
    if bias is not None and ad.needs(2):
        gb = bias_grad(ad, g)
    return [gx, gw, gb]


conv_transpose2d = register(OpDef(
    name="conv_transpose2d",
    inputs=("input", "weight", "bias?"),
    params=("weight", "bias"),
    attrs=ConvTranspose2dAttrs,
    infer=infer_conv_transpose2d,
    cost=cost_conv_transpose2d,
    window=conv_transpose_window,
    onnx=onnx_conv_transpose2d,
    vjp=vjp_conv_transpose2d,
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


def vjp_deform_conv2d(ad: Any, node: Node, grads: list) -> list:
    """torchvision's backward (docs/semantics.md §3): one ``deform_conv2d_data_grad`` node for
    the input, offset and mask (they share gcol = Wᵀ·gy), ``deform_conv2d_weight_grad`` for
    W, ``Σ gy`` for the bias."""
    g = grads[0]
    x, offset, w, bias, mask = (node.inputs + [None, None])[:5]
    gx = goff = gw = gb = gmask = None
    if ad.needs(0) or ad.needs(1) or (mask is not None and ad.needs(4)):
        outs = ad.ops(deform_conv2d_data_grad, [x, offset, w, g, mask], node.attrs)
        gx, goff = outs[0], outs[1]
        gmask = outs[2] if mask is not None else None
    if ad.needs(2):
        groups = x.type.shape[1] // w.type.shape[1]
        kernel = (w.type.shape[2], w.type.shape[3])
        gw = ad.op(deform_conv2d_weight_grad, [x, offset, g, mask],
                   weight_grad_attrs(node.attrs, kernel, groups))
    if bias is not None and ad.needs(3):
        gb = bias_grad(ad, g)
    return [gx, goff, gw, gb, gmask]


deform_conv2d = register(OpDef(
    name="deform_conv2d",
    inputs=("input", "offset", "weight", "bias?", "mask?"),
    params=("weight", "bias"),
    attrs=Conv2dAttrs,
    infer=infer_deform_conv2d,
    cost=cost_deform_conv2d,
    window=deform_window,
    onnx=onnx_deform_conv2d,
    vjp=vjp_deform_conv2d,
    flop_rule="2·MACs + 7 per bilinear sample (N·C·kh·kw·OH·OW samples) + 1 per sample with a "
              "mask + one add per output element with a bias",
))


# -- backward-only ops (emitted by the vjp rules above; no ONNX mapping) ----------------------


def infer_conv2d_weight_grad(a: Conv2dWeightGradAttrs,
                             types: list[TensorType | None]) -> list[TensorType]:
    x, g = types
    expect_rank(x, 4, "its input (N, C, H, W)")
    expect_rank(g, 4, "its output's gradient (N, O, OH, OW)")
    dtype = same_dtype([x, g])
    groups = a.groups
    require(x.shape[0] == g.shape[0], f"expects the input {shape_str(x.shape)} and the "
            f"gradient {shape_str(g.shape)} to have one batch")
    for what, ch in (("input channels", x.shape[1]), ("gradient channels", g.shape[1])):
        require(is_static(ch) and ch % groups == 0,
                f"has groups={groups}, which must divide the {what} ({ch})")
    oh_ow = _conv_spatial(x, a.kernel_size, a)
    for axis in range(2):
        want, got = oh_ow[axis], g.shape[2 + axis]
        require(not (is_static(want) and is_static(got)) or want == got,
                f"expects a gradient of spatial size {shape_str(oh_ow)} (the convolution of "
                f"{shape_str(x.shape)}) but it is {shape_str(g.shape)}")
    return [TensorType((g.shape[1], x.shape[1] // groups, *a.kernel_size), dtype)]


def cost_conv2d_weight_grad(a: Conv2dWeightGradAttrs, ins: list[TensorType | None],
                            outs: list[TensorType]) -> Cost:
    """The forward's MACs: every (output pixel, tap) pair once, N·O·OH·OW·(C/G)·kh·kw."""
    w = outs[0]
    macs = static_numel(ins[1]) * w.shape[1] * w.shape[2] * w.shape[3]
    return Cost(macs=macs, flops=2 * macs)


conv2d_weight_grad = register(OpDef(
    name="conv2d_weight_grad",
    inputs=("input", "grad_output"),
    attrs=Conv2dWeightGradAttrs,
    infer=infer_conv2d_weight_grad,
    cost=cost_conv2d_weight_grad,
    backward=True,
    differentiable=False,
    flop_rule="2·MACs, MACs = N·O·OH·OW·(C/G)·kh·kw (the forward's)",
))


def _deform_samples(x: TensorType, kernel: tuple[int, int], g: TensorType) -> int:
    """S = N·C·kh·kw·OH·OW bilinear samples."""
    return static_numel(x) // (x.shape[2] * x.shape[3]) * kernel[0] * kernel[1] * (
        g.shape[2] * g.shape[3])


def infer_deform_conv2d_data_grad(a: Conv2dAttrs,
                                  types: list[TensorType | None]) -> list[TensorType]:
    x, offset, w, g, mask = types
    (y,) = infer_deform_conv2d(a, [x, offset, w, None, mask])
    require(g.shape == y.shape and g.dtype == y.dtype,
            f"expects an output gradient of type {y} but it is {g}")
    outs = [TensorType(x.shape, x.dtype), TensorType(offset.shape, offset.dtype)]
    return outs + ([TensorType(mask.shape, mask.dtype)] if mask is not None else [])


DATA_GRAD_PER_SAMPLE = 22  # 8 for the input scatter (4 mul + 4 add), 7 for each of Δy and Δx
DATA_GRAD_PER_MASKED_SAMPLE = 10  # mask·gcol, and the mask's: a bilinear sample (7), mul, add


def cost_deform_conv2d_data_grad(a: Conv2dAttrs, ins: list[TensorType | None],
                                 outs: list[TensorType]) -> Cost:
    """gcol = Wᵀ·gy costs the forward's MACs; per sample, the input scatter 8 FLOPs (four
    corner weights times gcol, four adds) and each offset coordinate 7 (two differences
    blended, 2 sub + 2 mul + 1 add, times gcol and accumulated); with a mask 10 more (mask·gcol,
    and the mask's gradient: a bilinear sample, one multiply, one add). The bilinear part
    (all but 2·MACs and the mask's multiply, multiply and add) is the sampling FLOPs."""
    x, w, g, mask = ins[0], ins[2], ins[3], ins[4]
    macs = static_numel(g) * w.shape[1] * w.shape[2] * w.shape[3]
    samples = _deform_samples(x, (w.shape[2], w.shape[3]), g)
    sampling = DATA_GRAD_PER_SAMPLE * samples + (7 * samples if mask is not None else 0)
    flops = 2 * macs + DATA_GRAD_PER_SAMPLE * samples
    flops += DATA_GRAD_PER_MASKED_SAMPLE * samples if mask is not None else 0
    return Cost(macs=macs, flops=flops, sampling_flops=sampling)


deform_conv2d_data_grad = register(OpDef(
    name="deform_conv2d_data_grad",
    inputs=("input", "offset", "weight", "grad_output", "mask?"),
    attrs=Conv2dAttrs,
    infer=infer_deform_conv2d_data_grad,
    cost=cost_deform_conv2d_data_grad,
    backward=True,
    differentiable=False,
    flop_rule="2·MACs (gcol = Wᵀ·gy) + 22 per sample (input scatter 8, offset 2×7) + 10 per "
              "sample with a mask; sampling FLOPs 22 (+7 with a mask) per sample",
))


def infer_deform_conv2d_weight_grad(a: Conv2dWeightGradAttrs,
                                    types: list[TensorType | None]) -> list[TensorType]:
    x, offset, g, mask = types
    expect_rank(g, 4, "its output's gradient (N, O, OH, OW)")
    groups = a.groups
    require(is_static(x.shape[1]) and x.shape[1] % groups == 0,
            f"has groups={groups}, which must divide the input channels of {shape_str(x.shape)}")
    require(is_static(g.shape[1]) and g.shape[1] % groups == 0,
            f"has groups={groups}, which must divide the gradient channels of "
            f"{shape_str(g.shape)}")
    w = TensorType((g.shape[1], x.shape[1] // groups, *a.kernel_size), x.dtype)
    (y,) = infer_deform_conv2d(a, [x, offset, w, None, mask])
    require(g.shape == y.shape and g.dtype == y.dtype,
            f"expects an output gradient of type {y} but it is {g}")
    return [w]


def cost_deform_conv2d_weight_grad(a: Conv2dWeightGradAttrs, ins: list[TensorType | None],
                                   outs: list[TensorType]) -> Cost:
    """The forward's MACs (Σ gy·col), and its sampling again: 7 per bilinear sample, 1 more
    per sample with a mask (the columns are recomputed, not stored by the forward)."""
    x, g, mask, w = ins[0], ins[2], ins[3], outs[0]
    macs = static_numel(g) * w.shape[1] * w.shape[2] * w.shape[3]
    samples = _deform_samples(x, a.kernel_size, g)
    flops = 2 * macs + 7 * samples + (samples if mask is not None else 0)
    return Cost(macs=macs, flops=flops, sampling_flops=7 * samples)


deform_conv2d_weight_grad = register(OpDef(
    name="deform_conv2d_weight_grad",
    inputs=("input", "offset", "grad_output", "mask?"),
    attrs=Conv2dWeightGradAttrs,
    infer=infer_deform_conv2d_weight_grad,
    cost=cost_deform_conv2d_weight_grad,
    backward=True,
    differentiable=False,
    flop_rule="2·MACs + 7 per bilinear sample (+1 with a mask), as the forward without bias",
))
