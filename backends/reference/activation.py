"""Reference activations, softmax and dropout (docs/semantics.md §1.5, §1.6, §1.14).

sigmoid 1/(1+e^{−x}); relu max(x,0); relu6 min(max(x,0),6); leaky_relu x>0 ? x : α·x;
elu x>0 ? x : α(eˣ−1); prelu x>0 ? x : a_c·x (slope per channel on dim 1, or shared);
rrelu x>0 ? x : a·x with a ~ U(lower, upper) per element in training, (lower+upper)/2 in eval;
hardsigmoid min(max(x+3,0),6)/6; hardswish x·hardsigmoid(x); silu x·σ(x);
hardtanh min(max(x, min_val), max_val); softplus log(1 + e^{βx})/β, x where βx > threshold;
mish x·tanh(log(1 + eˣ));
gelu x·Φ(x) = ½x(1 + erf(x/√2)), or ½x(1 + tanh(√(2/π)(x + 0.044715x³))) with 'tanh';
softmax exp(x − max)/Σexp(x − max); log_softmax x − max − log Σexp(x − max);
dropout (training) x·mask/(1−p) with mask ~ Bernoulli(1−p), zeros for p = 1, identity in eval;
dropout2d draws one mask value per (sample, channel). In training, dropout, dropout2d and
rrelu also return the multiplier they applied (the scaled mask, or 1 / the sampled slope).
prelu_grad: gx = x > 0 ? g : a·g, ga = Σ_{x≤0} x·g per channel (or over all for one slope).
"""

from __future__ import annotations

import math

import numpy as np

from cnnir import ops
from cnnir.backends.reference.runtime import Context, kernel
from cnnir.ops import activation as activation_ops
from cnnir.ops.activation import (
    DropoutAttrs,
    EluAttrs,
    GeluAttrs,
    HardtanhAttrs,
    LeakyReluAttrs,
    PReluGradAttrs,
    RReluAttrs,
    SoftmaxAttrs,
    SoftplusAttrs,
)


@kernel(ops.relu)
def relu(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)  # NaN propagates, -inf gives 0


@kernel(ops.abs_)
def abs_(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return np.abs(x)


@kernel(ops.relu6)
def relu6(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, 0.0), 6.0)


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # imported on first use: it costs every import 0.16 s

    return erf(x)


def sigmoid_of(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@kernel(ops.sigmoid)
def sigmoid(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return sigmoid_of(x)


@kernel(ops.tanh)
def tanh(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


@kernel(ops.silu)
def silu(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return x * sigmoid_of(x)


def hardsigmoid_of(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x + 3.0, 0.0), 6.0) / 6.0


@kernel(ops.hardsigmoid)
def hardsigmoid(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return hardsigmoid_of(x)


@kernel(ops.hardswish)
def hardswish(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return x * hardsigmoid_of(x)


@kernel(ops.leaky_relu)
def leaky_relu(ctx: Context, a: LeakyReluAttrs, x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, a.negative_slope * x)


@kernel(ops.elu)
def elu(ctx: Context, a: EluAttrs, x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, a.alpha * np.expm1(x))


@kernel(ops.gelu)
def gelu(ctx: Context, a: GeluAttrs, x: np.ndarray) -> np.ndarray:
    if a.approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


@kernel(ops.hardtanh)
def hardtanh(ctx: Context, a: HardtanhAttrs, x: np.ndarray) -> np.ndarray:
    return np.where(x < a.min_val, a.min_val, np.where(x > a.max_val, a.max_val, x))


def softplus_of(a: SoftplusAttrs, x: np.ndarray) -> np.ndarray:
    """``log(1 + e^{βx})/β``, x itself where βx > threshold (PyTorch's rule)."""
    bx = a.beta * x
    with np.errstate(over="ignore"):
        return np.where(bx > a.threshold, x, np.log1p(np.exp(bx)) / a.beta)


@kernel(ops.softplus)
def softplus(ctx: Context, a: SoftplusAttrs, x: np.ndarray) -> np.ndarray:
    return softplus_of(a, x)


@kernel(ops.mish)
def mish(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return x * np.tanh(softplus_of(SoftplusAttrs(threshold=np.inf), x))


@kernel(ops.prelu)
def prelu(ctx: Context, attrs: object, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    slope = w.reshape((1, -1) + (1,) * (x.ndim - 2)) if x.ndim >= 2 else w
    return np.where(x > 0, x, slope * x)


@kernel(ops.rrelu)
def rrelu(ctx: Context, a: RReluAttrs, x: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
    """Eval: the mean slope. Training: (y, multiplier), the multiplier 1 where x > 0 and the
    element's sampled slope elsewhere (the backward's ``gy·multiplier``)."""
    if not a.training:
        return np.where(x > 0, x, (a.lower + a.upper) / 2 * x)
    slope = ctx.rng.uniform(a.lower, a.upper, size=x.shape).astype(x.dtype)
    return np.where(x > 0, x, slope * x), np.where(x > 0, 1.0, slope)


@kernel(ops.softmax)
def softmax(ctx: Context, a: SoftmaxAttrs, x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=a.dim, keepdims=True))
    return e / e.sum(axis=a.dim, keepdims=True)


def log_softmax_of(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@kernel(ops.log_softmax)
def log_softmax(ctx: Context, a: SoftmaxAttrs, x: np.ndarray) -> np.ndarray:
    return log_softmax_of(x, a.dim)


def _dropout(ctx: Context, a: DropoutAttrs, x: np.ndarray,
             mask_shape: tuple) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Eval: x. Training: (y, mask) with the mask ``keep/(1 − p)`` in ``mask_shape``."""
    if not a.training:
        return x
    if a.p == 1.0:
        return np.zeros_like(x), np.zeros(mask_shape)
    mask = (ctx.rng.random(mask_shape) >= a.p) * (1.0 / (1.0 - a.p))
    return x * mask, mask


@kernel(ops.dropout)
def dropout(ctx: Context, a: DropoutAttrs, x: np.ndarray) -> np.ndarray | tuple:
    return _dropout(ctx, a, x, x.shape)


@kernel(ops.dropout2d)
def dropout2d(ctx: Context, a: DropoutAttrs, x: np.ndarray) -> np.ndarray | tuple:
    return _dropout(ctx, a, x, x.shape[:2] + (1,) * (x.ndim - 2))


# -- derivatives (docs/semantics.md §3), for activation_grad: f'(x) given x ----------------

def _gelu_derivative(a: GeluAttrs, x: np.ndarray) -> np.ndarray:
    if a.approximate == "tanh":
        c = math.sqrt(2.0 / math.pi)
        t = np.tanh(c * (x + 0.044715 * x**3))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x * x)
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / math.sqrt(
        2.0 * math.pi)


DERIVATIVES = {
    ops.abs_: lambda a, x: np.sign(x),
    ops.relu: lambda a, x: (x > 0).astype(x.dtype),
    ops.relu6: lambda a, x: ((x > 0) & (x < 6)).astype(x.dtype),
    ops.leaky_relu: lambda a, x: np.where(x > 0, 1.0, a.negative_slope),
    ops.elu: lambda a, x: np.where(x > 0, 1.0, a.alpha * np.exp(x)),
    ops.sigmoid: lambda a, x: sigmoid_of(x) * (1.0 - sigmoid_of(x)),
    ops.tanh: lambda a, x: 1.0 - np.tanh(x) ** 2,
    ops.silu: lambda a, x: sigmoid_of(x) * (1.0 + x * (1.0 - sigmoid_of(x))),
    ops.hardsigmoid: lambda a, x: np.where((x > -3) & (x < 3), 1.0 / 6.0, 0.0),
    ops.hardswish: lambda a, x: np.where(x < -3, 0.0, np.where(x > 3, 1.0, x / 3.0 + 0.5)),
    ops.gelu: _gelu_derivative,
}


def _mish_derivative(a: object, x: np.ndarray) -> np.ndarray:
    t = np.tanh(softplus_of(SoftplusAttrs(threshold=np.inf), x))
    return t + x * sigmoid_of(x) * (1.0 - t * t)


DERIVATIVES.update({
    ops.hardtanh: lambda a, x: ((x > a.min_val) & (x < a.max_val)).astype(x.dtype),
    ops.softplus: lambda a, x: np.where(a.beta * x > a.threshold, 1.0, sigmoid_of(a.beta * x)),
    ops.mish: _mish_derivative,
})


def activation_derivative(activation, activation_attrs, x: np.ndarray) -> np.ndarray:
    """f'(x) of ``activation`` (an OpDef) with its attributes (None: the defaults)."""
    attrs = activation_attrs if activation_attrs is not None else activation.attrs()
    return DERIVATIVES[activation](attrs, x)


@kernel(ops.activation_grad)
def activation_grad(ctx: Context, a, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    return activation_derivative(a.activation, a.activation_attrs, x) * g


@kernel(activation_ops.param_activation_grad)
def param_activation_grad(ctx: Context, a, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    return activation_derivative(a.activation, a.activation_attrs, x) * g


@kernel(activation_ops.prelu_grad)
def prelu_grad(ctx: Context, a: PReluGradAttrs, x: np.ndarray, w: np.ndarray,
               g: np.ndarray) -> tuple[np.ndarray, ...]:
    """``gx = x > 0 ? g : a·g``; ``ga = Σ_{x≤0} x·g`` per channel (dim 1), or over all."""
    slope = w.reshape((1, -1) + (1,) * (x.ndim - 2)) if x.ndim >= 2 else w
    results = []
    if "input" in a.outputs:
        results.append(np.where(x > 0, g, slope * g))
    if "weight" in a.outputs:
        contribution = np.where(x > 0, 0.0, x * g)
        if w.size == 1:
            results.append(np.sum(contribution).reshape(w.shape))
        else:
            results.append(np.sum(contribution, axis=(0, *range(2, x.ndim))))
    return tuple(results)
