"""The call-time contract shared by every backend (``cnnir.backend.check_call``,
docs/api.md): the same checks, exception classes and messages on each (issue 13, item 10)."""

from __future__ import annotations

import numpy as np
import pytest

import cnnir
from cnnir import LoweringError, nn
from cnnir.backend import check_call
from cnnir.ir import Graph, TensorType
from cnnir.ops.loss import CrossEntropyAttrs

BACKENDS = ["reference", "numba"]


def linear_model() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 4))
    model.eval()
    return model


@pytest.fixture(scope="module")
def compiled() -> dict[str, object]:
    model = linear_model()  # both compute in float32: the same messages, word for word
    return {"model": model, **{b: cnnir.compile(model, ("N", 3, 2, 2), backend=b,
                                                dtype="float32") for b in BACKENDS}}


MISTAKES = {
    "count": ((np.zeros((1, 3, 2, 2), np.float32), np.zeros((1, 3, 2, 2), np.float32)),
              r"graph 'Sequential' takes 1 input\(s\) \('x' float32\[N, 3, 2, 2\]\) but was "
              r"called with 2"),
    "none": ((), r"takes 1 input\(s\) .* but was called with 0"),
    "list": (([[[[0.0] * 2] * 2] * 3],), r"input 'x' is a list, not an array \(it expects "
                                         r"float32\[N, 3, 2, 2\]\)"),
    "rank": ((np.zeros((3, 2, 2), np.float32),),
             r"input 'x' expects a 4-D array of shape \[N, 3, 2, 2\] but got a 3-D array"),
    "shape": ((np.zeros((1, 4, 2, 2), np.float32),),
              r"input 'x' expects shape \[N, 3, 2, 2\] but got \[1, 4, 2, 2\] \(dim 1 is 4"),
    "empty batch": ((np.zeros((0, 3, 2, 2), np.float32),),
                    r"input 'x' has shape \[0, 3, 2, 2\], size 0 on dim 0: cnnir refuses empty "
                    r"inputs"),
    "text": ((np.full((1, 3, 2, 2), "a"),), r"input 'x' has dtype <U1, expected a numeric"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_mistakes_raise_the_same_error_on_every_backend(compiled, backend, mistake):
    args, pattern = MISTAKES[mistake]
    with pytest.raises(LoweringError, match=pattern) as exc:
        compiled[backend](*args)
    with pytest.raises(LoweringError) as other:
        compiled[BACKENDS[0]](*args)
    assert str(exc.value) == str(other.value)  # one message, whichever backend


def test_wrong_float_dtype_says_how_to_fix_it(compiled):
    with pytest.raises(LoweringError, match=r"input 'x' must be float32 but got float64") as e:
        compiled["numba"](np.zeros((1, 3, 2, 2)))
    assert "x.astype(np.float32)" in str(e.value) and "dtype='float64'" in str(e.value)
    with pytest.raises(LoweringError, match=r"must be float32 but got int64") as e:
        compiled["numba"](np.zeros((1, 3, 2, 2), np.int64))
    assert "dtype='int64'" not in str(e.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_inputs_need_integer_arrays(backend):
    g = Graph("pick")
    x = g.add_input("x", TensorType((2, 3)))
    t = g.add_input("t", TensorType((2,), "int64"))
    g.set_outputs(g.add_node(cnnir.ops.cross_entropy, [x, t, None],
                             CrossEntropyAttrs("none")).outputs)
    run = cnnir.compile(cnnir.verify(g), backend=backend, dtype="float32")
    logits = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]], np.float32)
    with pytest.raises(LoweringError, match=r"input 't' is typed int64\[2\] \(integer\) but got "
                                            r"a float32 array"):
        run(logits, np.array([2.0, 0.0], np.float32))
    y = run(logits, np.array([2, 0], np.int32))  # any integer dtype is a class index
    np.testing.assert_allclose(y, [np.log(1 + np.exp(-1) + np.exp(-2)), np.log(3)], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_valid_call_matches_the_formula(compiled, backend):
    state = compiled["model"].state_dict()
    w, b = (np.asarray(state[k], np.float64) for k in ("1.weight", "1.bias"))
    x = np.random.default_rng(0).standard_normal((5, 3, 2, 2)).astype(np.float32)
    expected = x.reshape(5, -1).astype(np.float64) @ w.T + b
    np.testing.assert_allclose(compiled[backend](x), expected, rtol=1e-5, atol=1e-6)


def test_the_reference_converts_floats_to_its_compute_dtype(compiled):
    run = cnnir.compile(compiled["model"], (1, 3, 2, 2), backend="reference")
    x = np.random.default_rng(1).standard_normal((1, 3, 2, 2)).astype(np.float32)
    y = run(x)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, run(x.astype(np.float64)))


def test_check_call_returns_the_symbol_sizes():
    g = Graph("g")
    g.add_input("a", TensorType(("N", 3)))
    assert check_call(g, [np.zeros((7, 3), np.float32)], np.dtype(np.float32))[1] == {"N": 7}


def test_numba_compile_reports_progress_per_node():
    calls: list[tuple[int, int]] = []
    model = linear_model()
    run = cnnir.compile(model, (1, 3, 2, 2), backend="numba",
                        progress=lambda done, total: calls.append((done, total)))
    total = calls[-1][1]
    assert calls == [(i, total) for i in range(1, total + 1)]
    assert total == len(run.graph.nodes)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_scalar_input_takes_a_number_or_numpy_scalar(backend):
    g = Graph("scale")
    x = g.add_input("x", TensorType((3,)))
    s = g.add_input("s", TensorType(()))
    g.set_outputs(g.add_node(cnnir.ops.mul, [x, s]).outputs)
    run = cnnir.compile(cnnir.verify(g), backend=backend, dtype="float32")
    x = np.array([1.0, -2.0, 0.5], np.float32)
    np.testing.assert_array_equal(run(x, np.float32(3.0)), [3.0, -6.0, 1.5])
    if backend == "reference":  # converts a Python float; numba refuses its float64
        np.testing.assert_array_equal(run(x, 3.0), [3.0, -6.0, 1.5])
    else:
        with pytest.raises(LoweringError, match="input 's' must be float32 but got float64"):
            run(x, 3.0)


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_good_call_does_not_wave_through_the_next_bad_one(mistake):
    """The Numba backend skips the check for a call with the shapes and dtypes of the last one
    that passed it; any other call is checked again."""
    run = cnnir.compile(linear_model(), ("N", 3, 2, 2), dtype="float32")
    good = np.ones((2, 3, 2, 2), np.float32)
    first = run(good)
    args, message = MISTAKES[mistake]
    with pytest.raises(LoweringError, match=message):
        run(*args)
    np.testing.assert_array_equal(run(good), first)
