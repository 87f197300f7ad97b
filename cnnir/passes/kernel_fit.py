"""Least-squares fitting of a conv kernel by a stack of smaller convs (used by stack-3x3).

Without nonlinearities, a stack of convs ``F_0`` (applied first) ... ``F_{n-1}`` is one conv
whose kernel is their composition, per group:

    K̂[o, c, u] = Σ_{m, i, t} F_1[o, m, i]·F_0[m, c, t]   at u = J·i + t     (two factors)

a matrix product over the channels and a full convolution over the taps, where ``J`` is the
tap spacing of the later factor in the composite's coordinates (the stride of the first conv
when the stack strides first, 1 otherwise; coordinates are in units of the conv's dilation).
Longer stacks compose left to right. Borders aside (the stack zero-pads its intermediate
maps), the stack computes the conv with kernel K̂.

``fit_stack`` finds the factors in two ways.

Exact construction. Along one axis, every tap u of the kernel is ``s + J·t`` with ``t`` a tap
of the last factor and ``s`` a shift the earlier factors can make with one-hot taps. With one
intermediate channel per input channel and shift in a set S that covers the kernel's taps
(chosen greedily), the earlier factors copy each input channel shifted by each s and the last
factor holds the kernel's taps: the stack is the kernel exactly once the width reaches
``|S_h|·|S_w|·C`` per group (4·C for a 5x5 as two 3x3s: S = {0, 2} per axis; 9·C for a 7x7
as three 3x3s). With unit spacing the mirror construction on the output side needs
``|S_h|·|S_w|·O``; the smaller one is used.

Alternating least squares below that width. With every factor but one fixed, K̂ is linear in
the free one: the first and last factors are solved exactly (``lstsq`` on a design matrix
shared by all their input, respectively output, channels; conjugate gradients on the normal
equations when that matrix is large), the middle ones of a 7x7 by warm-started conjugate
gradients. An update that would increase the error is dropped, so every sweep keeps or
lowers it; sweeps stop when the error stops improving. The fit at width w starts from the
fit at the previous width of the schedule 1, ..., 8, 12, 18, 27, 40, ... padded with a
channel that copies a random mix of the inputs (its outgoing weights zero, so the padded
stack computes the same kernel): the error never increases with the width along the
schedule. Width 1 starts from the kernel's central taps seen through the leading singular
vector of its channel matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Pair = tuple[int, int]
UNIT: Pair = (1, 1)
DENSE_LIMIT = 3e8  # rows·cols² of a design matrix solved by lstsq; larger ones use CGNR


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

    def error2(self, target: np.ndarray) -> float:
        return float(np.sum((self.composite() - target) ** 2))


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


def _cgnr(chain: Chain, k: int, target: np.ndarray, iters: int) -> np.ndarray:
    """Factor k after a few warm-started CGNR steps, the others fixed."""
    left, right, x = chain.left(k), chain.right(k), chain.factors[k].copy()
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
    return x


def _lstsq(design: np.ndarray, rhs: np.ndarray) -> np.ndarray | None:
    """Per group ``argmin ‖design·x − rhs‖`` (``[G, r, u]``, ``[G, r, k]`` -> ``[G, u, k]``) by
    the normal equations; None when the design is too large to solve densely."""
    g, rows, cols = design.shape
    if rows * cols * cols > DENSE_LIMIT:
        return None
    from scipy.linalg import LinAlgError, solve

    gram = np.matmul(design.transpose(0, 2, 1), design)
    moment = np.matmul(design.transpose(0, 2, 1), rhs)
    out = []
    for a, b in zip(gram, moment):  # a tiny ridge keeps a rank-deficient Gram solvable
        ridge = 1e-13 * max(float(np.trace(a)) / cols, 1e-300) * np.eye(cols)
        try:
            out.append(solve(a + ridge, b, assume_a="pos"))
        except LinAlgError:
            out.append(np.linalg.lstsq(a, b, rcond=None)[0])
    return np.stack(out)


def _solve_last(chain: Chain, target: np.ndarray) -> np.ndarray | None:
    """The last factor minimizing the error: ``K̂[o, c, J·t + s] = Σ_q F[o, q, t]·R[q, c, s]``
    is one linear map of ``F[o]`` shared by every output channel o."""
    right, f = chain.right(len(chain.factors) - 1), chain.factors[-1]
    g, out_c, m, kh, kw = f.shape
    (jh, jw), (eh, ew) = chain.spacing, target.shape[3:]
    c, rh, rw = right.shape[2:]
    design = np.zeros((g, c, eh, ew, m, kh, kw))
    moved = right.transpose(0, 2, 3, 4, 1)
    for th in range(kh):
        for tw in range(kw):
            design[:, :, jh * th:jh * th + rh, jw * tw:jw * tw + rw, :, th, tw] = moved
    rhs = target.reshape(g, out_c, -1).transpose(0, 2, 1)
    x = _lstsq(design.reshape(g, c * eh * ew, m * kh * kw), rhs)
    return None if x is None else x.transpose(0, 2, 1).reshape(f.shape)


def _solve_first(chain: Chain, target: np.ndarray) -> np.ndarray | None:
    """The first factor minimizing the error: ``K̂[o, c, J·i + t] = Σ_p L[o, p, i]·F[p, c, t]``
    is one linear map of ``F[:, c]`` shared by every input channel c."""
    left, f = chain.left(0), chain.factors[0]
    g, m, c, kh, kw = f.shape
    (jh, jw), (eh, ew) = chain.spacing, target.shape[3:]
    out_c, _, lh, lw = left.shape[1:]
    design = np.zeros((g, out_c, eh, ew, m, kh, kw))
    moved = left.transpose(0, 1, 3, 4, 2)
    for th in range(kh):
        for tw in range(kw):
            design[:, :, th:th + jh * (lh - 1) + 1:jh, tw:tw + jw * (lw - 1) + 1:jw, :, th, tw] \
                = moved
    rhs = target.transpose(0, 1, 3, 4, 2).reshape(g, -1, c)
    x = _lstsq(design.reshape(g, out_c * eh * ew, m * kh * kw), rhs)
    return None if x is None else x.reshape(g, m, kh, kw, c).transpose(0, 1, 4, 2, 3)


def _update(chain: Chain, k: int, target: np.ndarray, error2: float) -> float:
    """Re-solve factor k with the others fixed; keeps the old one if the error would grow."""
    last = len(chain.factors) - 1
    new = _solve_last(chain, target) if k == last else \
        _solve_first(chain, target) if k == 0 else None
    if new is None:
        new = _cgnr(chain, k, target, iters=8)
    old = chain.factors[k]
    chain.factors[k] = new
    err = chain.error2(target)
    if err <= error2:
        return err
    chain.factors[k] = old
    return error2


def als(chain: Chain, target: np.ndarray, sweeps: int, tol: float = 1e-3) -> float:
    """Alternating least squares, last factor first, until a sweep lowers the squared error by
    less than ``tol`` of itself; returns it (never more than at the start)."""
    err = chain.error2(target)
    norm2 = float(np.vdot(target, target))
    for _ in range(sweeps):
        if err <= 1e-28 * norm2:
            break
        before = err
        for k in reversed(range(len(chain.factors))):
            err = _update(chain, k, target, err)
        if before - err <= tol * before:
            break
    return err


def initial_factors(target: np.ndarray, shapes: list[tuple[int, ...]],
                    spacing: Pair) -> list[np.ndarray]:
    """Width-1 start: every factor but the last a centred one-hot tap (the first projecting
    the input channels on the leading right singular vector of the kernel's channel matrix);
    the last holds the kernel's taps at the positions it covers, seen through the
    projection."""
    spacings = [UNIT] + [spacing] * (len(shapes) - 1)
    project = np.linalg.svd(target.sum(axis=(3, 4)))[2][:, :1, :]  # [G, 1, C]
    factors = []
    for shape in shapes[:-1]:
        f = np.zeros(shape)
        f[:, :, :, shape[3] // 2, shape[4] // 2] = project if not factors else 1.0
        factors.append(f)
    last = np.zeros(shapes[-1])
    u0 = [sum(sp[a] * (s[3 + a] - 1) // 2 for s, sp in zip(shapes[:-1], spacings))
          for a in range(2)]
    for th in range(last.shape[3]):
        for tw in range(last.shape[4]):
            pos = (u0[0] + spacing[0] * th, u0[1] + spacing[1] * tw)
            if pos[0] < target.shape[3] and pos[1] < target.shape[4]:
                taps = target[:, :, :, pos[0], pos[1]]
                last[:, :, :, th, tw] = np.matmul(taps, project.transpose(0, 2, 1))
    return factors + [last]


def pad(factors: list[np.ndarray], width: int, seed: int) -> list[np.ndarray]:
    """The factors with ``width`` intermediate channels: each new channel a random mix of the
    previous layer's channels (new outgoing weights zero), so the stack is unchanged."""
    rng = np.random.default_rng(seed)
    out = []
    for k, f in enumerate(factors):
        g, o, c, kh, kw = f.shape
        new_o = o if k == len(factors) - 1 else width
        new_c = c if k == 0 else width
        grown = np.zeros((g, new_o, new_c, kh, kw))
        grown[:, :o, :c] = f
        if new_o > o:
            scale = float(np.sqrt(np.mean(f ** 2))) or 1.0
            grown[:, o:, :, kh // 2, kw // 2] = scale * rng.standard_normal((g, new_o - o,
                                                                             new_c))
        out.append(grown)
    return out


def schedule(width: int) -> list[int]:
    """Widths the fit at ``width`` passes through: 1, 2, ..., 8, then steps of half the width
    (12, 18, 27, 40, ...), then ``width``."""
    widths, w = [], 1
    while w < width:
        widths.append(w)
        w += 1 if w < 8 else w // 2
    return widths + [width]


def _cover(support: list[int], sides: list[int], spacing: int) -> tuple[list, dict] | None:
    """Shifts S (each with the earlier factors' one-hot taps) and, for every tap u of the
    support, ``(index in S, last tap t)`` with ``u = s + spacing·t``; None if impossible."""
    first, later, last = sides[0], sides[1:-1], sides[-1]
    reach = sum(k - 1 for k in later)

    def taps(s: int) -> tuple[int, ...] | None:
        for t0 in range(min(first - 1, s), -1, -1):
            if (s - t0) % spacing == 0 and (s - t0) // spacing <= reach:
                rest, out = (s - t0) // spacing, [t0]
                for k in later:
                    out.append(min(k - 1, rest))
                    rest -= out[-1]
                return tuple(out)
        return None

    shifts, assign = [], {}
    for u in support:
        if u in assign:
            continue
        options = [u - spacing * t for t in range(last) if taps(u - spacing * t) is not None]
        if not options:
            return None
        s = max(options)
        shifts.append((s, taps(s)))
        for v in support:
            if v not in assign and (v - s) % spacing == 0 and 0 <= (v - s) // spacing < last:
                assign[v] = (len(shifts) - 1, (v - s) // spacing)
    return shifts, assign


def _input_side(target: np.ndarray, shapes: list[tuple[int, ...]],
                spacing: Pair) -> list[np.ndarray] | None:
    """The exact construction of the module docstring (copies of the input channels), or
    None when the width is too small or the taps cannot be covered."""
    covers = []
    for a in range(2):
        support = [int(u) for u in np.flatnonzero(np.any(target, axis=tuple(
            d for d in range(5) if d != 3 + a)))]
        cover = _cover(support, [s[3 + a] for s in shapes], spacing[a])
        if cover is None:
            return None
        covers.append(cover)
    (sh, ah), (sw, aw) = covers
    in_c, width = target.shape[2], shapes[0][1]
    if in_c * len(sh) * len(sw) > width:
        return None
    factors = [np.zeros(s) for s in shapes]
    for c in range(in_c):
        for i, (_, taps_h) in enumerate(sh):
            for j, (_, taps_w) in enumerate(sw):
                ch = (c * len(sh) + i) * len(sw) + j
                factors[0][:, ch, c, taps_h[0], taps_w[0]] = 1.0
                for k, f in enumerate(factors[1:-1], start=1):
                    f[:, ch, ch, taps_h[k], taps_w[k]] = 1.0
    for uh, (i, th) in ah.items():
        for uw, (j, tw) in aw.items():
            for c in range(in_c):
                factors[-1][:, :, (c * len(sh) + i) * len(sw) + j, th, tw] = \
                    target[:, :, c, uh, uw]
    return factors


def exact_factors(target: np.ndarray, shapes: list[tuple[int, ...]],
                  spacing: Pair) -> list[np.ndarray] | None:
    """Factors composing exactly to ``target``, or None when the width is below what the
    constructions of the module docstring need."""
    found = _input_side(target, shapes, spacing)
    if found is not None or spacing != UNIT:
        return found
    mirrored = [(s[0], s[2], s[1], *s[3:]) for s in reversed(shapes)]
    found = _input_side(target.transpose(0, 2, 1, 3, 4), mirrored, UNIT)
    return None if found is None else [f.transpose(0, 2, 1, 3, 4) for f in reversed(found)]


@dataclass
class Fit:
    factors: list[np.ndarray]
    relative_error: float
    exact: bool = False


def fit_stack(target: np.ndarray, shapes: list[tuple[int, ...]], spacing: Pair, *,
              sweeps: int = 30, dropped: float = 0.0) -> Fit:
    """Fit factors of ``shapes`` (``[G, out/G, in/G, kh, kw]``, first applied first, every
    intermediate width equal) so their composition approximates ``target``
    ``[G, O/G, C/G, E_h, E_w]`` in least squares (see the module docstring).

    ``dropped`` is the squared norm of kernel taps outside the composite's reach (counted in
    the reported relative error ``‖K̂ − K‖ / ‖K‖``); ``sweeps`` caps the ALS sweeps per width
    (0: the width-1 start, padded)."""
    from threadpoolctl import threadpool_limits

    widths = {s[1] for s in shapes[:-1]}
    if len(widths) != 1:
        raise ValueError(f"fit_stack needs one intermediate width, got {sorted(widths)}")
    with threadpool_limits(1, user_api="blas"):  # small matrices: threads only cost
        return _fit(target, shapes, spacing, widths.pop(), sweeps, dropped)


def _fit(target: np.ndarray, shapes: list[tuple[int, ...]], spacing: Pair, width: int,
         sweeps: int, dropped: float) -> Fit:
    norm2 = float(np.vdot(target, target)) + dropped
    factors = exact_factors(target, shapes, spacing)
    exact = factors is not None
    if factors is None:
        def at(w: int) -> list[tuple[int, ...]]:
            return [(s[0], s[1] if k == len(shapes) - 1 else w, s[2] if k == 0 else w, *s[3:])
                    for k, s in enumerate(shapes)]

        chain = Chain(initial_factors(target, at(1), spacing), spacing)
        for w in schedule(width):
            if w > chain.factors[0].shape[1]:
                chain.factors = pad(chain.factors, w, seed=w)
            als(chain, target, sweeps)
        factors = chain.factors
    err = Chain(factors, spacing).error2(target) + dropped
    return Fit(factors, float(np.sqrt(err / norm2)) if norm2 > 0 else 0.0, exact)


__all__ = ["Chain", "Fit", "als", "compose", "exact_factors", "fit_stack", "grad_earlier",
           "grad_later", "initial_factors", "pad", "schedule"]
