"""The epilogue of a producing kernel: ``act(scale[c]·y + shift[c] (+ residual))``.

A conv's or linear layer's bias, a folded BatchNorm (scale and shift), a residual add and an
activation are applied where the output is produced, in one memory pass: in the GEMM
micro-kernel's registers, or in a stencil's or transform's last pass. Kernels receive the
epilogue as one tuple, ``Epilogue.args`` (a plain tuple: numba unboxes it about as fast as
separate arguments, a namedtuple costs three times more per call).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder
from cnnir.backends.numba_cpu.kernels import activation as ak
from cnnir.backends.numba_cpu.kernels.activation import Act
from cnnir.ir import Node

# The kernels' code for each activation op (elementwise lowering and fused epilogues alike);
# it covers every op of ``cnnir.ops.fused.FUSABLE_ACTIVATIONS`` (tested).
ACTIVATION_CODES = {ops.relu: Act.RELU, ops.relu6: Act.RELU6, ops.leaky_relu: Act.LEAKY_RELU,
                    ops.elu: Act.ELU, ops.sigmoid: Act.SIGMOID, ops.tanh: Act.TANH,
                    ops.silu: Act.SILU, ops.hardsigmoid: Act.HARDSIGMOID,
                    ops.hardswish: Act.HARDSWISH}


def activation_code(op, attrs) -> tuple[Act, float]:
    """The kernel code and parameter (slope or alpha) of an activation op; ``attrs`` None
    means the op's defaults."""
    attrs = attrs if attrs is not None else op.attrs()
    if op is ops.gelu:
        return (Act.GELU if attrs.approximate == "none" else Act.GELU_TANH), 0.0
    alpha = getattr(attrs, "negative_slope", getattr(attrs, "alpha", 0.0))
    return ACTIVATION_CODES[op], float(alpha)


@dataclass
class Epilogue:
    """``act(scale·y + shift (+ residual))`` per output channel."""

    scale: np.ndarray
    shift: np.ndarray
    residual: np.ndarray | None = None
    code: Act = Act.NONE
    alpha: float = 0.0

    @property
    def trivial(self) -> bool:
        return (self.residual is None and self.code == Act.NONE and not self.shift.any()
                and bool((self.scale == 1).all()))

    def args(self) -> tuple:
        """``(scale, shift, residual, has_residual, code, alpha)`` for a kernel: the residual
        flat (indexed like the flat output), a placeholder if there is none."""
        present = self.residual is not None
        res = self.residual.reshape(-1) if present else ak.dummy(self.scale.dtype)
        return self.scale, self.shift, res, present, int(self.code), float(self.alpha)


def plain_epilogue(b: Builder, channels: int, bias: np.ndarray | None) -> Epilogue:
    """Bias only (zero without one)."""
    shift = bias if bias is not None else np.zeros(channels, b.dtype)
    return Epilogue(np.ones(channels, b.dtype), shift)


def fused_epilogue(b: Builder, node: Node, channels: int) -> Epilogue:
    """The epilogue of conv2d_fused / linear_fused: bias, residual, activation."""
    a = node.attrs
    ep = plain_epilogue(b, channels, b.array(node.inputs[2]))
    ep.residual = b.array(node.inputs[3])
    if a.activation is not None:
        ep.code, ep.alpha = activation_code(a.activation, a.activation_attrs)
    return ep


def as3d(a: np.ndarray) -> np.ndarray:
    """[N, C, ...] -> [N, C, P] view."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def epilogue_step(src: np.ndarray, out: np.ndarray, ep: Epilogue) -> Callable[[], None]:
    """The epilogue as its own pass over same-shaped [N, C, ...] arrays (src may be out)."""
    src3, out3 = as3d(src), as3d(out)
    args = ep.args()
    kernel = ak.epilogue.sized(out3.size)
    return lambda: kernel(src3, out3, args)
