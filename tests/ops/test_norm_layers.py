"""GroupNorm, LayerNorm, InstanceNorm, PixelShuffle/Unshuffle and Conv1d against float64 numpy
written here from PyTorch's definitions (GroupNorm: per sample and group, the mean and biased
variance over (C/G, H, W), eps inside the square root, then γ and β per channel), on the
reference executor and the Numba backend (float32); their layers' parameters, defaults and
errors; their ONNX export (onnxruntime) and import. (The op-case table, tests/op_cases.py,
also runs them on every backend and checks their vjps against finite differences.)"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from op_helpers import Fn, assert_close

import cnnir
import cnnir.nn.functional as F
from cnnir import nn, ops
from cnnir.errors import CnnirError
from cnnir.grad import sum_of_outputs

RNG = np.random.default_rng(0)


def np_group_norm(x, groups, weight=None, bias=None, eps=1e-5):
    n, c = x.shape[:2]
    v = x.reshape(n, groups, -1)
    mean = v.mean(axis=2, keepdims=True)
    var = ((v - mean) ** 2).mean(axis=2, keepdims=True)
    y = ((v - mean) / np.sqrt(var + eps)).reshape(x.shape)
    along = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(along)
    if bias is not None:
        y = y + bias.reshape(along)
    return y


def np_layer_norm(x, shape, weight=None, bias=None, eps=1e-5):
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return y * (1 if weight is None else weight) + (0 if bias is None else bias)


def randomized(m: nn.Module) -> nn.Module:
    for p in (m.weight, m.bias):
        if p is not None:
            p.data = RNG.uniform(0.5, 1.5, p.shape).astype(np.float32)
    return m


def params(m: nn.Module) -> dict[str, np.ndarray | None]:
    return {k: (None if getattr(m, k, None) is None else getattr(m, k).data.astype(np.float64))
            for k in ("weight", "bias")}


def run_both(m: nn.Module, x: np.ndarray, expected: np.ndarray, reduction: int) -> None:
    shape = x.shape
    ref = cnnir.compile(m, shape, backend="reference")(x)
    np.testing.assert_allclose(ref, expected, rtol=1e-10, atol=1e-10)
    assert_close(cnnir.compile(m, shape, backend="numba")(x.astype(np.float32)), expected,
                 reduction)


@pytest.mark.parametrize(("groups", "channels", "affine"), [(2, 6, True), (1, 4, False),
                                                            (6, 6, True)])
def test_group_norm_matches_formula(groups: int, channels: int, affine: bool) -> None:
    m = randomized(nn.GroupNorm(groups, channels, eps=1e-4, affine=affine))
    x = RNG.standard_normal((3, channels, 5, 7))
    want = np_group_norm(x, groups, **params(m), eps=1e-4)
    run_both(m, x, want, channels // groups * 35)


def test_group_norm_far_mean_keeps_its_digits() -> None:
    """float32, mean 1000 and spread 0.01: one-pass Σx² − (Σx)² would lose every digit."""
    m = nn.GroupNorm(2, 4)
    x = 1000.0 + 0.01 * RNG.standard_normal((2, 4, 6, 6))
    x = x.astype(np.float32).astype(np.float64)
    got = cnnir.compile(m, x.shape, backend="numba")(x.astype(np.float32))
    np.testing.assert_allclose(got, np_group_norm(x, 2), atol=2e-3)


@pytest.mark.parametrize(("shape", "normalized", "kwargs"), [
    ((2, 5, 8), (8,), {}),
    ((2, 3, 4, 5), (4, 5), {"bias": False}),
    ((4, 6), (6,), {"elementwise_affine": False}),
])
def test_layer_norm_matches_formula(shape, normalized, kwargs) -> None:
    m = randomized(nn.LayerNorm(normalized, eps=1e-6, **kwargs))
    x = RNG.standard_normal(shape) * 3 + 2
    run_both(m, x, np_layer_norm(x, normalized, **params(m), eps=1e-6),
             int(np.prod(normalized)))


def test_instance_norm_matches_formula() -> None:
    m = randomized(nn.InstanceNorm2d(3, affine=True))
    x = RNG.standard_normal((2, 3, 4, 5))
    run_both(m, x, np_group_norm(x, 3, **params(m)), 20)
    plain = nn.InstanceNorm2d(3)
    run_both(plain, x, np_group_norm(x, 3), 20)
    unbatched = cnnir.compile(plain, (3, 4, 5), backend="reference")(x[0])
    np.testing.assert_allclose(unbatched, np_group_norm(x[:1], 3)[0], atol=1e-12)


def test_functional_forms_and_instance_norm_1d() -> None:
    w, b = (RNG.uniform(0.5, 1.5, 4).astype(np.float32) for _ in range(2))
    x = RNG.standard_normal((2, 4, 6))
    net = Fn(lambda s, x: (F.group_norm(x, 2, w, b, eps=1e-3), F.layer_norm(x, (6,)),
                           F.instance_norm(x, weight=w, bias=b)))
    got = cnnir.compile(net, x.shape, backend="reference")(x)
    for y, want in zip(got, (np_group_norm(x, 2, w, b, eps=1e-3), np_layer_norm(x, (6,)),
                             np_group_norm(x, 4, w, b))):
        np.testing.assert_allclose(y, want, atol=1e-12)
    run_both(nn.InstanceNorm1d(4), x, np_group_norm(x, 4), 6)


def test_instance_norm_running_stats_in_eval_and_refused_in_training() -> None:
    m = nn.InstanceNorm2d(3, track_running_stats=True, affine=True)
    m.running_mean.data = np.array([0.5, -1.0, 2.0])
    m.running_var.data = np.array([2.0, 0.5, 1.5])
    randomized(m)
    x = RNG.standard_normal((2, 3, 4, 4))
    p = params(m)
    mean, var = (b.data.astype(np.float32).astype(np.float64).reshape(1, 3, 1, 1)
                 for b in (m.running_mean, m.running_var))
    want = ((x - mean) / np.sqrt(var + 1e-5)
            * p["weight"].reshape(1, 3, 1, 1) + p["bias"].reshape(1, 3, 1, 1))
    got = cnnir.compile(m.eval(), x.shape, backend="reference")(x)
    np.testing.assert_allclose(got, want, atol=1e-12)
    with pytest.raises(CnnirError, match="InstanceNorm2d.*track_running_stats"):
        cnnir.trace(m.train(), x.shape)


def test_group_norm_parameter_gradients_match_formula() -> None:
    """d Σ GroupNorm(x) w.r.t. γ is Σ x̂ per channel; w.r.t. β the count per channel."""
    m = randomized(nn.GroupNorm(2, 4))
    x = RNG.standard_normal((3, 4, 2, 3))
    x_hat = np_group_norm(x, 2)
    for backend, dtype in (("reference", "float64"), ("numba", "float32")):
        _, grads = cnnir.value_and_grad(m, sum_of_outputs, inputs=x.shape, backend=backend,
                                        dtype=dtype)(x.astype(dtype))
        assert_close(grads["weight"], x_hat.sum(axis=(0, 2, 3)), 18)
        assert_close(grads["bias"], np.full(4, 18.0), 18)


def test_layers_parameters_and_defaults() -> None:
    gn, ln, inorm = nn.GroupNorm(2, 6), nn.LayerNorm((4, 5)), nn.InstanceNorm2d(3)
    assert {k: v.shape for k, v in gn.state_dict().items()} == {"weight": (6,), "bias": (6,)}
    assert {k: v.shape for k, v in ln.state_dict().items()} == {"weight": (4, 5),
                                                                "bias": (4, 5)}
    np.testing.assert_array_equal(gn.weight.data, np.ones(6))
    np.testing.assert_array_equal(ln.bias.data, np.zeros((4, 5)))
    assert (gn.affine, gn.eps, ln.elementwise_affine, ln.normalized_shape) == (
        True, 1e-5, True, (4, 5))
    assert (inorm.affine, inorm.track_running_stats, inorm.state_dict()) == (False, False, {})
    assert nn.GroupNorm(2, 6, affine=False).state_dict() == {}
    assert list(nn.LayerNorm(4, bias=False).state_dict()) == ["weight"]
    assert nn.LayerNorm(4, elementwise_affine=False).state_dict() == {}
    running = nn.InstanceNorm2d(3, affine=True, track_running_stats=True).state_dict()
    assert sorted(running) == ["bias", "num_batches_tracked", "running_mean", "running_var",
                               "weight"]
    conv = nn.Conv1d(4, 6, 3, groups=2)
    assert {k: v.shape for k, v in conv.state_dict().items()} == {"weight": (6, 2, 3),
                                                                  "bias": (6,)}


def test_weight_init_loop_with_isinstance() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1),
                          nn.GroupNorm(2, 4), nn.LayerNorm(4))
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            nn.init.constant_(m.weight, 0.5)
            nn.init.constant_(m.bias, 0.25)
    np.testing.assert_array_equal(model[3].weight.data, np.full(4, 0.5))
    np.testing.assert_array_equal(model[4].bias.data, np.full(4, 0.25))
    assert not isinstance(nn.InstanceNorm2d(4), nn.BatchNorm2d)


def test_costs() -> None:
    report = cnnir.analyze(nn.Sequential(nn.GroupNorm(2, 4), nn.LayerNorm(5),
                                         nn.GroupNorm(4, 4, affine=False)), (1, 4, 3, 5))
    e = 4 * 3 * 5
    assert (report.totals.params, report.totals.flops) == (8 + 10, 5 * e + 5 * e + 4 * e)


@pytest.mark.parametrize(("build", "match"), [
    (lambda: nn.GroupNorm(3, 4), "GroupNorm.*divisible by num_groups=3"),
    (lambda: nn.GroupNorm(0, 4), "GroupNorm.*num_groups must be a positive int"),
    (lambda: nn.LayerNorm(()), "LayerNorm.*normalized_shape"),
    (lambda: cnnir.trace(nn.LayerNorm(6), (2, 5)), r"ending in normalized_shape \[6\]"),
    (lambda: cnnir.trace(nn.GroupNorm(2, 4), (2, 6, 3)), r"weight of shape \[6\]"),
    (lambda: cnnir.trace(nn.InstanceNorm2d(4), (2, 4)), "InstanceNorm2d.*expected 3D or 4D"),
    (lambda: cnnir.trace(nn.PixelShuffle(2), (1, 6, 3, 3)), "divisible by the square"),
    (lambda: cnnir.trace(nn.PixelUnshuffle(2), (1, 2, 3, 4)), "divisible by downscale"),
    (lambda: cnnir.trace(nn.Conv1d(2, 3, 3), (1, 2, 3, 9)), r"conv1d.*2-D \(C, L\) or 3-D"),
])
def test_bad_inputs_are_refused(build, match: str) -> None:
    with pytest.raises(CnnirError, match=match):
        build()


def np_pixel_shuffle(x: np.ndarray, r: int) -> np.ndarray:
    n, c, h, w = x.shape
    out = np.empty((n, c // (r * r), h * r, w * r))
    for ch in range(c // (r * r)):
        for i in range(r):
            for j in range(r):
                out[:, ch, i::r, j::r] = x[:, ch * r * r + i * r + j]
    return out


def test_pixel_shuffle_and_unshuffle_match_formula(tmp_path) -> None:
    x = RNG.standard_normal((2, 8, 3, 5))
    want = np_pixel_shuffle(x, 2)
    run_both(nn.PixelShuffle(2), x, want, 1)
    run_both(nn.PixelUnshuffle(2), want, x, 1)
    path = str(tmp_path / "ps.onnx")
    cnnir.export_onnx(nn.PixelShuffle(2), path, ("N", 8, 3, 5))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
    np.testing.assert_allclose(y, want, atol=1e-6)


def np_conv1d(x, w, b, stride, padding, dilation, groups):
    n, c, length = x.shape
    o, cg, k = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    out_len = (length + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    y = np.zeros((n, o, out_len))
    for oc in range(o):
        g = oc // (o // groups)
        for t in range(out_len):
            taps = x[:, g * cg:(g + 1) * cg, t * stride:t * stride + dilation * (k - 1) + 1:
                     dilation]
            y[:, oc, t] = (taps * w[oc]).sum(axis=(1, 2)) + (0 if b is None else b[oc])
    return y


@pytest.mark.parametrize("kwargs", [dict(padding=1, stride=2),
                                    dict(padding=2, dilation=2, groups=2, bias=False)])
def test_conv1d_matches_formula(tmp_path, kwargs) -> None:
    m = nn.Conv1d(4, 6, 3, **kwargs)
    x = RNG.standard_normal((2, 4, 11))
    w = m.weight.data.astype(np.float64)
    b = None if m.bias is None else m.bias.data.astype(np.float64)
    want = np_conv1d(x, w, b, kwargs.get("stride", 1), kwargs["padding"],
                     kwargs.get("dilation", 1), kwargs.get("groups", 1))
    run_both(m, x, want, 12)
    unbatched = cnnir.compile(m, x.shape[1:], backend="reference")(x[0])
    np.testing.assert_allclose(unbatched, want[0], atol=1e-12)
    path = str(tmp_path / "c.onnx")
    cnnir.export_onnx(m, path, ("N", 4, 11))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
    assert_close(y, want, 12)


def import_model(tmp_path, node, x_shape, inits, opset: int) -> cnnir.Graph:
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, x_shape)],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    return cnnir.load_onnx(path)


def test_onnx_import_of_the_normalizations(tmp_path) -> None:
    x = RNG.standard_normal((2, 6, 3, 4)).astype(np.float32).astype(np.float64)
    s, b = RNG.uniform(0.5, 1.5, 6), RNG.standard_normal(6)
    cases = [
        (helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3,
                          epsilon=1e-3), 21, ops.group_norm,
         np_group_norm(x, 3, s, b, eps=1e-3)),
        (helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"]), 19, ops.group_norm,
         np_group_norm(x, 6, s, b)),
    ]
    for node, opset, op, want in cases:
        graph = import_model(tmp_path, node, list(x.shape), {"s": s, "b": b}, opset)
        assert [n.op for n in graph.nodes] == [op]
        got = cnnir.compile(graph, backend="reference")(x)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    ln = helper.make_node("LayerNormalization", ["x", "s2"], ["y"], axis=-2)
    s2 = RNG.uniform(0.5, 1.5, (3, 4))
    graph = import_model(tmp_path, ln, list(x.shape), {"s2": s2}, 19)
    assert [(n.op, n.attrs.normalized_shape) for n in graph.nodes] == [(ops.layer_norm, (3, 4))]
    got = cnnir.compile(graph, backend="reference")(x)
    np.testing.assert_allclose(got, np_layer_norm(x, (3, 4), s2), rtol=1e-6, atol=1e-6)


DECOMPOSED = ["Reshape", "InstanceNormalization", "Shape", "Reshape"]


@pytest.mark.parametrize(("opset", "affine", "node_types"), [
    (19, True, DECOMPOSED + ["Reshape", "Mul", "Reshape", "Add"]),
    (19, False, DECOMPOSED),
    (21, True, ["GroupNormalization"]),
    (21, False, ["GroupNormalization"]),
])
def test_group_norm_export_and_reimport(tmp_path, opset: int, affine: bool,
                                        node_types: list[str]) -> None:
    m = randomized(nn.GroupNorm(2, 6, eps=1e-3, affine=affine))
    x = RNG.standard_normal((2, 6, 3, 4)).astype(np.float32)
    want = np_group_norm(x.astype(np.float64), 2, **params(m), eps=1e-3)
    path = str(tmp_path / "gn.onnx")
    cnnir.export_onnx(m, path, ("N", 6, 3, 4), opset=opset)
    assert [n.op_type for n in onnx.load(path).graph.node] == node_types
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    assert_close(y, want, 36)
    if opset == 21:  # comes back as the same layer, parameters included
        back = cnnir.load_onnx(path)
        assert [n.op for n in back.nodes] == [ops.group_norm]
        assert cnnir.analyze(back).totals.params == (12 if affine else 0)
        assert_close(cnnir.compile(back, backend="numba")(x), want, 36)


def test_onnx_import_refuses_per_group_scales(tmp_path) -> None:
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3)
    with pytest.raises(CnnirError, match="scale per group"):
        import_model(tmp_path, node, [2, 6, 3, 4], {"s": np.ones(3), "b": np.zeros(3)}, 18)
