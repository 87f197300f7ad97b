"""Lowerings of the optimizer updates: one kernel pass per parameter (``kernels.optim``).

Inputs and outputs are passed flat; an absent optional state is a one-element placeholder
with its flag off. When the builder computes the update in place (``Builder.aliases``), an
output is the state array it replaces and the kernel reads and writes it element by element.
"""

from __future__ import annotations

import numpy as np

from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.kernels import optim as ok
from cnnir.backends.numba_cpu.program import lower
from cnnir.ir import Node
from cnnir.ops import optim as optim_ops


def flat_operands(b: Builder, node: Node) -> tuple[list, np.ndarray, list, int]:
    """The flat parameter and gradient, the node's hyper row, the flat state inputs (None
    where absent) and the flat outputs, and the element count."""
    p, g, hyper, *state = (b.array(v) for v in node.inputs)
    flat = [None if a is None else a.reshape(-1) for a in (p, g, *state)]
    outs = [b.array(v).reshape(-1) for v in node.outputs]
    return flat, hyper[node.attrs.row], outs, p.size


def with_placeholders(arrays: list, present: list[bool], like: np.ndarray) -> list:
    """``arrays`` (the present ones, in order) spread over ``present`` slots, placeholders
    of ``like``'s dtype in the absent ones."""
    placeholder = np.zeros(1, like.dtype)
    it = iter(arrays)
    return [next(it) if here else placeholder for here in present]


@lower(optim_ops.sgd_update)
def sgd_update(b: Builder, node: Node) -> Step:
    (p, g, buf), h, outs, n = flat_operands(b, node)
    has_buf = buf is not None
    buf_in, = with_placeholders([buf] if has_buf else [], [has_buf], p)
    p_out, buf_out = with_placeholders(outs, [True, has_buf], p)
    run = ok.sgd.sized(n)
    nesterov = node.attrs.nesterov
    return lambda: run(p, g, h, buf_in, has_buf, nesterov, p_out, buf_out)


@lower(optim_ops.adagrad_update)
def adagrad_update(b: Builder, node: Node) -> Step:
    (p, g, total), h, (p_out, total_out), n = flat_operands(b, node)
    run = ok.adagrad.sized(n)
    return lambda: run(p, g, h, total, p_out, total_out)


@lower(optim_ops.adadelta_update)
def adadelta_update(b: Builder, node: Node) -> Step:
    (p, g, square_avg, acc_delta), h, outs, n = flat_operands(b, node)
    run = ok.adadelta.sized(n)
    return lambda: run(p, g, h, square_avg, acc_delta, *outs)


@lower(optim_ops.rmsprop_update)
def rmsprop_update(b: Builder, node: Node) -> Step:
    (p, g, square_avg, buf, grad_avg), h, outs, n = flat_operands(b, node)
    present = [True, True, buf is not None, grad_avg is not None]
    buf_in, avg_in = with_placeholders([a for a in (buf, grad_avg) if a is not None],
                                       present[2:], p)
    p_out, sq_out, buf_out, avg_out = with_placeholders(outs, present, p)
    run = ok.rmsprop.sized(n)
    has_buf, centered = present[2], node.attrs.centered
    return lambda: run(p, g, h, square_avg, buf_in, avg_in, has_buf, centered,
                       p_out, sq_out, buf_out, avg_out)


@lower(optim_ops.adam_update)
def adam_update(b: Builder, node: Node) -> Step:
    (p, g, m, v, vmax), h, outs, n = flat_operands(b, node)
    amsgrad, decoupled = vmax is not None, node.attrs.decoupled
    vmax_in, = with_placeholders([vmax] if amsgrad else [], [amsgrad], p)
    p_out, m_out, v_out, vmax_out = with_placeholders(outs, [True, True, True, amsgrad], p)
    run = ok.adam.sized(n)
    return lambda: run(p, g, h, m, v, vmax_in, amsgrad, decoupled, p_out, m_out, v_out, vmax_out)
