"""The CUDA backend's backward ops and optimizer updates, in the simulator, against the float64
reference executor: one-node graphs built directly (so they do not depend on the forward
kernels), a whole gradient graph where every op of it has a CUDA kernel, and an optimizer
update graph."""

from __future__ import annotations

import numpy as np
import pytest
from op_helpers import assert_close

import cnnir
from cnnir import Graph, TensorType, ops
from cnnir.ops import activation as activation_ops
from cnnir.ops import norm as norm_ops
from cnnir.ops import optim as optim_ops
from cnnir.ops import pool as pool_ops
from cnnir.ops.activation import ActivationGradAttrs, LeakyReluAttrs, PReluGradAttrs
from cnnir.ops.conv import Conv2dWeightGradAttrs, conv2d_weight_grad
from cnnir.ops.norm import BatchNormGradAttrs, BatchNormUpdateAttrs


def T(*shape: int, dtype: str = "float32") -> TensorType:
    return TensorType(shape, dtype)


def one_node(op, types: list[TensorType | None], attrs) -> Graph:
    """A graph of one ``op`` node whose present inputs are graph inputs, all outputs out."""
    g = Graph(op.name)
    ins = [None if t is None else g.add_input(f"in{i}", t) for i, t in enumerate(types)]
    node = g.add_node(op, ins, attrs)
    g.set_outputs(node.outputs)
    return g


def inputs_for(types: list[TensorType | None], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for t in types:
        if t is None:
            continue
        if np.dtype(t.dtype).kind == "i":
            arrays.append(np.array(3, t.dtype).reshape(t.shape))
        else:
            arrays.append(rng.standard_normal(t.shape).astype(t.dtype))
    return arrays


def check(op, types, attrs, reduction: int = 16, arrays=None) -> None:
    graph = one_node(op, types, attrs)
    arrays = inputs_for(types) if arrays is None else arrays
    got = cnnir.compile(graph, backend="cuda", optimize=False)(*arrays)
    ref = cnnir.compile(graph, backend="reference")(
        *[a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays])
    got, ref = ([r] if not isinstance(r, (tuple, list)) else list(r) for r in (got, ref))
    assert len(got) == len(ref)
    for a, e in zip(got, ref):
        assert a.shape == e.shape
        if a.dtype.kind == "i":
            np.testing.assert_array_equal(a, e)
        else:
            assert_close(a, e, reduction)


ACTIVATIONS = [(ops.relu, None), (ops.relu6, None), (ops.leaky_relu, LeakyReluAttrs(0.2)),
               (ops.elu, None), (ops.sigmoid, None), (ops.tanh, None), (ops.silu, None),
               (ops.hardsigmoid, None), (ops.hardswish, None), (ops.gelu, None),
               (ops.abs_, None)]


@pytest.mark.parametrize("act", ACTIVATIONS, ids=[a.name for a, _ in ACTIVATIONS])
def test_activation_grad(act) -> None:
    op, attrs = act
    x = T(2, 3, 5)
    arrays = inputs_for([x, x])
    arrays[0] *= 4  # reach both sides of relu6's and the hard activations' kinks
    check(ops.activation_grad, [x, x], ActivationGradAttrs(op, attrs), arrays=arrays)


@pytest.mark.parametrize("slopes", [1, 3])
def test_prelu_grad(slopes: int) -> None:
    x = T(2, 3, 4, 5)
    check(activation_ops.prelu_grad, [x, T(slopes), x], PReluGradAttrs(("input", "weight")),
          reduction=40)


BN_X, BN_C = T(2, 4, 2, 5), T(4)


@pytest.mark.parametrize("name,types,attrs", [
    ("train", [BN_X, None, None, BN_C, BN_X], BatchNormGradAttrs()),
    ("train-no-affine", [BN_X, None, None, None, BN_X], BatchNormGradAttrs(outputs=("input",))),
    ("eval", [BN_X, BN_C, BN_C, BN_C, BN_X], BatchNormGradAttrs(batch_stats=False)),
    ("train-fused-relu", [BN_X, None, None, BN_C, BN_X, BN_X],
     BatchNormGradAttrs(activation=ops.relu)),
    ("eval-fused-silu-input-only", [None, BN_C, BN_C, BN_C, BN_X, BN_X],
     BatchNormGradAttrs(batch_stats=False, outputs=("input",), activation=ops.silu)),
])
def test_batch_norm_grad(name, types, attrs) -> None:
    arrays = [np.abs(a) + 0.5 if a.shape == (4,) else a for a in inputs_for(types)]
    check(norm_ops.batch_norm_grad, types, attrs, reduction=45, arrays=arrays)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_update(momentum) -> None:
    types = [BN_X, BN_C, BN_C, T(dtype="int64")]
    arrays = inputs_for(types)
    arrays[2] = np.abs(arrays[2]) + 0.5
    check(norm_ops.batch_norm_update, types, BatchNormUpdateAttrs(momentum), reduction=45,
          arrays=arrays)


def test_batch_norm_update_without_count() -> None:
    types = [BN_X, BN_C, BN_C, None]
    check(norm_ops.batch_norm_update, types, BatchNormUpdateAttrs(0.3), reduction=45)


# -- optimizer updates -------------------------------------------------------------------------

P = T(3, 7)


def hyper_for(names: tuple[str, ...], rows: int = 2, **values: float) -> np.ndarray:
    defaults = dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, first=0.0,
                    clr=0.05, eps=1e-8, rho=0.9, alpha=0.99, beta1=0.9, beta2=0.999,
                    step_size=0.01, bc2_sqrt=0.5)
    defaults.update(values)
    return np.tile(np.array([defaults[n] for n in names], np.float32), (rows, 1))


def update_arrays(n_state: int, hyper: np.ndarray, squares: tuple[int, ...] = ()) -> list:
    rng = np.random.default_rng(1)
    p, g = (rng.standard_normal(P.shape).astype(np.float32) for _ in range(2))
    state = [rng.standard_normal(P.shape).astype(np.float32) for _ in range(n_state)]
    for i in squares:
        state[i] = np.abs(state[i]) + 0.1
    return [p, g, hyper, *state]


H = lambda names: T(2, len(names), dtype="float32")  # noqa: E731


@pytest.mark.parametrize("variant", ["plain", "momentum", "first", "nesterov"])
def test_sgd_update(variant: str) -> None:
    attrs = optim_ops.SGDAttrs(row=1, nesterov=variant == "nesterov")
    hyper = hyper_for(optim_ops.SGD_HYPER, first=1.0 if variant == "first" else 0.0)
    n_state = 0 if variant == "plain" else 1
    types = [P, P, H(optim_ops.SGD_HYPER), P if n_state else None]
    check(optim_ops.sgd_update, types, attrs, arrays=update_arrays(n_state, hyper))


def test_adagrad_update() -> None:
    hyper = hyper_for(optim_ops.ADAGRAD_HYPER)
    check(optim_ops.adagrad_update, [P, P, H(optim_ops.ADAGRAD_HYPER), P],
          optim_ops.AdagradAttrs(), arrays=update_arrays(1, hyper, (0,)))


def test_adadelta_update() -> None:
    hyper = hyper_for(optim_ops.ADADELTA_HYPER)
    check(optim_ops.adadelta_update, [P, P, H(optim_ops.ADADELTA_HYPER), P, P],
          optim_ops.AdadeltaAttrs(), arrays=update_arrays(2, hyper, (0, 1)))


@pytest.mark.parametrize("buf,centered", [(False, False), (True, False), (True, True)])
def test_rmsprop_update(buf: bool, centered: bool) -> None:
    hyper = hyper_for(optim_ops.RMSPROP_HYPER)
    arrays = update_arrays(1 + buf + centered, hyper, (0,))
    if centered:
        arrays[-1] *= 0.1  # grad_avg² below square_avg
    types = [P, P, H(optim_ops.RMSPROP_HYPER), P, P if buf else None, P if centered else None]
    check(optim_ops.rmsprop_update, types, optim_ops.RMSpropAttrs(centered=centered),
          arrays=arrays)


@pytest.mark.parametrize("amsgrad,decoupled", [(False, False), (True, False), (False, True)])
def test_adam_update(amsgrad: bool, decoupled: bool) -> None:
    hyper = hyper_for(optim_ops.ADAM_HYPER)
    types = [P, P, H(optim_ops.ADAM_HYPER), P, P, P if amsgrad else None]
    check(optim_ops.adam_update, types, optim_ops.AdamAttrs(amsgrad=amsgrad, decoupled=decoupled),
          arrays=update_arrays(2 + amsgrad, hyper, (1, 2) if amsgrad else (1,)))


# -- pooling, resizing and convolution gradients -----------------------------------------------


def pool_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    n = (-(-span // s) if ceil else span // s) + 1
    if ceil and (n - 1) * s >= size + p:
        n -= 1
    return n


@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil", [
    ((2, 2), (2, 2), (0, 0), (1, 1), False),
    ((3, 3), (2, 2), (1, 1), (1, 1), True),
    ((3, 2), (1, 2), (1, 0), (2, 1), False),
])
def test_max_pool2d_grad(kernel, stride, padding, dilation, ceil) -> None:
    x = T(2, 2, 7, 6)
    out = [pool_out(x.shape[2 + i], kernel[i], stride[i], padding[i], dilation[i], ceil)
           for i in range(2)]
    attrs = pool_ops.PoolAttrs(kernel, stride, padding, dilation, ceil)
    arrays = inputs_for([x, T(2, 2, *out)])
    arrays[0] = np.round(arrays[0] * 2) / 2  # ties: the first maximum takes the gradient
    arrays[0][0, 0, 1, 1] = np.nan  # a NaN takes its windows' gradient
    check(pool_ops.max_pool2d_grad, [x, T(2, 2, *out)], attrs, arrays=arrays)


@pytest.mark.parametrize("kernel,stride,padding,ceil,include_pad,divisor", [
    ((2, 2), (2, 2), (0, 0), False, True, None),
    ((3, 3), (2, 2), (1, 1), True, False, None),
    ((3, 3), (2, 1), (1, 1), True, True, None),
    ((2, 3), (1, 2), (0, 1), False, True, 5),
])
def test_avg_pool2d_grad(kernel, stride, padding, ceil, include_pad, divisor) -> None:
    out = [pool_out((7, 6)[i], kernel[i], stride[i], padding[i], 1, ceil) for i in range(2)]
    attrs = pool_ops.AvgPoolGradAttrs(kernel, stride, padding, (1, 1), ceil, include_pad,
                                      divisor, input_size=(7, 6))
    check(pool_ops.avg_pool2d_grad, [T(2, 2, *out)], attrs)


@pytest.mark.parametrize("out", [(3, 4), (1, 1), (7, 5)])
def test_adaptive_pool_grads(out) -> None:
    x = T(2, 2, 7, 6)
    check(pool_ops.adaptive_avg_pool2d_grad, [T(2, 2, *out)],
          pool_ops.AdaptivePoolGradAttrs(out, input_size=(7, 6)), reduction=42)
    arrays = inputs_for([x, T(2, 2, *out)])
    arrays[0] = np.round(arrays[0])  # ties
    check(pool_ops.adaptive_max_pool2d_grad, [x, T(2, 2, *out)],
          pool_ops.AdaptivePoolAttrs(out), arrays=arrays)


@pytest.mark.parametrize("mode,size,scale,align", [
    ("nearest", (9, 4), None, None),
    ("nearest-exact", None, (1.5, 2.0), None),
    ("bilinear", (9, 11), None, False),
    ("bilinear", (3, 11), None, True),
    ("bilinear", None, (1.7, 0.6), False),
])
def test_interpolate_grad(mode, size, scale, align) -> None:
    out = size if size is not None else tuple(int(np.floor(n * s)) for n, s in zip((5, 6), scale))
    attrs = pool_ops.InterpolateGradAttrs(size, scale, mode, align, input_size=(5, 6))
    check(pool_ops.interpolate_grad, [T(2, 2, *out)], attrs)


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    ((1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((2, 1), (0, 1, 2, 0), (1, 2), 2),
])
def test_conv2d_weight_grad(stride, padding, dilation, groups) -> None:
    """Small: every weight element is a block (in the simulator, a thread per thread)."""
    x, k = T(2, 2, 4, 3), (3, 2)
    out = [(x.shape[2 + i] + padding[i] + padding[i + 2] - dilation[i] * (k[i] - 1) - 1)
           // stride[i] + 1 for i in range(2)]
    attrs = Conv2dWeightGradAttrs(stride, padding, dilation, groups, kernel_size=k)
    check(conv2d_weight_grad, [x, T(2, 2, *out)], attrs, reduction=24)


@pytest.mark.parametrize("dims,keepdim", [(None, False), ((1, 3), True), ((-1,), False)])
def test_amax_grad(dims, keepdim) -> None:
    from cnnir.ops.tensor import ReduceAttrs, amax_grad, infer_reduce

    x = T(2, 3, 2, 4)
    attrs = ReduceAttrs(dims, keepdim)
    (y,) = infer_reduce(attrs, [x])
    arrays = inputs_for([x, y, y])
    arrays[0] = np.round(arrays[0])  # ties share the gradient
    arrays[1] = arrays[0].max(axis=None if dims is None else dims, keepdims=keepdim)
    arrays[0][1, 2, 1, 3] = np.nan  # a NaN maximum: its slice is NaN
    arrays[1] = np.asarray(np.max(arrays[0], axis=None if dims is None else dims,
                                  keepdims=keepdim), np.float32)
    check(amax_grad, [x, y, y], attrs, arrays=arrays)


@pytest.mark.parametrize("mask,groups,offset_groups", [(True, 1, 1), (False, 2, 2)])
def test_deform_conv2d_grads(mask: bool, groups: int, offset_groups: int) -> None:
    from cnnir.ops.conv import Conv2dAttrs, deform_conv2d_data_grad, deform_conv2d_weight_grad

    x, k, out_ch = T(1, 2, 4, 4), (2, 2), 2
    conv = Conv2dAttrs((1, 1), (1, 1, 0, 0), (1, 1), groups)
    oh, ow = 4, 4  # H + pt − (k − 1), W + pl − (k − 1)
    offset = T(1, 2 * offset_groups * 4, oh, ow)
    m = T(1, offset_groups * 4, oh, ow) if mask else None
    gy, w = T(1, out_ch, oh, ow), T(out_ch, 2 // groups, *k)
    rng = np.random.default_rng(2)

    def arrays_of(types):
        out = []
        for t in types:
            if t is None:
                continue
            scale = 1.5 if t is offset else 1.0
            out.append((rng.standard_normal(t.shape) * scale).astype(np.float32))
        return out

    check(deform_conv2d_weight_grad, [x, offset, gy, m],
          Conv2dWeightGradAttrs((1, 1), (1, 1, 0, 0), (1, 1), groups, kernel_size=k),
          arrays=arrays_of([x, offset, gy, m]), reduction=12)
    check(deform_conv2d_data_grad, [x, offset, w, gy, m], conv,
          arrays=arrays_of([x, offset, w, gy, m]), reduction=8)


# -- whole gradient graphs, and optimizer update graphs ----------------------------------------


def squared_error(y, t):
    d = y - t
    return (d * d).sum()


def grad_models():
    from cnnir import nn

    return {
        "conv-bn-relu-maxpool-linear": nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(12, 4)),
        "conv-silu-avgpool-adaptive-linear": nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1, stride=1), nn.SiLU(), nn.AvgPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)),
    }


@pytest.mark.parametrize("name", list(grad_models()))
def test_gradient_graph_matches_reference(name: str) -> None:
    """A training graph (forward, generated backward) on CUDA against the reference, when
    every op of it has a CUDA kernel."""
    from cnnir.backends.numba_cuda import KERNELS

    graph = cnnir.grad_graph(grad_models()[name], squared_error, inputs=(1, 2, 4, 4),
                             targets=[(1, 4)])
    assert {n.op for n in graph.nodes} <= set(KERNELS)
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(v.type.shape).astype(np.float32) for v in graph.inputs]
    got = cnnir.compile(graph, backend="cuda", optimize=False)(*arrays)
    ref = cnnir.compile(graph, backend="reference")(*[a.astype(np.float64) for a in arrays])
    assert len(got) == len(ref)
    for a, e, v in zip(got, ref, graph.outputs):
        assert a.shape == e.shape, v.name
        assert_close(a, e, reduction=64)


def optimizers(params):
    from cnnir import optim

    return {
        "sgd-nesterov": optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True,
                                  weight_decay=0.01),
        "adagrad": optim.Adagrad(params, lr=0.1, weight_decay=0.01),
        "adadelta": optim.Adadelta(params, lr=0.5, weight_decay=0.01),
        "rmsprop-centered": optim.RMSprop(params, lr=0.01, momentum=0.5, centered=True),
        "adam-amsgrad": optim.Adam(params, lr=0.01, weight_decay=0.01, amsgrad=True),
        "adamw": optim.AdamW(params, lr=0.01),
    }


@pytest.mark.parametrize("name", [
    "sgd-nesterov", "adagrad", "adadelta", "rmsprop-centered", "adam-amsgrad", "adamw"])
def test_update_graph_matches_reference(name: str) -> None:
    """An optimizer's update graph (``append_updates``, as ``Optimizer.step`` builds it) for
    two steps on CUDA against the reference: new parameters and state."""
    from cnnir import nn
    from cnnir.ir import ConstantData, verify
    from cnnir.optim.update import append_updates

    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    params = list(model.parameters())
    opt = optimizers(params)[name]
    rng = np.random.default_rng(5)
    for _ in range(2):
        graph = Graph("step")
        entries = []
        for i, p in enumerate(params):
            t = TensorType(p.shape, "float32")
            value = graph.add_constant(f"param{i}", ConstantData(t, "parameter", array=p.data))
            entries.append((p, value, graph.add_input(f"param{i}.grad", t)))
        plan = append_updates(graph, opt, entries, np.dtype(np.float32))
        graph.set_outputs([v for v, _ in plan.targets])
        verify(graph)
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        hyper = opt.hyper(params, np.dtype(np.float32))
        got = cnnir.compile(graph, backend="cuda", optimize=False)(*grads, hyper)
        ref = cnnir.compile(graph, backend="reference")(
            *[g.astype(np.float64) for g in grads], hyper.astype(np.float64))
        for a, e in zip(got, ref):
            assert_close(a, e)
        for (_, target), new in zip(plan.targets, got):  # step on: write the new values back
            np.copyto(target, new)
        opt.stepped(params)
