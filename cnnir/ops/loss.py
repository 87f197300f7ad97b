"""Losses (PyTorch semantics; SEMANTICS.md §2). Default reduction 'mean'.

Output: the per-element (or per-sample) loss with reduction='none', else a scalar.
FLOPs are the sum of each loss's elementwise decomposition plus its reduction, which costs
one add per reduced element (and one division for 'mean'):
    cross_entropy   log_softmax 5E, pick and negate 1 per row (+1 with class weights);
                    label smoothing adds E (class sum) + 2 per row; probability targets add 2E
    nll_loss        pick and negate 1 per row (+1 with class weights)
    binary_cross_entropy            9 per element (+1 with weights)
    binary_cross_entropy_with_logits 8 per element (+2 with pos_weight, +1 with weights)
    l1_loss 2, mse_loss 2, smooth_l1_loss 5, huber_loss 5 per element
    triplet_margin_loss  two distances (4 per element each + a root per row) + 3 per row
    contrastive_loss     one distance (4 per element + a root per row) + 9 per row

contrastive_loss is the cnnir convention (Hadsell, Chopra and LeCun 2006): label 0 means
similar, 1 dissimilar, ``L = mean[(1−Y)·½·D² + Y·½·max(0, m − D)²]``, ``D = ‖f1 − f2 + eps‖₂``,
default margin 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnir.errors import ShapeError
from cnnir.ir.types import TensorType, shape_str
from cnnir.ops.registry import Cost, OpDef, register, require, same_dtype, static_numel

REDUCTIONS = ("none", "mean", "sum")


@dataclass(frozen=True)
class LossAttrs:
    reduction: str = "mean"

    def __post_init__(self) -> None:
        require(self.reduction in REDUCTIONS,
                f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")


def _reduced(a: LossAttrs, per_item: tuple, dtype: str) -> list[TensorType]:
    return [TensorType(per_item if a.reduction == "none" else (), dtype)]


def reduction_flops(a: LossAttrs, items: int) -> int:
    return {"none": 0, "sum": items, "mean": items + 1}[a.reduction]


def _is_int(t: TensorType) -> bool:
    return t.dtype.startswith(("int", "uint"))


# -- classification --------------------------------------------------------------------


@dataclass(frozen=True)
class CrossEntropyAttrs(LossAttrs):
    ignore_index: int = -100
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.label_smoothing <= 1.0,
                f"label_smoothing must be between 0.0 and 1.0, got {self.label_smoothing}")


def _check_class_weight(w: TensorType | None, classes: object) -> None:
    if w is not None and w.shape != (classes,):
        raise ShapeError(f"expects a class weight of shape [{classes}] but it is "
                         f"{shape_str(w.shape)}")


def infer_classification(a: CrossEntropyAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x, target, weight = (types + [None])[:3]
    require(x.rank >= 1, "expects an input of shape (N, C, ...) or (C,)")
    classes = x.shape[1] if x.rank >= 2 else x.shape[0]
    _check_class_weight(weight, classes)
    per_item = (x.shape[0], *x.shape[2:]) if x.rank >= 2 else ()
    if _is_int(target):
        require(target.shape == per_item,
                f"expects class-index targets of shape {shape_str(per_item)} for input "
                f"{shape_str(x.shape)} but they are {shape_str(target.shape)}")
    else:
        require(target.shape == x.shape and target.dtype == x.dtype,
                f"expects probability targets like the input {x} but they are {target}",
                "class indices must be an integer tensor (int64)")
        require(a.ignore_index < 0, "ignore_index is not supported for floating point target")
    return _reduced(a, per_item, x.dtype)


def cost_cross_entropy(a: CrossEntropyAttrs, ins: list[TensorType | None],
                       outs: list[TensorType]) -> Cost:
    x, target, weight = (ins + [None])[:3]
    elems = static_numel(x)
    rows = static_numel(target) if _is_int(target) else elems // max(1, _classes(x))
    flops = 5 * elems + rows * (2 if weight is not None else 1)
    if not _is_int(target):
        flops += 2 * elems
    if a.label_smoothing:
        flops += elems + 2 * rows
    return Cost(flops=flops + reduction_flops(a, rows))


def _classes(x: TensorType) -> int:
    return x.shape[1] if x.rank >= 2 else x.shape[0]


cross_entropy = register(OpDef(
    name="cross_entropy", inputs=("input", "target", "weight?"), attrs=CrossEntropyAttrs,
    infer=infer_classification, cost=cost_cross_entropy, is_loss=True,
    flop_rule="5E log_softmax + 1 per row (2 with weights) + smoothing/prob terms + reduction",
))


@dataclass(frozen=True)
class NllAttrs(LossAttrs):
    ignore_index: int = -100


def infer_nll(a: NllAttrs, types: list[TensorType | None]) -> list[TensorType]:
    target = types[1]
    require(_is_int(target), f"expects integer class-index targets but they are {target}")
    return infer_classification(CrossEntropyAttrs(a.reduction, a.ignore_index), types)


def cost_nll(a: NllAttrs, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
    rows = static_numel(ins[1])
    per_row = 2 if (ins + [None])[2] is not None else 1
    return Cost(flops=rows * per_row + reduction_flops(a, rows))


nll_loss = register(OpDef(
    name="nll_loss", inputs=("input", "target", "weight?"), attrs=NllAttrs, infer=infer_nll,
    cost=cost_nll, is_loss=True, flop_rule="1 per row (2 with weights) + reduction",
))


# -- elementwise regression and binary losses ---------------------------------------------


def infer_pointwise(a: LossAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x, target = types[0], types[1]
    dtype = same_dtype([x, target], "input and target")
    require(x.shape == target.shape,
            f"expects a target of the input's shape {shape_str(x.shape)} but it is "
            f"{shape_str(target.shape)}", "cnnir does not broadcast loss targets")
    for name, t in zip(("weight", "pos_weight"), types[2:]):
        if t is not None:
            try:
                from cnnir.ops.tensor import broadcast_shapes

                require(broadcast_shapes(x.shape, t.shape) == x.shape,
                        f"{name} {shape_str(t.shape)} must broadcast to {shape_str(x.shape)}")
            except ShapeError as e:
                raise ShapeError(f"expects {name} broadcastable to the input: {e.message}") from e
    return _reduced(a, x.shape, dtype)


def _pointwise_cost(per_element: int, per_weight: tuple[int, ...] = ()):
    def cost(a: LossAttrs, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
        elems = static_numel(ins[0])
        extra = sum(w for w, t in zip(per_weight, ins[2:]) if t is not None)
        return Cost(flops=(per_element + extra) * elems + reduction_flops(a, elems))

    return cost


def _pointwise_loss(name: str, per_element: int, attrs: type = LossAttrs,
                    optional: tuple[str, ...] = (), per_weight: tuple[int, ...] = ()) -> OpDef:
    return register(OpDef(
        name=name, inputs=("input", "target", *optional), attrs=attrs, infer=infer_pointwise,
        cost=_pointwise_cost(per_element, per_weight), is_loss=True,
        flop_rule=f"{per_element}E + reduction",
    ))


@dataclass(frozen=True)
class SmoothL1Attrs(LossAttrs):
    beta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.beta >= 0, f"beta must be >= 0, got {self.beta}")


@dataclass(frozen=True)
class HuberAttrs(LossAttrs):
    delta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.delta > 0, f"delta must be > 0, got {self.delta}")


binary_cross_entropy = _pointwise_loss("binary_cross_entropy", 9, optional=("weight?",),
                                       per_weight=(1,))
binary_cross_entropy_with_logits = _pointwise_loss(
    "binary_cross_entropy_with_logits", 8, optional=("weight?", "pos_weight?"),
    per_weight=(1, 2))
l1_loss = _pointwise_loss("l1_loss", 2)
mse_loss = _pointwise_loss("mse_loss", 2)
smooth_l1_loss = _pointwise_loss("smooth_l1_loss", 5, SmoothL1Attrs)
huber_loss = _pointwise_loss("huber_loss", 5, HuberAttrs)


# -- metric losses -------------------------------------------------------------------------


@dataclass(frozen=True)
class TripletAttrs(LossAttrs):
    margin: float = 1.0
    p: float = 2.0
    eps: float = 1e-6
    swap: bool = False


def _embeddings(types: list[TensorType | None], names: tuple[str, ...]) -> TensorType:
    first = types[0]
    require(first.rank in (1, 2), f"expects embeddings of shape (N, D) or (D,) but {names[0]} "
            f"is {shape_str(first.shape)}")
    same_dtype(types, "embeddings")
    for name, t in zip(names[1:], types[1:]):
        require(t.shape == first.shape, f"expects {name} shaped like {names[0]} "
                f"{shape_str(first.shape)} but it is {shape_str(t.shape)}")
    return first


def infer_triplet(a: TripletAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = _embeddings(types, ("anchor", "positive", "negative"))
    return _reduced(a, x.shape[:1] if x.rank == 2 else (), x.dtype)


def _rows(x: TensorType) -> int:
    return x.shape[0] if x.rank == 2 else 1


def cost_triplet(a: TripletAttrs, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
    x = ins[0]
    pairs = 3 if a.swap else 2
    rows = _rows(x)
    flops = pairs * (4 * static_numel(x) + rows) + 3 * rows
    return Cost(flops=flops + reduction_flops(a, rows))


triplet_margin_loss = register(OpDef(
    name="triplet_margin_loss", inputs=("anchor", "positive", "negative"), attrs=TripletAttrs,
    infer=infer_triplet, cost=cost_triplet, is_loss=True,
    flop_rule="2 distances (3 with swap) of 4E + N roots, 3N hinge + reduction",
))


@dataclass(frozen=True)
class ContrastiveAttrs(LossAttrs):
    margin: float = 1.0
    eps: float = 1e-6


def infer_contrastive(a: ContrastiveAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = _embeddings(types[:2], ("x1", "x2"))
    label = types[2]
    per_item = x.shape[:1] if x.rank == 2 else ()
    require(label.shape == per_item, f"expects one label per pair, shape {shape_str(per_item)}, "
            f"but the label is {shape_str(label.shape)}")
    return _reduced(a, per_item, x.dtype)


def cost_contrastive(a: ContrastiveAttrs, ins: list[TensorType | None],
                     outs: list[TensorType]) -> Cost:
    x = ins[0]
    rows = _rows(x)
    return Cost(flops=4 * static_numel(x) + 10 * rows + reduction_flops(a, rows))


contrastive_loss = register(OpDef(
    name="contrastive_loss", inputs=("x1", "x2", "label"), attrs=ContrastiveAttrs,
    infer=infer_contrastive, cost=cost_contrastive, is_loss=True,
    flop_rule="distance 4E + N roots, 9N for the two branches + reduction",
))
