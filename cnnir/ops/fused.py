"""Fused ops made by the ``fuse-conv-activation`` pass (inference only).

conv2d_fused (inputs ``input, weight, bias?, residual?``; conv2d's attributes plus an
activation and whether a residual is added):
    y = act(conv2d(x, W, b) + r)          (``+ r`` only with ``residual=True``)
linear_fused (inputs ``input, weight, bias?, residual?``):
    y = act(x·Wᵀ + b + r)

The residual is added before the activation (a ResNet block's ``relu(bn2(conv2(x)) + x)``
after BN folding). ``activation`` is the activation's OpDef (one of ``FUSABLE_ACTIVATIONS``)
or None, and ``activation_attrs`` its attributes (LeakyReluAttrs for leaky_relu). Shapes,
receptive field and MACs are conv2d's / linear's; FLOPs add the activation's rule and one
add per output element for the residual. Backends run each as one kernel; the ONNX exporter
writes the plain ops back (Conv, Add, activation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cnnir.errors import ShapeError
from cnnir.ir.types import TensorType
from cnnir.ops.activation import hardswish, leaky_relu, relu, relu6, sigmoid
from cnnir.ops.conv import Conv2dAttrs, conv_window, cost_conv2d, infer_conv2d, onnx_conv2d
from cnnir.ops.linear import cost_linear, infer_linear, onnx_linear
from cnnir.ops.registry import Cost, OpDef, register, require, static_numel

if TYPE_CHECKING:
    from cnnir.ir.graph import Node

FUSABLE_ACTIVATIONS: frozenset[OpDef] = frozenset({relu, relu6, leaky_relu, hardswish, sigmoid})


def _check_epilogue(activation: OpDef | None, residual: bool) -> None:
    require(activation is None or activation in FUSABLE_ACTIVATIONS,
            f"cannot fuse the activation {activation!r}",
            f"fusable: {sorted(op.name for op in FUSABLE_ACTIVATIONS)}")
    require(isinstance(residual, bool), f"residual must be a bool, got {residual!r}")


@dataclass(frozen=True)
class Conv2dFusedAttrs(Conv2dAttrs):
    activation: OpDef | None = None
    activation_attrs: Any = None
    residual: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_epilogue(self.activation, self.residual)


@dataclass(frozen=True)
class LinearFusedAttrs:
    activation: OpDef | None = None
    activation_attrs: Any = None
    residual: bool = False

    def __post_init__(self) -> None:
        _check_epilogue(self.activation, self.residual)


def _check_residual(a: Any, out: TensorType, residual: TensorType | None) -> None:
    if a.residual != (residual is not None):
        raise ShapeError(f"has residual={a.residual} but {'no' if a.residual else 'a'} "
                         f"residual input")
    if residual is not None and residual != out:
        raise ShapeError(f"expects a residual of type {out} (the output's) but it is "
                         f"{residual}", hint="a fused residual add never broadcasts")


def infer_conv2d_fused(a: Conv2dFusedAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x, w, b, r = (types + [None, None])[:4]
    out = infer_conv2d(a, [x, w, b])
    _check_residual(a, out[0], r)
    return out


def infer_linear_fused(a: LinearFusedAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x, w, b, r = (types + [None, None])[:4]
    out = infer_linear(a, [x, w, b])
    _check_residual(a, out[0], r)
    return out


def _epilogue_flops(a: Any, out: TensorType) -> int:
    act = 0
    if a.activation is not None:
        attrs = a.activation_attrs if a.activation_attrs is not None else a.activation.attrs()
        act = a.activation.cost(attrs, [out], [out]).flops
    return act + (static_numel(out) if a.residual else 0)


def cost_conv2d_fused(a: Conv2dFusedAttrs, ins: list[TensorType | None],
                      outs: list[TensorType]) -> Cost:
    base = cost_conv2d(a, ins[:3], outs)
    return Cost(macs=base.macs, flops=base.flops + _epilogue_flops(a, outs[0]))


def cost_linear_fused(a: LinearFusedAttrs, ins: list[TensorType | None],
                      outs: list[TensorType]) -> Cost:
    base = cost_linear(a, ins[:3], outs)
    return Cost(macs=base.macs, flops=base.flops + _epilogue_flops(a, outs[0]))


def conv2d_fused_window(a: Conv2dFusedAttrs, types: list[TensorType | None]):
    return conv_window(a, types[:2])


def onnx_fused(base: Any) -> Any:
    """ONNX mapping: the plain ops back, ``act(base(x, W, b) + r)`` as the base op's mapping,
    then ``Add(r)``, then the activation's own mapping."""

    def mapping(b: Any, node: Node) -> list[str]:
        a, out = node.attrs, node.output.type
        y = base(b, node)[0]
        if a.residual:
            y = b.op("Add", [y, b.input(3)])
        if a.activation is not None:
            attrs = a.activation_attrs if a.activation_attrs is not None else a.activation.attrs()
            y = b.apply(a.activation, attrs, [y], [out], [out])[0]
        return [y]

    return mapping


conv2d_fused = register(OpDef(
    name="conv2d_fused",
    inputs=("input", "weight", "bias?", "residual?"),
    params=("weight", "bias"),
    attrs=Conv2dFusedAttrs,
    infer=infer_conv2d_fused,
    cost=cost_conv2d_fused,
    window=conv2d_fused_window,
    onnx=onnx_fused(onnx_conv2d),
    differentiable=False,
    flop_rule="conv2d's FLOPs + the activation's rule + one add per output element with a "
              "residual",
))

linear_fused = register(OpDef(
    name="linear_fused",
    inputs=("input", "weight", "bias?", "residual?"),
    params=("weight", "bias"),
    attrs=LinearFusedAttrs,
    infer=infer_linear_fused,
    cost=cost_linear_fused,
    onnx=onnx_fused(onnx_linear),
    differentiable=False,
    flop_rule="linear's FLOPs + the activation's rule + one add per output element with a "
              "residual",
))

__all__ = ["FUSABLE_ACTIVATIONS", "Conv2dFusedAttrs", "LinearFusedAttrs", "conv2d_fused",
           "linear_fused"]
