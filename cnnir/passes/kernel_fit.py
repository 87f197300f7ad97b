"""Least-squares fitting of a conv kernel by a stack of smaller convs (used by stack-3x3).

Without nonlinearities, a stack of convs ``F_0`` (applied first) ... ``F_{n-1}`` is one conv
whose kernel is their composition, per group:

    K̂[o, c, u] = Σ_{m, i, t} F_1[o, m, i]·F_0[m, c, t]   at u = J·i + t     (two factors)

a matrix product over the channels and a full convolution over the taps, where ``J`` is the
tap spacing of the later factor in the composite's coordinates (the stride of the first conv
when the stack strides first, 1 otherwise; coordinates are in units of the conv's dilation).
Longer stacks compose left to right. Borders aside (the stack zero-pads its intermediate
maps), the stack computes the conv with kernel K̂.

``fit_stack`` minimizes ``‖K̂ − K‖²`` by alternating least squares: with every factor but one
fixed, K̂ is linear in the free factor, whose least-squares update is found by conjugate
gradients on the normal equations (CGNR), warm-started, so each update never increases the
error. The start makes the stack reproduce the kernel's central taps exactly: the factors
around one "holder" are channel identities with a single central tap (or, when the width is
below both channel counts, the projection onto the leading right singular vectors of the
kernel's channel matrix), and the holder takes the kernel's taps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Pair = tuple[int, int]
UNIT: Pair = (1, 1)


def compose(later: np.ndarray, earlier: np.ndarray, spacing: Pair) -> np.ndarray:
    """``later ∘ earlier``: ``[G, o, m, a1, a2] ∘ [G, m, c, b1, b2] -> [G, o, c, e1, e2]``
    with ``e = (a − 1)·spacing + b``."""
    g, o, _, a1, a2 = later.shape
    _, m, c, b1, b2 = earlier.shape
    (jh, jw) = spacing
    out = np.zeros((g, o, c, (a1 - 1) * jh + b1, (a2 - 1) * jw + b2))
    flat = earlier.reshape(g, m, c * b1 * b2)
    for i in range(a1):
        for j in range(a2):
            block = np.matmul(later[:, :, :, i, j], flat).reshape(g, o, c, b1, b2)
            out[:, :, :, i * jh:i * jh + b1, j * jw:j * jw + b2] += block
    return out


def _window(res: np.ndarray, i: int, j: int, spacing: Pair, size: Pair) -> np.ndarray:
    g, o, c = res.shape[:3]
    rows, cols = i * spacing[0], j * spacing[1]
    return res[:, :, :, rows:rows + size[0], cols:cols + size[1]].reshape(g, o, -1)


def grad_later(res: np.ndarray, earlier: np.ndarray, spacing: Pair,
               taps: Pair) -> np.ndarray:
    """Adjoint of ``compose`` in its first argument: ``Σ_{c,p,q} res[o, c, J·i+p, J·j+q]·
    earlier[m, c, p, q]`` for every tap (i, j) of the later factor."""
    g, m = earlier.shape[:2]
    flat_t = earlier.reshape(g, m, -1).transpose(0, 2, 1)
    out = np.empty((g, res.shape[1], m, *taps))
    for i in range(taps[0]):
        for j in range(taps[1]):
            out[:, :, :, i, j] = np.matmul(_window(res, i, j, spacing, earlier.shape[3:]),
                                           flat_t)
    return out


def grad_earlier(later: np.ndarray, res: np.ndarray, spacing: Pair,
                 taps: Pair) -> np.ndarray:
    """Adjoint of ``compose`` in its second argument: ``Σ_{o,i,j} later[o, m, i, j]·
    res[o, c, J·i+p, J·j+q]`` for every tap (p, q) of the earlier factor."""
    g, _, m, a1, a2 = later.shape
    c = res.shape[2]
    out = np.zeros((g, m, c * taps[0] * taps[1]))
    for i in range(a1):
        for j in range(a2):
            out += np.matmul(later[:, :, :, i, j].transpose(0, 2, 1),
                             _window(res, i, j, spacing, taps))
    return out.reshape(g, m, c, *taps)


@dataclass
class Chain:
    """The factors of a stack and the tap spacing of every factor after the first."""

    factors: list[np.ndarray]
    spacing: Pair

    def right(self, k: int) -> np.ndarray | None:
        """``F_{k-1} ∘ ... ∘ F_0`` (None for k = 0)."""
        if k == 0:
            return None
        acc = self.factors[0]
        for f in self.factors[1:k]:
            acc = compose(f, acc, self.spacing)
        return acc

    def left(self, k: int) -> np.ndarray | None:
        """``F_{n-1} ∘ ... ∘ F_{k+1}`` (None for the last factor); these share one spacing,
        so they compose with unit spacing among themselves."""
        later = self.factors[k + 1:]
        if not later:
            return None
        acc = later[-1]
        for f in reversed(later[:-1]):
            acc = compose(acc, f, UNIT)
        return acc

    def composite(self) -> np.ndarray:
        return self.right(len(self.factors))


def _apply(x: np.ndarray, left: np.ndarray | None, right: np.ndarray | None,
           spacing: Pair) -> np.ndarray:
    y = x if right is None else compose(x, right, spacing)
    return y if left is None else compose(left, y, spacing)


def _adjoint(res: np.ndarray, left: np.ndarray | None, right: np.ndarray | None,
             spacing: Pair, shape: tuple[int, ...]) -> np.ndarray:
    mid_taps = res.shape[3:] if left is None else (
        res.shape[3] - (left.shape[3] - 1) * spacing[0],
        res.shape[4] - (left.shape[4] - 1) * spacing[1])
    t = res if left is None else grad_earlier(left, res, spacing, mid_taps)
    return t if right is None else grad_later(t, right, spacing, shape[3:])


def _update(chain: Chain, k: int, target: np.ndarray, iters: int) -> None:
    """A few CGNR steps on factor k, the others fixed (warm start: never worse)."""
    left, right, x = chain.left(k), chain.right(k), chain.factors[k]
    sp = chain.spacing
    r = target - _apply(x, left, right, sp)
    z = _adjoint(r, left, right, sp, x.shape)
    p, zz = z.copy(), float(np.vdot(z, z))
    for _ in range(iters):
        if zz <= 1e-30:
            break
        w = _apply(p, left, right, sp)
        ww = float(np.vdot(w, w))
        if ww <= 1e-30:
            break
        alpha = zz / ww
        x += alpha * p
        r -= alpha * w
        z = _adjoint(r, left, right, sp, x.shape)
        zz_new = float(np.vdot(z, z))
        p = z + (zz_new / zz) * p
        zz = zz_new


def _center_taps(taps: list[Pair], spacings: list[Pair], holder: int) -> Pair:
    """Composite position of the holder's tap 0 when every other factor is a centred delta."""
    return tuple(sum(sp[a] * (t[a] - 1) // 2 for i, (t, sp) in enumerate(zip(taps, spacings))
                     if i != holder) for a in range(2))


def initial_factors(target: np.ndarray, shapes: list[tuple[int, ...]],
                    spacing: Pair) -> list[np.ndarray]:
    """Channel identities with a central tap around a holder that takes the kernel's taps at
    the positions it covers (see the module docstring)."""
    g, out_c, in_c = target.shape[:3]
    widths = [s[1] for s in shapes[:-1]]
    taps = [tuple(s[3:]) for s in shapes]
    spacings = [UNIT] + [spacing] * (len(shapes) - 1)
    holder = len(shapes) - 1 if min(widths) >= in_c or min(widths) < out_c else 0
    project = np.eye(min(widths), in_c)[None].repeat(g, 0)
    if min(widths) < min(in_c, out_c):
        channels = target.sum(axis=(3, 4))
        project = np.linalg.svd(channels)[2][:, :min(widths), :]
    factors = []
    for i, shape in enumerate(shapes):
        f = np.zeros(shape)
        if i == holder:
            u0 = _center_taps(taps, spacings, holder)
            for th in range(shape[3]):
                for tw in range(shape[4]):
                    pos = (u0[0] + spacings[i][0] * th, u0[1] + spacings[i][1] * tw)
                    f[:, :, :, th, tw] = _holder_channels(target, pos, project, holder, shape)
        else:
            ch = (shape[3] // 2, shape[4] // 2)
            f[:, :, :, ch[0], ch[1]] = project if i == 0 and holder != 0 else np.eye(
                shape[1], shape[2])[None]
        factors.append(f)
    return factors


def _holder_channels(target: np.ndarray, pos: Pair, project: np.ndarray, holder: int,
                     shape: tuple[int, ...]) -> np.ndarray:
    g, out_c, in_c = target.shape[:3]
    if not (0 <= pos[0] < target.shape[3] and 0 <= pos[1] < target.shape[4]):
        return np.zeros(shape[:3])
    taps = target[:, :, :, pos[0], pos[1]]
    block = np.zeros(shape[:3])
    if holder == 0:  # [m, C]: the output channels, then zero rows
        block[:, :out_c, :] = taps
    else:  # [O, m]: the kernel's taps seen through the projection of the input channels
        block[:, :, :project.shape[1]] = np.matmul(taps, project.transpose(0, 2, 1))
    return block


@dataclass
class Fit:
    factors: list[np.ndarray]
    relative_error: float


def fit_stack(target: np.ndarray, shapes: list[tuple[int, ...]], spacing: Pair, *,
              sweeps: int = 3, cg_iters: int = 6, dropped: float = 0.0) -> Fit:
    """Fit factors of ``shapes`` (``[G, out/G, in/G, kh, kw]``, first applied first) so their
    composition approximates ``target`` ``[G, O/G, C/G, E_h, E_w]`` in least squares.

    ``dropped`` is the squared norm of kernel taps outside the composite's reach (counted in
    the reported relative error ``‖K̂ − K‖ / ‖K‖``)."""
    chain = Chain(initial_factors(target, shapes, spacing), spacing)
    norm2 = float(np.vdot(target, target)) + dropped
    previous = np.inf
    for _ in range(sweeps):
        for k in range(len(shapes)):
            _update(chain, k, target, cg_iters)
        err = float(np.sum((chain.composite() - target) ** 2))
        if previous - err <= 1e-9 * norm2:
            break
        previous = err
    err = float(np.sum((chain.composite() - target) ** 2)) + dropped
    return Fit(chain.factors, float(np.sqrt(err / norm2)) if norm2 > 0 else 0.0)


__all__ = ["Chain", "Fit", "compose", "fit_stack", "grad_earlier", "grad_later",
           "initial_factors"]
