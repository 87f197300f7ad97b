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
from typing import Any

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder
from cnnir.backends.numba_cpu.kernels import activation as ak
from cnnir.backends.numba_cpu.kernels.activation import Act
from cnnir.backends.numba_cpu.kernels.jit import bound
from cnnir.ir import Node
from cnnir.ops import OpDef

# Per activation op: its attributes -> the kernels' code and parameter (slope or alpha), for
# the elementwise lowering and fused epilogues alike. It covers every op of
# ``cnnir.ops.fused.FUSABLE_ACTIVATIONS`` (tested).
ACTIVATIONS: dict[OpDef, Callable[[Any], tuple[Act, float]]] = {
    ops.relu: lambda a: (Act.RELU, 0.0),
    ops.relu6: lambda a: (Act.RELU6, 0.0),
    ops.leaky_relu: lambda a: (Act.LEAKY_RELU, a.negative_slope),
    ops.elu: lambda a: (Act.ELU, a.alpha),
    ops.sigmoid: lambda a: (Act.SIGMOID, 0.0),
    ops.tanh: lambda a: (Act.TANH, 0.0),
    ops.silu: lambda a: (Act.SILU, 0.0),
    ops.hardsigmoid: lambda a: (Act.HARDSIGMOID, 0.0),
    ops.hardswish: lambda a: (Act.HARDSWISH, 0.0),
    ops.gelu: lambda a: (Act.GELU if a.approximate == "none" else Act.GELU_TANH, 0.0),
    ops.abs_: lambda a: (Act.ABS, 0.0),
}


def activation_code(op: OpDef, attrs: Any) -> tuple[Act, float]:
    """The kernel code and parameter of an activation op; ``attrs`` None means its defaults."""
    code, alpha = ACTIVATIONS[op](attrs if attrs is not None else op.attrs())
    return code, float(alpha)


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
    return bound(kernel, src3, out3, args)
