"""Optimizer updates (docs/semantics.md §4): one pass over a parameter, its gradient and its
state per step, each element read once and written once.

Every kernel takes flat arrays, the parameter's hyper row ``h`` (columns named by the op's
``HYPER`` tuple in ``cnnir.ops.optim``, indexed by the constants below) and the outputs;
an output may be the very array it replaces (the in-place update of a training step).
Optional state absent from a node arrives as a one-element placeholder with its flag off.
"""

from __future__ import annotations

import math

from cnnir.backends.numba_cpu.kernels.jit import kernel, prange

# hyper columns (cnnir.ops.optim.*_HYPER)
SGD_LR, SGD_MOMENTUM, SGD_DAMPENING, SGD_WD, SGD_FIRST = 0, 1, 2, 3, 4
ADAGRAD_CLR, ADAGRAD_WD, ADAGRAD_EPS = 0, 1, 2
ADADELTA_LR, ADADELTA_RHO, ADADELTA_EPS, ADADELTA_WD = 0, 1, 2, 3
RMSPROP_LR, RMSPROP_ALPHA, RMSPROP_EPS, RMSPROP_WD, RMSPROP_MOMENTUM = 0, 1, 2, 3, 4
ADAM_LR, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, ADAM_WD, ADAM_STEP_SIZE, ADAM_BC2_SQRT = range(7)


@kernel
def sgd(p, g, h, buf, has_buf, nesterov, p_out, buf_out):
    lr, mu, wd = h[SGD_LR], h[SGD_MOMENTUM], h[SGD_WD]
    keep, first = 1 - h[SGD_DAMPENING], h[SGD_FIRST] != 0
    for i in prange(p.shape[0]):
        d = g[i] + wd * p[i]
        if has_buf:
            b = d if first else mu * buf[i] + keep * d
            buf_out[i] = b
            d = d + mu * b if nesterov else b
        p_out[i] = p[i] - lr * d


@kernel
def adagrad(p, g, h, total, p_out, total_out):
    clr, wd, eps = h[ADAGRAD_CLR], h[ADAGRAD_WD], h[ADAGRAD_EPS]
    for i in prange(p.shape[0]):
        d = g[i] + wd * p[i]
        s = total[i] + d * d
        total_out[i] = s
        p_out[i] = p[i] - clr * d / (math.sqrt(s) + eps)


@kernel
def adadelta(p, g, h, square_avg, acc_delta, p_out, square_avg_out, acc_delta_out):
    lr, rho, eps, wd = h[ADADELTA_LR], h[ADADELTA_RHO], h[ADADELTA_EPS], h[ADADELTA_WD]
    for i in prange(p.shape[0]):
        d = g[i] + wd * p[i]
        v = rho * square_avg[i] + (1 - rho) * d * d
        delta = math.sqrt(acc_delta[i] + eps) / math.sqrt(v + eps) * d
        square_avg_out[i] = v
        acc_delta_out[i] = rho * acc_delta[i] + (1 - rho) * delta * delta
        p_out[i] = p[i] - lr * delta


@kernel
def rmsprop(p, g, h, square_avg, buf, grad_avg, has_buf, centered,
            p_out, square_avg_out, buf_out, grad_avg_out):
    lr, alpha, eps = h[RMSPROP_LR], h[RMSPROP_ALPHA], h[RMSPROP_EPS]
    wd, mu = h[RMSPROP_WD], h[RMSPROP_MOMENTUM]
    for i in prange(p.shape[0]):
        d = g[i] + wd * p[i]
        v = alpha * square_avg[i] + (1 - alpha) * d * d
        square_avg_out[i] = v
        if centered:
            m = alpha * grad_avg[i] + (1 - alpha) * d
            grad_avg_out[i] = m
            v = v - m * m
        step = d / (math.sqrt(v) + eps)
        if has_buf:
            step = mu * buf[i] + step
            buf_out[i] = step
        p_out[i] = p[i] - lr * step


@kernel
def adam(p, g, h, m, v, vmax, amsgrad, decoupled, p_out, m_out, v_out, vmax_out):
    beta1, beta2, eps, wd = h[ADAM_BETA1], h[ADAM_BETA2], h[ADAM_EPS], h[ADAM_WD]
    step_size, bc2_sqrt = h[ADAM_STEP_SIZE], h[ADAM_BC2_SQRT]
    shrink = 1 - h[ADAM_LR] * wd if decoupled else 1.0
    l2 = 0.0 if decoupled else wd
    for i in prange(p.shape[0]):
        w = p[i] * shrink
        d = g[i] + l2 * w
        mi = beta1 * m[i] + (1 - beta1) * d
        vi = beta2 * v[i] + (1 - beta2) * d * d
        m_out[i] = mi
        v_out[i] = vi
        if amsgrad:
            vi = max(vmax[i], vi)
            vmax_out[i] = vi
        p_out[i] = w - step_size * mi / (math.sqrt(vi) / bc2_sqrt + eps)
