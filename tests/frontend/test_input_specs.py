"""Input specs, input counts, empty inputs, output folders, locations and the mode
``cnnir.compile`` runs a model in (issue 13): the API side of the command line's checks."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

import cnnir
from cnnir import CnnirError, ShapeError, TensorType, nn
from cnnir.api import input_types
from cnnir.ir import Graph


def conv_net() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    model.eval()
    return model


# -- input specs -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, shapes", [
    ((1, 3, 8, 8), [(1, 3, 8, 8)]),
    ([1, 3, 8, 8], [(1, 3, 8, 8)]),
    (["N", 3, 8, 8], [("N", 3, 8, 8)]),
    ((np.int64(2), 3, 8, 8), [(2, 3, 8, 8)]),
    ([(1, 3, 8, 8), [2, 3, 4, 4]], [(1, 3, 8, 8), (2, 3, 4, 4)]),
    ([[1, 3, 8, 8]], [(1, 3, 8, 8)]),
])
def test_shapes_lists_and_lists_of_shapes(spec, shapes):
    assert [t.shape for t in input_types(spec)] == shapes


@pytest.mark.parametrize("spec, pattern", [
    ((1, 3, 32.0, 32), r"input shape \[1, 3, 32.0, 32\] has a float 32.0 as a size"),
    ([1, False, 8, 8], r"has a bool False as a size"),
    ((1, None, 8, 8), r"has a NoneType None as a size"),
    ((1, -1, 8, 8), r"has a negative size -1"),
    ("abc", r"cannot read an input spec from 'abc'"),
    (7, r"cannot read an input spec from 7"),
    ([], r"cannot read an input spec from \[\]"),
])
def test_bad_specs_show_the_accepted_forms(spec, pattern):
    with pytest.raises(ShapeError, match=pattern) as e:
        cnnir.trace(conv_net(), spec)
    assert "(1, 3, 224, 224)" in str(e.value) and "[1, 3, 224, 224]" in str(e.value)


# -- empty inputs ------------------------------------------------------------------------------
ZERO = r"input 'x' has shape \[0, 3, 8, 8\], size 0 on dim 0: cnnir refuses empty inputs"


@pytest.mark.parametrize("entry", [
    lambda m: cnnir.trace(m, (0, 3, 8, 8)),
    lambda m: cnnir.trace(m, TensorType((0, 3, 8, 8))),
    lambda m: cnnir.analyze(m, [0, 3, 8, 8]),
    lambda m: cnnir.analyze(m, (0, 3, 8, 8), training=True),
    lambda m: cnnir.compile(m, (0, 3, 8, 8), backend="reference"),
    lambda m: cnnir.compile(m, (0, 3, 8, 8), backend="numba"),
], ids=["trace", "trace-type", "analyze", "analyze-training", "compile-reference",
        "compile-numba"])
def test_zero_batch_is_refused_everywhere(entry):
    with pytest.raises(ShapeError, match=ZERO) as e:
        entry(conv_net())
    assert "PyTorch would return empty outputs" in str(e.value)


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_compiling_a_graph_with_an_empty_input(backend):
    g = Graph("g")
    x = g.add_input("x", TensorType((2, 0)))
    g.set_outputs(g.add_node(cnnir.ops.relu, [x]).outputs)
    with pytest.raises(ShapeError, match=r"input 'x' has shape \[2, 0\], size 0 on dim 1"):
        cnnir.compile(cnnir.verify(g), backend=backend)


# -- input counts ------------------------------------------------------------------------------
class Pair(nn.Module):
    def forward(self, left, right):
        return left + right


@pytest.mark.parametrize("spec, given", [((1, 4), 1), ([(1, 4)] * 3, 3)])
def test_input_count_names_the_forward_inputs(spec, given):
    with pytest.raises(CnnirError, match=rf"Pair.forward takes 2 input\(s\) \(left, right\) but "
                                         rf"{given} input shape\(s\) were given"):
        cnnir.trace(Pair(), spec)


def test_variadic_forward_takes_any_count():
    class Sum(nn.Module):
        def forward(self, *xs):
            return xs[0] + xs[1] + xs[2]

    assert len(cnnir.trace(Sum(), [(1, 4)] * 3).inputs) == 3


def test_a_type_error_inside_forward_is_not_an_input_count_error():
    class Broken(nn.Module):
        def forward(self, x):
            return len(5)

    with pytest.raises(TypeError, match="has no len"):
        cnnir.trace(Broken(), (1, 4))


# -- output folders ----------------------------------------------------------------------------
def test_save_and_export_to_a_missing_directory(tmp_path):
    model = conv_net()
    for write in (lambda p: cnnir.save(model, p),
                  lambda p: cnnir.export_onnx(model, p, (1, 3, 8, 8))):
        target = tmp_path / "missing" / "out.bin"
        with pytest.raises(CnnirError, match=rf"cannot write {target}: the directory "
                                             rf"{target.parent} does not exist"):
            write(target)


# -- locations ---------------------------------------------------------------------------------
def test_a_sequential_layer_error_points_where_the_layer_was_created():
    line = inspect.currentframe().f_lineno + 2
    model = nn.Sequential(nn.Conv2d(3, 8, 3),
                          nn.Conv2d(4, 8, 3))
    with pytest.raises(ShapeError, match=rf"conv2d '1' \(\S*test_input_specs\.py:{line}\)"):
        cnnir.trace(model, (1, 3, 16, 16))


def test_a_forward_in_user_code_still_points_at_its_call():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(4, 8, 3)

        def forward(self, x):
            return self.b(self.a(x))

    line = inspect.getsourcelines(Net.forward)[1] + 1
    with pytest.raises(ShapeError, match=rf"\(\S*test_input_specs\.py:{line}\)"):
        cnnir.trace(Net(), (1, 3, 16, 16))


# -- the mode cnnir.compile runs a model in ----------------------------------------------------
def dropout_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.Dropout(0.5))


def test_compile_warns_when_a_training_mode_model_runs_in_eval_mode():
    model = dropout_net()
    assert model.training
    with pytest.warns(UserWarning, match=r"runs Sequential in eval mode .* model\.eval\(\)"):
        run = cnnir.compile(model, (2, 3, 2, 2), backend="reference")
    assert model.training  # the model's own mode is left alone
    state = model.state_dict()
    w, b = (np.asarray(state[k], np.float64) for k in ("1.weight", "1.bias"))
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2))
    np.testing.assert_allclose(run(x), x.reshape(2, -1) @ w.T + b, rtol=1e-12)  # no dropout


def test_trace_records_the_models_mode():
    model = dropout_net()
    (drop,) = [n for n in cnnir.trace(model, (2, 3, 2, 2)).nodes if n.op.name == "dropout"]
    assert drop.attrs.training is True


@pytest.mark.parametrize("model", [
    lambda: dropout_net().eval(),
    lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 4)),  # training mode changes nothing
], ids=["eval", "mode-independent"])
def test_no_warning_when_the_mode_makes_no_difference(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnnir.compile(model(), (2, 3, 2, 2), backend="reference")
