"""The reference executor: a plain float64 numpy kernel for every op, the oracle of tests.

    run = cnnir.compile(graph, backend="reference", dtype="float64")
    y = run(x)

Each kernel is written from the formulas of docs/semantics.md, simply and independently of the
Numba backends; it is not tuned for speed. ``KERNELS`` maps each ``OpDef`` to its kernel.
"""

from cnnir.backends.reference.runtime import (  # noqa: I001  (kernels register on import)
    KERNELS,
    Context,
    ReferenceProgram,
    check_available,
    compile_graph,
    evaluate,
    kernel,
)
from cnnir.backends.reference import (  # noqa: F401
    activation,
    conv,
    fused,
    linear,
    loss,
    norm,
    optim,
    pool,
    tensor,
)

UNSUPPORTED: frozenset = frozenset()  # OpDefs without a kernel: none

__all__ = ["KERNELS", "UNSUPPORTED", "Context", "ReferenceProgram", "check_available",
           "compile_graph", "evaluate", "kernel"]
