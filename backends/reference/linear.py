"""Reference fully connected layers and matrix products (docs/semantics.md §1.11).

linear: ``y = x·Wᵀ + b`` over the last dim, W ``[out, in]``, any number of leading dims.
matmul: torch.matmul, which follows numpy's matmul (1-D operands promoted and squeezed, batch
dims broadcast).
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.reference.runtime import Context, kernel


@kernel(ops.linear)
def linear(ctx: Context, attrs: object, x: np.ndarray, w: np.ndarray,
           b: np.ndarray | None) -> np.ndarray:
    y = np.matmul(x, w.T)
    return y if b is None else y + b


@kernel(ops.matmul)
def matmul(ctx: Context, attrs: object, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.matmul(a, b)
