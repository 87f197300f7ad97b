"""Shared helpers of the pass tests: float64 graphs, random BN statistics, model builders.

Pass equivalence is checked in float64 (docs/semantics.md §8): ``run(P(g))`` vs ``run(g)`` with the
reference executor, rtol 1e-10. Traced models are float32, so ``as_float64`` rebuilds a graph
with every float type and constant in float64 (types re-inferred by the ops' rules).
"""

from __future__ import annotations

import runpy
from functools import cache
from pathlib import Path

import numpy as np
from grad_testing import rebuild

import cnnir
from cnnir import ops
from cnnir.ir import ConstantData, Graph, TensorType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RTOL = 1e-10


def as_float64(graph: Graph) -> Graph:
    """The same network with every float tensor in float64."""
    return rebuild(graph, "float64")


def randomize_bn(graph: Graph, seed: int = 0) -> Graph:
    """Random eval statistics for every batch_norm: rv log-uniform in [1e-6, 1] (so an eps
    bug shows, §8), rm and β normal, γ = √(rv + eps)·u with u in ±[0.5, 1.5] so activations
    stay O(1) through deep networks."""
    rng = np.random.default_rng(seed)
    for bn in (n for n in graph.nodes if n.op is ops.batch_norm):
        rm, rv, gamma, beta = bn.inputs[1:5]
        c = bn.output.type.shape[1]
        var = 10.0 ** rng.uniform(-6, 0, c)
        arrays = {rm: rng.normal(0, 0.5, c), rv: var, beta: rng.normal(0, 0.2, c),
                  gamma: np.sqrt(var + bn.attrs.eps) * rng.uniform(0.5, 1.5, c)
                  * rng.choice([-1.0, 1.0], c)}
        for value, array in arrays.items():
            if value is not None:
                value.const = ConstantData(value.type, value.const.kind,
                                           array=array.astype(value.type.dtype))
    return graph


def run_reference(graph: Graph, *arrays: np.ndarray):
    return cnnir.compile(graph, backend="reference", dtype="float64")(*arrays)


def random_inputs(graph: Graph, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(1 if isinstance(d, str) else d for d in v.type.shape))
            for v in graph.inputs]


def assert_equivalent(before: Graph, after: Graph, seed: int = 1) -> None:
    """Outputs equal within rtol 1e-10, with atol 1e-10·max|y| for entries near zero."""
    xs = random_inputs(before, seed)
    want, got = run_reference(before, *xs), run_reference(after, *xs)
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert w.shape == g.shape
        scale = max(1.0, float(np.max(np.abs(w))))
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=RTOL * scale)


@cache
def example(path: str) -> dict:
    return runpy.run_path(str(EXAMPLES / path))


def build(path: str, builder: str, shape, *, training: bool = False) -> Graph:
    model = example(path)[builder]()
    return cnnir.trace(model, shape, training=training, name=builder)


def constant(graph: Graph, name: str, array: np.ndarray, kind: str = "parameter"):
    array = np.asarray(array, np.float64)
    return graph.add_constant(name, ConstantData(TensorType(array.shape, "float64"), kind,
                                                 array=array))


def bn_params(graph: Graph, name: str, channels: int, rng: np.random.Generator,
              affine: bool = True) -> list:
    """Eval statistics as §8 asks: variance log-uniform down to 1e-6."""
    values = [constant(graph, f"{name}.running_mean", rng.normal(0, 0.5, channels), "buffer"),
              constant(graph, f"{name}.running_var", 10.0 ** rng.uniform(-6, 0, channels),
                       "buffer")]
    if affine:
        values += [constant(graph, f"{name}.weight", rng.uniform(0.5, 1.5, channels)),
                   constant(graph, f"{name}.bias", rng.normal(0, 0.2, channels))]
    return values + [None] * (4 - len(values))


def conv_bn_graph(seed: int = 0, channels: int = 4) -> Graph:
    """x -> conv2d(3x3, bias) -> batch_norm (eval) -> relu, in float64."""
    from cnnir.ops.conv import Conv2dAttrs

    rng = np.random.default_rng(seed)
    g = Graph("conv_bn")
    x = g.add_input("x", TensorType((1, 3, 6, 6), "float64"))
    w = constant(g, "conv.weight", rng.normal(0, 0.3, (channels, 3, 3, 3)))
    b = constant(g, "conv.bias", rng.normal(0, 0.1, channels))
    conv = g.add_node(ops.conv2d, [x, w, b], Conv2dAttrs(padding=1), name="conv")
    bn = g.add_node(ops.batch_norm, [conv.output, *bn_params(g, "bn", channels, rng)],
                    name="bn")
    g.set_outputs([g.add_node(ops.relu, [bn.output], name="relu").output])
    return g
