"""The op registry: one ``OpDef`` per op, carrying every rule the core knows about it.

An op's shape rule (``infer``), cost rule (``cost``), receptive-field window (``window``),
gradient (``vjp``, emitting IR ops) and ONNX mapping (``onnx``) sit side by side in its family
file under ``cnnir/ops/``. Backends and passes key their tables by the ``OpDef`` object itself,
never by its name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from cnnir.errors import ShapeError
from cnnir.ir.types import TensorType, is_static, shape_str


@dataclass
class Cost:
    """Costs of one node. ``macs`` follows torchvision (conv/linear/matmul multiplies only);
    ``flops`` counts every arithmetic op, comparison and transcendental by the op's rule;
    ``sampling_flops`` is the part of ``flops`` spent on bilinear sampling (deform_conv2d)."""

    macs: int = 0
    flops: int = 0
    sampling_flops: int = 0


@dataclass(frozen=True)
class Window:
    """How an output pixel sees its input along (H, W): ``kernel`` input pixels wide, one
    output step moves ``stride`` input pixels (a Fraction below 1 when upsampling)."""

    kernel: tuple[int, int]
    stride: tuple[Fraction, Fraction]


GLOBAL = "global"  # an output that sees the whole spatial extent of its input


@dataclass(frozen=True)
class NoAttrs:
    pass


InferFn = Callable[[Any, list[TensorType | None]], Sequence[TensorType]]
CostFn = Callable[[Any, list[TensorType | None], list[TensorType]], Cost]


@dataclass(frozen=True, eq=False)
class OpDef:
    """Everything the core knows about one op.

    ``inputs`` names the operands; a trailing ``?`` marks an optional one (``None`` in a
    node's input list when absent) and a trailing ``*`` a variadic tail. ``params`` names the
    operands that are usually parameters (weights), for reports. ``flop_rule`` documents the
    FLOP count in words (the cost rule implements it).

    ``vjp(ad, node, grads)`` is the op's reverse-mode rule: given the cotangents of the node's
    outputs (``None`` for an output nothing depends on) it returns one per input (``None``
    where none flows or ``ad.needs(i)`` is false), emitting IR ops through the
    ``cnnir.passes.autodiff.GradBuilder`` ``ad``. A ``differentiable`` op must have one (a
    registry test checks). ``backward`` marks the ops only the training transformations emit
    (a convolution's weight gradient, a pool's gradient routing, BatchNorm's running-statistics
    update): ONNX has no standard op for them.

    ``updates`` names the inputs an update op replaces (an optimizer step, BatchNorm's
    running statistics): its outputs, in order, are the new values of those inputs that are
    present. A backend may compute them in place, into the inputs' memory, where the node is
    the last reader of the input (``in_place_updates``).

    ``reshapes`` marks an op whose output is its first input's elements, in the same
    row-major order, in another shape (reshape, flatten, identity): a backend may give the
    output the input's memory and run nothing.
    """

    name: str
    inputs: tuple[str, ...]
    infer: InferFn
    cost: CostFn
    attrs: type = NoAttrs
    flop_rule: str = ""
    params: tuple[str, ...] = ()
    window: Callable[[Any, list[TensorType | None]], Window | str | None] | None = None
    vjp: Callable[..., Any] | None = None
    onnx: Callable[..., Any] | None = None
    differentiable: bool = True
    has_training_mode: bool = False
    random: bool = False
    is_loss: bool = False
    backward: bool = False
    updates: tuple[str, ...] = ()
    reshapes: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Rules always see every fixed operand: absent trailing optional inputs become None.
        object.__setattr__(self, "infer", self._padded(self.infer))
        object.__setattr__(self, "cost", self._padded(self.cost))
        if self.window is not None:
            object.__setattr__(self, "window", self._padded(self.window))

    def _padded(self, rule: Callable[..., Any]) -> Callable[..., Any]:
        if getattr(rule, "pads_inputs", False) or self.inputs[-1:] and self.inputs[-1][-1] == "*":
            return rule
        arity = len(self.inputs)

        def padded(attrs: Any, types: list, *rest: Any) -> Any:
            return rule(attrs, list(types) + [None] * (arity - len(types)), *rest)

        padded.pads_inputs = True  # type: ignore[attr-defined]
        padded.__wrapped__ = rule  # type: ignore[attr-defined]
        return padded

    def check_arity(self, types: list[TensorType | None]) -> None:
        variadic = bool(self.inputs) and self.inputs[-1].endswith("*")
        fixed = self.inputs[:-1] if variadic else self.inputs
        required = sum(not n.endswith("?") for n in fixed)
        if len(types) < required or (not variadic and len(types) > len(fixed)):
            raise ShapeError(
                f"takes inputs ({', '.join(self.inputs)}) but got {len(types)}",
            )
        for name, t in zip(fixed, types):
            if t is None and not name.endswith("?"):
                raise ShapeError(f"is missing its required input '{name}'")

    def infer_types(self, attrs: Any, types: list[TensorType | None]) -> list[TensorType]:
        self.check_arity(types)
        return list(self.infer(attrs, types))

    def __repr__(self) -> str:
        return f"<OpDef {self.name}>"


def updated_inputs(node: Any) -> list[tuple[int, int]]:
    """``(output index, input index)`` for each output of an update op that is the new value
    of an input (see ``OpDef.updates``); empty for every other op."""
    op = node.op
    pairs = []
    for name in op.updates:
        i = op.inputs.index(name)
        if i < len(node.inputs) and node.inputs[i] is not None:
            pairs.append((len(pairs), i))
    return pairs


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} registered twice")
    REGISTRY[op.name] = op
    return op


# -- attribute normalization shared by the op families ---------------------------------


def pair(value: Any, name: str) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; ``(1, 2)`` stays; anything else is a ShapeError naming ``name``."""
    if isinstance(value, bool):
        raise ShapeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 1:
        return pair(value[0], name)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ShapeError(f"{name} must be an int or a pair of ints, got {value!r}")


def require(cond: bool, message: str | Callable[[], str], hint: str | None = None) -> None:
    """Raise ShapeError(message) unless ``cond``. Hot rules pass the message as a lambda so
    the text is only built when the check fails."""
    if not cond:
        raise ShapeError(message() if callable(message) else message, hint=hint)


def positive_pair(value: Any, name: str) -> tuple[int, int]:
    p = pair(value, name)
    require(min(p) >= 1, f"{name} must be >= 1, got {value!r}")
    return p


def nonnegative_pair(value: Any, name: str) -> tuple[int, int]:
    p = pair(value, name)
    require(min(p) >= 0, f"{name} must be >= 0, got {value!r}", "negative padding is rejected")
    return p


def expect_rank(t: TensorType, rank: int | tuple[int, ...], what: str) -> None:
    ranks = (rank,) if isinstance(rank, int) else rank
    if t.rank not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        raise ShapeError(f"expects {what} to be {want} but it is {shape_str(t.shape)}")


def same_dtype(types: list[TensorType | None], what: str = "inputs") -> str:
    dtypes = {t.dtype for t in types if t is not None}
    if len(dtypes) > 1:
        raise ShapeError(
            f"expects {what} of one dtype but got {sorted(dtypes)}",
            hint="cast explicitly; cnnir never converts dtypes silently",
        )
    return dtypes.pop()


def static_numel(t: TensorType) -> int:
    """Element count of a concrete type (cost rules only run on bound shapes)."""
    n = 1
    for d in t.shape:
        if not is_static(d):
            raise ShapeError(f"cost needs concrete shapes, got {shape_str(t.shape)}")
        n *= d
    return n


def elementwise_cost(flops_per_element: int) -> CostFn:
    """Cost rule for ops costing a fixed number of FLOPs per output element."""

    def cost(attrs: Any, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
        return Cost(flops=flops_per_element * static_numel(outs[0]))

    return cost


def free_cost(attrs: Any, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
    """Data movement only (reshape, concat, shuffle, identity): 0 FLOPs."""
    return Cost()
