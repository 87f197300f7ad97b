"""Reference optimizer updates (docs/semantics.md §4), written from PyTorch's single-tensor
rules. Each kernel returns the new parameter and the new state, in the order of the op's
``updates``; the scalars come from row ``attrs.row`` of ``hyper`` (columns as the op's
``HYPER`` names)."""

from __future__ import annotations

import numpy as np

from cnnir.backends.reference.runtime import Context, kernel
from cnnir.ops import optim as optim_ops


def row(hyper: np.ndarray, a, names: tuple[str, ...]) -> dict[str, float]:
    return dict(zip(names, (float(v) for v in hyper[a.row])))


@kernel(optim_ops.sgd_update)
def sgd_update(ctx: Context, a, p, g, hyper, buf):
    h = row(hyper, a, optim_ops.SGD_HYPER)
    g = g + h["weight_decay"] * p
    if buf is None:
        return p - h["lr"] * g
    buf = g if h["first"] else h["momentum"] * buf + (1 - h["dampening"]) * g
    step = g + h["momentum"] * buf if a.nesterov else buf
    return p - h["lr"] * step, buf


@kernel(optim_ops.adagrad_update)
def adagrad_update(ctx: Context, a, p, g, hyper, total):
    h = row(hyper, a, optim_ops.ADAGRAD_HYPER)
    g = g + h["weight_decay"] * p
    total = total + g * g
    return p - h["clr"] * g / (np.sqrt(total) + h["eps"]), total


@kernel(optim_ops.adadelta_update)
def adadelta_update(ctx: Context, a, p, g, hyper, square_avg, acc_delta):
    h = row(hyper, a, optim_ops.ADADELTA_HYPER)
    rho, eps = h["rho"], h["eps"]
    g = g + h["weight_decay"] * p
    square_avg = rho * square_avg + (1 - rho) * g * g
    delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
    acc_delta = rho * acc_delta + (1 - rho) * delta * delta
    return p - h["lr"] * delta, square_avg, acc_delta


@kernel(optim_ops.rmsprop_update)
def rmsprop_update(ctx: Context, a, p, g, hyper, square_avg, buf, grad_avg):
    h = row(hyper, a, optim_ops.RMSPROP_HYPER)
    alpha = h["alpha"]
    g = g + h["weight_decay"] * p
    square_avg = alpha * square_avg + (1 - alpha) * g * g
    state = [square_avg]
    if a.centered:
        grad_avg = alpha * grad_avg + (1 - alpha) * g
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + h["eps"]
    else:
        avg = np.sqrt(square_avg) + h["eps"]
    if buf is not None:
        buf = h["momentum"] * buf + g / avg
        p = p - h["lr"] * buf
        state.append(buf)
    else:
        p = p - h["lr"] * g / avg
    if a.centered:
        state.append(grad_avg)
    return (p, *state)


@kernel(optim_ops.adam_update)
def adam_update(ctx: Context, a, p, g, hyper, m, v, vmax):
    h = row(hyper, a, optim_ops.ADAM_HYPER)
    beta1, beta2 = h["beta1"], h["beta2"]
    if a.decoupled:
        p = p * (1 - h["lr"] * h["weight_decay"])
    else:
        g = g + h["weight_decay"] * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    state = [m, v]
    if vmax is not None:
        vmax = np.maximum(vmax, v)
        state.append(vmax)
    denom = np.sqrt(vmax if vmax is not None else v) / h["bc2_sqrt"] + h["eps"]
    return (p - h["step_size"] * m / denom, *state)
