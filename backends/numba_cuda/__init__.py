"""The numba.cuda backend: ``cnnir.compile(graph, backend="cuda")``.

It implements the backend contract of ``cnnir.backend`` and reports honestly what it can run:
its kernel table is still empty, so every op is in ``UNSUPPORTED`` and compiling a graph is a
``LoweringError`` naming the ops. Without a usable GPU, ``check_available`` raises
``BackendUnavailable`` with the ways forward (a GPU machine, the CUDA simulator, the CPU
backend) instead of a numba traceback.
"""

from __future__ import annotations

from typing import Any

from cnnir.backend import KernelTable
from cnnir.errors import BackendUnavailable, LoweringError
from cnnir.ir import Graph
from cnnir.ops import REGISTRY

KERNELS = KernelTable("cuda")
UNSUPPORTED: frozenset = frozenset(REGISTRY.values()) - frozenset(KERNELS)


def check_available() -> None:
    """Raise BackendUnavailable unless numba.cuda imports and sees a GPU (or the simulator)."""
    try:
        from numba import cuda
    except ImportError as e:
        raise BackendUnavailable(f"the cuda backend needs numba.cuda, which failed to import: {e}",
                                 hint="pip install 'cnnir[cuda]' (numba-cuda)") from e
    if not cuda.is_available():
        raise BackendUnavailable(
            "the cuda backend found no CUDA GPU (numba.cuda.is_available() is False)",
            hint="run on a machine with an NVIDIA GPU and driver; to run the kernels in numba's "
                 "CUDA simulator set NUMBA_ENABLE_CUDASIM=1 before importing cnnir (slow, for "
                 "tests); backend='numba' runs on the CPU")


def compile_graph(graph: Graph, **options: Any) -> Any:
    KERNELS.check_supports(graph)
    raise LoweringError(f"the cuda backend cannot compile '{graph.name}' yet",
                        hint="use backend='numba' (CPU)")


__all__ = ["KERNELS", "UNSUPPORTED", "check_available", "compile_graph"]
