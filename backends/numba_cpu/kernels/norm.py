"""Normalization kernels: batch norm's per-channel statistics and backward on [N, C, P] views;
group norm's (layer norm's, instance norm's) per-(sample, group) forward and backward.

The statistics are float64 sums, one channel per task, of ``d = x − x[0, c, 0]``: shifted by a
value of the channel, ``Σd²/M − (Σd/M)²`` does not cancel catastrophically when |μ| ≫ σ, and one
pass over the data suffices (the backward adds Σg and Σg·d to the same pass). The apply passes
run one (sample, channel) row per task.
"""

from __future__ import annotations

import math

import numpy as np

from cnnir.backends.numba_cpu.kernels.activation import Act, derivative_row
from cnnir.backends.numba_cpu.kernels.jit import helper, kernel, prange


@kernel
def channel_moments(x, moments):
    """``moments[0, c], moments[1, c]`` = the mean and the biased variance of channel c of
    ``x`` [N, C, P] (float64, one pass of shifted sums)."""
    n_img, channels, p = x.shape
    count = n_img * p
    for c in prange(channels):
        k = np.float64(x[0, c, 0])
        s = 0.0
        q = 0.0
        for n in range(n_img):
            for i in range(p):
                d = np.float64(x[n, c, i]) - k
                s += d
                q += d * d
        m = s / count
        moments[0, c] = k + m
        moments[1, c] = max(q / count - m * m, 0.0)


@kernel
def batch_norm_grad_sums(x, g, prologue, gamma, eps, coef, sums):
    """Pass 1 of batch_norm's backward with batch statistics, channel c per task: over
    [N, C, P] x and g, in float64, the mean μ and biased variance σ², ``Σg`` and
    ``Σg·x̂`` (``sums[0, c]``, ``sums[1, c]``: gβ and gγ), and the coefficients of pass 2,
    ``gx = a·(g − ḡ) + b·(x − μ)``: ``coef[:, c] = (a, ḡ, b, μ)`` with a = γ/√(σ² + eps),
    ḡ = Σg/M, b = −a·gγ/(M·√(σ² + eps)).

    ``prologue = (code, alpha, a, gv)``: with an activation (code not NONE: a fused
    activation_grad) each g is first replaced by ``f'(a)·g`` as activation_grad computes
    it, kept in gv for pass 2."""
    code, alpha, act_in, gv = prologue
    fused = code != Act.NONE
    g_sum = gv if fused else g
    n_img, channels, p = x.shape
    count = n_img * p
    for c in prange(channels):
        k = np.float64(x[0, c, 0])
        s = 0.0
        q = 0.0
        sg = 0.0
        sgd = 0.0
        for n in range(n_img):
            if fused:  # the row of products first (vectorized per activation), then summed
                derivative_row(act_in[n, c], g[n, c], gv[n, c], code, alpha)
            for i in range(p):
                d = np.float64(x[n, c, i]) - k
                v = np.float64(g_sum[n, c, i])
                s += d
                q += d * d
                sg += v
                sgd += v * d
        m = s / count
        inv_std = 1.0 / math.sqrt(max(q / count - m * m, 0.0) + eps)
        g_hat = (sgd - m * sg) * inv_std  # Σ g·x̂
        sums[0, c] = sg
        sums[1, c] = g_hat
        a = np.float64(gamma[c]) * inv_std
        coef[0, c] = a
        coef[1, c] = sg / count
        coef[2, c] = -a * inv_std * g_hat / count
        coef[3, c] = k + m


@kernel
def batch_norm_grad_input(g, x, coef, out):
    """Pass 2: ``out = a·(g − ḡ) + b·(x − μ)`` per channel, ``coef[:, c] = (a, ḡ, b, μ)``
    in the compute dtype, over [N, C, P] arrays, one (sample, channel) row per task."""
    n_img, channels, p = out.shape
    for t in prange(n_img * channels):
        n = t // channels
        c = t % channels
        a = coef[0, c]
        g_mean = coef[1, c]
        b = coef[2, c]
        mu = coef[3, c]
        for i in range(p):
            out[n, c, i] = a * (g[n, c, i] - g_mean) + b * (x[n, c, i] - mu)


@kernel
def centered_grad_sums(x, g, center, sums):
    """Eval-mode parameter gradients, channel c per task, in float64: ``sums[0, c] = Σg``
    and ``sums[1, c] = Σg·(x − center[c])`` over [N, C, P] arrays."""
    n_img, channels, p = x.shape
    for c in prange(channels):
        m = np.float64(center[c])
        sg = 0.0
        sgd = 0.0
        for n in range(n_img):
            for i in range(p):
                v = np.float64(g[n, c, i])
                sg += v
                sgd += v * (np.float64(x[n, c, i]) - m)
        sums[0, c] = sg
        sums[1, c] = sgd


# -- group_norm (and layer_norm, InstanceNorm) on [N, G, Cg, P] views -------------------------
# One (sample, group) row per task; channel ``g·Cg + c`` for γ and β. layer_norm is the
# [M, 1, D, 1] view. Shifted float64 sums as above; normalized as ``(x − μ)·a + β`` with
# a = γ/√(σ² + eps) in float64 (no ``scale·x + shift``: it would lose a far mean's digits).


@helper
def group_moments(x, n, g):
    """The mean and biased variance of row (n, g) of [N, G, Cg, P] x, in float64."""
    _, _, cg, p = x.shape
    k = np.float64(x[n, g, 0, 0])
    s = 0.0
    q = 0.0
    for c in range(cg):
        for i in range(p):
            d = np.float64(x[n, g, c, i]) - k
            s += d
            q += d * d
    m = s / (cg * p)
    return k + m, max(q / (cg * p) - m * m, 0.0)


@kernel
def group_norm(x, out, gamma, beta, eps):
    """``out = γ_c(x − μ)/√(σ² + eps) + β_c`` per (sample, group) of [N, G, Cg, P] arrays."""
    n_img, groups, cg, p = x.shape
    for t in prange(n_img * groups):
        n = t // groups
        g = t % groups
        mu, var = group_moments(x, n, g)
        inv_std = 1.0 / math.sqrt(var + eps)
        for c in range(cg):
            a = np.float64(gamma[g * cg + c]) * inv_std
            b = np.float64(beta[g * cg + c])
            for i in range(p):
                out[n, g, c, i] = (np.float64(x[n, g, c, i]) - mu) * a + b


@kernel
def group_norm_grad(x, gy, gamma, eps, gx, want_input, partial):
    """group_norm's backward per (sample, group) of [N, G, Cg, P] x, gy and gx (written when
    ``want_input``): ``gx = (ĝ − mean ĝ − x̂·mean(ĝ·x̂))/√(σ² + eps)`` with ĝ = γ·gy; and
    ``partial[0, n, ch] = Σ gy``, ``partial[1, n, ch] = Σ gy·x̂`` over the pixels of sample n,
    channel ch (float64; summed over n they are gβ and gγ)."""
    n_img, groups, cg, p = x.shape
    count = cg * p
    for t in prange(n_img * groups):
        n = t // groups
        g = t % groups
        mu, var = group_moments(x, n, g)
        inv_std = 1.0 / math.sqrt(var + eps)
        s_g = 0.0
        s_gx = 0.0
        for c in range(cg):
            sg = 0.0
            sgx = 0.0
            for i in range(p):
                v = np.float64(gy[n, g, c, i])
                sg += v
                sgx += v * (np.float64(x[n, g, c, i]) - mu) * inv_std
            partial[0, n, g * cg + c] = sg
            partial[1, n, g * cg + c] = sgx
            w = np.float64(gamma[g * cg + c])
            s_g += w * sg
            s_gx += w * sgx
        if want_input:
            mean_g = s_g / count
            mean_gx = s_gx / count
            for c in range(cg):
                w = np.float64(gamma[g * cg + c])
                for i in range(p):
                    x_hat = (np.float64(x[n, g, c, i]) - mu) * inv_std
                    gx[n, g, c, i] = (w * np.float64(gy[n, g, c, i]) - mean_g
                                      - x_hat * mean_gx) * inv_std
