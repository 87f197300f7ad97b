"""Lowerings of activations, dropout, pooling, resampling and tensor ops.

Elementwise activations run one parallel Numba kernel; pools and resampling run per-plane
kernels; data movement (cat, reshape, transpose, split, shuffle, pad) and broadcasting
arithmetic use numpy with ``out=`` into the planned buffers.
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.numba_cpu import act_kernels as ak
from cnnir.backends.numba_cpu import pool_kernels as pk
from cnnir.backends.numba_cpu.lower_conv import as3d, plain_epilogue, window_phases_step
from cnnir.backends.numba_cpu.plan import Builder, Step, lower
from cnnir.ir import Node


def _io(b: Builder, node: Node) -> tuple[np.ndarray, np.ndarray]:
    return b.array(node.inputs[0]), b.array(node.output)


def _activation(op, code_of) -> None:
    @lower(op)
    def lowering(b: Builder, node: Node) -> Step:
        x, out = _io(b, node)
        code, alpha = code_of(node.attrs)
        flat_x, flat_out = x.reshape(-1), out.reshape(-1)
        activation = ak.activation.sized(out.size)
        return lambda: activation(flat_x, flat_out, code, alpha)


for _op, _name in ((ops.relu, "relu"), (ops.relu6, "relu6"), (ops.sigmoid, "sigmoid"),
                   (ops.tanh, "tanh"), (ops.silu, "silu"), (ops.hardsigmoid, "hardsigmoid"),
                   (ops.hardswish, "hardswish")):
    _activation(_op, lambda attrs, name=_name: (ak.ACT[name], 0.0))
_activation(ops.leaky_relu, lambda a: (ak.ACT["leaky_relu"], a.negative_slope))
_activation(ops.elu, lambda a: (ak.ACT["elu"], a.alpha))
_activation(ops.gelu, lambda a: (ak.ACT["gelu" if a.approximate == "none" else "gelu_tanh"], 0.0))


def _nc_p(a: np.ndarray) -> np.ndarray:
    """[N, C, ...] as [N, C, P]; [N] or scalars as [N, 1, 1]."""
    if a.ndim >= 2:
        return as3d(a)
    return a.reshape(-1, 1, 1)


@lower(ops.prelu)
def prelu(b: Builder, node: Node) -> Step:
    x, w = (b.array(v) for v in node.inputs)
    out = b.array(node.output)
    x3, out3 = _nc_p(x), _nc_p(out)
    slope = np.ascontiguousarray(np.broadcast_to(w, (x3.shape[1],)), b.dtype)
    slopes = ak.slopes.sized(out.size)
    return lambda: slopes(x3, out3, slope, True)


@lower(ops.rrelu)
def rrelu(b: Builder, node: Node) -> Step:
    x, out = _io(b, node)
    a = node.attrs
    if not a.training:
        eval_slope = (a.lower + a.upper) / 2
        fx, fo = x.reshape(-1), out.reshape(-1)
        activation = ak.activation.sized(out.size)
        return lambda: activation(fx, fo, ak.ACT["leaky_relu"], eval_slope)
    x3, out3 = _nc_p(x), _nc_p(out)

    def sampled() -> None:
        slope = b.rng.uniform(a.lower, a.upper, x.size).astype(b.dtype)
        ak.slopes(x3, out3, slope, False)

    return sampled


@lower(ops.dropout)
def dropout(b: Builder, node: Node) -> Step:
    return _dropout(b, node, per_channel=False)


@lower(ops.dropout2d)
def dropout2d(b: Builder, node: Node) -> Step:
    return _dropout(b, node, per_channel=True)


def _dropout(b: Builder, node: Node, per_channel: bool) -> Step:
    x, out = _io(b, node)
    p = node.attrs.p
    if not node.attrs.training:
        return lambda: np.copyto(out, x)
    mask_shape = x.shape[:2] + (1,) * (x.ndim - 2) if per_channel else x.shape

    def step() -> None:
        if p >= 1.0:
            out.fill(0)
            return
        keep = b.rng.random(mask_shape) >= p
        np.multiply(x, keep, out=out)
        np.multiply(out, out.dtype.type(1.0 / (1.0 - p)), out=out)

    return step


def _softmax(op, log: bool) -> None:
    @lower(op)
    def lowering(b: Builder, node: Node) -> Step:
        x, out = _io(b, node)
        dim = node.attrs.dim % max(x.ndim, 1)

        def step() -> None:
            np.subtract(x, x.max(axis=dim, keepdims=True), out=out)
            if log:
                np.subtract(out, np.log(np.exp(out).sum(axis=dim, keepdims=True)), out=out)
            else:
                np.exp(out, out=out)
                np.divide(out, out.sum(axis=dim, keepdims=True), out=out)

        return step


_softmax(ops.softmax, log=False)
_softmax(ops.log_softmax, log=True)


@lower(ops.max_pool2d)
def max_pool2d(b: Builder, node: Node) -> Step:
    x, out = _io(b, node)
    a = node.attrs
    if a.dilation == (1, 1) and a.stride[0] == a.stride[1]:
        window = np.zeros((x.shape[1], 1, *a.kernel_size), b.dtype)  # its shape: the window
        ep = plain_epilogue(b, x.shape[1], None)
        return b.choose(node, {"max-pool-phases": window_phases_step(b, a, x, window, out, ep,
                                                                     is_max=True)})
    args = (*a.kernel_size, *a.stride, *a.padding, *a.dilation)
    max_pool = pk.max_pool.sized(out.size * a.kernel_size[0] * a.kernel_size[1])
    return b.choose(node, {"max-pool-separable": lambda: max_pool(x, out, *args)})


@lower(ops.avg_pool2d)
def avg_pool2d(b: Builder, node: Node) -> Step:
    x, out = _io(b, node)
    a = node.attrs
    args = (*a.kernel_size, *a.stride, *a.padding, a.count_include_pad, a.divisor_override or 0)
    avg_pool = pk.avg_pool.sized(out.size * a.kernel_size[0] * a.kernel_size[1])
    return lambda: avg_pool(x, out, *args)


def _adaptive(op, is_max: bool) -> None:
    @lower(op)
    def lowering(b: Builder, node: Node) -> Step:
        x, out = _io(b, node)
        adaptive_pool = pk.adaptive_pool.sized(x.size)
        return lambda: adaptive_pool(x, out, is_max)


_adaptive(ops.adaptive_avg_pool2d, False)
_adaptive(ops.adaptive_max_pool2d, True)


def source_index_table(attrs, axis: int, in_len: int, out_len: int):
    """Per output index: the two source indices and the weight of the second (§1.10)."""
    scale = attrs.scale_factor
    if scale is not None and attrs.recompute_scale_factor is not True:
        sc = 1.0 / scale[axis]
    else:
        sc = in_len / out_len
    dst = np.arange(out_len, dtype=np.float64)
    if attrs.mode == "nearest":
        src = np.minimum(np.floor(dst * sc), in_len - 1)
        return src.astype(np.int64), src.astype(np.int64), np.zeros(out_len)
    if attrs.mode == "nearest-exact":
        src = np.minimum(np.floor((dst + 0.5) * sc), in_len - 1)
        return src.astype(np.int64), src.astype(np.int64), np.zeros(out_len)
    if attrs.align_corners:
        src = dst * ((in_len - 1) / (out_len - 1)) if out_len > 1 else np.zeros(out_len)
    else:
        src = np.maximum(sc * (dst + 0.5) - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = i0 + (i0 < in_len - 1)
    return i0, i1, src - i0


@lower(ops.interpolate)
def interpolate(b: Builder, node: Node) -> Step:
    x, out = _io(b, node)
    h0, h1, lh = source_index_table(node.attrs, 0, x.shape[2], out.shape[2])
    w0, w1, lw = source_index_table(node.attrs, 1, x.shape[3], out.shape[3])
    lh, lw = lh.astype(b.dtype), lw.astype(b.dtype)
    resample = pk.resample.sized(out.size)
    return lambda: resample(x, out, h0, h1, lh, w0, w1, lw)


def _binary(op, ufunc) -> None:
    @lower(op)
    def lowering(b: Builder, node: Node) -> Step:
        x, y = (b.array(v) for v in node.inputs)
        out = b.array(node.output)
        return lambda: ufunc(x, y, out=out)


for _op, _ufunc in ((ops.add, np.add), (ops.sub, np.subtract), (ops.mul, np.multiply),
                    (ops.div, np.divide)):
    _binary(_op, _ufunc)


@lower(ops.cat)
def cat(b: Builder, node: Node) -> Step:
    xs = [b.array(v) for v in node.inputs]
    out = b.array(node.output)
    axis = node.attrs.dim % out.ndim
    return lambda: np.concatenate(xs, axis=axis, out=out)


def _copy_reshaped(b: Builder, node: Node) -> Step:
    x, out = _io(b, node)
    src = x.reshape(out.shape)
    return lambda: np.copyto(out, src)


for _op in (ops.reshape, ops.flatten, ops.identity):
    lower(_op)(_copy_reshaped)


@lower(ops.transpose)
def transpose(b: Builder, node: Node) -> Step:
    x, out = _io(b, node)
    view = x.transpose(node.attrs.perm)
    return lambda: np.copyto(out, view)


@lower(ops.split)
def split(b: Builder, node: Node) -> Step:
    x = b.array(node.inputs[0])
    outs = [b.array(v) for v in node.outputs]
    dim = node.attrs.dim
    bounds = np.cumsum((0, *node.attrs.sizes))
    views = [x[(slice(None),) * dim + (slice(lo, hi),)] for lo, hi in zip(bounds, bounds[1:])]

    def step() -> None:
        for out, view in zip(outs, views):
            np.copyto(out, view)

    return step


def _reduction(op, fn) -> None:
    @lower(op)
    def lowering(b: Builder, node: Node) -> Step:
        x, out = _io(b, node)
        a = node.attrs
        axis = None if a.dims is None else tuple(d % x.ndim for d in a.dims)
        return lambda: fn(x, axis=axis, keepdims=a.keepdim, out=out)


_reduction(ops.mean, np.mean)
_reduction(ops.sum_, np.sum)
_reduction(ops.amax, np.max)


@lower(ops.channel_shuffle)
def channel_shuffle(b: Builder, node: Node) -> Step:
    x, out = _io(b, node)
    g = node.attrs.groups
    n, c = x.shape[:2]
    rest = x.shape[2:]
    src = x.reshape(n, g, c // g, *rest).swapaxes(1, 2)
    dst = out.reshape(n, c // g, g, *rest)
    return lambda: np.copyto(dst, src)


@lower(ops.pad)
def pad(b: Builder, node: Node) -> Step:
    """Constant padding in torch order; negative pads crop."""
    x, out = _io(b, node)
    pads = node.attrs.pads
    src, dst = [slice(None)] * x.ndim, [slice(None)] * x.ndim
    for i in range(len(pads) // 2):
        axis = x.ndim - 1 - i
        lo, hi = pads[2 * i], pads[2 * i + 1]
        src[axis] = slice(max(-lo, 0), x.shape[axis] - max(-hi, 0))
        dst[axis] = slice(max(lo, 0), out.shape[axis] - max(hi, 0))
    src_view, dst_view = x[tuple(src)], out[tuple(dst)]
    value = node.attrs.value

    def step() -> None:
        out.fill(value)
        np.copyto(dst_view, src_view)

    return step

