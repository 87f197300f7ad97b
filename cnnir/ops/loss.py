"""Losses (PyTorch semantics; docs/semantics.md §2). Default reduction 'mean'.

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

Gradients (docs/semantics.md §2). Every loss has the one ``vjp_loss`` rule: a backward-only
``loss_grad`` node per float input that needs a gradient (input, float targets and labels,
class and element weights, pos_weight; integer class targets get none), whose attrs name the
loss, its attrs and the input. Its inputs are the incoming gradient ``g`` (a scalar, or one
per item for 'none') then the loss's own inputs; its output has that input's type. With
``s = g`` ('none', 'sum') or ``g / count`` ('mean': 1 FLOP; class-index cross_entropy and
nll divide by ``D = Σ w[y]`` over kept rows: R + 1), ``d = x − y`` (``y − x`` for the target,
same count), E elements, R rows, C classes, the gradients and their FLOPs are:
    l1        sign(d)·s 3E;  mse 2d·s 3E;  huber clamp(d, −δ, δ)·s 4E
    smooth_l1 clamp(d/β, −1, 1)·s 5E (β = 0: l1's 3E)
    bce       p: (p − y)/max(p(1 − p), ε)·s 6E;  y: (max(log(1−p), −100) − max(log p, −100))·s
              7E (each +E with weight);  weight: the unweighted loss·s 10E
    bce_with_logits  x: (σ(x) − y)·s 5E, with pos_weight (c·σ(x) − pw·y)·s, c = 1 + (pw−1)·y,
              +5E;  y: ((pw − 1)·sp − x)·s, sp = log(1 + e^−|x|) + max(−x, 0): 2E, +7E with
              pos_weight (each +E with weight);  weight: the unweighted loss·s 9E (+2E with
              pos_weight);  pos_weight: y·sp·s 7E (+E with weight)
    (a weight or pos_weight gradient summed over the axes it broadcasts along: +E)
    cross_entropy, class indices, x: s_n·[(1−ε)·w[y](p − e_y) + (ε/C)·(W·p − w)], W = Σ w:
              softmax 5E, R (p − e_y), E (times the row's coefficient), +R with weights (its
              w[y]); smoothing +4E + 2R (W·p − w, its coefficient, the add) +C with weights (W)
    cross_entropy, probabilities, u = w ⊙ q', q' = (1−ε)·q + ε/C:  x: s·(p·Σ_c u − u) 9E
              (+2E smoothing, +E weights);  target: −(1−ε)·s·w ⊙ lp 6E + R (+E weights);
              weight: Σ_rows −s·q'·lp 8E (+2E smoothing)
    nll       x: −s_n·w[y_n] at the target, 0 elsewhere: R (+R with weights)
    class weights (class indices): Σ_n s_n·(−q'·lp)[n, c] with q' the (smoothed) one-hot:
              lp (5E, cross_entropy), 2R (scale, scatter-add), or with smoothing 3E + R; 'mean'
              subtracts (g/D)·L·K_c (K_c the kept targets of class c): the forward's FLOPs
              (for L) + 2R + 2C + 2
    triplet   h = s·[d_ap − d_an + margin ≥ 0] (torch's clamp_min passes the gradient at 0);
              a: h·(∂d_ap − ∂d_an), pos: −h·∂d_ap, neg: h·∂d_an, ∂d = sign(v)·|v|^(p−1)/d^(p−1)
              for v = a − b + eps; with swap, d_an ← min(d_an, d_pn) and its gradient goes to
              the smaller distance (half to each on a tie, as torch.minimum). FLOPs: the
              forward's distances and hinge, 2R (h), +3R with swap (the choice and its two
              coefficients), per distance term (2 for the anchor or with swap, else 1) the
              norm's gradient (E for p = 1 or 2, else 5E + R) and E (its coefficient), E per
              extra term (the add)
    contrastive x1, x2: ±s·[(1−Y) − Y·max(0, m − D)/D]·v, v = x1 − x2 + eps: 5E + 8R;
              label: s·½·(max(0, m − D)² − D²) 4E + 8R
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnir.errors import ShapeError
from cnnir.ir.types import TensorType, shape_str
from cnnir.ops.registry import Cost, OpDef, register, require, same_dtype, static_numel

if TYPE_CHECKING:
    from cnnir.ir.graph import Node

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


def vjp_loss(ad: Any, node: Node, grads: list) -> list:
    """One ``loss_grad`` node per float input that needs a gradient (the input, float targets
    and labels, weights); integer class targets get none. Formulas: docs/semantics.md §2."""
    out: list = []
    for i, v in enumerate(node.inputs):
        wanted = v is not None and ad.needs(i) and np.dtype(v.type.dtype).kind == "f"
        out.append(ad.op(loss_grad, [grads[0], *node.inputs],
                         LossGradAttrs(node.op, node.attrs, i)) if wanted else None)
    return out


# -- ONNX mappings: ONNX's own loss ops where they exist, the formula otherwise ------------


def onnx_reduce_loss(b: Any, reduction: str, per_item: str) -> str:
    """'none' keeps the per-item losses; 'mean' and 'sum' reduce over every axis."""
    if reduction == "none":
        return per_item
    op_type = "ReduceMean" if reduction == "mean" else "ReduceSum"
    return b.op(op_type, [per_item], keepdims=0)


def _class_weight_column(b: Any, weight: str, rank: int) -> str:
    """A ``[C]`` class weight as ``[C, 1, …]``, broadcasting along dim 1 of a rank-``rank``
    input."""
    shape = np.asarray([-1] + [1] * (rank - 2), dtype=np.int64)
    return b.op("Reshape", [weight, b.const(shape, "shape")])


def _smoothed_class_index_ce(b: Any, node: Node, lp: str) -> str:
    """Class targets with label smoothing ε: per row ``(1−ε)·nll + (ε/C)·S`` where
    ``S = −Σ_c w_c·lp_c`` (0 on ignored rows); 'mean' divides by ``D = Σ w[y]`` over kept
    rows, which is NLL('sum') of a tensor of −1s."""
    a, x = node.attrs, node.inputs[0].type
    target, weight, dtype = b.input(1), b.input(2), x.dtype
    nll_inputs = [target] + ([weight] if weight else [])
    nll = b.op("NegativeLogLikelihoodLoss", [lp, *nll_inputs], reduction="none",
               ignore_index=a.ignore_index)
    weighted = b.op("Mul", [lp, _class_weight_column(b, weight, x.rank)]) if weight else lp
    axis = b.const(np.asarray([1], dtype=np.int64), "axes")
    ignored = b.scalar(a.ignore_index, node.inputs[1].type.dtype)
    kept = b.op("Not", [b.op("Equal", [target, ignored])])
    smooth = b.op("Mul", [b.op("Neg", [b.op("ReduceSum", [weighted, axis], keepdims=0)]),
                          b.op("CastLike", [kept, lp])])
    eps = a.label_smoothing
    rows = b.op("Add", [b.op("Mul", [nll, b.scalar(1.0 - eps, dtype)]),
                        b.op("Mul", [smooth, b.scalar(eps / x.shape[1], dtype)])])
    if a.reduction != "mean":
        return onnx_reduce_loss(b, a.reduction, rows)
    minus_ones = b.op("ConstantOfShape", [b.op("Shape", [lp])],
                      value=np.asarray([-1.0], dtype=dtype))
    total_weight = b.op("NegativeLogLikelihoodLoss", [minus_ones, *nll_inputs],
                        reduction="sum", ignore_index=a.ignore_index)
    return b.op("Div", [b.op("ReduceSum", [rows], keepdims=0), total_weight])


def _probability_ce(b: Any, node: Node, lp: str) -> str:
    """Probability targets: ``ℓ = −Σ_c w_c·q'_c·lp_c`` with ``q' = (1−ε)q + ε/C``; 'mean'
    divides by N × spatial size."""
    a, x = node.attrs, node.inputs[0].type
    q, weight = b.input(1), b.input(2)
    if a.label_smoothing:
        eps = a.label_smoothing
        q = b.op("Add", [b.op("Mul", [q, b.scalar(1.0 - eps, x.dtype)]),
                         b.scalar(eps / x.shape[1], x.dtype)])
    terms = b.op("Mul", [lp, q])
    if weight:
        terms = b.op("Mul", [terms, _class_weight_column(b, weight, x.rank)])
    axis = b.const(np.asarray([1], dtype=np.int64), "axes")
    rows = b.op("Neg", [b.op("ReduceSum", [terms, axis], keepdims=0)])
    return onnx_reduce_loss(b, a.reduction, rows)


def onnx_cross_entropy(b: Any, node: Node) -> list[str]:
    """ONNX mapping: class-index targets without smoothing are
    ``SoftmaxCrossEntropyLoss(scores, labels, weights?)`` (reduction, ignore_index); label
    smoothing (no ONNX attribute) and probability targets are decomposed over
    ``LogSoftmax(axis=1)``."""
    a, x, target = node.attrs, node.inputs[0].type, node.inputs[1].type
    if x.rank < 2:
        b.fail(f"cannot be exported for an unbatched input {shape_str(x.shape)}",
               "ONNX's loss ops need (N, C, ...) scores; add a batch dim")
    if _is_int(target) and not a.label_smoothing:
        inputs = [b.input(0), b.input(1), b.input(2)]
        return [b.op("SoftmaxCrossEntropyLoss", inputs, reduction=a.reduction,
                     ignore_index=a.ignore_index)]
    lp = b.op("LogSoftmax", [b.input(0)], axis=1)
    if _is_int(target):
        return [_smoothed_class_index_ce(b, node, lp)]
    return [_probability_ce(b, node, lp)]


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
    infer=infer_classification, cost=cost_cross_entropy, is_loss=True, onnx=onnx_cross_entropy,
    vjp=vjp_loss,
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


def onnx_nll_loss(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``NegativeLogLikelihoodLoss(input, target, weight?)`` (weighted mean as
    in torch)."""
    a, x = node.attrs, node.inputs[0].type
    if x.rank < 2:
        b.fail(f"cannot be exported for an unbatched input {shape_str(x.shape)}",
               "ONNX's NegativeLogLikelihoodLoss needs (N, C, ...) input; add a batch dim")
    return [b.op("NegativeLogLikelihoodLoss", [b.input(0), b.input(1), b.input(2)],
                 reduction=a.reduction, ignore_index=a.ignore_index)]


nll_loss = register(OpDef(
    name="nll_loss", inputs=("input", "target", "weight?"), attrs=NllAttrs, infer=infer_nll,
    cost=cost_nll, is_loss=True, flop_rule="1 per row (2 with weights) + reduction",
    onnx=onnx_nll_loss, vjp=vjp_loss,
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
                    optional: tuple[str, ...] = (), per_weight: tuple[int, ...] = (),
                    onnx: Any = None) -> OpDef:
    return register(OpDef(
        name=name, inputs=("input", "target", *optional), attrs=attrs, infer=infer_pointwise,
        cost=_pointwise_cost(per_element, per_weight), is_loss=True,
        flop_rule=f"{per_element}E + reduction", onnx=onnx,
        vjp=vjp_loss,
    ))


def onnx_pointwise(per_element: Any) -> Any:
    """ONNX mapping of an elementwise loss: ``per_element(b, node, input, target, dtype)``
    builds the loss per element from its formula (no ONNX op), then the reduction."""

    def mapping(b: Any, node: Node) -> list[str]:
        dtype = node.inputs[0].type.dtype
        loss = per_element(b, node, b.input(0), b.input(1), dtype)
        return [onnx_reduce_loss(b, node.attrs.reduction, loss)]

    return mapping


def _bce(b: Any, node: Node, p: str, y: str, dtype: str) -> str:
    """``−w·[y·max(log p, −100) + (1−y)·max(log(1−p), −100)]``."""
    one, floor = b.scalar(1.0, dtype), b.scalar(-100.0, dtype)
    log_p = b.op("Max", [b.op("Log", [p]), floor])
    log_1mp = b.op("Max", [b.op("Log", [b.op("Sub", [one, p])]), floor])
    both = b.op("Add", [b.op("Mul", [y, log_p]), b.op("Mul", [b.op("Sub", [one, y]), log_1mp])])
    loss = b.op("Neg", [both])
    return b.op("Mul", [loss, b.input(2)]) if b.input(2) else loss


def _bce_with_logits(b: Any, node: Node, x: str, y: str, dtype: str) -> str:
    """The stable form ``w·[(1−y)·x + (1 + (pw−1)·y)·(log(1 + e^{−|x|}) + max(−x, 0))]``."""
    one = b.scalar(1.0, dtype)
    softplus = b.op("Add", [b.op("Softplus", [b.op("Neg", [b.op("Abs", [x])])]),
                            b.op("Relu", [b.op("Neg", [x])])])
    if b.input(3):
        coef = b.op("Add", [one, b.op("Mul", [b.op("Sub", [b.input(3), one]), y])])
        softplus = b.op("Mul", [coef, softplus])
    loss = b.op("Add", [b.op("Mul", [b.op("Sub", [one, y]), x]), softplus])
    return b.op("Mul", [loss, b.input(2)]) if b.input(2) else loss


def _l1(b: Any, node: Node, x: str, y: str, dtype: str) -> str:
    """``|x − y|``."""
    return b.op("Abs", [b.op("Sub", [x, y])])


def _mse(b: Any, node: Node, x: str, y: str, dtype: str) -> str:
    """``(x − y)²``."""
    d = b.op("Sub", [x, y])
    return b.op("Mul", [d, d])


def _huber_like(b: Any, d: str, width: float, scale_small: float, scale_large: float,
                dtype: str) -> str:
    """``Where(|d| < width, scale_small·d², scale_large·(|d| − width/2))``."""
    abs_d = b.op("Abs", [d])
    small = b.op("Mul", [b.op("Mul", [d, d]), b.scalar(scale_small, dtype)])
    large = b.op("Mul", [b.op("Sub", [abs_d, b.scalar(width / 2, dtype)]),
                         b.scalar(scale_large, dtype)])
    return b.op("Where", [b.op("Less", [abs_d, b.scalar(width, dtype)]), small, large])


def _smooth_l1(b: Any, node: Node, x: str, y: str, dtype: str) -> str:
    """``|d| < β ? 0.5·d²/β : |d| − 0.5·β``; β = 0 is exactly L1."""
    beta = node.attrs.beta
    if beta == 0:
        return _l1(b, node, x, y, dtype)
    return _huber_like(b, b.op("Sub", [x, y]), beta, 0.5 / beta, 1.0, dtype)


def _huber(b: Any, node: Node, x: str, y: str, dtype: str) -> str:
    """``|d| < δ ? 0.5·d² : δ·(|d| − 0.5·δ)``."""
    delta = node.attrs.delta
    return _huber_like(b, b.op("Sub", [x, y]), delta, 0.5, delta, dtype)


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
                                       per_weight=(1,), onnx=onnx_pointwise(_bce))
binary_cross_entropy_with_logits = _pointwise_loss(
    "binary_cross_entropy_with_logits", 8, optional=("weight?", "pos_weight?"),
    per_weight=(1, 2), onnx=onnx_pointwise(_bce_with_logits))
l1_loss = _pointwise_loss("l1_loss", 2, onnx=onnx_pointwise(_l1))
mse_loss = _pointwise_loss("mse_loss", 2, onnx=onnx_pointwise(_mse))
smooth_l1_loss = _pointwise_loss("smooth_l1_loss", 5, SmoothL1Attrs,
                                 onnx=onnx_pointwise(_smooth_l1))
huber_loss = _pointwise_loss("huber_loss", 5, HuberAttrs, onnx=onnx_pointwise(_huber))


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


def onnx_pairwise_distance(b: Any, a: str, other: str, p: float, eps: float, dtype: str) -> str:
    """``‖a − other + eps‖_p`` over the last dim (``ReduceL2``/``ReduceL1`` for p = 2/1)."""
    diff = b.op("Add", [b.op("Sub", [a, other]), b.scalar(eps, dtype)])
    last = b.const(np.asarray([-1], dtype=np.int64), "axes")
    if p in (1, 2):
        return b.op(f"ReduceL{int(p)}", [diff, last], keepdims=0)
    powered = b.op("Pow", [b.op("Abs", [diff]), b.scalar(p, dtype)])
    return b.op("Pow", [b.op("ReduceSum", [powered, last], keepdims=0), b.scalar(1 / p, dtype)])


def onnx_triplet_margin_loss(b: Any, node: Node) -> list[str]:
    """ONNX mapping (decomposed): ``max(d(a, pos) − d(a, neg) + margin, 0)``, with
    ``d(a, neg) ← min(d(a, neg), d(pos, neg))`` when swapping."""
    a, dtype = node.attrs, node.inputs[0].type.dtype
    anchor, pos, neg = b.input(0), b.input(1), b.input(2)
    d_ap = onnx_pairwise_distance(b, anchor, pos, a.p, a.eps, dtype)
    d_an = onnx_pairwise_distance(b, anchor, neg, a.p, a.eps, dtype)
    if a.swap:
        d_an = b.op("Min", [d_an, onnx_pairwise_distance(b, pos, neg, a.p, a.eps, dtype)])
    hinge = b.op("Relu", [b.op("Add", [b.op("Sub", [d_ap, d_an]), b.scalar(a.margin, dtype)])])
    return [onnx_reduce_loss(b, a.reduction, hinge)]


triplet_margin_loss = register(OpDef(
    name="triplet_margin_loss", inputs=("anchor", "positive", "negative"), attrs=TripletAttrs,
    infer=infer_triplet, cost=cost_triplet, is_loss=True, onnx=onnx_triplet_margin_loss,
    vjp=vjp_loss,
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


def onnx_contrastive_loss(b: Any, node: Node) -> list[str]:
    """ONNX mapping (decomposed): ``(1−Y)·½·D² + Y·½·max(0, m − D)²``,
    ``D = ‖x1 − x2 + eps‖₂``."""
    a, dtype = node.attrs, node.inputs[0].type.dtype
    dist = onnx_pairwise_distance(b, b.input(0), b.input(1), 2, a.eps, dtype)
    label = b.input(2)
    if node.inputs[2].type.dtype != dtype:
        label = b.op("CastLike", [label, dist])
    half, one = b.scalar(0.5, dtype), b.scalar(1.0, dtype)
    gap = b.op("Relu", [b.op("Sub", [b.scalar(a.margin, dtype), dist])])
    similar = b.op("Mul", [b.op("Sub", [one, label]), b.op("Mul", [dist, dist])])
    dissimilar = b.op("Mul", [label, b.op("Mul", [gap, gap])])
    per_pair = b.op("Mul", [b.op("Add", [similar, dissimilar]), half])
    return [onnx_reduce_loss(b, a.reduction, per_pair)]


contrastive_loss = register(OpDef(
    name="contrastive_loss", inputs=("x1", "x2", "label"), attrs=ContrastiveAttrs,
    infer=infer_contrastive, cost=cost_contrastive, is_loss=True, onnx=onnx_contrastive_loss,
    vjp=vjp_loss,
    flop_rule="distance 4E + N roots, 9N for the two branches + reduction",
))


# -- the backward-only op: one loss input's gradient ----------------------------------------


@dataclass(frozen=True)
class LossGradAttrs:
    """Which loss (its OpDef and attributes) a ``loss_grad`` node differentiates, and with
    respect to which of its inputs (``wrt``, an index into the loss's inputs)."""

    loss: OpDef | None = None
    loss_attrs: Any = None
    wrt: int = 0


def _loss_inputs(a: LossGradAttrs, types: list) -> list:
    """The loss's own operands among a ``loss_grad`` node's (after ``grad_output``)."""
    arity = len(a.loss.inputs)
    require(all(t is None for t in types[1 + arity:]),
            f"{a.loss.name} takes {arity} inputs, but its gradient was given more")
    return list(types[1:1 + arity])


def infer_loss_grad(a: LossGradAttrs, types: list[TensorType | None]) -> list[TensorType]:
    require(a.loss is not None and a.loss.is_loss, f"differentiates a loss, not {a.loss!r}")
    ins = _loss_inputs(a, types)
    out = a.loss.infer_types(a.loss_attrs, ins)[0]
    g = types[0]
    require(g.shape == out.shape and g.dtype == out.dtype,
            f"expects the gradient of the {a.loss.name} output ({out}) but it is {g}")
    require(0 <= a.wrt < len(ins) and ins[a.wrt] is not None,
            f"has no input {a.wrt} of {a.loss.name} to differentiate")
    t = ins[a.wrt]
    require(np.dtype(t.dtype).kind == "f",
            f"cannot differentiate {a.loss.name} with respect to its {t.dtype} input {a.wrt}")
    return [t]


def _mean_scale(a: LossAttrs) -> int:
    """``s = g / count`` once for 'mean'; 'none' and 'sum' use the gradient as it is."""
    return 1 if a.reduction == "mean" else 0


def _summed(t: TensorType, elems: int) -> int:
    """Summing a gradient over the axes a weight broadcasts along: E adds (as ``sum``)."""
    return elems if static_numel(t) < elems else 0


def _regression_grad_cost(per_element: int) -> Callable[..., int]:
    def cost(a: LossAttrs, ins: list, wrt: int) -> int:
        return per_element * static_numel(ins[0]) + _mean_scale(a)

    return cost


def _smooth_l1_grad_cost(a: SmoothL1Attrs, ins: list, wrt: int) -> int:
    return (3 if a.beta == 0 else 5) * static_numel(ins[0]) + _mean_scale(a)


def _bce_grad_cost(a: LossAttrs, ins: list, wrt: int) -> int:
    elems, weight = static_numel(ins[0]), ins[2]
    if wrt == 2:
        return 10 * elems + _summed(weight, elems) + _mean_scale(a)
    return ((6, 7)[wrt] + (weight is not None)) * elems + _mean_scale(a)


def _bce_logits_grad_cost(a: LossAttrs, ins: list, wrt: int) -> int:
    elems, weight, pos = static_numel(ins[0]), ins[2], ins[3]
    has_w, has_pw = weight is not None, pos is not None
    per = {0: 5 + 5 * has_pw + has_w, 1: 2 + 7 * has_pw + has_w, 2: 9 + 2 * has_pw,
           3: 7 + has_w}[wrt]
    return per * elems + (_summed(ins[wrt], elems) if wrt >= 2 else 0) + _mean_scale(a)


def _class_index_weight_grad_cost(op: OpDef, a: Any, ins: list, log_softmax: int,
                                  smoothing: bool) -> int:
    """``gw_c = Σ_n s_n·(−q'·lp)[n, c]``; 'mean' subtracts ``(g/D)·L·K_c`` (K_c the kept
    targets of class c) and needs the forward loss L."""
    elems, rows, classes = static_numel(ins[0]), static_numel(ins[1]), ins[2].shape[0]
    flops = log_softmax + (3 * elems + rows if smoothing else 2 * rows)
    if a.reduction == "mean":
        forward = op.cost(a, ins, op.infer_types(a, ins)).flops
        flops += rows + 1 + forward + rows + 2 * classes + 1
    return flops


def _cross_entropy_grad_cost(a: CrossEntropyAttrs, ins: list, wrt: int) -> int:
    x, target, weight = ins[:3]
    elems, classes = static_numel(x), _classes(x)
    rows = elems // max(1, classes)
    has_w, eps = weight is not None, bool(a.label_smoothing)
    if not _is_int(target):
        per = {0: 9 + 2 * eps + has_w, 1: 6 + has_w, 2: 8 + 2 * eps}[wrt]
        return per * elems + (rows if wrt == 1 else 0) + _mean_scale(a)
    if wrt == 2:
        return _class_index_weight_grad_cost(cross_entropy, a, ins, 5 * elems, eps)
    flops = 6 * elems + rows + rows * has_w
    if eps:
        flops += 4 * elems + 2 * rows + classes * has_w
    return flops + (rows + 1 if a.reduction == "mean" else 0)


def _nll_grad_cost(a: NllAttrs, ins: list, wrt: int) -> int:
    rows = static_numel(ins[1])
    if wrt == 2:
        return _class_index_weight_grad_cost(nll_loss, a, ins, 0, False)
    return rows * (1 + (ins[2] is not None)) + (rows + 1 if a.reduction == "mean" else 0)


def _triplet_grad_cost(a: TripletAttrs, ins: list, wrt: int) -> int:
    x = ins[0]
    elems, rows = static_numel(x), _rows(x)
    forward = (3 if a.swap else 2) * (4 * elems + rows) + 3 * rows
    terms = 2 if (wrt == 0 or a.swap) else 1
    norm = elems if a.p in (1, 2) else 5 * elems + rows
    flops = forward + 2 * rows + 3 * rows * a.swap + terms * (norm + elems) + (terms - 1) * elems
    return flops + _mean_scale(a)


def _contrastive_grad_cost(a: ContrastiveAttrs, ins: list, wrt: int) -> int:
    x = ins[0]
    per_element = 4 if wrt == 2 else 5
    return per_element * static_numel(x) + 8 * _rows(x) + _mean_scale(a)


GRAD_COSTS: dict[OpDef, Callable[..., int]] = {
    cross_entropy: _cross_entropy_grad_cost,
    nll_loss: _nll_grad_cost,
    binary_cross_entropy: _bce_grad_cost,
    binary_cross_entropy_with_logits: _bce_logits_grad_cost,
    l1_loss: _regression_grad_cost(3),
    mse_loss: _regression_grad_cost(3),
    smooth_l1_loss: _smooth_l1_grad_cost,
    huber_loss: _regression_grad_cost(4),
    triplet_margin_loss: _triplet_grad_cost,
    contrastive_loss: _contrastive_grad_cost,
}


def cost_loss_grad(a: LossGradAttrs, ins: list[TensorType | None],
                   outs: list[TensorType]) -> Cost:
    """The gradient's own elementwise decomposition (the module docstring's table)."""
    return Cost(flops=GRAD_COSTS[a.loss](a.loss_attrs, _loss_inputs(a, ins), a.wrt))


loss_grad = register(OpDef(
    name="loss_grad", inputs=("grad_output", "input0", "input1", "input2?", "input3?"),
    attrs=LossGradAttrs, infer=infer_loss_grad, cost=cost_loss_grad, backward=True,
    differentiable=False, flop_rule="the gradient's elementwise decomposition + 'mean' scale",
))
