"""Activations, softmax and dropout (PyTorch semantics; SEMANTICS.md §1.5, §1.6, §1.14).

FLOPs per element E: relu 1; relu6, leaky_relu, prelu, rrelu 2; elu, sigmoid 3; tanh 1;
silu, hardsigmoid 4; hardswish 5; gelu 6 (scale, erf, add, two multiplies, halving);
softmax and log_softmax 5 (max, subtract, exp, sum, divide or subtract);
dropout 1 in training (a multiply by the pre-scaled mask), 0 in eval.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnir.ir.types import TensorType, shape_str
from cnnir.ops.registry import (
    Cost,
    CostFn,
    OpDef,
    elementwise_cost,
    register,
    require,
    same_dtype,
    static_numel,
)
from cnnir.ops.tensor import normalize_dim


def infer_same(attrs: object, types: list[TensorType | None]) -> list[TensorType]:
    return [types[0]]


def _unary(name: str, flops: int, attrs: type | None = None, **flags) -> OpDef:
    extra = {"attrs": attrs} if attrs is not None else {}
    return register(OpDef(
        name=name, inputs=("input",), infer=infer_same, cost=elementwise_cost(flops),
        flop_rule=f"{flops}E", **extra, **flags,
    ))


relu = _unary("relu", 1)
relu6 = _unary("relu6", 2)
sigmoid = _unary("sigmoid", 3)
tanh = _unary("tanh", 1)
silu = _unary("silu", 4)
hardsigmoid = _unary("hardsigmoid", 4)
hardswish = _unary("hardswish", 5)


@dataclass(frozen=True)
class LeakyReluAttrs:
    negative_slope: float = 0.01


leaky_relu = _unary("leaky_relu", 2, LeakyReluAttrs)


@dataclass(frozen=True)
class EluAttrs:
    alpha: float = 1.0


elu = _unary("elu", 3, EluAttrs)


@dataclass(frozen=True)
class GeluAttrs:
    approximate: str = "none"

    def __post_init__(self) -> None:
        require(self.approximate in ("none", "tanh"),
                f"approximate must be 'none' or 'tanh', got {self.approximate!r}")


gelu = _unary("gelu", 6, GeluAttrs)


@dataclass(frozen=True)
class RReluAttrs:
    lower: float = 1.0 / 8
    upper: float = 1.0 / 3
    training: bool = False

    def __post_init__(self) -> None:
        require(0 <= self.lower <= self.upper,
                f"rrelu needs 0 <= lower <= upper, got lower={self.lower}, upper={self.upper}")


rrelu = _unary("rrelu", 2, RReluAttrs, has_training_mode=True, random=True)


def infer_prelu(attrs: object, types: list[TensorType | None]) -> list[TensorType]:
    x, w = types
    dtype = same_dtype([x, w])
    channels = x.shape[1] if x.rank >= 2 else 1
    require(w.rank == 1 and w.shape[0] in (1, channels),
            f"expects 1 or {channels} slopes (num_parameters) for input {shape_str(x.shape)} "
            f"but the weight is {shape_str(w.shape)}",
            "nn.PReLU(num_parameters=C) must match the channel count (dim 1)")
    return [TensorType(x.shape, dtype)]


prelu = register(OpDef(
    name="prelu", inputs=("input", "weight"), params=("weight",), infer=infer_prelu,
    cost=elementwise_cost(2), flop_rule="2E",
))


@dataclass(frozen=True)
class SoftmaxAttrs:
    dim: int = 1


def infer_softmax(a: SoftmaxAttrs, types: list[TensorType | None]) -> list[TensorType]:
    normalize_dim(a.dim, types[0].rank)
    return [types[0]]


def _softmax(name: str) -> OpDef:
    return register(OpDef(
        name=name, inputs=("input",), attrs=SoftmaxAttrs, infer=infer_softmax,
        cost=elementwise_cost(5), flop_rule="5E",
    ))


softmax = _softmax("softmax")
log_softmax = _softmax("log_softmax")


@dataclass(frozen=True)
class DropoutAttrs:
    p: float = 0.5
    training: bool = False

    def __post_init__(self) -> None:
        require(0.0 <= self.p <= 1.0,
                f"dropout probability has to be between 0 and 1, but got {self.p}")


def _dropout_cost() -> CostFn:
    def cost(a: DropoutAttrs, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
        return Cost(flops=static_numel(outs[0]) if a.training else 0)

    return cost


def infer_dropout2d(a: DropoutAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    require(x.rank in (3, 4), f"expects a 3-D or 4-D input (channels of feature maps) but it "
            f"is {shape_str(x.shape)}")
    return [x]


dropout = register(OpDef(
    name="dropout", inputs=("input",), attrs=DropoutAttrs, infer=infer_same,
    cost=_dropout_cost(), has_training_mode=True, random=True,
    flop_rule="training E (multiply by the pre-scaled mask); eval 0",
))
dropout2d = register(OpDef(
    name="dropout2d", inputs=("input",), attrs=DropoutAttrs, infer=infer_dropout2d,
    cost=_dropout_cost(), has_training_mode=True, random=True,
    flop_rule="training E (multiply by the pre-scaled channel mask); eval 0",
))
