"""Optimizer updates as IR ops: one op per update rule of ``cnnir.optim`` (docs/semantics.md
§4), so that a training step's forward, backward and update are one graph.

Each op reads a parameter, its gradient and its optimizer state and yields the new parameter
and the new state (``updates`` names the inputs its outputs replace; a backend may write them
in place when the node is their last reader). The scalars of the rule (learning rate,
momentum, betas, weight decay, bias corrections) are not attributes but row ``row`` of the
run-time ``hyper`` matrix, one row per parameter, columns named by the op's ``HYPER`` tuple:
a scheduler's new learning rate reaches the next step without recompiling. Only what changes
the graph's structure (nesterov, centered, amsgrad, decoupled weight decay) is an attribute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnir.ir.types import TensorType, shape_str
from cnnir.ops.registry import Cost, OpDef, register, require, static_numel


@dataclass(frozen=True)
class SGDAttrs:
    row: int = 0
    nesterov: bool = False


@dataclass(frozen=True)
class AdagradAttrs:
    row: int = 0


@dataclass(frozen=True)
class AdadeltaAttrs:
    row: int = 0


@dataclass(frozen=True)
class RMSpropAttrs:
    row: int = 0
    centered: bool = False


@dataclass(frozen=True)
class AdamAttrs:
    row: int = 0
    amsgrad: bool = False
    decoupled: bool = False  # AdamW: p *= 1 − lr·wd before the moments, no L2 term


# Columns of each op's hyper row. FIRST is 1.0 on a momentum buffer's first step (b = g, no
# dampening); Adagrad's CLR and Adam's STEP_SIZE and BC2_SQRT are computed on the host from
# the step count t, in float64, as PyTorch does.
SGD_HYPER = ("lr", "momentum", "dampening", "weight_decay", "first")
ADAGRAD_HYPER = ("clr", "weight_decay", "eps")
ADADELTA_HYPER = ("lr", "rho", "eps", "weight_decay")
RMSPROP_HYPER = ("lr", "alpha", "eps", "weight_decay", "momentum")
ADAM_HYPER = ("lr", "beta1", "beta2", "eps", "weight_decay", "step_size", "bc2_sqrt")


def update_infer(hyper_width: int):
    """The shape rule of an update op: the state matches the parameter, the gradient too,
    ``hyper`` is a float matrix ``[rows, hyper_width]`` with a row for ``attrs.row``; the
    outputs have the types of the parameter and of each present state input."""

    def infer(a, types: list[TensorType | None]) -> list[TensorType]:
        param, grad, hyper, *state = types
        for name, t in (("gradient", grad), *(("state", s) for s in state if s is not None)):
            require(t.shape == param.shape and t.dtype == param.dtype,
                    lambda t=t, name=name: f"expects the {name} to match the parameter "
                    f"{param} but it is {t}")
        require(hyper.rank == 2 and hyper.shape[1] == hyper_width
                and np.dtype(hyper.dtype).kind == "f",
                lambda: f"expects hyper to be a float [rows, {hyper_width}] matrix but it is "
                        f"{shape_str(hyper.shape)} {hyper.dtype}")
        require(not isinstance(hyper.shape[0], int) or 0 <= a.row < hyper.shape[0],
                lambda: f"reads hyper row {a.row} of {hyper.shape[0]}")
        return [param, *(s for s in state if s is not None)]

    return infer


def update_cost(flops_per_element: int, per_state: int = 0):
    def cost(a, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
        return Cost(flops=(flops_per_element + per_state * (len(outs) - 1))
                    * static_numel(outs[0]))

    return cost


def _update_op(name: str, state: tuple[str, ...], attrs: type, hyper: tuple[str, ...],
               flops: int, per_state: int, rule: str) -> OpDef:
    return register(OpDef(
        name=name, inputs=("param", "grad", "hyper", *state), attrs=attrs,
        infer=update_infer(len(hyper)), cost=update_cost(flops, per_state),
        differentiable=False, backward=True,
        updates=("param", *state), flop_rule=rule, extra={"hyper": hyper},
    ))


sgd_update = _update_op(
    "sgd_update", ("momentum_buffer?",), SGDAttrs, SGD_HYPER, 4, 5,
    "4 per element (weight decay, step) + 5 with momentum (+ nesterov)")
adagrad_update = _update_op(
    "adagrad_update", ("sum",), AdagradAttrs, ADAGRAD_HYPER, 8, 0,
    "8 per element: decay, square-accumulate, root, divide, step")
adadelta_update = _update_op(
    "adadelta_update", ("square_avg", "acc_delta"), AdadeltaAttrs, ADADELTA_HYPER, 16, 0,
    "16 per element: two averages, two roots, a divide, decay and step")
rmsprop_update = _update_op(
    "rmsprop_update", ("square_avg", "momentum_buffer?", "grad_avg?"), RMSpropAttrs,
    RMSPROP_HYPER, 9, 3, "9 per element + 3 per extra state (momentum, centering)")
adam_update = _update_op(
    "adam_update", ("exp_avg", "exp_avg_sq", "max_exp_avg_sq?"), AdamAttrs, ADAM_HYPER, 13, 1,
    "13 per element (+1 with amsgrad): moments, bias-corrected root, divide, step")

UPDATE_OPS = (sgd_update, adagrad_update, adadelta_update, rmsprop_update, adam_update)

__all__ = ["ADADELTA_HYPER", "ADAGRAD_HYPER", "ADAM_HYPER", "RMSPROP_HYPER", "SGD_HYPER",
           "UPDATE_OPS", "AdadeltaAttrs", "AdagradAttrs", "AdamAttrs", "RMSpropAttrs",
           "SGDAttrs", "adadelta_update", "adagrad_update", "adam_update", "rmsprop_update",
           "sgd_update"]
