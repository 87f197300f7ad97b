"""The torch-level surface model code uses besides ``nn``: ``cnnir.nn.init`` as a module,
``cnnir.jit``'s eager meaning, and the ``cnnir.*`` tensor functions on traced tensors (IR ops,
checked against numpy on the reference backend) and on constants (numpy, torch's dtypes)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import cnnir
from cnnir import nn
from cnnir.errors import CnnirError

# -- cnnir.nn.init and cnnir.jit -------------------------------------------------------------


def test_nn_init_imports_as_a_module() -> None:
    import cnnir.nn.init as init
    from cnnir.nn import init as same

    assert init is same is cnnir.nn.init
    conv = nn.Conv2d(3, 8, 3)
    init.constant_(conv.weight, 0.5)
    assert np.all(conv.weight.data == 0.5)
    assert "kaiming_normal_" in init.__all__ and "LazyArray" not in init.__all__


def test_jit_decorators_and_queries_have_their_eager_meaning() -> None:
    jit = cnnir.jit

    class Net(nn.Module):
        @jit.unused
        def helper(self, x):
            return x * 2

        @jit.ignore(drop=True)
        def other(self, x):
            return x + 1

        @jit._overload_method
        def third(self, x):
            return x

        @jit.export
        def forward(self, x):
            x: cnnir.Tensor = jit.annotate(cnnir.Tensor, x)
            if not jit.is_scripting() and not jit.is_tracing():
                x = self.helper(self.other(self.third(x)))
            return x

    net = jit.script(Net())
    assert isinstance(net, Net) and jit.trace(net, None) is net
    assert jit.ignore(net.helper).__name__ == "helper"
    graph = cnnir.trace(net, (2, 3))
    got = cnnir.compile(graph, backend="reference")(np.ones((2, 3)))
    np.testing.assert_array_equal(got, np.full((2, 3), 4.0))


# -- constants: RegNet's widths, stochastic depth's noise --------------------------------------


def regnet_widths(depth: int, w_0: int, w_a: float, w_m: float) -> list[int]:
    """torchvision's ``BlockParams.from_init_params``, written with cnnir's functions."""
    widths_cont = cnnir.arange(depth) * w_a + w_0
    block_capacity = cnnir.round(cnnir.log(widths_cont / w_0) / math.log(w_m))
    quantized = cnnir.round(cnnir.divide(w_0 * cnnir.pow(w_m, block_capacity), 8)) * 8
    return quantized.int().tolist()


def test_regnet_widths_from_constants() -> None:
    """RegNetY-400MF (depth 16, w_0 48, w_a 27.89, w_m 2.09) has stages of widths 48, 104,
    208 and 440 and depths 1, 3, 6 and 6 (torchvision's published configuration); the
    RegNetX-3.2GF list and a 22-block one are what torch's float32 arithmetic gives for the
    same formula (before torchvision's group-width adjustment)."""
    widths = regnet_widths(16, 48, 27.89, 2.09)
    assert widths == [48] + [104] * 3 + [208] * 6 + [440] * 6
    assert all(type(w) is int for w in widths)
    assert regnet_widths(25, 88, 26.31, 2.25) == [88] * 2 + [200] * 6 + [448] * 15 + [1000] * 2
    assert regnet_widths(22, 24, 36.44, 2.49) == [24, 56] + [152] * 4 + [368] * 10 + [920] * 6


def test_constants_follow_torch_dtypes() -> None:
    assert cnnir.arange(5).dtype == "int64"
    assert (cnnir.arange(5) * 1.5).dtype == "float32"
    assert (cnnir.arange(4) / 2).tolist() == [0.0, 0.5, 1.0, 1.5]
    assert (cnnir.arange(4) / 2).dtype == "float32"
    assert cnnir.arange(0.0, 1.0, 0.25).tolist() == [0.0, 0.25, 0.5, 0.75]
    assert cnnir.tensor([1.0, 2.0]).dtype == "float32"
    assert cnnir.tensor([1, 2]).dtype == "int64"
    assert cnnir.tensor([1.0], dtype=cnnir.float64).double().dtype == "float64"
    assert (cnnir.tensor([1.0], dtype=cnnir.float64) * 2).dtype == "float64"
    assert cnnir.ones(2, 3).shape == (2, 3) and cnnir.zeros((2, 3)).dtype == "float32"
    assert cnnir.full((2,), 3).dtype == "int64" and cnnir.full((2,), 0.5).dtype == "float32"
    assert cnnir.empty(2).tolist() == [0.0, 0.0]
    assert cnnir.tensor([[1, 2], [3, 4]]).sum().item() == 10
    assert cnnir.tensor(2.5).item() == 2.5 and int(cnnir.tensor([3])) == 3
    assert cnnir.sqrt(cnnir.tensor([4.0, 9.0])).tolist() == [2.0, 3.0]
    assert cnnir.stack([cnnir.ones(2), cnnir.zeros(2)]).shape == (2, 2)
    assert cnnir.tensor([2.5, 3.5, -0.5]).round().tolist() == [2.0, 4.0, -0.0]  # half to even
    assert [t.tolist() for t in cnnir.split(cnnir.arange(5), 2)] == [[0, 1], [2, 3], [4]]
    assert cnnir.linspace(0, 1, 3).tolist() == [0.0, 0.5, 1.0]
    assert bool(cnnir.tensor([1, 2]).max() == 2)


def test_item_of_many_elements_is_refused() -> None:
    with pytest.raises(CnnirError, match="one element"):
        cnnir.ones(2).item()


def stochastic_depth(x, p: float, training: bool):
    """torchvision.ops.stochastic_depth(mode="row"), ported by changing imports."""
    if not training or p == 0.0:
        return x
    survival_rate = 1.0 - p
    size = [x.shape[0]] + [1] * (x.ndim - 1)
    noise = cnnir.empty(size, dtype=x.dtype).bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return x * noise


def test_stochastic_depth_traces_with_its_noise_drawn_at_trace_time() -> None:
    class Block(nn.Module):
        def forward(self, x):
            return stochastic_depth(x, 0.5, self.training)

    x = np.random.default_rng(0).standard_normal((16, 3)) + 5.0
    eval_graph = cnnir.trace(Block().eval(), (16, 3))
    np.testing.assert_array_equal(cnnir.compile(eval_graph, backend="reference")(x), x)
    graph = cnnir.trace(Block().train(), (16, 3))
    ratio = cnnir.compile(graph, backend="reference")(x) / x
    rows = set(np.round(ratio[:, 0], 12).tolist())
    assert rows <= {0.0, 2.0} and len(rows) == 2  # per sample: dropped, or kept and scaled
    assert np.all(ratio == ratio[:, :1])


def test_bernoulli_draws_follow_manual_seed() -> None:
    nn.manual_seed(3)
    a = cnnir.empty(64).bernoulli_(0.5).tolist()
    nn.manual_seed(3)
    assert cnnir.empty(64).bernoulli_(0.5).tolist() == a


# -- top-level functions on traced tensors -----------------------------------------------------


class Fn(nn.Module):
    def __init__(self, f) -> None:
        super().__init__()
        self.f = f

    def forward(self, *xs):
        return self.f(*xs)


def test_tensor_functions_on_traced_tensors_match_numpy() -> None:
    def f(a, b):
        first, rest = cnnir.split(a, [1, 3], dim=1)
        return (cnnir.transpose(a, 1, 3), cnnir.permute(a, (0, 2, 3, 1)),
                cnnir.unsqueeze(b, 1), cnnir.squeeze(first, 1), cnnir.stack([a, a * 2], dim=-1),
                cnnir.cat([a, cnnir.ones(2, 1, 5, 6) * 3], dim=1), cnnir.flatten(a, 1),
                rest, cnnir.sqrt(cnnir.abs(a)), cnnir.exp(b), cnnir.log(cnnir.abs(b) + 1),
                cnnir.clamp(a, -0.5, 0.5), cnnir.where(a > b, a, b), a * cnnir.arange(6),
                cnnir.add(a, cnnir.tensor(2.0)), cnnir.sum(a, (2, 3)), cnnir.mean(a, 1))

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 4, 5, 6)), rng.standard_normal((2, 4, 5, 6))
    graph = cnnir.trace(Fn(f), [(2, 4, 5, 6), (2, 4, 5, 6)])
    got = cnnir.compile(graph, backend="reference")(a, b)
    want = [a.transpose(0, 3, 2, 1), a.transpose(0, 2, 3, 1), b[:, None], a[:, 0],
            np.stack([a, a * 2], -1), np.concatenate([a, np.full((2, 1, 5, 6), 3.0)], 1),
            a.reshape(2, -1), a[:, 1:], np.sqrt(np.abs(a)), np.exp(b), np.log(np.abs(b) + 1),
            np.clip(a, -0.5, 0.5), np.where(a > b, a, b), a * np.arange(6), a + 2,
            a.sum((2, 3)), a.mean(1)]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_round_on_a_traced_tensor_is_refused_clearly() -> None:
    with pytest.raises(CnnirError, match="cnnir.round on a traced tensor"):
        cnnir.trace(Fn(lambda a: cnnir.round(a)), (2, 3))


def test_import_cnnir_stays_free_of_numba_and_onnx() -> None:
    import subprocess
    import sys

    code = "import sys, cnnir; print('numba' in sys.modules, 'onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"], out.stderr
