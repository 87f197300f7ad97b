"""Hardtanh, Softplus and Mish: values and derivatives against float64 numpy written here from
PyTorch's definitions (softplus's ``threshold`` rule, hardtanh's open-interval derivative), on
the reference executor, the Numba backend (float32) and onnxruntime; the layers' signatures
and defaults; the ONNX import of Clip, Softplus and Mish. (The op-case table,
tests/op_cases.py, also runs them on every backend and checks their vjps against finite
differences.)"""

from __future__ import annotations

import grad_testing as gt
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from op_helpers import Fn

import cnnir
import cnnir.nn.functional as F
from cnnir import nn, ops
from cnnir.errors import CnnirError
from cnnir.grad import sum_of_outputs

# Values on both sides of every bound and threshold used below, kinks avoided.
X = np.array([-30.0, -5.0, -1.7, -1.0001, -0.3, 0.0, 0.2, 0.9999, 1.3, 2.4, 4.1, 12.0, 95.0])


def np_softplus(x: np.ndarray, beta: float = 1.0, threshold: float = 20.0) -> np.ndarray:
    return np.where(beta * x > threshold, x, np.log1p(np.exp(np.minimum(beta * x, 700)))
                    / beta)


def np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# name -> (layer, f(x), f'(x))
ACTIVATIONS = {
    "hardtanh-default": (nn.Hardtanh(), lambda x: np.clip(x, -1.0, 1.0),
                         lambda x: ((x > -1.0) & (x < 1.0)) * 1.0),
    "hardtanh-bounds": (nn.Hardtanh(-2.0, 3.0), lambda x: np.clip(x, -2.0, 3.0),
                        lambda x: ((x > -2.0) & (x < 3.0)) * 1.0),
    "softplus-default": (nn.Softplus(), np_softplus,
                         lambda x: np.where(x > 20.0, 1.0, np_sigmoid(x))),
    "softplus-beta-threshold": (nn.Softplus(beta=2.0, threshold=3.0),
                                lambda x: np_softplus(x, 2.0, 3.0),
                                lambda x: np.where(2 * x > 3.0, 1.0, np_sigmoid(2 * x))),
    "mish": (nn.Mish(), lambda x: x * np.tanh(np_softplus(x, threshold=np.inf)),
             lambda x: np.tanh(np_softplus(x, threshold=np.inf)) + x * np_sigmoid(x) * (
                 1.0 - np.tanh(np_softplus(x, threshold=np.inf)) ** 2)),
}
NAMES = sorted(ACTIVATIONS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("backend", "dtype", "rtol"),
                         [("reference", "float64", 1e-12), ("numba", "float32", 1e-5)])
def test_forward_matches_formula(name: str, backend: str, dtype: str, rtol: float) -> None:
    layer, f, _ = ACTIVATIONS[name]
    run = cnnir.compile(layer, (len(X),), backend=backend, dtype=dtype)
    np.testing.assert_allclose(run(X.astype(dtype)), f(X), rtol=rtol, atol=rtol)


class Shifted(nn.Module):
    """``act(x + p)``: the gradient of its sum with respect to p is act'(x + p)."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act
        self.p = nn.Parameter((len(X),))
        self.p.data = X.astype(np.float32)

    def forward(self, x):
        return self.act(x + self.p)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("backend", "dtype", "rtol"),
                         [("reference", "float64", 1e-12), ("numba", "float32", 1e-5)])
def test_gradient_matches_derivative(name: str, backend: str, dtype: str, rtol: float) -> None:
    layer, f, df = ACTIVATIONS[name]
    vg = cnnir.value_and_grad(Shifted(layer), sum_of_outputs, inputs=(len(X),),
                              backend=backend, dtype=dtype)
    loss, grads = vg(np.zeros(len(X), dtype))
    p = X.astype(np.float32).astype(np.float64)  # the parameter's stored value
    np.testing.assert_allclose(grads["p"], df(p), rtol=rtol, atol=rtol)
    assert np.isclose(loss, f(p).sum(), rtol=rtol)


@pytest.mark.parametrize("name", NAMES)
def test_export_runs_in_onnxruntime(tmp_path, name: str) -> None:
    layer, f, _ = ACTIVATIONS[name]
    path = str(tmp_path / "a.onnx")
    cnnir.export_onnx(layer, path, (len(X),))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: X.astype(np.float32)})
    np.testing.assert_allclose(y, f(X), rtol=1e-5, atol=1e-5)
    types = {n.op_type for n in onnx.load(path).graph.node}
    assert types == {"hardtanh": {"Clip"}, "softplus": {"Softplus", "Greater", "Where"},
                     "mish": {"Mish"}}[name.split("-")[0]] | ({"Mul", "Div"} if "beta" in name
                                                             else set())


def test_layer_defaults_and_signatures() -> None:
    assert (nn.Hardtanh().min_val, nn.Hardtanh().max_val) == (-1.0, 1.0)
    assert (nn.Hardtanh(min_value=0.0, max_value=6.0).min_val,
            nn.Hardtanh(min_value=0.0, max_value=6.0).max_val) == (0.0, 6.0)
    assert (nn.Softplus().beta, nn.Softplus().threshold) == (1.0, 20.0)
    assert repr(nn.Softplus(beta=2)) == "Softplus(beta=2, threshold=20.0)"
    nn.Mish(inplace=True)
    graph = cnnir.trace(nn.Sequential(nn.Hardtanh(0.0, 6.0), nn.Softplus(2.0, 5.0), nn.Mish()),
                        (2, 3))
    attrs = [(n.op, n.attrs) for n in graph.nodes]
    assert attrs == [(ops.hardtanh, ops.hardtanh.attrs(0.0, 6.0)),
                     (ops.softplus, ops.softplus.attrs(2.0, 5.0)), (ops.mish, ops.mish.attrs())]
    assert cnnir.analyze(graph).totals.flops == (2 + 5 + 4) * 6


def test_bad_attributes_are_refused() -> None:
    with pytest.raises(CnnirError, match="Hardtanh.*max_val > min_val"):
        nn.Hardtanh(1.0, -1.0)
    with pytest.raises(CnnirError, match="nonzero beta"):
        nn.Softplus(beta=0.0)
    with pytest.raises(CnnirError, match="min_val <= max_val"):
        cnnir.trace(Fn(lambda s, x: F.hardtanh(x, 2.0, 1.0)), (2, 3))


def import_one(tmp_path, node: onnx.NodeProto, inits=(), opset: int = 19) -> cnnir.Graph:
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [len(X)])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [len(X)])],
        initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    return cnnir.load_onnx(path)


@pytest.mark.parametrize(("node", "op", "f"), [
    (helper.make_node("Clip", ["x", "lo", "hi"], ["y"]), ops.hardtanh,
     lambda x: np.clip(x, -2.0, 3.0)),
    (helper.make_node("Softplus", ["x"], ["y"]), ops.softplus, np_softplus),
    (helper.make_node("Mish", ["x"], ["y"]), ops.mish,
     lambda x: x * np.tanh(np.log1p(np.exp(np.minimum(x, 700))))),
], ids=["clip", "softplus", "mish"])
def test_onnx_import(tmp_path, node, op, f) -> None:
    inits = [helper.make_tensor("lo", onnx.TensorProto.FLOAT, [], [-2.0]),
             helper.make_tensor("hi", onnx.TensorProto.FLOAT, [], [3.0])]
    graph = import_one(tmp_path, node, inits)
    assert [n.op for n in graph.nodes] == [op]
    y = cnnir.compile(graph, backend="reference")(X)
    np.testing.assert_allclose(y, f(X), rtol=1e-12)


def test_hardtanh_gradient_is_a_pinned_branch() -> None:
    """hardtanh's derivative jumps at its bounds, so float32-vs-float64 gradient checks pin
    its decisions (grad_testing.branch_inputs): pinned at values v, the gradient is
    ``dL/dy·[lo < v < hi]`` with L = Σ r·(y + tanh y), whatever x is."""
    graph = cnnir.Graph("hardtanh")
    x = graph.add_input("x", cnnir.TensorType((2, 3), "float64"))
    graph.set_outputs([graph.add_node(ops.hardtanh, [x], ops.hardtanh.attrs(-1.0, 2.0)).output])
    checked = gt.gradient_graphs(graph)
    x_val = np.array([[1.0, -2.0, 1.5], [-0.5, 0.5, 3.0]])
    v = np.array([[3.0, 0.0, -1.5], [1.0, 2.5, 1.9]])  # decisions unlike x's own
    pinned = gt.rebuild(checked.grads)
    gt.pin_branches(pinned, {n.name: v for n in gt.branch_inputs(pinned)})
    got = cnnir.compile(pinned, backend="reference")(x_val)[1]
    y = np.clip(x_val, -1.0, 2.0)
    rng = np.random.default_rng(7)  # add_weighted_tanh_loss's weights r, seed 7
    r = rng.uniform(0.5, 1.5, y.shape) * rng.choice([-1.0, 1.0], y.shape)
    want = r * (1 + 1 / np.cosh(y) ** 2) * ((v > -1.0) & (v < 2.0))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
