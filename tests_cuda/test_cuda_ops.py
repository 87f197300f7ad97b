"""Every op the CUDA backend has a kernel for, in the simulator, against the float64
reference executor, on the shared op table of ``tests/op_cases.py`` at batch 1; every other
op is refused by name, and listed in ``UNSUPPORTED``."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda
from op_cases import CASES, Case, make_inputs, outputs, reference, trace
from op_helpers import assert_close

import cnnir
from cnnir.backends.numba_cuda import KERNELS, UNSUPPORTED
from cnnir.errors import LoweringError
from cnnir.ops import REGISTRY

BATCH = 1


def compiled_ops(graph: cnnir.Graph) -> set:
    from cnnir.api import run_passes
    from cnnir.passes.manager import DEFAULT_INFERENCE_PIPELINE

    return {n.op for n in run_passes(graph, DEFAULT_INFERENCE_PIPELINE).graph.nodes}


def runs_on_cuda(case: Case) -> bool:
    return compiled_ops(trace(case, BATCH)) <= set(KERNELS)


SUPPORTED = [c for c in CASES if runs_on_cuda(c)]
REFUSED = [c for c in CASES if not runs_on_cuda(c)]


@pytest.mark.parametrize("case", SUPPORTED, ids=[c.name for c in SUPPORTED])
def test_op_matches_reference(case: Case) -> None:
    graph = trace(case, BATCH)
    inputs = make_inputs(case, BATCH)
    got = outputs(cnnir.compile(graph, backend="cuda")(*inputs))
    ref = reference(graph, inputs)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.dtype == np.float32 and g.shape == r.shape
        assert_close(g, r, case.reduction)


def test_an_op_without_kernel_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnir.backends.numba_cuda as backend
    from cnnir import nn, ops
    from cnnir.backend import KernelTable

    without_relu = KernelTable("cuda")
    without_relu.update({op: k for op, k in KERNELS.items() if op is not ops.relu})
    monkeypatch.setattr(backend, "KERNELS", without_relu)
    with pytest.raises(LoweringError, match="the cuda backend has no kernel for relu"):
        cnnir.compile(nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU()), (1, 1, 2, 2),
                      backend="cuda", optimize=False)


def test_unsupported_lists_exactly_the_ops_without_a_kernel() -> None:
    # UNSUPPORTED is written out: an op added to the registry without a CUDA kernel fails
    # here until it gets one, or a reason
    missing = set(REGISTRY.values()) - set(KERNELS)
    assert missing == set(UNSUPPORTED), sorted(op.name for op in missing ^ set(UNSUPPORTED))
    assert all(isinstance(why, str) and why for why in UNSUPPORTED.values())


def test_device_arrays_in_give_device_arrays_out() -> None:
    from cnnir import nn

    run = cnnir.compile(nn.Sequential(nn.ReLU(), nn.Sigmoid()), ("N", 3, 4), backend="cuda")
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    y_dev = run(cuda.to_device(x))
    assert not isinstance(y_dev, np.ndarray) and hasattr(y_dev, "copy_to_host")
    np.testing.assert_allclose(y_dev.copy_to_host(), 1 / (1 + np.exp(-np.maximum(x, 0))),
                               rtol=1e-6)
    np.testing.assert_allclose(run(x), y_dev.copy_to_host())
